"""The ``welvet`` Python package's API (LOOM's ctypes binding), on loom's engine.

``import loom.compat.welvet as welvet`` runs code written for ``welvet`` 0.0.6
(spec ``python-binding.md``) without the native ``libloom``: the same names,
arguments and return values — the *simple API* on one global network, the
handle-based API and the transformer functions.

Where welvet is broken, this module does what its docstrings promise (each is
listed in ``docs/porting-from-loom.md``): the handle functions work (their C
symbols are missing in welvet 0.0.6); ``train_epoch`` back-propagates the MSE
gradient (welvet passes the target as the gradient); ``get_output`` returns the
last output (welvet: always ``[]``); ``Activation.LINEAR`` is the identity (5)
instead of an alias of Softplus; ``train_simple`` accepts snake_case keys too.
Errors are :mod:`loom.errors` exceptions; "no network created" is a
:class:`NoNetworkError`, also a ``RuntimeError`` as in welvet.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from loom._version import __version__ as _loom_version
from loom.backend import cupy_available, to_numpy
from loom.compat.bridge import network_summary
from loom.compat.layer_json import layer_config_from_json, layer_config_to_json
from loom.errors import LoomError
from loom.nn.network import Network, new_network
from loom.nn.network import create_network_from_json as _create
from loom.nn.network import load_model_from_string as _load
from loom.nn.registry import LAYER_INIT_FUNCTIONS
from loom.nn.training import TrainingConfig
from loom.ops.activations import Activation

__all__ = [
    "Activation",
    "NoNetworkError",
    "backward",
    "backward_simple",
    "call_layer_init",
    "cleanup_gpu",
    "configure_sequential_network",
    "create_network",
    "create_network_from_json",
    "decode_tokens",
    "encode_text",
    "evaluate_network_simple",
    "forward",
    "forward_simple",
    "free_network",
    "generate_stream",
    "generate_text",
    "get_network_info",
    "get_network_info_simple",
    "get_output",
    "get_version",
    "init_dense_layer",
    "initialize_gpu",
    "list_layer_init_functions",
    "load_model_from_string",
    "load_model_simple",
    "load_tokenizer_from_bytes",
    "load_transformer_from_bytes",
    "save_model_simple",
    "save_model_to_string",
    "set_layer",
    "train",
    "train_epoch",
    "train_simple",
    "update_weights",
    "update_weights_simple",
]


class NoNetworkError(LoomError, RuntimeError):
    """A simple-API call before ``create_network_from_json`` / ``load_model_simple``, or an unknown handle."""


_lock = threading.RLock()
_global: dict[str, Network] = {}
_handles: dict[int, Network] = {}
_next_handle = itertools.count(1)


# ---------------------------------------------------------------------------------------------- simple API
def _network() -> Network:
    net = _global.get("net")
    if net is None:
        raise NoNetworkError("no network created: call create_network_from_json(...) or load_model_simple(...) first")
    return net


def create_network_from_json(json_config: str | dict[str, Any]) -> None:
    """Build the global network from a LOOM JSON config (weights initialised)."""
    net = _create(json_config)
    with _lock:
        _global["net"] = net


def forward_simple(inputs: Sequence[float]) -> list[float]:
    """Forward pass of the global network: the output as a list of floats."""
    return _network().ForwardCPU(inputs)[0]


def backward_simple(gradients: Sequence[float]) -> None:
    """Back-propagate ``dL/d(output)`` through the global network (stores the gradients)."""
    _network().backward(gradients)


def update_weights_simple(learning_rate: float) -> None:
    """SGD step of the global network with the stored gradients."""
    _network().update_weights(learning_rate)


def train_simple(batches: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> dict[str, Any]:
    """``Train`` the global network: ``[{"Input", "Target"}]`` and ``{"Epochs", "LearningRate", ...}``.

    Returns
    -------
    dict
        LOOM's ``TrainingResult`` keys (``FinalLoss``, ``BestLoss``, ``TotalTime`` ns, ``AvgThroughput``,
        ``LossHistory``, ``EvalMetrics``).
    """
    return _network().train(list(batches), dict(config)).to_dict()


def save_model_simple(model_id: str = "my_model") -> str:
    """The global network as LOOM bundle JSON text."""
    return _network().save_model_to_string(model_id)


def load_model_simple(json_string: str, model_id: str = "my_model") -> None:
    """Replace the global network with a model of a saved bundle."""
    net = _load(json_string, model_id)
    with _lock:
        _global["net"] = net


def get_network_info_simple() -> dict[str, int]:
    """``{"batch_size", "grid_cols", "grid_rows", "layers_per_cell", "total_layers"}`` of the global network."""
    return network_summary(_network())


def evaluate_network_simple(inputs: Sequence[Sequence[float]], expected_outputs: Sequence[float]) -> dict[str, Any]:
    """LOOM's ``DeviationMetrics`` of the global network as a dict (``score``, ``avg_deviation``, ...)."""
    return _network().evaluate_network(inputs, expected_outputs).to_dict()


