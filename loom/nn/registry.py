"""LOOM's layer-init registry: ``InitDenseLayer`` & co., callable by name.

The registry functions use LOOM's *registry* initialisations (He / Xavier
normal, LSTM forget bias 1), which differ from ``InitializeWeights``. Arguments
are converted to the declared types. Each returns a :class:`LayerConfig` with
parameters, ready for ``Network.set_layer``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np

from loom.errors import ConfigError
from loom.nn.layer_config import GridPosition, LayerConfig
from loom.nn.layers import kind_for
from loom.ops.activations import Activation, activation_from_name

__all__ = [
    "LAYER_INIT_FUNCTIONS",
    "call_layer_init",
    "init_conv2d_layer",
    "init_dense_layer",
    "init_entmax_layer",
    "init_grid_softmax_layer",
    "init_gumbel_softmax_layer",
    "init_hierarchical_softmax_layer",
    "init_layer_norm_layer",
    "init_lstm_layer",
    "init_masked_softmax_layer",
    "init_multi_head_attention_layer",
    "init_multi_head_attention_layer_loom",
    "init_parallel_layer",
    "init_rms_norm_layer",
    "init_rnn_layer",
    "init_softmax_layer",
    "init_sparsemax_layer",
    "init_swiglu_layer",
    "init_temperature_softmax_layer",
    "list_layer_init_functions",
]

_rng = np.random.default_rng()


def _normal(shape: tuple[int, ...], std: float, rng: np.random.Generator | None) -> np.ndarray:
    return ((rng or _rng).standard_normal(shape) * std).astype(np.float32)


def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


#: An activation: LOOM's id (``0`` = ScaledReLU, ``1`` = Sigmoid, ...), its name (``"relu"``) or the enum.
ActivationLike = int | str | Activation


def _activation(value: Any) -> Activation:
    return activation_from_name(value, "activation")


def _finish(cfg: LayerConfig, params: dict[str, np.ndarray]) -> LayerConfig:
    expected = kind_for(cfg.type).param_shapes(cfg)
    missing = set(expected) - set(params)
    for name in missing:  # kinds may own extra parameters: start them like InitializeWeights would
        params[name] = _zeros(expected[name])
    cfg.params = {name: params[name].reshape(expected[name]) for name in expected}
    return cfg


def init_dense_layer(
    input_size: int, output_size: int, activation: ActivationLike = 0, *, seed: int | None = None
) -> LayerConfig:
    """Dense layer with He-normal kernel (std ``sqrt(2 / input_size)``) and zero biases."""
    rng = np.random.default_rng(seed) if seed is not None else None
    cfg = LayerConfig(
        type="dense", activation=_activation(activation), input_size=int(input_size), output_size=int(output_size)
    )
    return _finish(
        cfg,
        {
            "kernel": _normal((cfg.input_size, cfg.output_size), math.sqrt(2.0 / cfg.input_size), rng),
            "biases": _zeros((cfg.output_size,)),
        },
    )


def init_conv2d_layer(
    input_height: int,
    input_width: int,
    input_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    filters: int,
    activation: ActivationLike = 0,
    *,
    seed: int | None = None,
) -> LayerConfig:
    """Conv2D layer; output size ``(in + 2 p - k) / s + 1``; He-normal kernel, zero bias."""
    rng = np.random.default_rng(seed) if seed is not None else None
    h, w, c, k, s, p, f = (
        int(v) for v in (input_height, input_width, input_channels, kernel_size, stride, padding, filters)
    )
    if s <= 0:
        raise ConfigError(f"stride: expected a positive integer, got {s}")
    cfg = LayerConfig(
        type="conv2d",
        activation=_activation(activation),
        input_height=h,
        input_width=w,
        input_channels=c,
        kernel_size=k,
        stride=s,
        padding=p,
        filters=f,
        output_height=(h + 2 * p - k) // s + 1,
        output_width=(w + 2 * p - k) // s + 1,
    )
    return _finish(cfg, {"kernel": _normal((f, c, k, k), math.sqrt(2.0 / (c * k * k)), rng), "conv_bias": _zeros((f,))})


def init_multi_head_attention_layer(
    d_model: int | LayerConfig,
    num_heads: int | bool = 1,
    seq_length: int = 1,
    num_kv_heads: int = 0,
    *,
    seed: int | None = None,
) -> LayerConfig:
    """Multi-head attention with Xavier-normal projections and zero biases.

    Also accepts LOOM's Go signature ``(cfg: LayerConfig, is_gpu: bool)``: the
    given config's weights are initialised in place and it is returned.
    """
    rng = np.random.default_rng(seed) if seed is not None else None
    if isinstance(d_model, LayerConfig):
        cfg = d_model
        cfg.type = "multi_head_attention"
    else:
        d, h = int(d_model), int(num_heads)
        if h <= 0 or d % h:
            raise ConfigError(f"num_heads: must be positive and divide d_model={d}, got {h}")
        cfg = LayerConfig(
            type="multi_head_attention",
            d_model=d,
            num_heads=h,
            head_dim=d // h,
            num_kv_heads=int(num_kv_heads),
            seq_length=int(seq_length),
        )
    shapes = kind_for(cfg.type).param_shapes(cfg)
    params = {}
    for name, shape in shapes.items():
        if len(shape) == 2:
            params[name] = _normal(shape, math.sqrt(2.0 / (shape[0] + shape[1])), rng)
        else:
            params[name] = _zeros(shape)
    return _finish(cfg, params)


def init_rnn_layer(
    input_size: int, hidden_size: int, batch_size: int = 1, seq_length: int = 1, *, seed: int | None = None
) -> LayerConfig:
    """RNN (tanh) with Xavier-normal weights and zero bias (``batch_size`` is unused, as in LOOM)."""
    rng = np.random.default_rng(seed) if seed is not None else None
    i, h = int(input_size), int(hidden_size)
    cfg = LayerConfig(type="rnn", activation=Activation.TANH, input_size=i, hidden_size=h, seq_length=int(seq_length))
    return _finish(
        cfg,
        {
            "weight_ih": _normal((h, i), math.sqrt(2.0 / (i + h)), rng),
            "weight_hh": _normal((h, h), math.sqrt(2.0 / (2 * h)), rng),
            "bias_h": _zeros((h,)),
        },
    )


def init_lstm_layer(
    input_size: int, hidden_size: int, batch_size: int = 1, seq_length: int = 1, *, seed: int | None = None
) -> LayerConfig:
    """LSTM with Xavier-normal weights, zero biases and forget-gate bias 1 (LOOM's registry init)."""
    rng = np.random.default_rng(seed) if seed is not None else None
    i, h = int(input_size), int(hidden_size)
    cfg = LayerConfig(type="lstm", activation=Activation.TANH, input_size=i, hidden_size=h, seq_length=int(seq_length))
    params: dict[str, np.ndarray] = {}
    for gate in "ifgo":
        params[f"weight_i{gate}"] = _normal((h, i), math.sqrt(2.0 / (i + h)), rng)
        params[f"weight_h{gate}"] = _normal((h, h), math.sqrt(1.0 / h), rng)
        params[f"bias_{gate}"] = np.full((h,), 1.0 if gate == "f" else 0.0, dtype=np.float32)
    # the LSTM kind stores its gates fused; it converts LOOM's twelve arrays
    return _finish(cfg, kind_for("lstm").import_weights(cfg, params, "InitLSTMLayer"))


def init_multi_head_attention_layer_loom(
    d_model: int | LayerConfig,
    num_heads: int | bool = 1,
    batch_size: int = 1,
    seq_length: int = 1,
    *,
    num_kv_heads: int = 0,
    seed: int | None = None,
) -> LayerConfig:
    """``InitMultiHeadAttentionLayer`` with the LOOM README's arguments ``(dModel, numHeads, batchSize, seqLength)``.

    ``batch_size`` is accepted for the README's signature and not stored: the network's
    ``batch_size`` decides how many samples a forward pass holds. Go's registry form
    ``(cfg: LayerConfig, is_gpu: bool)`` is accepted too (the config's weights are initialised).

    Examples
    --------
    >>> cfg = init_multi_head_attention_layer_loom(512, 8, 32, 256)
    >>> cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.seq_length
    (512, 8, 64, 256)
    """
    if isinstance(d_model, LayerConfig):
        return init_multi_head_attention_layer(d_model, num_heads, seed=seed)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | float) or batch_size < 0:
        raise ConfigError(f"batch_size: expected a non-negative integer, got {batch_size!r}")
    return init_multi_head_attention_layer(d_model, int(num_heads), seq_length, num_kv_heads, seed=seed)


