"""The layer-kind protocol every LOOM layer type implements, and its registry.

A *kind* is a stateless object with the math and the JSON rules of one layer
type; the per-layer data lives in :class:`~loom.nn.layer_config.LayerConfig`.

``forward(cfg, x, ctx)`` takes the flat input vector (LOOM's layout: ``batch``
samples back to back) and returns ``(y, backprop)``; ``backprop(grad_y)``
adds the parameter gradients into ``cfg.grads`` and returns ``grad_x`` —
thinc's callback style, no autograd engine.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from loom.backend import Backend
from loom.errors import ConfigError, ShapeError
from loom.nn.layer_config import LayerConfig
from loom.ops.activations import activation_from_name

__all__ = [
    "LAYER_KEYS",
    "Backprop",
    "ForwardContext",
    "LayerKind",
    "add_grad",
    "check_length",
    "finite_float32",
    "float32_vector",
    "kind_for",
    "kind_names",
    "lower_keys",
    "memoized",
    "parse_layer",
    "register_kind",
    "spec_bool",
    "spec_float",
    "spec_int",
]

Backprop = Callable[[Any], Any]


@dataclass
class ForwardContext:
    """What a layer needs to know about the current forward pass.

    ``needs_input_grad`` is False when nobody reads the gradient w.r.t. the layer's
    input (the first layer of a training step): ``backprop`` may then skip computing
    it and return ``None``. ``memo`` is a cache for values derived from the layer
    configs only (bound kind functions, grid orders); the training loop sets it to a
    dict that lives for one ``train`` call, during which configs do not change.
    ``None`` (plain forward calls) means: derive everything on every call.
    """

    backend: Backend
    xp: Any
    batch_size: int
    rng: Any = None  # backend random generator for stochastic layers (Gumbel noise)
    training: bool = True
    needs_input_grad: bool = True
    memo: dict[int, Any] | None = None


def add_grad(cfg: LayerConfig, name: str, grad: Any) -> None:
    """Accumulate ``grad`` into ``cfg.grads[name]`` (the network clears grads unless accumulating)."""
    grads = cfg.grads
    current = grads.get(name)
    grads[name] = grad if current is None else current + grad


def memoized(ctx: ForwardContext, cfg: LayerConfig, build: Callable[[], Any]) -> Any:
    """``build()``, cached in ``ctx.memo`` under ``cfg`` while the memo lives (no cache without one)."""
    memo = ctx.memo
    if memo is None:
        return build()
    key = id(cfg)  # configs outlive the memo (the network holds them), so ids stay unique
    value = memo.get(key)
    if value is None:
        value = memo[key] = build()
    return value


def check_length(cfg: LayerConfig, x: Any, expected: int, what: str) -> None:
    """Raise ``ShapeError`` unless the flat input ``x`` has ``expected`` values."""
    if x.shape[0] != expected:
        raise ShapeError(f"{cfg.path} ({cfg.type}): expected {expected} input values ({what}), got {x.shape[0]}")


class LayerKind:
    """Math and JSON rules of one LOOM layer type (subclass per type)."""

    #: Canonical type name, as loom writes it into saved configs.
    type_name: ClassVar[str] = ""
    #: Further JSON type names accepted for this kind.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Role in LOOM's hidden residual stream at top level: None, "add_output"
    #: (MHA, SwiGLU), "save_input" (RMSNorm) or "add_input" (LayerNorm).
    residual_role: ClassVar[str | None] = None

    # ----- configuration -------------------------------------------------------
    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        """Copy this type's fields from a lower-cased JSON layer object into ``cfg``."""

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        """Fill sizes that follow from the per-sample input size; return the output size.

        Raise ``ConfigError`` naming the field when a required size is missing and
        cannot be inferred. Return ``None`` when the output size is unknown.
        """
        return in_features

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        """Type-specific keys of the saved ``cfg`` layer definition (zeros are dropped later)."""
        return {}

    # ----- parameters ----------------------------------------------------------
    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        """LOOM weight name -> shape of every parameter array of this layer."""
        return {}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Fresh float32 parameters with Go LOOM's ``InitializeWeights`` distributions."""
        return {}

    def export_weights(self, cfg: LayerConfig, to_numpy: Callable[[Any], np.ndarray]) -> dict[str, np.ndarray]:
        """Flat float32 arrays keyed by LOOM weight name, for the bundle's weights blob."""
        return {name: to_numpy(cfg.params[name]).reshape(-1) for name in self.param_shapes(cfg) if name in cfg.params}

    def import_weights(self, cfg: LayerConfig, weights: dict[str, Any], path: str) -> dict[str, np.ndarray]:
        """Parameters from a decoded bundle weights object (flat lists of finite numbers); checks sizes."""
        from loom.errors import ModelFormatError

        params: dict[str, np.ndarray] = {}
        for name, shape in self.param_shapes(cfg).items():
            if name not in weights or weights[name] is None:
                raise ModelFormatError(f"{path}: weights: missing array {name!r} for a {cfg.type} layer")
            params[name] = float32_vector(weights[name], shape, f"{path}: weights.{name}")
        return params

    def work_size(self, cfg: LayerConfig, in_features: int | None, out_features: int | None) -> int:
        """Values one sample's forward pass through this layer materialises (output, caches, scratch).

        Computed from the config alone, before anything is allocated, for the
        ``max_activations`` budget of :mod:`loom.limits` (0 where a size is unknown).
        """
        return 2 * (out_features or 0)  # output and its pre-activation / cache

    # ----- math ----------------------------------------------------------------
    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext) -> tuple[Any, Backprop]:
        """Run the layer on the flat input ``x``; return ``(y, backprop)``."""
        raise NotImplementedError(f"layer type {cfg.type!r} is not implemented yet")

    def reset_state(self, cfg: LayerConfig) -> None:
        """Forget recurrent state (stateful RNN/LSTM)."""
        cfg.state.clear()


