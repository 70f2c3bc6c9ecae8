"""Helpers shared by the transformer tests: fixture loading and a tiny safetensors writer."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from loom.llm.weights import SafetensorsFile

FIXTURE_MODELS = ("tiny-llama", "tiny-gpt2", "tiny-llama-bf16")
DATA = Path(__file__).with_name("data")


def reference(folder: Path) -> dict:
    """The ``reference.json`` of a fixture model folder."""
    return json.loads((folder / "reference.json").read_text(encoding="utf-8"))


def safetensors_bytes(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    """Serialise ``name -> (dtype, shape, raw little-endian bytes)`` as a safetensors file."""
    header: dict = {}
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + b"".join(raw for _, _, raw in tensors.values())


def float32_safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    """Safetensors bytes holding float32 arrays."""
    return safetensors_bytes(
        {name: ("F32", list(a.shape), np.ascontiguousarray(a, dtype="<f4").tobytes()) for name, a in tensors.items()}
    )


def fixture_tensors(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of a fixture folder as float32 arrays (copies)."""
    data = SafetensorsFile(folder / "model.safetensors")
    return {name: np.array(data[name]) for name in data}


def extra_weights(case: dict) -> dict[str, np.ndarray]:
    """Rebuild the numpy weights of one ``hf_extra_reference.json`` case."""
    rng = np.random.default_rng(case["seed"])
    out = {}
    for name in sorted(case["shapes"]):
        value = (0.1 * rng.standard_normal(case["shapes"][name])).astype(np.float32)
        if name.endswith("norm.weight") or (".ln_" in name and name.endswith("weight")):
            value += 1
        out[name] = value
    return out
