"""Hostile LLM files (issue #11): lying GGUF / safetensors headers, out-of-range configs, bad tokenizers, templates.

Every case fails fast with a ``loom.errors`` exception naming the file, the field or
tensor, what was expected and what was found; the fuzz suite covers the same ground on
generated files.
"""

from __future__ import annotations

import json
import resource
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import loom.limits
from loom.errors import ChatTemplateError, ModelFormatError
from loom.llm.chat_template import render_chat_template
from loom.llm.config import TransformerConfig
from loom.llm.loader import load_transformer, transformer_from_tensors
from loom.llm.tokenizer_loader import load_tokenizer_from_bytes
from loom.llm.weights import SafetensorsFile
from tests.llm.llm_test_utils import fixture_tensors, float32_safetensors

gguf = pytest.importorskip("gguf")


def _write_gguf(path: Path, *, array: list[int] | None = None) -> Path:
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_array("test.values", array if array is not None else list(range(1000)))
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_array_count_of_2_to_the_62_fails_fast(tmp_path: Path) -> None:
    from loom.llm.gguf_file import load_gguf

    raw = bytearray(_write_gguf(tmp_path / "ok.gguf").read_bytes())
    key_end = raw.find(b"test.values") + len(b"test.values")
    assert struct.unpack_from("<IIQ", raw, key_end) == (9, 5, 1000)  # ARRAY of INT32, 1000 items
    struct.pack_into("<Q", raw, key_end + 8, 2**62)
    bad = tmp_path / "lying.gguf"
    bad.write_bytes(bytes(raw))
    start = time.perf_counter()
    with pytest.raises(
        ModelFormatError,
        match=r"lying\.gguf: truncated or corrupt GGUF file .* the array at byte \d+ says 4611686018427387904 items, "
        r"more than the \d+ bytes left can hold",
    ):
        load_gguf(bad)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kv_count", 2**62, "kv_count says 4611686018427387904 items"),
        ("tensor_count", 2**40, "tensor_count says 1099511627776 items"),
    ],
)
def test_gguf_header_counts_are_checked_against_the_file_size(tmp_path: Path, field, value, message) -> None:
    from loom.llm.gguf_file import read_gguf_metadata

    raw = bytearray(_write_gguf(tmp_path / "ok.gguf").read_bytes())
    struct.pack_into("<Q", raw, 16 if field == "kv_count" else 8, value)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match=message):
        read_gguf_metadata(bad)


def test_gguf_tensor_dimensions_and_offsets_are_checked(tmp_path: Path) -> None:
    from loom.llm.gguf_file import read_gguf_metadata

    raw = bytearray(_write_gguf(tmp_path / "ok.gguf").read_bytes())
    name_end = raw.find(b"token_embd.weight") + len(b"token_embd.weight")
    assert struct.unpack_from("<I", raw, name_end)[0] == 2
    struct.pack_into("<Q", raw, name_end + 4, 2**40)  # first dimension
    bad = tmp_path / "dims.gguf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match=r"tensor 'token_embd\.weight': \d+ bytes at byte \d+ run past the end"):
        read_gguf_metadata(bad)
    struct.pack_into("<I", raw, name_end, 9)  # n_dims
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match=r"expected at most 4 dimensions, got 9"):
        read_gguf_metadata(bad)


