"""Transformer weights: safetensors reading and the decode-friendly layout.

Two jobs, kept apart:

1. **Reading** (:class:`SafetensorsFile`, :func:`open_safetensors_dir`): a
   lazy ``name -> float32 numpy array`` mapping over one ``.safetensors`` file
   (memory-mapped or from bytes) or a sharded folder
   (``model.safetensors.index.json``). ``F32``, ``F16`` and ``BF16`` are
   upcast to float32 on access (BF16 by a 16-bit shift, no torch).
2. **Layout** (:func:`build_weights`): Hugging Face tensors are checked against
   the :class:`~loom.llm.config.TransformerConfig` and rearranged so that one
   decode step streams every matrix exactly once, contiguously:

   * Q/K/V fused into one ``[D, (H + 2 Hk) hd]`` matrix, gate/up into one
     ``[D, 2 Di]`` matrix, every matrix stored ``[in, out]`` so ``x @ W`` reads
     it row-major;
   * the LM head stored ``[D, V]``; with tied embeddings it is the only copy of
     the embedding table (tokens are gathered from its columns).

A missing or misshaped tensor is a :class:`~loom.errors.ModelFormatError`
naming the tensor, the expected and the found shape.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loom import safe_json
from loom.backend import Backend
from loom.errors import ModelFormatError
from loom.llm.config import TransformerConfig

__all__ = [
    "LayerWeights",
    "SafetensorsFile",
    "TransformerWeights",
    "build_weights",
    "open_safetensors_dir",
]

Array = Any
_DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
    "F64": (np.dtype("<f8"), 8),
}


_MAX_RANK = 8
#: Item sizes of safetensors dtypes loom does not read (their offsets are still checked).
_OTHER_ITEMSIZES = {"I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact bfloat16 → float32: the 16 stored bits become the high half of a float32.

    Examples
    --------
    >>> bf16_to_float32(np.array([0x3F80, 0xC000], dtype=np.uint16)).tolist()
    [1.0, -2.0]
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile(Mapping[str, np.ndarray]):
    """Read-only ``name -> float32 array`` view of one safetensors file.

    Parameters
    ----------
    source : str, Path or bytes
        A file path (memory-mapped) or the file's bytes.
    name : str, optional
        Name used in error messages (default: the path or ``"<bytes>"``).

    Raises
    ------
    ModelFormatError
        Truncated file, bad header JSON, or tensor data out of bounds.

    Examples
    --------
    >>> import json, struct
    >>> header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    >>> blob = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)
    >>> SafetensorsFile(blob)["w"].tolist()
    [1.0, 2.0]
    """

    def __init__(self, source: str | Path | bytes | bytearray | memoryview, name: str | None = None):
        if isinstance(source, bytes | bytearray | memoryview):
            self.name = name or "<bytes>"
            self._buffer: Any = memoryview(source)
        else:
            path = Path(source)
            self.name = name or str(path)
            try:
                with open(path, "rb") as handle:
                    size = path.stat().st_size
                    self._buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            except OSError as exc:
                raise ModelFormatError(f"{self.name}: cannot open safetensors file ({exc})") from exc
        self._entries, self._data_start = self._parse_header()
        self.metadata: dict[str, Any] = self._entries.pop("__metadata__", None) or {}
        self._layout = {name: self._entry_layout(name, entry) for name, entry in self._entries.items()}
        self._bad_dtype = {name for name, (dtype_name, *_) in self._layout.items() if dtype_name not in _DTYPES}

    def _parse_header(self) -> tuple[dict[str, Any], int]:
        total = len(self._buffer)
        if total < 8:
            raise ModelFormatError(
                f"{self.name}: not a safetensors file (only {total} bytes; expected an 8-byte header length)"
            )
        header_len = int(np.frombuffer(self._buffer[:8], dtype="<u8")[0])
        if 8 + header_len > total:
            raise ModelFormatError(
                f"{self.name}: header length {header_len} runs past the end of the file ({total} bytes)"
            )
        header = safe_json.loads(
            bytes(self._buffer[8 : 8 + header_len]), source=f"{self.name}: safetensors header", error=ModelFormatError
        )
        if not isinstance(header, dict):
            raise ModelFormatError(f"{self.name}: safetensors header must be a JSON object")
        metadata = header.get("__metadata__")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise ModelFormatError(f"{self.name}: __metadata__ must be an object of strings, got {metadata!r:.200}")
        return header, 8 + header_len

    def _entry_layout(self, key: str, entry: Any) -> tuple[str, tuple[int, ...], int, int]:
        """``(dtype, shape, start, count)`` of one header entry, checked against the file size.

        A dtype loom cannot read (``I64`` buffers, ``F8_*``) is only an error when that
        tensor is accessed; its offsets are still checked.
        """
        where = f"{self.name}: tensor {key}"
        if not isinstance(entry, dict):
            raise ModelFormatError(f"{where}: expected a header object with dtype, shape and data_offsets")
        dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype_name, str):
            raise ModelFormatError(f"{where}: dtype must be a string such as 'F32', got {dtype_name!r:.200}")
        if not isinstance(shape, list) or not all(_is_size(d) for d in shape) or len(shape) > _MAX_RANK:
            raise ModelFormatError(
                f"{where}: shape must be a list of at most {_MAX_RANK} sizes >= 0, got {shape!r:.200}"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_size(o) for o in offsets)):
            raise ModelFormatError(f"{where}: data_offsets must be [begin, end] (integers >= 0), got {offsets!r:.200}")
        itemsize = _DTYPES[dtype_name][1] if dtype_name in _DTYPES else _OTHER_ITEMSIZES.get(dtype_name)
        count, (begin, end) = math.prod(shape), offsets
        data_size = len(self._buffer) - self._data_start
        if end < begin or end > data_size or (itemsize is not None and end - begin != count * itemsize):
            size = "?" if itemsize is None else f"{count * itemsize}"
            raise ModelFormatError(
                f"{where}: data out of bounds (offsets {begin}..{end}, shape {shape} {dtype_name} = "
                f"{size} bytes, file data size {data_size})"
            )
        return dtype_name, tuple(shape), self._data_start + begin, count

    def __getitem__(self, key: str) -> np.ndarray:
        dtype_name, shape, start, count = self._layout[key]
        if key in self._bad_dtype:
            raise ModelFormatError(
                f"{self.name}: tensor {key} has dtype {dtype_name}; expected one of {sorted(_DTYPES)}"
            )
        raw = np.frombuffer(self._buffer, dtype=_DTYPES[dtype_name][0], count=count, offset=start).reshape(shape)
        if dtype_name == "BF16":
            return bf16_to_float32(raw)
        with np.errstate(over="ignore"):  # F64 beyond the float32 range: inf, rejected where it is used
            return raw.astype(np.float32, copy=dtype_name != "F32")

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _ShardedTensors(Mapping[str, np.ndarray]):
    """Union of several safetensors files (a sharded checkpoint)."""

    def __init__(self, files: list[SafetensorsFile]) -> None:
        self._owner = {name: f for f in files for name in f}

    def __getitem__(self, key: str) -> np.ndarray:
        return self._owner[key][key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)


def open_safetensors_dir(folder: str | Path) -> Mapping[str, np.ndarray]:
    """All tensors of a Hugging Face model folder.

    Uses ``model.safetensors.index.json`` when present (sharded checkpoint),
    else ``model.safetensors``, else every ``*.safetensors`` file in the folder.

    Parameters
    ----------
    folder : str or Path
        The model directory.

    Returns
    -------
    Mapping[str, numpy.ndarray]
        Lazy ``name -> float32 array`` mapping.
    """
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            text = index.read_bytes()
        except OSError as exc:
            raise ModelFormatError(f"{index}: cannot read ({exc})") from exc
        document = safe_json.loads(text, source=str(index), error=ModelFormatError)
        weight_map = document.get("weight_map") if isinstance(document, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelFormatError(f"{index}: expected JSON with a 'weight_map' object of shard file names")
        shard_names = list(dict.fromkeys(weight_map.values()))
        unsafe = [n for n in shard_names if Path(n).name != n or n in ("", ".", "..")]
        if unsafe:
            raise ModelFormatError(f"{index}: shard names must be plain file names in {folder}, got {unsafe[:3]}")
        missing = [n for n in shard_names if not (folder / n).is_file()]
        if missing:
            raise ModelFormatError(f"{index}: shard file(s) not found in {folder}: {missing}")
        return _ShardedTensors([SafetensorsFile(folder / n) for n in shard_names])
    single = folder / "model.safetensors"
    paths = [single] if single.is_file() else sorted(folder.glob("*.safetensors"))
    if not paths:
        raise ModelFormatError(
            f"{folder}: no model.safetensors (expected it, model.safetensors.index.json or *.safetensors files)"
        )
    if len(paths) == 1:
        return SafetensorsFile(paths[0])
    return _ShardedTensors([SafetensorsFile(p) for p in paths])


@dataclass
class LayerWeights:
    """One decoder block in loom's decode layout (all matrices ``[in, out]``).

    Attributes
    ----------
    attn_norm, mlp_norm : array
        ``[D]`` norm gains (``*_bias``: GPT-2 LayerNorm biases, else None).
    qkv : array
        ``[D, (H + 2 Hk) hd]`` fused Q | K | V projection (``qkv_bias`` optional).
    out : array
        ``[H hd, D]`` attention output projection (``out_bias`` optional).
    mlp_in : array
        ``[D, 2 Di]`` fused gate | up (LLaMA) or ``[D, Di]`` ``c_fc`` (GPT-2).
    mlp_out : array
        ``[Di, D]`` down projection.
    """

    attn_norm: Array
    qkv: Array
    out: Array
    mlp_norm: Array
    mlp_in: Array
    mlp_out: Array
    attn_norm_bias: Array | None = None
    qkv_bias: Array | None = None
    out_bias: Array | None = None
    mlp_norm_bias: Array | None = None
    mlp_in_bias: Array | None = None
    mlp_out_bias: Array | None = None


@dataclass
class TransformerWeights:
    """All parameters of a model, on one backend (llama2.c ``TransformerWeights``).

    Attributes
    ----------
    head : array
        ``[D, V]`` LM head, contiguous; with tied embeddings also the embedding table.
    embed : array or None
        ``[V, D]`` token embeddings when untied, else None (gathered from ``head``).
    positions : array or None
        ``[P, D]`` learned position embeddings (GPT-2 ``wpe``).
    final_norm, final_norm_bias : array
        ``[D]`` last norm (bias only for GPT-2).
    layers : list of LayerWeights
    """

    head: Array
    final_norm: Array
    layers: list[LayerWeights] = field(default_factory=list)
    embed: Array | None = None
    positions: Array | None = None
    final_norm_bias: Array | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of all parameter arrays."""
        arrays = [self.head, self.final_norm, self.embed, self.positions, self.final_norm_bias]
        arrays += [a for layer in self.layers for a in vars(layer).values()]
        return sum(int(a.nbytes) for a in arrays if a is not None)


