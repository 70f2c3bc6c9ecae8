"""Safetensors reading (F32/F16/BF16, bytes, sharded) and weight-layout errors."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from llm_test_utils import fixture_tensors, float32_safetensors, reference, safetensors_bytes

import loom
from loom.errors import ModelFormatError
from loom.llm import load_transformer, load_transformer_from_bytes
from loom.llm.loader import load_transformer_bytes
from loom.llm.weights import SafetensorsFile, bf16_to_float32, open_safetensors_dir


def test_dtype_conversions_are_exact() -> None:
    values = np.array([1.0, -2.5, 3.140625, 1e-40, np.inf, -0.0], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # truncation to bfloat16
    bf16_values = (bf16.astype(np.uint32) << 16).view(np.float32)
    f16 = np.array([1.0, -2.5, 65504.0, 6e-8, -np.inf], dtype="<f2")
    blob = safetensors_bytes(
        {
            "b": ("BF16", [6], bf16.tobytes()),
            "h": ("F16", [5], f16.tobytes()),
            "f": ("F32", [2, 3], values.tobytes()),
            "s": ("F32", [], np.float32(7).tobytes()),
        }
    )
    data = SafetensorsFile(blob)
    assert sorted(data) == ["b", "f", "h", "s"]
    np.testing.assert_array_equal(data["b"], bf16_values)
    np.testing.assert_array_equal(data["b"][:3], values[:3])  # exact in bfloat16
    np.testing.assert_array_equal(data["h"], f16.astype(np.float32))
    np.testing.assert_array_equal(data["f"], values.reshape(2, 3))
    assert data["s"].shape == () and float(data["s"]) == 7.0
    assert all(data[k].dtype == np.float32 for k in data)
    assert bf16_to_float32(np.array([0x7FC0], dtype=np.uint16))[0] != 0  # NaN survives


def test_bf16_fixture_upcast_matches_stored_bits(llm_fixtures: Path) -> None:
    data = SafetensorsFile(llm_fixtures / "tiny-llama-bf16" / "model.safetensors")
    header_len = struct.unpack("<Q", (llm_fixtures / "tiny-llama-bf16" / "model.safetensors").read_bytes()[:8])[0]
    assert header_len > 0
    lm_head = data["lm_head.weight"]
    assert lm_head.shape == (512, 64) and lm_head.dtype == np.float32
    bits = lm_head.view(np.uint32)
    assert not np.any(bits & 0xFFFF)  # low 16 bits zero: an exact bf16 upcast


def test_load_from_bytes_equals_load_from_folder(llm_fixtures: Path, backend) -> None:
    folder = llm_fixtures / "tiny-gpt2"
    config = (folder / "config.json").read_bytes()
    weights = (folder / "model.safetensors").read_bytes()
    model = load_transformer_bytes(config, weights, backend=backend)
    case = reference(folder)["cases"][0]
    np.testing.assert_allclose(loom.to_numpy(model.logits(case["ids"])), case["logits"], rtol=0, atol=1e-4)
    info = load_transformer_from_bytes(config, weights)
    assert info == {
        "success": True,
        "vocab_size": 512,
        "hidden_size": 64,
        "num_layers": 2,
        "message": "Transformer loaded successfully",
    }


def _copy_configs(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        shutil.copy(src / name, dst / name)


def test_sharded_checkpoint(llm_fixtures: Path, tmp_path: Path, backend) -> None:
    src = llm_fixtures / "tiny-llama"
    tensors = fixture_tensors(src)
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    _copy_configs(src, tmp_path)
    weight_map = {}
    for file, members in shards.items():
        (tmp_path / file).write_bytes(float32_safetensors({n: tensors[n] for n in members}))
        weight_map |= dict.fromkeys(members, file)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8"
    )
    assert len(open_safetensors_dir(tmp_path)) == len(names)
    model = load_transformer(tmp_path, backend=backend)
    case = reference(src)["cases"][1]
    np.testing.assert_allclose(loom.to_numpy(model.logits(case["ids"])), case["logits"], rtol=0, atol=1e-4)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelFormatError, match=r"shard file.*not found.*model-00002-of-00002"):
        load_transformer(tmp_path)


def _folder_with(src: Path, dst: Path, tensors: dict[str, np.ndarray]) -> Path:
    _copy_configs(src, dst)
    (dst / "model.safetensors").write_bytes(float32_safetensors(tensors))
    return dst


def test_missing_and_misshaped_tensors_are_named(llm_fixtures: Path, tmp_path: Path) -> None:
    src = llm_fixtures / "tiny-llama"
    tensors = fixture_tensors(src)
    missing = dict(tensors)
    del missing["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(
        ModelFormatError,
        match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight' "
        r"\(expected shape \[128, 64\]\)",
    ):
        load_transformer(_folder_with(src, tmp_path / "a", missing))
    bad = dict(tensors)
    bad["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)
    with pytest.raises(
        ModelFormatError,
        match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \[64, 64\], "
        r"expected \[32, 64\]",
    ):
        load_transformer(_folder_with(src, tmp_path / "b", bad))


def test_untied_model_needs_lm_head(llm_fixtures: Path, tmp_path: Path) -> None:
    src = llm_fixtures / "tiny-llama-bf16"
    tensors = fixture_tensors(src)
    del tensors["lm_head.weight"]
    with pytest.raises(ModelFormatError, match=r"missing tensor 'lm_head\.weight'"):
        load_transformer(_folder_with(src, tmp_path, tensors))


def test_gpt2_missing_bias_is_named(llm_fixtures: Path, tmp_path: Path) -> None:
    src = llm_fixtures / "tiny-gpt2"
    tensors = fixture_tensors(src)
    name = next(n for n in tensors if n.endswith("h.1.attn.c_attn.bias"))
    del tensors[name]
    with pytest.raises(ModelFormatError, match=r"h\.1\.attn\.c_attn\.bias"):
        load_transformer(_folder_with(src, tmp_path, tensors))


@pytest.mark.parametrize(
    ("blob", "pattern"),
    [
        (b"\x01\x02", r"not a safetensors file \(only 2 bytes"),
        (struct.pack("<Q", 1000) + b"{}", "header length 1000 runs past the end"),
        (struct.pack("<Q", 4) + b"{bad", "safetensors header: invalid JSON"),
        (struct.pack("<Q", 2) + b"[]", "header must be a JSON object"),
    ],
)
def test_broken_safetensors_headers(blob: bytes, pattern: str) -> None:
    with pytest.raises(ModelFormatError, match=pattern):
        SafetensorsFile(blob, name="weights.safetensors")


def test_tensor_errors_name_the_tensor() -> None:
    short = safetensors_bytes({"w": ("F32", [4], b"\x00" * 8)})
    with pytest.raises(ModelFormatError, match=r"tensor w: data out of bounds"):
        SafetensorsFile(short)["w"]
    ints = safetensors_bytes({"ids": ("I64", [1], b"\x00" * 8)})
    with pytest.raises(ModelFormatError, match="tensor ids has dtype I64"):
        SafetensorsFile(ints)["ids"]


def test_folder_errors(llm_fixtures: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="model not found"):
        load_transformer(tmp_path / "nope")
    _copy_configs(llm_fixtures / "tiny-llama", tmp_path)
    with pytest.raises(ModelFormatError, match=r"no model\.safetensors"):
        load_transformer(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="not a safetensors file"):
        load_transformer(tmp_path)
    with pytest.raises(ModelFormatError, match="not a model"):
        load_transformer(tmp_path / "generation_config.json")