_KINDS: dict[str, LayerKind] = {}


def register_kind(kind_cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: register a layer kind under its type name and aliases."""
    kind = kind_cls()
    for name in (kind_cls.type_name, *kind_cls.aliases):
        _KINDS[name] = kind
    return kind_cls


def kind_for(type_name: str, path: str = "type") -> LayerKind:
    """The registered kind of a JSON type name (exact, lower case)."""
    kind = _KINDS.get(type_name)
    if kind is None:
        hint = difflib.get_close_matches(str(type_name).lower(), list(_KINDS), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{path}: unknown layer type {type_name!r:.80}{did_you_mean}; accepted: " + ", ".join(sorted(_KINDS))
        )
    return kind


def kind_names() -> list[str]:
    """Every accepted JSON layer type name."""
    return sorted(_KINDS)


# ----- JSON layer objects (the builder's, and a Parallel's branches) -----
#: Every key a LOOM layer object may hold, in Go's LayerDefinition order (also the saved
#: key order), then loom's extensions.
LAYER_KEYS = (
    "type",
    "activation",
    "width",
    "height",
    "input_size",
    "output_size",
    "input_channels",
    "filters",
    "kernel_size",
    "stride",
    "padding",
    "input_height",
    "input_width",
    "output_height",
    "output_width",
    "d_model",
    "num_heads",
    "seq_length",
    "hidden_size",
    "softmax_variant",
    "softmax_rows",
    "softmax_cols",
    "temperature",
    "gumbel_noise",
    "mask",
    "hierarchy_levels",
    "adaptive_clusters",
    "mixture_weights",
    "entmax_alpha",
    "norm_size",
    "epsilon",
    "branches",
    "combine_mode",
    "grid_positions",
    "grid_output_rows",
    "grid_output_cols",
    "grid_output_layers",
    # loom extensions (Go ignores unknown keys, so bundles stay loadable there)
    "num_kv_heads",
    "head_dim",
    "causal",
    "rope_theta",
    "stateful",
    "name",
    "comment",
)


def lower_keys(obj: dict[str, Any], path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Lower-case the keys of a JSON object (LOOM matches keys case-insensitively).

    Unknown keys raise ``ConfigError`` with a "did you mean" hint.
    """
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        low = str(key).lower()
        if low not in allowed:
            hint = difflib.get_close_matches(low, allowed, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{path}.{key}: unknown key{did_you_mean}")
        out[low] = value
    return out


def parse_layer(spec: Any, path: str) -> LayerConfig:
    """One JSON layer object -> :class:`LayerConfig` (sizes not yet inferred)."""
    spec = lower_keys(spec, path, LAYER_KEYS)
    type_name = spec.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"{path}.type: required (a layer type name such as 'dense')")
    kind = kind_for(type_name, f"{path}.type")
    cfg = LayerConfig(type=kind.type_name, path=path)
    cfg.activation = activation_from_name(spec.get("activation"), f"{path}.activation")
    kind.parse(cfg, spec, path)
    return cfg


# ----- JSON field readers (lenient about 8.0 for ints, strict about everything else) -----
#: Largest size / count a config field may hold (Go's int32 range; the parameter and
#: activation budgets of loom.limits bound the products).
MAX_FIELD_INT = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def spec_int(spec: dict[str, Any], key: str, path: str, default: int = 0) -> int:
    """Integer field ``key`` of a lower-cased JSON object (missing -> ``default``), in 0..2**31-1."""
    value = spec.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
    ):
        raise ConfigError(f"{path}.{key}: expected an integer, got {value!r:.80}")
    if not 0 <= value <= MAX_FIELD_INT:
        raise ConfigError(f"{path}.{key}: expected an integer in 0..{MAX_FIELD_INT}, got {value!r:.80}")
    return int(value)