class _TensorReader:
    """Fetch tensors by name with shape checks and errors naming the tensor."""

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str) -> None:
        self.tensors = tensors
        self.source = source

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise ModelFormatError(f"{self.source}: missing tensor '{name}' (expected shape {list(shape)})")
        array = np.asarray(self.tensors[name])
        if tuple(array.shape) != tuple(shape):
            raise ModelFormatError(
                f"{self.source}: tensor '{name}' has shape {list(array.shape)}, expected {list(shape)}"
            )
        finite = np.isfinite(array)
        if not finite.all():
            index = np.unravel_index(int(np.argmin(finite)), array.shape)
            raise ModelFormatError(
                f"{self.source}: tensor '{name}' holds {array[index]} at index {list(map(int, index))}; "
                "expected finite values"
            )
        return array

    def optional(self, name: str, shape: tuple[int, ...], wanted: bool) -> np.ndarray | None:
        return self.get(name, shape) if wanted or name in self.tensors else None


def build_weights(
    config: TransformerConfig,
    tensors: Mapping[str, np.ndarray],
    backend: Backend,
    dtype: Any = np.float32,
    *,
    source: str = "weights",
) -> TransformerWeights:
    """Check Hugging Face tensors against ``config`` and lay them out for decoding.

    Parameters
    ----------
    config : TransformerConfig
        Parsed model config.
    tensors : Mapping[str, numpy.ndarray]
        Hugging Face names and shapes (``model.layers.0.self_attn.q_proj.weight``
        ``[H hd, D]``, GPT-2 ``h.0.attn.c_attn.weight`` ``[D, 3D]``, ...).
    backend : Backend
        Where the arrays live.
    dtype : dtype
        Compute dtype (float32 by default).
    source : str
        Name used in error messages.

    Returns
    -------
    TransformerWeights

    Raises
    ------
    ModelFormatError
        A tensor is missing or has the wrong shape; the message names it.
    """
    reader = _TensorReader(tensors, source)

    def put(array: np.ndarray) -> Array:
        return backend.asarray(np.ascontiguousarray(array, dtype=dtype), dtype=dtype)

    if config.architecture == "gpt2":
        return _build_gpt2(config, reader, put)
    return _build_llama(config, reader, put)