def init_softmax_layer(variant: str = "standard", **options: Any) -> LayerConfig:
    """Softmax layer of any LOOM variant (options: temperature, softmax_rows/cols, mask, ...)."""
    cfg = LayerConfig(type="softmax", softmax_variant=str(variant))
    for key, value in options.items():
        if not hasattr(cfg, key):
            raise ConfigError(f"{key}: not a softmax option")
        setattr(cfg, key, value)
    return cfg


def init_grid_softmax_layer(rows: int, cols: int) -> LayerConfig:
    """Grid softmax: ``rows`` independent distributions of ``cols`` values (LOOM ``InitGridSoftmaxLayer``)."""
    return init_softmax_layer("grid", softmax_rows=int(rows), softmax_cols=int(cols), temperature=1.0)


def init_hierarchical_softmax_layer(levels: list[int]) -> LayerConfig:
    """Hierarchical softmax over ``levels`` (e.g. ``[3, 3, 4]``; LOOM ``InitHierarchicalSoftmaxLayer``)."""
    return init_softmax_layer("hierarchical", hierarchy_levels=[int(v) for v in levels], temperature=1.0)


def init_temperature_softmax_layer(temperature: float) -> LayerConfig:
    """Softmax of ``z / temperature`` (LOOM ``InitTemperatureSoftmaxLayer``)."""
    return init_softmax_layer("temperature", temperature=float(temperature))


