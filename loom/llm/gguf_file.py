"""Read GGUF model files (llama.cpp's format) into Hugging Face form.

:func:`load_gguf` returns a :class:`GGUFModel`: a Hugging Face ``config.json``-style dict,
float32 NumPy tensors under **Hugging Face names and shapes**, a :class:`Tokenizer` rebuilt
from the file's metadata and the raw scalar metadata. The transformer loader can then treat
a ``.gguf`` exactly like a ``config.json`` + ``model.safetensors`` directory.

Design:

* Parsing and dequantization use the ``gguf`` package (``gguf.GGUFReader``,
  ``gguf.quants.dequantize``): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K-quants Q2_K..Q6_K, F16,
  BF16 and F32 (and whatever else ``gguf.quants`` can dequantize).
* GGML lists dimensions fastest-first; NumPy shapes are the reverse. ``attn_q`` of a GGUF
  is ggml ``[in, out]`` = NumPy ``[out, in]``, the ``nn.Linear`` layout Hugging Face uses.
* llama.cpp's converter permutes the rows of LLaMA Q and K projections (interleaved RoPE
  pairs → halves, ``permute(w, n_head)``; K with ``n_head_kv``); this module applies the
  inverse so the weights equal the original checkpoint's.
* GPT-2's converter transposes the ``Conv1D`` weights to ``[out, in]``; they are transposed
  back to Hugging Face's ``[in, out]`` and the duplicated ``output.weight`` is dropped when
  it equals the embeddings (tied).

Everything here is host-side NumPy; the model code moves tensors to the device.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loom.errors import ModelFormatError
from loom.llm.config import TransformerConfig
from loom.llm.gguf_vocab import tokenizer_from_gguf
from loom.llm.tokenizer import Tokenizer

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "GGUFModel",
    "load_gguf",
    "load_gguf_tokenizer",
    "permute_qk",
    "read_gguf_metadata",
    "unpermute_qk",
]

GGUF_MAGIC = b"GGUF"
# general.architecture → Hugging Face model_type loom builds.
SUPPORTED_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "gpt2": "gpt2"}
_SUPPORTED_TEXT = "llama (also mistral and SmolLM-style llama models), gpt2"
_METADATA_ARRAY_LIMIT = 64  # longer arrays (vocabularies) are left out of GGUFModel.metadata
_GGML_MAX_DIMS = 4

_LLAMA_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_GPT2_BLOCK_NAMES = {
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
_GPT2_GLOBAL_NAMES = {
    "token_embd": "transformer.wte",
    "position_embd": "transformer.wpe",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
}
_GPT2_CONV1D = {"attn_qkv", "attn_output", "ffn_up", "ffn_down"}
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL_TENSOR = re.compile(r"^([a-z_]+)\.(weight|bias)$")


@dataclass
class GGUFModel:
    """A GGUF model in Hugging Face form.

    Attributes
    ----------
    config : dict
        Hugging Face ``config.json``-style dict (``architectures``, ``model_type``,
        ``hidden_size``, ... for LLaMA; ``n_embd``, ``n_layer``, ... for GPT-2).
    tensors : dict of str to numpy.ndarray
        float32 weights under Hugging Face names and shapes, e.g.
        ``model.layers.0.self_attn.q_proj.weight`` ``[out, in]``; GPT-2 ``Conv1D``
        weights ``[in, out]``. ``lm_head.weight`` only when it is not tied.
    tokenizer : Tokenizer
        Rebuilt from the file's tokenizer metadata.
    metadata : dict
        Raw GGUF key/values (scalars and short arrays; vocabularies left out), for debugging.
    tensor_types : dict of str to str
        GGML storage type of each tensor (``"Q4_1"``, ``"F32"``, ...) by Hugging Face name.
    path : str
        The file read.
    """

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tokenizer: Tokenizer
    metadata: dict[str, Any]
    tensor_types: dict[str, str] = field(default_factory=dict)
    path: str = ""


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``permute``: Hugging Face Q/K rows → GGUF order.

    Parameters
    ----------
    weights : numpy.ndarray
        ``[n_head * head_dim, in]`` (or a bias ``[n_head * head_dim]``).
    n_head : int
        Number of heads (``num_key_value_heads`` for K).

    Returns
    -------
    numpy.ndarray
        Same shape, rows reordered.
    """
    half = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def unpermute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk`: GGUF Q/K rows → Hugging Face order.

    Parameters
    ----------
    weights : numpy.ndarray
        ``[n_head * head_dim, in]`` (or a bias ``[n_head * head_dim]``) as stored in GGUF.
    n_head : int
        Number of heads (``num_key_value_heads`` for K).

    Returns
    -------
    numpy.ndarray
        Same shape, rows in the original checkpoint's order.
    """
    half = weights.shape[0] // n_head // 2
    return np.ascontiguousarray(
        weights.reshape(n_head, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
    )


# ---------------------------------------------------------------------- reading
def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - gguf is a test dependency
        raise ImportError("reading GGUF files needs the gguf package: pip install 'loom-nn[llm]'") from exc
    return gguf


def _fast_reader_class(gguf: Any) -> type:
    """``GGUFReader`` reading through a plain ndarray view of the memory map, bounds-checked.

    ``np.memmap.__getitem__`` / ``__array_finalize__`` dominate parsing a 49k-token
    vocabulary (~250k small reads); a plain view makes ``GGUFReader`` 3-4x faster. The
    parsed values are identical.

    ``GGUFReader`` trusts the file: a read past the end returns an empty array and an
    array whose count says 2**62 is looped over item by item, growing memory without end.
    Here every count (key/values, tensors, array items, string bytes, dimensions) is
    checked against the bytes left in the file before it is used, and every tensor's
    type, size and offset against the file size, so a lying file fails at once.
    """
    value_type, quant_type = gguf.GGUFValueType, gguf.GGMLQuantizationType
    scalar_sizes = {t: np.dtype(n).itemsize for t, n in gguf.GGUFReader.gguf_scalar_to_np.items()}

    class FastGGUFReader(gguf.GGUFReader):
        def _plain(self) -> np.ndarray:
            plain = self.__dict__.get("_plain_data")
            if plain is None:
                plain = self.__dict__["_plain_data"] = self.data.view(np.ndarray)
            return plain

        def _get(self, offset, dtype, count=1, override_order=None):  # type: ignore[override]
            plain = self._plain()
            dtype = np.dtype(dtype)
            offset, count = int(offset), int(count)
            end = offset + dtype.itemsize * count
            if offset < 0 or count < 0 or end > plain.shape[0]:
                raise ValueError(
                    f"reading {count} x {dtype.name} at byte {offset} runs past the end of the file "
                    f"({plain.shape[0]} bytes)"
                )
            array = plain[offset:end].view(dtype)[:count]
            order = self.byte_order if override_order is None else override_order
            return array if order == "I" else array.view(array.dtype.newbyteorder(order))

        def _fits(self, offset: int, count: int, item_bytes: int, what: str) -> None:
            left = self._plain().shape[0] - int(offset)
            if int(count) * item_bytes > left:
                raise ValueError(f"{what} says {int(count)} items, more than the {left} bytes left can hold")

        def _get_field_parts(self, orig_offs, raw_type):  # type: ignore[override]
            if raw_type == value_type.ARRAY:
                item_type = int(self._get(orig_offs, np.uint32)[0])
                count = int(self._get(orig_offs + 4, np.uint64)[0])
                if item_type == value_type.STRING:
                    smallest = 8
                elif item_type == value_type.ARRAY:
                    smallest = 12
                elif item_type in scalar_sizes:
                    smallest = scalar_sizes[item_type]
                else:
                    raise ValueError(f"array of unknown value type {item_type} at byte {orig_offs}")
                self._fits(orig_offs + 12, count, smallest, f"the array at byte {orig_offs}")
            return super()._get_field_parts(orig_offs, raw_type)

        def _build_fields(self, offs, count):  # type: ignore[override]
            self._fits(offs, count, 13, "kv_count")  # key length 8, type 4, value >= 1
            return super()._build_fields(offs, count)

        def _build_tensor_info(self, offs, count):  # type: ignore[override]
            self._fits(offs, count, 24, "tensor_count")  # name length 8, n_dims 4, type 4, offset 8
            return super()._build_tensor_info(offs, count)

        def _get_tensor_info_field(self, orig_offs):  # type: ignore[override]
            n_dims = self._get(orig_offs + 8 + int(self._get(orig_offs, np.uint64)[0]), np.uint32)
            if int(n_dims[0]) > _GGML_MAX_DIMS:
                found = int(n_dims[0])
                raise ValueError(f"tensor info at byte {orig_offs}: expected at most 4 dimensions, got {found}")
            return super()._get_tensor_info_field(orig_offs)

        def _build_tensors(self, start_offs, fields):  # type: ignore[override]
            size = self._plain().shape[0]
            for info in fields:
                _, name_data, _, dims, raw_dtype, offset = info.parts
                name = bytes(name_data).decode("utf-8", errors="replace")
                try:
                    kind = quant_type(int(raw_dtype[0]))
                    block, type_size = gguf.GGML_QUANT_SIZES[kind]
                except (ValueError, KeyError):
                    raise ValueError(f"tensor {name!r} has unknown type {int(raw_dtype[0])}") from None
                elements = math.prod(int(d) for d in dims)
                if elements % block:
                    raise ValueError(f"tensor {name!r}: expected whole {kind.name} blocks of {block}, got {elements}")
                start, nbytes = int(start_offs) + int(offset[0]), elements // block * type_size
                if start + nbytes > size:
                    raise ValueError(
                        f"tensor {name!r}: {nbytes} bytes at byte {start} run past the end of the file ({size} bytes)"
                    )
            return super()._build_tensors(start_offs, fields)

    return FastGGUFReader


def _open_reader(path: Path) -> Any:
    gguf = _import_gguf()
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != GGUF_MAGIC:
        raise ModelFormatError(f"{path}: not a GGUF file (starts with {head!r}, expected the magic {GGUF_MAGIC!r})")
    try:
        return _fast_reader_class(gguf)(path)
    except Exception as exc:  # GGUFReader raises ValueError / IndexError / KeyError on bad data
        raise ModelFormatError(f"{path}: truncated or corrupt GGUF file ({size} bytes, invalid): {exc}") from exc


def _scalar(value: Any, value_type: Any, gguf: Any) -> Any:
    if value_type == gguf.GGUFValueType.BOOL:
        return bool(value)
    if value_type == gguf.GGUFValueType.FLOAT32:
        return float(str(np.float32(value)))  # shortest decimal, e.g. 1e-05 not 9.99999974e-06
    if value_type == gguf.GGUFValueType.FLOAT64:
        return float(value)
    return int(value)


def _field_value(reader_field: Any, gguf: Any) -> Any:
    kinds = reader_field.types
    if not kinds:
        return None
    parts = reader_field.parts
    if kinds[0] == gguf.GGUFValueType.STRING:
        return bytes(parts[reader_field.data[0]]).decode("utf-8", errors="replace")
    if kinds[0] != gguf.GGUFValueType.ARRAY:
        return _scalar(parts[reader_field.data[0]][0], kinds[0], gguf)
    if len(kinds) < 2:
        return []
    if kinds[1] == gguf.GGUFValueType.STRING:
        return [bytes(parts[i]).decode("utf-8", errors="replace") for i in reader_field.data]
    if kinds[1] == gguf.GGUFValueType.ARRAY:
        return None  # nested arrays: not used by any key loom reads
    if not reader_field.data:
        return []
    values = np.concatenate([parts[i] for i in reader_field.data])
    if kinds[1] == gguf.GGUFValueType.FLOAT32:
        return [float(v) for v in values]
    if kinds[1] == gguf.GGUFValueType.BOOL:
        return [bool(v) for v in values]
    return values.tolist()


def _reader_metadata(reader: Any, path: Path) -> dict[str, Any]:
    gguf = _import_gguf()
    metadata: dict[str, Any] = {}
    for key, reader_field in reader.fields.items():
        try:
            metadata[key] = _field_value(reader_field, gguf)
        except Exception as exc:
            raise ModelFormatError(f"{path}: cannot read GGUF metadata key {key!r}: {exc}") from exc
    return metadata


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """All key/values of a GGUF file, decoded to Python values.

    Parameters
    ----------
    path : str or path-like
        The ``.gguf`` file.

    Returns
    -------
    dict
        e.g. ``{"general.architecture": "llama", "llama.block_count": 30,
        "tokenizer.ggml.tokens": [...], ...}``.

    Raises
    ------
    ModelFormatError
        When the file is missing, not GGUF, truncated or corrupt.
    """
    path = Path(path)
    return _reader_metadata(_open_reader(path), path)


def load_gguf_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer described by a GGUF file's metadata (no tensors are read).

    Parameters
    ----------
    path : str or path-like
        The ``.gguf`` file.

    Returns
    -------
    Tokenizer
    """
    path = Path(path)
    return tokenizer_from_gguf(read_gguf_metadata(path), str(path))


# ---------------------------------------------------------------------- config
def _meta_int(metadata: Mapping[str, Any], key: str, path: Path, default: int | None = None) -> int:
    """A positive integer hyper-parameter of the metadata (``default`` when absent, else required)."""
    value = metadata.get(key, default)
    if value is None:
        raise ModelFormatError(f"{path}: GGUF metadata key {key!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelFormatError(f"{path}: GGUF metadata {key} must be a positive integer, got {value!r:.100}")
    return value


def _rope_scaling(metadata: Mapping[str, Any], arch: str) -> dict[str, Any] | None:
    kind = metadata.get(f"{arch}.rope.scaling.type")
    factor = metadata.get(f"{arch}.rope.scale_linear") if kind is None else None
    if kind is None and factor is not None:
        kind = "linear"
    if kind in (None, "none"):
        return None
    scaling: dict[str, Any] = {"rope_type": kind, "type": kind}
    factor = metadata.get(f"{arch}.rope.scaling.factor", factor)
    if factor is not None:
        scaling["factor"] = factor
    original = metadata.get(f"{arch}.rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = original
    return scaling


def _llama_config(metadata: Mapping[str, Any], arch: str, vocab_size: int, path: Path) -> dict:
    hidden = _meta_int(metadata, f"{arch}.embedding_length", path)
    heads = _meta_int(metadata, f"{arch}.attention.head_count", path)
    kv_heads = _meta_int(metadata, f"{arch}.attention.head_count_kv", path, heads)
    head_dim = _meta_int(metadata, f"{arch}.attention.key_length", path, max(hidden // heads, 1))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": _meta_int(metadata, f"{arch}.feed_forward_length", path),
        "num_hidden_layers": _meta_int(metadata, f"{arch}.block_count", path),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": metadata.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": metadata.get(f"{arch}.rope.freq_base", 10000.0),
        "max_position_embeddings": _meta_int(metadata, f"{arch}.context_length", path, 2048),
    }
    scaling = _rope_scaling(metadata, arch)
    if scaling is not None:
        config["rope_scaling"] = scaling
    return config


def _gpt2_config(metadata: Mapping[str, Any], vocab_size: int, path: Path) -> dict:
    n_embd = _meta_int(metadata, "gpt2.embedding_length", path)
    n_inner = _meta_int(metadata, "gpt2.feed_forward_length", path, 4 * n_embd)
    n_layer = _meta_int(metadata, "gpt2.block_count", path)
    n_head = _meta_int(metadata, "gpt2.attention.head_count", path)
    n_positions = _meta_int(metadata, "gpt2.context_length", path, 1024)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_embd": n_embd,
        "n_layer": n_layer,
        "n_head": n_head,
        "n_positions": n_positions,
        # Hugging Face writes null for the default 4 * n_embd.
        "n_inner": None if n_inner in (None, 4 * n_embd) else int(n_inner),
        "layer_norm_epsilon": metadata.get("gpt2.attention.layer_norm_epsilon", 1e-5),
        "activation_function": "gelu_new",  # llama.cpp's GPT-2 graph uses the tanh GELU
        # GPT2Config.attribute_map aliases, for loaders that read the generic names.
        "hidden_size": n_embd,
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "max_position_embeddings": n_positions,
    }


# ---------------------------------------------------------------------- tensors
def _dequantize(reader_tensor: Any, path: Path) -> np.ndarray:
    gguf = _import_gguf()
    kind = reader_tensor.tensor_type
    shape = tuple(int(d) for d in reversed(reader_tensor.shape.tolist()))  # ggml → NumPy order
    try:
        if kind == gguf.GGMLQuantizationType.F32:
            values = np.array(reader_tensor.data, dtype=np.float32)  # copy out of the mmap
        elif kind == gguf.GGMLQuantizationType.F16:
            values = reader_tensor.data.astype(np.float32)
        else:
            values = gguf.quants.dequantize(reader_tensor.data, kind)
    except NotImplementedError as exc:
        raise ModelFormatError(
            f"{path}: tensor {reader_tensor.name!r} is stored as {kind.name}, which the gguf package cannot dequantize"
        ) from exc
    except (ValueError, TypeError, IndexError, AssertionError) as exc:
        raise ModelFormatError(f"{path}: tensor {reader_tensor.name!r} ({kind.name}) cannot be decoded: {exc}") from exc
    if values.size != math.prod(shape):
        raise ModelFormatError(
            f"{path}: tensor {reader_tensor.name!r} has {values.size} values, expected shape {shape}"
        )
    return np.ascontiguousarray(values.reshape(shape), dtype=np.float32)


def _llama_tensor(name: str, values: np.ndarray, config: Mapping[str, Any]) -> tuple[str | None, np.ndarray]:
    block = _BLOCK_TENSOR.match(name)
    if block:
        layer, part, kind = block.groups()
        target = _LLAMA_BLOCK_NAMES.get(part)
        if target is None:
            return None, values
        if part in ("attn_q", "attn_k"):
            heads = config["num_attention_heads" if part == "attn_q" else "num_key_value_heads"]
            if values.shape[0] % (2 * heads):
                raise ModelFormatError(
                    f"{config['_source']}: tensor {name!r} has {values.shape[0]} rows, expected a multiple of "
                    f"2 x {heads} heads"
                )
            values = unpermute_qk(values, heads)
        return f"model.layers.{layer}.{target}.{kind}", values
    top = _GLOBAL_TENSOR.match(name)
    target = _LLAMA_GLOBAL_NAMES.get(top.group(1)) if top else None
    return (f"{target}.{top.group(2)}" if target else None), values


def _gpt2_tensor(name: str, values: np.ndarray, config: Mapping[str, Any]) -> tuple[str | None, np.ndarray]:
    block = _BLOCK_TENSOR.match(name)
    if block:
        layer, part, kind = block.groups()
        target = _GPT2_BLOCK_NAMES.get(part)
        if target is None:
            return None, values
        if part in _GPT2_CONV1D and kind == "weight":
            values = np.ascontiguousarray(values.T)  # [out, in] → Conv1D [in, out]
        return f"transformer.h.{layer}.{target}.{kind}", values
    top = _GLOBAL_TENSOR.match(name)
    target = _GPT2_GLOBAL_NAMES.get(top.group(1)) if top else None
    return (f"{target}.{top.group(2)}" if target else None), values


_TENSOR_MAPPERS: dict[str, Callable[[str, np.ndarray, Mapping[str, Any]], tuple[str | None, np.ndarray]]] = {
    "llama": _llama_tensor,
    "gpt2": _gpt2_tensor,
}


def _public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in metadata.items()
        if not isinstance(value, list) or len(value) <= _METADATA_ARRAY_LIMIT
    }


def load_gguf(path: str | os.PathLike[str]) -> GGUFModel:
    """Load a GGUF model: Hugging Face config, float32 tensors, tokenizer.

    Parameters
    ----------
    path : str or path-like
        A ``.gguf`` file of a supported architecture (``general.architecture`` ``llama``
        — which covers Mistral and SmolLM — or ``gpt2``).

    Returns
    -------
    GGUFModel
        ``config`` (Hugging Face ``config.json`` form), ``tensors`` (float32, Hugging Face
        names and shapes, Q/K un-permuted), ``tokenizer``, ``metadata``.

    Raises
    ------
    ModelFormatError
        Missing, non-GGUF, truncated or corrupt file; unsupported architecture (the message
        names the architecture found and the supported ones); missing hyper-parameters.

    Examples
    --------
    >>> model = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")     # doctest: +SKIP
    >>> model.config["num_hidden_layers"], model.tensors["model.embed_tokens.weight"].shape
    (30, (49152, 576))                                            # doctest: +SKIP
    """
    path = Path(path)
    reader = _open_reader(path)
    metadata = _reader_metadata(reader, path)
    arch = metadata.get("general.architecture")
    model_type = SUPPORTED_ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if model_type is None:
        raise ModelFormatError(
            f"{path}: unsupported GGUF architecture general.architecture={arch!r}; supported: {_SUPPORTED_TEXT}"
        )
    reader_tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in reader_tensors:
        raise ModelFormatError(f"{path}: GGUF file is missing the token_embd.weight tensor")
    vocab_size = int(reader_tensors["token_embd.weight"].shape[-1])
    if model_type == "llama":
        config = _llama_config(metadata, arch, vocab_size, path)
    else:
        config = _gpt2_config(metadata, vocab_size, path)
    TransformerConfig.from_dict(config, source=f"{path} (metadata)")  # every value in range before any tensor

    tokenizer = tokenizer_from_gguf(metadata, str(path))
    mapper = _TENSOR_MAPPERS[model_type]
    tensors: dict[str, np.ndarray] = {}
    tensor_types: dict[str, str] = {}
    skipped = []
    for name, reader_tensor in reader_tensors.items():
        hf_name, values = mapper(name, _dequantize(reader_tensor, path), {**config, "_source": str(path)})
        if hf_name is None:
            skipped.append(name)
            continue
        tensors[hf_name] = values
        tensor_types[hf_name] = reader_tensor.tensor_type.name
    if skipped:
        warnings.warn(
            f"{path}: ignored GGUF tensors loom does not use: {', '.join(sorted(skipped))}",
            stacklevel=2,
        )
    embed_name = "model.embed_tokens.weight" if model_type == "llama" else "transformer.wte.weight"
    head = tensors.get("lm_head.weight")
    if head is not None and head.shape == tensors[embed_name].shape and np.array_equal(head, tensors[embed_name]):
        del tensors["lm_head.weight"]  # the converter duplicated a tied head (GPT-2 does)
        del tensor_types["lm_head.weight"]
    config["tie_word_embeddings"] = "lm_head.weight" not in tensors
    if model_type == "llama":
        config["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in tensors
        config["mlp_bias"] = False
    for key, config_key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("padding_token_id", "pad_token_id"),
    ):
        token_id = metadata.get(f"tokenizer.ggml.{key}")
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            config[config_key] = token_id
    config["torch_dtype"] = "float32"
    return GGUFModel(
        config=config,
        tensors=tensors,
        tokenizer=tokenizer,
        metadata=_public_metadata(metadata),
        tensor_types=tensor_types,
        path=str(path),
    )
