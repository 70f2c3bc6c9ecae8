"""Parse LOOM JSON network configs into layer lists (``BuildNetworkFromJSON``).

Accepts every key and alias of Go LOOM's builder (keys in any case), infers the
sizes that are unambiguous (top-level ``input_size``, a Dense's
``input_size`` from the previous layer, RNN/LSTM ``input_size``), and raises
:class:`~loom.errors.ConfigError` naming the JSON path for everything else.
Untrusted input is bounded before anything is allocated: JSON nesting depth, every
field's type and range (finite float32 numbers, sizes up to 2**31 - 1), every layer's
geometry, and the parameter / activation budgets of :mod:`loom.limits`.

One layer object is parsed by :func:`~loom.nn.layers.base.parse_layer` (with
:data:`~loom.nn.layers.base.LAYER_KEYS` and :func:`~loom.nn.layers.base.lower_keys`), which
lives with the layer kinds because a Parallel layer parses its branches with it; the three
are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loom import safe_json
from loom.errors import ConfigError
from loom.limits import get_limits
from loom.nn.layer_config import LayerConfig
from loom.nn.layers import kind_for
from loom.nn.layers.base import LAYER_KEYS, lower_keys, parse_layer, spec_int

__all__ = [
    "LAYER_KEYS",
    "TOP_LEVEL_KEYS",
    "NetworkSpec",
    "apply_builder_defaults",
    "assign_paths",
    "infer_sizes",
    "lower_keys",
    "parameter_count",
    "parse_config_text",
    "parse_layer",
    "parse_network_config",
]

#: Epsilon Go's builder stores for LayerNorm / RMSNorm when the JSON has none.
BUILDER_EPSILON = 1e-5

#: Keys accepted at the top level of a network config.
TOP_LEVEL_KEYS = (
    "id",
    "batch_size",
    "grid_rows",
    "grid_cols",
    "layers_per_cell",
    "layers",
    "seed",
    "input_size",
    "name",
    "description",
    "version",
    "comment",
)


def parameter_count(cfg: LayerConfig) -> int:
    """Trainable scalars of a layer and its branches, from the config alone (nothing allocated)."""
    return sum(
        math.prod(shape) for layer in cfg.iter_layers() for shape in kind_for(layer.type).param_shapes(layer).values()
    )


def infer_sizes(layers: list[LayerConfig], in_features: int | None, batch_size: int = 1) -> int | None:
    """Walk layers in execution order filling inferable sizes; returns the output size.

    Also checks the sizes against the ``max_parameters`` / ``max_activations`` budgets of
    :mod:`loom.limits` before anything is allocated (``ConfigError`` naming the layer).
    """
    limits = get_limits()
    features, params, work = in_features, 0, 0
    for cfg in layers:
        kind = kind_for(cfg.type)
        out = kind.infer(cfg, features, cfg.path)
        params += parameter_count(cfg)
        work += batch_size * kind.work_size(cfg, features, out)
        for count, limit, name in (
            (params, limits.max_parameters, "max_parameters"),
            (work, limits.max_activations, "max_activations"),
        ):
            if count > limit:
                what = "parameters" if name == "max_parameters" else f"activation values (batch {batch_size})"
                raise ConfigError(
                    f"{cfg.path}: the network needs {count:,} {what} up to this layer, more than the limit of "
                    f"{limit:,}; if this size is intended, raise loom.limits {name} "
                    f"(loom.limits.set_limits({name}=...) or LOOM_{name.upper()})"
                )
        features = out
    return features


def apply_builder_defaults(layers: list[LayerConfig]) -> None:
    """Defaults Go's JSON builder stores (bundles keep what was saved): norm epsilon 1e-5."""
    for top in layers:
        for cfg in top.iter_layers():
            if cfg.type in ("layer_norm", "rms_norm") and cfg.epsilon == 0:
                cfg.epsilon = BUILDER_EPSILON


def assign_paths(layers: list[LayerConfig], prefix: str = "layers") -> None:
    """Set every layer's (and branch's) ``path`` for error messages."""
    for i, cfg in enumerate(layers):
        cfg.path = f"{prefix}[{i}]"
        if cfg.branches:
            assign_paths(cfg.branches, f"{cfg.path}.branches")


def parse_config_text(config: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """JSON text / bytes / dict -> dict, with parse errors as ``ConfigError`` (nesting depth bounded)."""
    if isinstance(config, dict):
        safe_json.check_depth(config, "config", ConfigError)
        return config
    data = safe_json.loads(config, source="config", error=ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass
class NetworkSpec:
    """What a ``Network`` is built from: its grid, batch size and layers (sizes inferred).

    Produced from a JSON config (:func:`parse_network_config`) or a model bundle
    (:func:`loom.nn.serialization.bundle_network_spec`, layers with their weights), and turned
    into a network by :func:`loom.nn.network.network_from_spec`.
    """

    grid_rows: int
    grid_cols: int
    layers_per_cell: int
    layers: list[LayerConfig]
    batch_size: int = 1
    input_size: int | None = None
    model_id: Any = None


def parse_network_config(config: dict[str, Any]) -> NetworkSpec:
    """Validate a network config; returns its grid dims, batch size, input size and layers."""
    top = lower_keys(config, "config", TOP_LEVEL_KEYS)
    rows = spec_int(top, "grid_rows", "config")
    cols = spec_int(top, "grid_cols", "config")
    lpc = spec_int(top, "layers_per_cell", "config")
    batch = spec_int(top, "batch_size", "config") or 1
    input_size = spec_int(top, "input_size", "config") or None
    raw_layers = top.get("layers") or []
    if not isinstance(raw_layers, list):
        raise ConfigError("config.layers: expected a list of layer objects")
    if rows * cols * lpc != len(raw_layers):
        raise ConfigError(
            f"config.layers: layer count mismatch: expected {rows * cols * lpc} "
            f"(grid_rows={rows} x grid_cols={cols} x layers_per_cell={lpc}), got {len(raw_layers)}"
        )
    layers = [parse_layer(spec, f"layers[{i}]") for i, spec in enumerate(raw_layers)]
    apply_builder_defaults(layers)
    infer_sizes(layers, input_size, batch)
    return NetworkSpec(rows, cols, lpc, layers, batch_size=batch, input_size=input_size, model_id=top.get("id"))