def init_gumbel_softmax_layer(temperature: float) -> LayerConfig:
    """Gumbel softmax (noise from the network's seeded generator; LOOM ``InitGumbelSoftmaxLayer``)."""
    return init_softmax_layer("gumbel", temperature=float(temperature), gumbel_noise=True)


def init_masked_softmax_layer(mask_size: int) -> LayerConfig:
    """Masked softmax with a mask of ``mask_size`` entries, all enabled (LOOM ``InitMaskedSoftmaxLayer``)."""
    return init_softmax_layer("masked", mask=[True] * int(mask_size), temperature=1.0)


def init_sparsemax_layer() -> LayerConfig:
    """Sparsemax (exact zeros possible; LOOM ``InitSparsemaxLayer``)."""
    return init_softmax_layer("sparse", temperature=1.0)


def init_entmax_layer(alpha: float) -> LayerConfig:
    """Entmax blend of softmax and sparsemax (1 = softmax, 2 = sparsemax; LOOM ``InitEntmaxLayer``)."""
    return init_softmax_layer("entmax", entmax_alpha=float(alpha), temperature=1.0)


def init_layer_norm_layer(norm_size: int, epsilon: float = 1e-5) -> LayerConfig:
    """LayerNorm with gamma = 1, beta = 0."""
    cfg = LayerConfig(type="layer_norm", norm_size=int(norm_size), epsilon=float(epsilon))
    return _finish(cfg, {"gamma": np.ones(int(norm_size), np.float32), "beta": _zeros((int(norm_size),))})


def init_rms_norm_layer(norm_size: int, epsilon: float = 1e-6) -> LayerConfig:
    """RMSNorm with gamma = 1."""
    cfg = LayerConfig(type="rms_norm", norm_size=int(norm_size), epsilon=float(epsilon))
    return _finish(cfg, {"gamma": np.ones(int(norm_size), np.float32)})


def init_swiglu_layer(hidden_size: int, intermediate_size: int, *, seed: int | None = None) -> LayerConfig:
    """SwiGLU MLP (gate/up ``[hidden, intermediate]``, down ``[intermediate, hidden]``), Xavier normal."""
    rng = np.random.default_rng(seed) if seed is not None else None
    dh, di = int(hidden_size), int(intermediate_size)
    cfg = LayerConfig(type="swiglu", input_size=dh, output_size=di)
    std = math.sqrt(2.0 / (dh + di))
    return _finish(
        cfg,
        {
            "gate_weights": _normal((dh, di), std, rng),
            "up_weights": _normal((dh, di), std, rng),
            "down_weights": _normal((di, dh), std, rng),
            "gate_bias": _zeros((di,)),
            "up_bias": _zeros((di,)),
            "down_bias": _zeros((dh,)),
        },
    )