def _build_llama(cfg: TransformerConfig, r: _TensorReader, put: Any) -> TransformerWeights:
    d, hd, di, v = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    q_out, kv_out = cfg.num_heads * hd, cfg.num_kv_heads * hd
    prefix = "model." if "model.embed_tokens.weight" in r.tensors else ""
    if not prefix and "embed_tokens.weight" not in r.tensors:
        prefix = "model."  # for the error message
    layers = []
    for i in range(cfg.num_layers):
        p = f"{prefix}layers.{i}."
        q = r.get(p + "self_attn.q_proj.weight", (q_out, d))
        k = r.get(p + "self_attn.k_proj.weight", (kv_out, d))
        val = r.get(p + "self_attn.v_proj.weight", (kv_out, d))
        biases = [
            r.optional(p + f"self_attn.{n}_proj.bias", (size,), cfg.attention_bias)
            for n, size in (("q", q_out), ("k", kv_out), ("v", kv_out))
        ]
        qkv_bias = None
        if any(b is not None for b in biases):
            qkv_bias = np.concatenate(
                [
                    b if b is not None else np.zeros(size, np.float32)
                    for b, size in zip(biases, (q_out, kv_out, kv_out), strict=True)
                ]
            )
        gate = r.get(p + "mlp.gate_proj.weight", (di, d))
        up = r.get(p + "mlp.up_proj.weight", (di, d))
        gate_b = r.optional(p + "mlp.gate_proj.bias", (di,), cfg.mlp_bias)
        up_b = r.optional(p + "mlp.up_proj.bias", (di,), cfg.mlp_bias)
        mlp_in_bias = None
        if gate_b is not None or up_b is not None:
            zeros = np.zeros(di, np.float32)
            mlp_in_bias = np.concatenate([zeros if gate_b is None else gate_b, zeros if up_b is None else up_b])
        layers.append(
            LayerWeights(
                attn_norm=put(r.get(p + "input_layernorm.weight", (d,))),
                qkv=put(np.concatenate([q, k, val], axis=0).T),  # [D, (H+2Hk)hd]
                qkv_bias=_maybe(put, qkv_bias),
                out=put(r.get(p + "self_attn.o_proj.weight", (d, q_out)).T),  # [H hd, D]
                out_bias=_maybe(put, r.optional(p + "self_attn.o_proj.bias", (d,), cfg.attention_out_bias)),
                mlp_norm=put(r.get(p + "post_attention_layernorm.weight", (d,))),
                mlp_in=put(np.concatenate([gate, up], axis=0).T),  # [D, 2Di]
                mlp_in_bias=_maybe(put, mlp_in_bias),
                mlp_out=put(r.get(p + "mlp.down_proj.weight", (d, di)).T),  # [Di, D]
                mlp_out_bias=_maybe(put, r.optional(p + "mlp.down_proj.bias", (d,), cfg.mlp_bias)),
            )
        )
    embed = r.get(prefix + "embed_tokens.weight", (v, d))
    final_norm = put(r.get(prefix + "norm.weight", (d,)))
    if cfg.tie_word_embeddings:
        return TransformerWeights(head=put(embed.T), final_norm=final_norm, layers=layers)
    head = r.get("lm_head.weight", (v, d))
    return TransformerWeights(head=put(head.T), embed=put(embed), final_norm=final_norm, layers=layers)


