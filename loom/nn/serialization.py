"""LOOM model bundles (``"type": "modelhost/bundle"``): save and load, both ways with Go LOOM.

Layout (Go ``SaveModelToString``): 2-space indented JSON
``{"type", "version": 1, "models": [{"id", "cfg": {...}, "weights": {"fmt":
"jsonModelB64", "data": base64(compact JSON {"type": "float32", "layers":
[...]})}}]}``. Keys are written in Go's struct order, zero values omitted,
float32 numbers in Go's shortest round-trip form, so files written here load in
Go LOOM and vice versa.

Loading stops at a neutral :class:`~loom.nn.builder.NetworkSpec` (:func:`bundle_network_spec`);
:mod:`loom.nn.network` builds the ``Network`` from it (``loom.load_model``,
``loom.load_model_from_string``), so this module never needs the ``Network`` class.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import numpy as np

from loom import safe_json
from loom.atomic_files import write_file_atomically
from loom.backend import Backend, to_numpy
from loom.errors import BundleConfigError, ConfigError, ModelFormatError
from loom.nn import gojson
from loom.nn.builder import (
    LAYER_KEYS,
    TOP_LEVEL_KEYS,
    NetworkSpec,
    assign_paths,
    infer_sizes,
    lower_keys,
    parse_layer,
)
from loom.nn.layer_config import LayerConfig
from loom.nn.layers import kind_for
from loom.nn.layers.base import spec_int
from loom.ops.activations import activation_name

__all__ = [
    "LAYER_KEY_ORDER",
    "WEIGHT_KEY_ORDER",
    "bundle_network_spec",
    "parse_bundle_text",
    "read_bundle_file",
    "save_model",
    "save_model_to_string",
]

#: Go's LayerDefinition field order (JSON keys of a saved layer), loom extensions last.
LAYER_KEY_ORDER = LAYER_KEYS

#: Go's LayerWeights field order.
WEIGHT_KEY_ORDER = (
    "biases",
    "kernel",
    "conv_bias",
    "q_weights",
    "k_weights",
    "v_weights",
    "output_weight",
    "q_bias",
    "k_bias",
    "v_bias",
    "output_bias",
    "weight_ih",
    "weight_hh",
    "bias_h",
    "weight_ii",
    "weight_if",
    "weight_ig",
    "weight_io",
    "weight_hi",
    "weight_hf",
    "weight_hg",
    "weight_ho",
    "bias_i",
    "bias_f",
    "bias_g",
    "bias_o",
    "gamma",
    "beta",
    "gate_weights",
    "up_weights",
    "down_weights",
    "gate_bias",
    "up_bias",
    "down_bias",
    "branch_weights",
)

#: loom extension keys whose explicit ``false`` is meaningful (their default is true).
_KEEP_FALSE = ("causal",)

_KEY_RANK = {k: i for i, k in enumerate(LAYER_KEY_ORDER)}
_WEIGHT_RANK = {k: i for i, k in enumerate(WEIGHT_KEY_ORDER)}


def _is_zero(value: Any) -> bool:
    if value is None or value is False:
        return True
    if isinstance(value, str | list | tuple | dict):
        return len(value) == 0
    if isinstance(value, int | float | np.floating | np.integer):
        return value == 0
    return False


# ----------------------------------------------------------------------------- save
def layer_definition(cfg: LayerConfig, *, in_branch: bool = False) -> dict[str, Any]:
    """The saved-config JSON object of one layer (Go's key order, zeros omitted)."""
    kind = kind_for(cfg.type)
    fields = dict(kind.config_json(cfg, in_branch=in_branch))
    if cfg.branches:
        fields["branches"] = [layer_definition(b, in_branch=True) for b in cfg.branches]
    ordered = {"type": kind.type_name, "activation": activation_name(cfg.activation)}
    for key in sorted(fields, key=lambda k: _KEY_RANK.get(k, len(_KEY_RANK))):
        value = fields[key]
        if not _is_zero(value) or (key in _KEEP_FALSE and value is False):
            ordered[key] = value
    return ordered


def layer_weights(cfg: LayerConfig) -> dict[str, Any]:
    """The decoded weights object of one layer (flat float32 arrays, Go's key order)."""
    kind = kind_for(cfg.type)
    arrays: dict[str, Any] = {
        k: v for k, v in kind.export_weights(cfg, to_numpy).items() if v is not None and np.size(v)
    }
    for name, values in arrays.items():
        if not np.all(np.isfinite(values)):
            raise ModelFormatError(
                f"{cfg.path}: weights.{name} contains NaN or Inf; LOOM bundles cannot store non-finite weights"
            )
    if cfg.branches:
        arrays["branch_weights"] = [layer_weights(b) for b in cfg.branches]
    return {k: arrays[k] for k in sorted(arrays, key=lambda k: _WEIGHT_RANK.get(k, len(_WEIGHT_RANK)))}


def _weights_blob(layers: list[dict[str, Any]]) -> str:
    parts = []
    for layer in layers:
        parts.append(_weights_object_json(layer))
    text = '{"type":"float32","layers":[' + ",".join(parts) + "]}"
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _weights_object_json(layer: dict[str, Any]) -> str:
    items = []
    for key, value in layer.items():
        if key == "branch_weights":
            encoded = "[" + ",".join(_weights_object_json(b) for b in value) + "]"
        else:
            encoded = gojson.float32_list_json(value)
        items.append(f'"{key}":{encoded}')
    return "{" + ",".join(items) + "}"


def bundle_dict(net: Any, model_id: str) -> dict[str, Any]:
    """The bundle as an ordered dict (weights already base64-encoded)."""
    cfg = {
        "id": model_id,
        "batch_size": net.batch_size,
        "grid_rows": net.grid_rows,
        "grid_cols": net.grid_cols,
        "layers_per_cell": net.layers_per_cell,
        "layers": [layer_definition(layer) for layer in net.layers],
    }
    weights = {"fmt": "jsonModelB64", "data": _weights_blob([layer_weights(layer) for layer in net.layers])}
    return {"type": "modelhost/bundle", "version": 1, "models": [{"id": model_id, "cfg": cfg, "weights": weights}]}


def save_model_to_string(net: Any, model_id: str = "model", *, go_compatible: bool | str = False) -> str:
    """LOOM bundle JSON text of ``net`` (Go ``MarshalIndent`` layout, two-space indent).

    ``go_compatible``: ``True``/``"strict"`` raises ``ConfigError`` listing every feature Go
    LOOM would run differently, ``"warn"`` warns instead, ``False`` does not check
    (:func:`loom.nn.go_compat.check_go_compatibility`).
    """
    if not isinstance(model_id, str):
        raise ConfigError(f"model_id: expected a string, got {type(model_id).__name__}")
    if go_compatible is not False:
        from loom.nn.go_compat import check_go_compatibility

        check_go_compatibility(net, go_compatible)
    return gojson.dumps(bundle_dict(net, model_id), indent="  ")


def save_model(
    net: Any, path: str | os.PathLike[str], model_id: str = "model", *, go_compatible: bool | str = False
) -> None:
    """Write the bundle to ``path`` atomically and durably.

    The text goes to a temporary sibling ``.<name>.loom-<pid>-<random>.tmp``, is fsynced,
    renamed over ``path`` and the folder is fsynced, so a crash at any moment leaves
    either the old or the new file. The temporary file is removed on every error
    (``KeyboardInterrupt`` included); temporaries left by writers that were killed
    (their process no longer runs) are removed by the next save to the same path.
    """
    text = save_model_to_string(net, model_id, go_compatible=go_compatible)
    write_file_atomically(Path(path), text.encode("utf-8"))


# ----------------------------------------------------------------------------- load
def _decode_weights(model: dict[str, Any], where: str) -> list[Any]:
    weights = model.get("weights")
    if not isinstance(weights, dict) or "data" not in weights:
        raise ModelFormatError(f"{where}.weights: missing the weights object with 'data'")
    fmt = weights.get("fmt", "jsonModelB64")
    if fmt not in ("jsonModelB64", "", None):
        raise ModelFormatError(f"{where}.weights.fmt: unsupported weights format {fmt!r}; expected 'jsonModelB64'")
    try:
        raw = base64.b64decode(weights["data"], validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{where}.weights.data: failed to decode weights (expected base64 text: {exc})") from exc
    data = safe_json.loads(raw, source=f"{where}.weights.data: failed to decode weights", error=ModelFormatError)
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ModelFormatError(f"{where}.weights.data: expected an object with a 'layers' list")
    return layers


def _import_layer_weights(cfg: LayerConfig, weights: Any, backend: Backend) -> None:
    if not isinstance(weights, dict):
        raise ModelFormatError(f"{cfg.path}: weights: expected an object of arrays, got {type(weights).__name__}")
    kind = kind_for(cfg.type)
    params = kind.import_weights(cfg, weights, cfg.path)
    branch_weights = weights.get("branch_weights")
    if branch_weights is None:
        branch_weights = []  # Go: a branch without saved weights gets empty arrays
    elif not isinstance(branch_weights, list):
        raise ModelFormatError(
            f"{cfg.path}: weights.branch_weights: expected a list of branch weight objects, "
            f"got {type(branch_weights).__name__}"
        )
    for i, branch in enumerate(cfg.branches):
        _import_layer_weights(branch, branch_weights[i] if i < len(branch_weights) else {}, backend)
    cfg.params = {k: backend.asarray(v) for k, v in params.items()}
    cfg.grads, cfg.state = {}, {}


def _bundle_config_error(exc: ConfigError, where: str) -> BundleConfigError:
    """The config error of a bundle, as both ModelFormatError and ConfigError, with the full JSON path."""
    message = str(exc)
    if message.startswith("layers["):
        message = f"{where}.cfg.{message}"
    elif not message.startswith(where):
        message = f"{where}.cfg: {message}"
    return BundleConfigError(message)


def bundle_network_spec(bundle: Any, model_id: str | None, backend: Backend) -> NetworkSpec:
    """The :class:`~loom.nn.builder.NetworkSpec` of one model of a parsed bundle, its weights on ``backend``.

    Parameters
    ----------
    bundle : dict
        Parsed bundle JSON (``"type": "modelhost/bundle"``).
    model_id : str, optional
        Which model of the bundle (default: the first).
    backend : Backend
        Where the weights go.

    Raises
    ------
    ModelFormatError
        For anything malformed, naming the JSON path (a bad layer config is a
        :class:`~loom.errors.BundleConfigError`, also a ``ConfigError``).
    """
    if not isinstance(bundle, dict) or bundle.get("type") != "modelhost/bundle":
        found = bundle.get("type") if isinstance(bundle, dict) else type(bundle).__name__
        raise ModelFormatError(f"bundle.type: invalid bundle type {found!r}; expected 'modelhost/bundle'")
    models = bundle.get("models")
    if not isinstance(models, list) or not models:
        raise ModelFormatError("bundle.models: expected a non-empty list of models")
    index = 0
    if model_id is not None:
        ids = [m.get("id") if isinstance(m, dict) else None for m in models]
        if model_id not in ids:
            raise ModelFormatError(f"model {model_id!r} not found in bundle (available: {ids})")
        index = ids.index(model_id)
    model = models[index]
    where = f"models[{index}]"
    cfg_obj = model.get("cfg") if isinstance(model, dict) else None
    if not isinstance(cfg_obj, dict):
        raise ModelFormatError(f"{where}.cfg: missing network config (expected an object)")
    try:
        top = lower_keys(cfg_obj, f"{where}.cfg", TOP_LEVEL_KEYS)
        raw_layers = top.get("layers") or []
        if not isinstance(raw_layers, list):
            raise ConfigError(f"{where}.cfg.layers: expected a list of layer objects, got {type(raw_layers).__name__}")
        layers = [parse_layer(spec, f"layers[{i}]") for i, spec in enumerate(raw_layers)]
        rows = spec_int(top, "grid_rows", f"{where}.cfg")
        cols = spec_int(top, "grid_cols", f"{where}.cfg")
        lpc = spec_int(top, "layers_per_cell", f"{where}.cfg")
        batch = spec_int(top, "batch_size", f"{where}.cfg") or 1
    except ConfigError as exc:
        raise _bundle_config_error(exc, where) from exc
    weight_layers = _decode_weights(model, where)
    if len(weight_layers) != len(layers):
        raise ModelFormatError(f"{where}: layer count mismatch: config={len(layers)}, weights={len(weight_layers)}")
    if rows * cols * lpc != len(layers):
        raise ModelFormatError(
            f"{where}.cfg: grid {rows}x{cols}x{lpc} needs {rows * cols * lpc} layers, the bundle has {len(layers)}"
        )
    assign_paths(layers)
    try:
        infer_sizes(layers, None, batch)
    except ConfigError as exc:
        raise _bundle_config_error(exc, where) from exc
    for cfg, weights in zip(layers, weight_layers, strict=True):
        _import_layer_weights(cfg, weights, backend)
    return NetworkSpec(rows, cols, lpc, layers, batch_size=batch, model_id=model.get("id"))


def parse_bundle_text(text: str | bytes) -> Any:
    """Bundle JSON text -> parsed JSON (``ModelFormatError`` for malformed JSON, nesting depth bounded)."""
    return safe_json.loads(text, source="bundle: failed to parse JSON", error=ModelFormatError)


def read_bundle_file(path: str | os.PathLike[str]) -> str:
    """The text of a bundle file (``ModelFormatError`` naming the file when it cannot be read)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read model file ({exc.strerror or exc})") from exc