def finite_float32(value: Any, where: str) -> float:
    """``value`` (a JSON number) as a float32-representable finite float; ``ConfigError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r:.80}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        raise ConfigError(f"{where}: expected a finite float32 number, got {value!r:.80}")
    return float(np.float32(number))


def spec_float(spec: dict[str, Any], key: str, path: str, default: float = 0.0) -> float:
    """Finite float32 field ``key`` (missing -> ``default``)."""
    value = spec.get(key)
    if value is None:
        return default
    return finite_float32(value, f"{path}.{key}")


def spec_bool(spec: dict[str, Any], key: str, path: str, default: bool = False) -> bool:
    """Boolean field ``key`` (missing -> ``default``)."""
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{path}.{key}: expected true or false, got {value!r:.80}")
    return value


def float32_vector(values: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A bundle's flat weight list as a float32 array of ``shape`` holding finite values.

    ``ModelFormatError`` naming ``where`` for anything else: not a list, wrong length,
    non-numbers, or a value that is NaN / infinite / outside the float32 range.
    """
    from loom.errors import ModelFormatError

    expected = math.prod(shape)
    if isinstance(values, np.ndarray):  # arrays handed over by Python code (the registry)
        values = values.reshape(-1)
    elif not isinstance(values, list):
        raise ModelFormatError(f"{where}: expected a list of {expected} numbers, got {type(values).__name__}")
    if len(values) != expected:
        raise ModelFormatError(f"{where}: expected {expected} values for shape {list(shape)}, got {len(values)}")
    try:
        wide = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        wide = None
    if wide is None or wide.ndim != 1 or wide.dtype.kind not in "fiu":
        index, bad = next(
            (
                (i, v)
                for i, v in enumerate(values)
                if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, int) and abs(v) > 2**63)
            ),
            (0, values[0] if len(values) else None),
        )
        raise ModelFormatError(
            f"{where}: expected a flat list of {expected} numbers, got {type(bad).__name__} {bad!r:.40} at {index}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        flat = wide.astype(np.float32)
    finite = np.isfinite(flat)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ModelFormatError(
            f"{where}[{bad}]: expected a finite float32 number, got {values[bad]!r} (weights must be finite)"
        )
    return flat.reshape(shape)
