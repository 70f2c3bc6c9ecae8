"""Tokenizer: ids identical to Hugging Face, decoding, streaming, chat templates, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.errors import ChatTemplateError, ModelFormatError
from loom.llm.tokenizer import Tokenizer
from loom.llm.tokenizer_loader import load_tokenizer, load_tokenizer_from_bytes

MODEL_NAMES = ("tiny-llama", "tiny-gpt2", "tiny-llama-bf16")

# SmolLM2-Instruct's template (also stored in its GGUF), used to test rendering by hand.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_dir(llm_fixtures: Path) -> Path:
    return llm_fixtures / "tiny-llama"


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path) -> Tokenizer:
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def reference(llm_fixtures: Path) -> dict:
    return json.loads((llm_fixtures / "tokenizer_reference.json").read_text(encoding="utf-8"))


def _copy_model_dir(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        shutil.copyfile(source / name, target / name)
        (target / name).chmod(0o644)
    return target


def _rewrite_json(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    document.update(changes)
    path.write_text(json.dumps(document), encoding="utf-8")


# ---------------------------------------------------------------------- ids
def test_reference_ids_tokens_and_decode(tokenizer: Tokenizer, reference: dict) -> None:
    assert tokenizer.vocab_size == reference["vocab_size"]
    assert tokenizer.special_tokens == reference["special_tokens"]
    for case in reference["cases"]:
        ids = tokenizer.encode(case["text"], add_special_tokens=False)
        assert ids == case["ids"], case["text"]
        assert [tokenizer.id_to_token(i) for i in ids] == case["tokens"]
        assert tokenizer.decode(ids, skip_special_tokens=False) == case["decode"]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_model_reference_prompt_ids(llm_fixtures: Path, model_name: str) -> None:
    model_dir = llm_fixtures / model_name
    tokenizer = load_tokenizer(model_dir)
    cases = json.loads((model_dir / "reference.json").read_text(encoding="utf-8"))["cases"]
    for case in cases:
        assert tokenizer.encode(case["prompt"], add_special_tokens=False) == case["ids"]
        # the ByteLevel post-processor adds nothing, so the default encode agrees too
        assert tokenizer.encode(case["prompt"]) == case["ids"]
        assert tokenizer.decode(case["ids"], skip_special_tokens=False) == case["prompt"]
        assert tokenizer.decode(case["greedy_new_ids"], skip_special_tokens=False) == case["greedy_text"]


def test_every_source_form_gives_the_same_tokenizer(tiny_dir: Path, reference: dict) -> None:
    json_path = tiny_dir / "tokenizer.json"
    raw = json_path.read_bytes()
    loaded = [
        load_tokenizer(tiny_dir),
        load_tokenizer(str(tiny_dir)),
        load_tokenizer(json_path),
        load_tokenizer(raw),
        load_tokenizer(raw.decode("utf-8")),
        load_tokenizer_from_bytes(raw),
    ]
    for case in reference["cases"]:
        expected = case["ids"]
        for tokenizer in loaded:
            assert tokenizer.encode(case["text"], add_special_tokens=False) == expected


def test_old_string_merges_format_gives_the_same_ids(tiny_dir: Path, reference: dict) -> None:
    document = json.loads((tiny_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert isinstance(document["model"]["merges"][0], list)  # the fixture uses the new form
    document["model"]["merges"] = [" ".join(pair) for pair in document["model"]["merges"]]
    old_format = load_tokenizer_from_bytes(json.dumps(document).encode("utf-8"))
    for case in reference["cases"]:
        assert old_format.encode(case["text"], add_special_tokens=False) == case["ids"]


def test_special_token_properties(tokenizer: Tokenizer) -> None:
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == 0
    assert tokenizer.eos_token_ids == [0]
    assert tokenizer.token_to_id("<|im_start|>") == 1
    assert tokenizer.id_to_token(2) == "<|im_end|>"
    assert tokenizer.token_to_id("not a token") is None
    assert tokenizer.id_to_token(10**6) is None
    assert tokenizer.encode("<|im_start|>", add_special_tokens=False) == [1]
    assert tokenizer.decode([1, 355, 2]) == "user"
    assert tokenizer.decode([1, 355, 2], skip_special_tokens=False) == "<|im_start|>user<|im_end|>"


def test_generation_config_eos_list_and_add_bos(tiny_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model_dir(tiny_dir, tmp_path / "model")
    _rewrite_json(model_dir / "generation_config.json", eos_token_id=[0, 2])
    _rewrite_json(model_dir / "tokenizer_config.json", add_bos_token=True)
    tokenizer = load_tokenizer(model_dir)
    assert tokenizer.eos_token_id == 0
    assert tokenizer.eos_token_ids == [0, 2]
    assert tokenizer.encode("Hi") == [0, 42, 75]
    assert tokenizer.encode("Hi", add_special_tokens=False) == [42, 75]


def test_batch_encode_matches_single(tokenizer: Tokenizer, reference: dict) -> None:
    texts = [case["text"] for case in reference["cases"]]
    assert tokenizer.encode_batch(texts, add_special_tokens=False) == [case["ids"] for case in reference["cases"]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_decode_inverts_encode(tokenizer: Tokenizer, text: str) -> None:
    # byte-level BPE is lossless for any text that spells no special token
    if "<|" in text:
        return
    assert tokenizer.decode(tokenizer.encode(text)) == text


# ---------------------------------------------------------------------- streaming
@pytest.mark.parametrize(
    "text",
    ["naïve café 😀", "😀😃 emoji 🎉!", "Ünïcödé — “quotes” ¿qué?", "plain ascii text", "\n\n  x"],
)
def test_stream_decoder_yields_only_complete_text(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = tokenizer.stream_decoder()
    pieces = [decoder.step(i) for i in ids]
    tail = decoder.flush()
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + tail == text
    assert tail == ""


def test_stream_decoder_holds_back_partial_emoji(tokenizer: Tokenizer) -> None:
    emoji_ids = tokenizer.encode("😀", add_special_tokens=False)
    assert len(emoji_ids) == 4  # one byte per token in the tiny vocabulary
    decoder = tokenizer.stream_decoder()
    assert [decoder.step(i) for i in emoji_ids] == ["", "", "", "😀"]
    # an unfinished character only comes out, as U+FFFD, when flushed
    decoder.step(emoji_ids[0])
    assert decoder.flush() == "\ufffd"


def test_stream_decoder_special_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False)
    skipping = tokenizer.stream_decoder()
    keeping = tokenizer.stream_decoder(skip_special_tokens=False)
    assert "".join(skipping.step(i) for i in ids) + skipping.flush() == "user\nHi"
    text = "".join(keeping.step(i) for i in ids) + keeping.flush()
    assert text == "<|im_start|>user\nHi<|im_end|>"


def test_stream_decoder_long_stream_matches_decode(tokenizer: Tokenizer) -> None:
    text = "The cat sees a red apple in the park! 😀 " * 40  # longer than the trim window
    ids = tokenizer.encode(text, add_special_tokens=False)
    decoder = tokenizer.stream_decoder()
    assert "".join(decoder.step(i) for i in ids) + decoder.flush() == text


# ---------------------------------------------------------------------- chat template
def test_chat_template_from_tokenizer_config(tiny_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model_dir(tiny_dir, tmp_path / "model")
    _rewrite_json(model_dir / "tokenizer_config.json", chat_template=CHATML_TEMPLATE)
    tokenizer = load_tokenizer(model_dir)
    assert tokenizer.chat_template == CHATML_TEMPLATE
    messages = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    expected = (
        "<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\nHi there.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.apply_chat_template(messages) == expected
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(with_system, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    ids = tokenizer.encode(tokenizer.apply_chat_template(with_system), add_special_tokens=False)
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2


def test_chat_template_jinja_file_and_template_helpers(tiny_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model_dir(tiny_dir, tmp_path / "model")
    template = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}"
        "{% endif %}"
        "{{ m['role'] }}: {{ m['content'] | tojson }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}{{ eos_token }}"
    )
    (model_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    tokenizer = load_tokenizer(model_dir)
    messages = [{"role": "user", "content": "<b>café</b>"}]
    assert tokenizer.apply_chat_template(messages) == ('<|endoftext|>user: "<b>café</b>"\nassistant:<|endoftext|>')
    # template variables can be overridden
    assert tokenizer.apply_chat_template(messages, bos_token="[BOS]").startswith("[BOS]user")
    with pytest.raises(ChatTemplateError, match="chat template: rendering failed: TemplateError: bad role tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}])


def test_chat_template_continue_final_message(tiny_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model_dir(tiny_dir, tmp_path / "model")
    _rewrite_json(model_dir / "tokenizer_config.json", chat_template=CHATML_TEMPLATE)
    tokenizer = load_tokenizer(model_dir)
    messages = [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "The answer is"},
    ]
    assert (
        tokenizer.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True)
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\nThe answer is"
    )


def test_missing_chat_template_is_a_clear_error(tokenizer: Tokenizer) -> None:
    assert tokenizer.chat_template is None
    with pytest.raises(ModelFormatError, match="missing chat template"):
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])


# ---------------------------------------------------------------------- errors
def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "nope.json")


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json.*invalid JSON"):
        load_tokenizer(bad)


def test_json_that_is_not_a_tokenizer(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(ModelFormatError, match="no top-level 'model'"):
        load_tokenizer(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": {"type": "BPE", "vocab": 3}}', encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"broken\.json: invalid tokenizer\.json"):
        load_tokenizer(broken)


def test_directory_without_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"missing tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_bad_tokenizer_config_names_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy_model_dir(tiny_dir, tmp_path / "model")
    (model_dir / "tokenizer_config.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"tokenizer_config\.json: invalid JSON"):
        load_tokenizer(model_dir)


def test_bytes_that_are_neither_json_nor_gguf() -> None:
    with pytest.raises(ModelFormatError, match="expected UTF-8 tokenizer JSON or a GGUF file"):
        load_tokenizer_from_bytes(b"\xff\xfe\x00garbage")


def test_negative_ids_are_rejected(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        tokenizer.decode([5, -1])