# ---------------------------------------------------------------------------------------------- handles
def _register(net: Network) -> int:
    with _lock:
        handle = next(_next_handle)
        _handles[handle] = net
    return handle


def _get(handle: int | Network) -> Network:
    if isinstance(handle, Network):
        return handle
    net = _handles.get(handle)  # type: ignore[arg-type]
    if net is None:
        raise NoNetworkError(f"handle {handle!r}: no such network (freed, or never created)")
    return net


def create_network(
    input_size: int,
    hidden_size: int | None = None,
    output_size: int | None = None,
    use_gpu: bool = False,
    grid_rows: int = 2,
    grid_cols: int = 2,
    layers_per_cell: int = 3,
) -> int:
    """An empty grid network (LOOM ``NewNetwork``); returns its handle.

    With ``hidden_size``, ``grid_rows = grid_cols = max(1, int(sqrt(hidden_size / layers_per_cell)))``
    as in welvet. ``output_size`` is informational (as in welvet); fill the layers with
    :func:`set_layer` or :func:`configure_sequential_network`. ``use_gpu`` puts it on CuPy.
    """
    if hidden_size is not None:
        grid_rows = grid_cols = max(1, int(math.sqrt(hidden_size / layers_per_cell)))
    net = new_network(input_size, grid_rows, grid_cols, layers_per_cell, backend="cupy" if use_gpu else None)
    return _register(net)


def load_model_from_string(model_json: str, model_id: str = "loaded_model") -> int:
    """Load a bundle's model; returns its handle."""
    return _register(_load(model_json, model_id))


def save_model_to_string(handle: int | Network, model_id: str = "saved_model") -> str:
    """The network as LOOM bundle JSON text."""
    return _get(handle).save_model_to_string(model_id)


def free_network(handle: int | Network) -> None:
    """Forget a handle (its network is released when nothing else holds it)."""
    with _lock:
        if isinstance(handle, Network):
            for key in [k for k, v in _handles.items() if v is handle]:
                del _handles[key]
        else:
            _handles.pop(handle, None)


def forward(handle: int | Network, input_data: Sequence[float]) -> list[float]:
    """Forward pass: the output as a list of floats."""
    return _get(handle).ForwardCPU(input_data)[0]


def get_output(handle: int | Network, output_size: int | None = None) -> list[float]:
    """The output of the last forward pass (first ``output_size`` values; welvet returned ``[]``)."""
    activations = _get(handle).activations()
    values = to_numpy(activations[-1]).reshape(-1).tolist() if activations else []
    return values if output_size is None else values[:output_size]


def backward(handle: int | Network, target_data: Sequence[float]) -> None:
    """Back-propagate ``target_data`` **as the output gradient** (welvet's semantics despite the name)."""
    _get(handle).backward(target_data)


def update_weights(handle: int | Network, learning_rate: float) -> None:
    """SGD step with the stored gradients."""
    _get(handle).update_weights(learning_rate)


def initialize_gpu(handle: int | Network) -> bool:
    """Move the network to CuPy; False (and nothing moved) when CuPy / CUDA is missing."""
    if not cupy_available():
        return False
    try:
        _get(handle).to_backend("cupy")
    except LoomError:
        return False
    return True


def cleanup_gpu(handle: int | Network) -> None:
    """Move the network back to NumPy."""
    _get(handle).to_backend("numpy")


def get_version() -> str:
    """loom's version string."""
    return f"loom-nn {_loom_version}"


def init_dense_layer(input_size: int, output_size: int, activation: int = 0) -> dict[str, Any]:
    """``InitDenseLayer`` as a dict with Go's ``LayerConfig`` field names."""
    return layer_config_to_json(LAYER_INIT_FUNCTIONS["InitDenseLayer"](input_size, output_size, activation))


def call_layer_init(function_name: str, *args: Any) -> dict[str, Any]:
    """A registry function by name, e.g. ``call_layer_init("InitDenseLayer", 784, 392, 0)``.

    The arguments may also come as one list (``call_layer_init("InitDenseLayer", [784, 392, 0])``,
    welvet's README style). Returns the ``LayerConfig`` as a dict with Go field names.
    """
    from loom.nn.registry import call_layer_init as _call

    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])
    return layer_config_to_json(_call(function_name, *args))