def test_safetensors_header_lies_fail_before_reading(llm_fixtures: Path) -> None:
    data = np.arange(6, dtype=np.float32)
    blob = float32_safetensors({"w": data.reshape(2, 3)})
    size = struct.unpack_from("<Q", blob)[0]
    header = json.loads(blob[8 : 8 + size])
    cases = [
        ({"w": {**header["w"], "shape": [2**40, 2**40]}}, r"tensor w: data out of bounds"),
        ({"w": {**header["w"], "data_offsets": [0, 2**61]}}, r"tensor w: data out of bounds"),
        ({"w": {**header["w"], "data_offsets": [-8, 16]}}, r"data_offsets must be \[begin, end\] \(integers >= 0\)"),
        ({"w": {**header["w"], "shape": ["2", 3]}}, r"shape must be a list of at most 8 sizes >= 0, got \['2', 3\]"),
        ({"w": {**header["w"], "dtype": 4}}, r"dtype must be a string such as 'F32', got 4"),
        ({"w": "F32"}, r"tensor w: expected a header object"),
        ({"__metadata__": {"a": 1}, "w": header["w"]}, r"__metadata__ must be an object of strings"),
    ]
    for new_header, message in cases:
        text = json.dumps(new_header).encode()
        with pytest.raises(ModelFormatError, match=message):
            SafetensorsFile(struct.pack("<Q", len(text)) + text + blob[8 + size :], name="m.safetensors")
    with pytest.raises(ModelFormatError, match=r"header length 18446744073709551615 runs past the end"):
        SafetensorsFile(b"\xff" * 8 + blob[8:])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tensors_are_rejected_with_the_tensor_name(llm_fixtures: Path, bad: float) -> None:
    folder = llm_fixtures / "tiny-llama"
    config = TransformerConfig.from_dir(folder)
    tensors = fixture_tensors(folder)
    tensors["model.layers.1.mlp.down_proj.weight"][3, 7] = bad
    with pytest.raises(
        ModelFormatError,
        match=rf"weights: tensor 'model\.layers\.1\.mlp\.down_proj\.weight' holds {bad} at index \[3, 7\]",
    ):
        transformer_from_tensors(config, tensors)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_attention_heads": 0}, r"'num_attention_heads' must be a positive integer"),
        ({"rms_norm_eps": -1e-5}, r"'rms_norm_eps' must be a finite number > 0, got -1e-05"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": float("nan")}}, r"config\.json: invalid JSON: NaN"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 0.5}}, r"rope_theta must be a finite number > 1"),
        ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 0.0}}, r"'factor' must be a finite"),
        (
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2, "beta_fast": -1}},
            r"rope_scaling 'beta_fast' must be a finite number > 0, got -1",
        ),
    ],
)
def test_out_of_range_config_values_never_reach_the_math(llm_fixtures: Path, tmp_path: Path, change, message) -> None:
    folder = llm_fixtures / "tiny-llama"
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).symlink_to(folder / name)
    config = {**json.loads((folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match=message):
        load_transformer(tmp_path)


def test_gguf_metadata_values_are_validated_before_any_tensor(llm_fixtures: Path, tmp_path: Path) -> None:
    from loom.llm.gguf_file import load_gguf
    from tests.llm.test_gguf import write_llama_gguf

    path = write_llama_gguf(llm_fixtures / "tiny-llama", tmp_path / "m.gguf", gguf.GGMLQuantizationType.F32)
    raw = bytearray(path.read_bytes())
    for key, packed, message in (
        (b"llama.attention.head_count", struct.pack("<I", 0), r"llama\.attention\.head_count must be a positive"),
        (b"llama.attention.layer_norm_rms_epsilon", struct.pack("<f", -1.0), r"'rms_norm_eps' must be a finite"),
        (b"llama.rope.freq_base", struct.pack("<f", float("nan")), r"rope_theta must be a finite number > 1, got nan"),
    ):
        value_at = raw.find(key) + len(key) + 4  # after the 4-byte value type
        changed = raw[:value_at] + packed + raw[value_at + 4 :]
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(bytes(changed))
        with pytest.raises(ModelFormatError, match=message):
            load_gguf(bad)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}', r"invalid tokenizer\.json: Exception: "),
        ('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b"]]}}', r"out of vocabulary"),
        ('{"model": 5}', r"not a Hugging Face tokenizer\.json"),
        ("[" * 10_000, r"JSON nesting depth 10000 exceeds the limit of 64"),
        ('{"model": NaN}', r"NaN is not a JSON number"),
    ],
)
def test_hostile_tokenizer_files(document: str, message: str) -> None:
    with pytest.raises(ModelFormatError, match=r"^<tokenizer bytes>: .*" + message):
        load_tokenizer_from_bytes(document.encode())


# ------------------------------------------------------------------ chat templates
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 'a' * 3000000000 }}", r"a \* repetition would hold 3,000,000,000 characters"),
        ("{{ 'a'|center(10**9) }}", r"the argument of the center filter would hold 1,000,000,000"),
        ("{{ '%*d' % (10**9, 1) }}", r"a % format argument would hold 1,000,000,000"),
        ("{{ 2 ** (2 ** 40) }}", r"an integer power of more than 65536 bits is not allowed"),
        ("{% set s = 'ab' %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 40, r"would hold [\d,]+ characters or items"),
        ("{{ range(10**9)|list }}", r"range\(\) would hold 1,000,000,000"),
        ("{{ 'x'.translate({120: 'y' * 1000}) }}", r"str\.translate .* is not allowed"),
        ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", r"exceeded the deadline"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", r"rendering failed: RecursionError"),
        ("{{ ''.__class__.__mro__ }}", r"rendering failed: SecurityError: access to attribute '__class__'"),
        ("{{ raise_exception('roles must alternate') }}", r"rendering failed: TemplateError: roles must alternate"),
        ("{% for %}", r"cannot compile the template: TemplateSyntaxError"),
    ],
)
def test_hostile_chat_templates_are_bounded(template: str, message: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with (
        loom.limits.limited(template_seconds=0.3),
        pytest.raises(ChatTemplateError, match=r"^chat template: .*" + message),
    ):
        render_chat_template(template, MESSAGES)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no gigabyte allocations


def test_the_bounds_leave_real_templates_alone() -> None:
    template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim "
        "+ '<|im_end|>\\n' }}{% endfor %}{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    text = render_chat_template(template, MESSAGES * 50, tools=[{"name": "search", "parameters": {"q": "str"}}])
    assert text.startswith("<|im_start|>user\nHi<|im_end|>\n") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>user") == 50 and '"name": "search"' in text
    with loom.limits.limited(template_output_chars=100), pytest.raises(ChatTemplateError, match="the rendered text"):
        render_chat_template(template, MESSAGES * 50)