def init_parallel_layer(
    branches: list[LayerConfig],
    combine_mode: str = "concat",
    *,
    grid_output_rows: int = 0,
    grid_output_cols: int = 0,
    grid_output_layers: int = 0,
    grid_positions: list[Any] | None = None,
) -> LayerConfig:
    """Parallel layer from branch configs (combine: concat, add, avg, grid_scatter)."""
    positions = [p if isinstance(p, GridPosition) else GridPosition(**p) for p in (grid_positions or [])]
    return LayerConfig(
        type="parallel",
        branches=list(branches),
        combine_mode=combine_mode,
        grid_output_rows=grid_output_rows,
        grid_output_cols=grid_output_cols,
        grid_output_layers=grid_output_layers,
        grid_positions=positions,
    )


#: LOOM name -> function, for every layer-init function (Go's registry, Go's ``Init*Layer``
#: package functions and loom's own); arguments as in LOOM (``InitMultiHeadAttentionLayer``
#: takes the README's ``(dModel, numHeads, batchSize, seqLength)``).
_REGISTRY: dict[str, Callable[..., LayerConfig]] = {
    "InitConv2DLayer": init_conv2d_layer,
    "InitDenseLayer": init_dense_layer,
    "InitEntmaxLayer": init_entmax_layer,
    "InitGridSoftmaxLayer": init_grid_softmax_layer,
    "InitGumbelSoftmaxLayer": init_gumbel_softmax_layer,
    "InitHierarchicalSoftmaxLayer": init_hierarchical_softmax_layer,
    "InitLSTMLayer": init_lstm_layer,
    "InitLayerNormLayer": init_layer_norm_layer,
    "InitMaskedSoftmaxLayer": init_masked_softmax_layer,
    "InitMultiHeadAttentionLayer": init_multi_head_attention_layer_loom,
    "InitParallelLayer": init_parallel_layer,
    "InitRMSNormLayer": init_rms_norm_layer,
    "InitRNNLayer": init_rnn_layer,
    "InitSoftmaxLayer": init_softmax_layer,
    "InitSparsemaxLayer": init_sparsemax_layer,
    "InitSwiGLULayer": init_swiglu_layer,
    "InitTemperatureSoftmaxLayer": init_temperature_softmax_layer,
}

#: Read-only view of the registry: LOOM name -> function.
LAYER_INIT_FUNCTIONS = MappingProxyType(_REGISTRY)


def _positional(func: Callable[..., Any]) -> list[inspect.Parameter]:
    return [
        p for p in inspect.signature(func).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def list_layer_init_functions() -> list[dict[str, Any]]:
    """Sorted ``[{"name", "signature", "num_args", "arg_types"}]`` of the registry."""
    out = []
    for name in sorted(_REGISTRY):
        params = _positional(_REGISTRY[name])
        out.append(
            {
                "name": name,
                "signature": f"{name}{inspect.signature(_REGISTRY[name])}",
                "num_args": len(params),
                "arg_names": [p.name for p in params],
                "arg_types": [str(p.annotation) for p in params],
            }
        )
    return out


def call_layer_init(name: str, *args: Any, **kwargs: Any) -> LayerConfig:
    """Call a registry function by its LOOM name, e.g. ``call_layer_init("InitDenseLayer", 784, 392, 0)``."""
    func = _REGISTRY.get(name)
    if func is None:
        raise ConfigError(f"layer init function {name!r} not found; available: {sorted(_REGISTRY)}")
    params = _positional(func)
    required = [p for p in params if p.default is inspect.Parameter.empty]
    if not len(required) <= len(args) <= len(params):
        raise ConfigError(f"{name} expects {len(required)}..{len(params)} arguments, got {len(args)}")
    converted = []
    for value, param in zip(args, params, strict=False):
        if str(param.annotation) == "int" and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{name}: argument {param.name} expects an integer, got {value!r}")
            value = int(value)
        converted.append(value)
    return func(*converted, **kwargs)