def list_layer_init_functions() -> list[dict[str, Any]]:
    """``[{"Name", "NumArgs", "ArgTypes", "ArgNames"}]`` of the registry (sorted by name)."""
    import json

    from loom.compat.functions import ListLayerInitFunctions

    return json.loads(ListLayerInitFunctions())


def set_layer(handle: int | Network, row: int, col: int, layer_index: int, layer_config: Mapping[str, Any]) -> None:
    """Put a layer (a dict from :func:`init_dense_layer` / :func:`call_layer_init`) at a grid position."""
    _get(handle).set_layer(row, col, layer_index, layer_config_from_json(dict(layer_config), "layer_config"))


def get_network_info(handle: int | Network) -> dict[str, int]:
    """``{"batch_size", "grid_cols", "grid_rows", "layers_per_cell", "total_layers"}``."""
    return network_summary(_get(handle))


def configure_sequential_network(
    handle: int | Network, layer_sizes: Sequence[int], activations: Sequence[int] | None = None
) -> None:
    """Dense layers ``sizes[i] -> sizes[i+1]`` at ``(0, 0, i)``; default ReLU, then Sigmoid for the last."""
    n = len(layer_sizes) - 1
    if activations is None:
        activations = [int(Activation.SCALED_RELU)] * (n - 1) + [int(Activation.SIGMOID)]
    net = _get(handle)
    for i in range(n):
        cfg = LAYER_INIT_FUNCTIONS["InitDenseLayer"](layer_sizes[i], layer_sizes[i + 1], activations[i])
        net.set_layer(0, 0, i, cfg)


def train_epoch(
    handle: int | Network, inputs: Sequence[Sequence[float]], targets: Sequence[Sequence[float]], learning_rate=0.01
) -> float:
    """One pass of per-sample SGD with the MSE loss; returns the mean loss (welvet's signature).

    Unlike welvet 0.0.6 (which back-propagated the *target*), the gradient is the MSE's ``2(y - t) / n``.
    """
    net = _get(handle)
    total = 0.0
    for x, t in zip(inputs, targets, strict=True):
        y = to_numpy(net.forward(x)).reshape(-1)
        target = np.asarray(t, dtype=y.dtype).reshape(-1)
        total += float(np.mean((y - target) ** 2))
        net.backward(2.0 * (y - target) / y.size)
        net.update_weights(learning_rate)
    return total / max(1, len(inputs))


def train(
    handle: int | Network, batches: Sequence[Any], config: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """LOOM's ``Train`` with welvet's snake_case config and defaults (epochs 5, learning_rate 0.001).

    ``batches``: ``(input, target)`` pairs or ``{"Input", "Target"}`` dicts; ``config`` (or keyword
    arguments, as in welvet's README) with snake_case or LOOM keys. Returns the ``TrainingResult`` dict.
    """
    settings: dict[str, Any] = {"epochs": 5, "learning_rate": 0.001}
    settings.update(config or {})
    settings.update(kwargs)
    return _get(handle).train(list(batches), TrainingConfig.from_dict(settings)).to_dict()


# ---------------------------------------------------------------------------------------------- transformer
def load_tokenizer_from_bytes(data: bytes) -> dict[str, Any]:
    """Load the default tokenizer (``tokenizer.json`` or GGUF bytes): ``{"success", "vocab_size", "message"}``."""
    from loom.llm.api import load_tokenizer_from_bytes as _impl

    return _impl(data)


def load_transformer_from_bytes(config_data: bytes, weights_data: bytes | None = None) -> dict[str, Any]:
    """Load the default model (config + safetensors bytes, or GGUF bytes alone)."""
    from loom.llm.api import load_transformer_from_bytes as _impl

    return _impl(config_data, weights_data)


def encode_text(text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids with the default tokenizer (the embedded SmolLM2's when none was loaded)."""
    from loom.llm.api import encode_text as _impl

    return _impl(text, add_special_tokens)


def decode_tokens(ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of ``ids`` with the default tokenizer."""
    from loom.llm.api import decode_tokens as _impl

    return _impl(ids, skip_special_tokens)


def generate_text(prompt: str, max_tokens: int = 50, temperature: float = 0.7) -> str:
    """Prompt plus completion with the default model (the embedded SmolLM2 when none was loaded)."""
    from loom.llm.api import generate_text as _impl

    return _impl(prompt, max_tokens, temperature)


def generate_stream(prompt: str, max_tokens: int = 50, temperature: float = 0.7) -> Iterator[str]:
    """Yield the completion piece by piece with the default model."""
    from loom.llm.api import generate_stream as _impl

    return _impl(prompt, max_tokens, temperature)