def _build_gpt2(cfg: TransformerConfig, r: _TensorReader, put: Any) -> TransformerWeights:
    d, di, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    prefix = "transformer." if "transformer.wte.weight" in r.tensors else ""
    if not prefix and "wte.weight" not in r.tensors:
        prefix = "transformer."
    layers = []
    for i in range(cfg.num_layers):
        p = f"{prefix}h.{i}."
        layers.append(
            LayerWeights(
                attn_norm=put(r.get(p + "ln_1.weight", (d,))),
                attn_norm_bias=put(r.get(p + "ln_1.bias", (d,))),
                qkv=put(r.get(p + "attn.c_attn.weight", (d, 3 * d))),  # Conv1D: already [in, out]
                qkv_bias=put(r.get(p + "attn.c_attn.bias", (3 * d,))),
                out=put(r.get(p + "attn.c_proj.weight", (d, d))),
                out_bias=put(r.get(p + "attn.c_proj.bias", (d,))),
                mlp_norm=put(r.get(p + "ln_2.weight", (d,))),
                mlp_norm_bias=put(r.get(p + "ln_2.bias", (d,))),
                mlp_in=put(r.get(p + "mlp.c_fc.weight", (d, di))),
                mlp_in_bias=put(r.get(p + "mlp.c_fc.bias", (di,))),
                mlp_out=put(r.get(p + "mlp.c_proj.weight", (di, d))),
                mlp_out_bias=put(r.get(p + "mlp.c_proj.bias", (d,))),
            )
        )
    wte = r.get(prefix + "wte.weight", (v, d))
    common = dict(
        final_norm=put(r.get(prefix + "ln_f.weight", (d,))),
        final_norm_bias=put(r.get(prefix + "ln_f.bias", (d,))),
        positions=put(r.get(prefix + "wpe.weight", (cfg.max_position_embeddings, d))),
        layers=layers,
    )
    if cfg.tie_word_embeddings:
        return TransformerWeights(head=put(wte.T), **common)
    head = r.get("lm_head.weight", (v, d))
    return TransformerWeights(head=put(head.T), embed=put(wte), **common)


def _maybe(put: Any, array: np.ndarray | None) -> Array | None:
    return None if array is None else put(array)
