"""``LayerConfig`` as JSON, the way LOOM's WASM build exchanges it (Go field names).

Go's ``LayerConfig`` has no JSON tags, so ``GetLayer`` / ``CallLayerInit`` results
and ``SetLayer`` arguments use the Go field names: ``{"Type": 0, "Activation": 1,
"Kernel": [...], "Bias": [...], "InputHeight": 784, "OutputHeight": 392, ...}``
(enums as integers, ``null`` for empty arrays; field order as Go declares them,
spec ``introspection.md`` §4). :func:`layer_config_to_json` writes that object;
:func:`layer_config_from_json` reads it back — field names case-insensitively, as
Go's decoder does — and also accepts loom's own layer JSON (the objects of a
network config: ``{"type": "dense", "input_size": 8, ...}``, with an optional
``"weights"`` object keyed like a bundle's weights).

A Dense layer given only ``Kernel`` and ``Bias`` (the README's "Type Conversion"
example) gets its sizes from them. Layers without weights get LOOM's
``InitializeWeights`` initialisation. loom-only settings ride along in extra
fields Go ignores: ``Causal``, ``RopeTheta`` (attention) and ``Stateful`` (RNN/LSTM).
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from loom.backend import to_numpy
from loom.errors import ConfigError, ModelFormatError
from loom.nn.builder import assign_paths, parse_layer
from loom.nn.layer_config import LAYER_TYPE_IDS, LayerConfig
from loom.nn.layers import kind_for

__all__ = ["GO_LAYER_FIELDS", "SOFTMAX_VARIANT_IDS", "layer_config_from_json", "layer_config_to_json"]

#: Go's SoftmaxType enum.
SOFTMAX_VARIANT_IDS: dict[str, int] = {
    "standard": 0,
    "grid": 1,
    "hierarchical": 2,
    "temperature": 3,
    "gumbel": 4,
    "masked": 5,
    "sparse": 6,
    "adaptive": 7,
    "mixture": 8,
    "entmax": 9,
}
_VARIANT_NAMES = {v: k for k, v in SOFTMAX_VARIANT_IDS.items()}
_TYPE_NAMES = {v: k for k, v in LAYER_TYPE_IDS.items()}

#: Go ``LayerConfig`` fields in declaration order, then loom's extensions.
GO_LAYER_FIELDS = (
    "Type", "Activation", "KernelSize", "Stride", "Padding", "Filters", "Kernel", "Bias",
    "InputHeight", "InputWidth", "InputChannels", "OutputHeight", "OutputWidth",
    "NumHeads", "NumKVHeads", "HeadDim", "DModel", "SeqLength",
    "QWeights", "KWeights", "VWeights", "OutputWeight", "QBias", "KBias", "VBias", "OutputBias",
    "HiddenSize", "RNNInputSize", "WeightIH", "WeightHH", "BiasH",
    "WeightIH_i", "WeightHH_i", "BiasH_i", "WeightIH_f", "WeightHH_f", "BiasH_f",
    "WeightIH_g", "WeightHH_g", "BiasH_g", "WeightIH_o", "WeightHH_o", "BiasH_o",
    "SoftmaxVariant", "SoftmaxRows", "SoftmaxCols", "Temperature", "GumbelNoise", "Mask",
    "HierarchyLevels", "AdaptiveClusters", "MixtureWeights", "EntmaxAlpha",
    "NormSize", "Gamma", "Beta", "Epsilon",
    "GateWeights", "UpWeights", "DownWeights", "GateBias", "UpBias", "DownBias",
    "ResidualSkip", "ParallelBranches", "CombineMode", "GridPositions",
    "GridOutputRows", "GridOutputCols", "GridOutputLayers",
    "Causal", "RopeTheta", "Stateful",
)  # fmt: skip
_FIELD_BY_LOWER = {name.lower(): name for name in GO_LAYER_FIELDS}

#: loom weight name (bundle key) -> Go field.
_WEIGHT_FIELDS = {
    "kernel": "Kernel",
    "biases": "Bias",
    "conv_bias": "Bias",
    "q_weights": "QWeights",
    "k_weights": "KWeights",
    "v_weights": "VWeights",
    "output_weight": "OutputWeight",
    "q_bias": "QBias",
    "k_bias": "KBias",
    "v_bias": "VBias",
    "output_bias": "OutputBias",
    "weight_ih": "WeightIH",
    "weight_hh": "WeightHH",
    "bias_h": "BiasH",
    "weight_ii": "WeightIH_i",
    "weight_if": "WeightIH_f",
    "weight_ig": "WeightIH_g",
    "weight_io": "WeightIH_o",
    "weight_hi": "WeightHH_i",
    "weight_hf": "WeightHH_f",
    "weight_hg": "WeightHH_g",
    "weight_ho": "WeightHH_o",
    "bias_i": "BiasH_i",
    "bias_f": "BiasH_f",
    "bias_g": "BiasH_g",
    "bias_o": "BiasH_o",
    "gamma": "Gamma",
    "beta": "Beta",
    "gate_weights": "GateWeights",
    "up_weights": "UpWeights",
    "down_weights": "DownWeights",
    "gate_bias": "GateBias",
    "up_bias": "UpBias",
    "down_bias": "DownBias",
}


# ---------------------------------------------------------------------------------------------- encode
def _sizes(cfg: LayerConfig) -> dict[str, Any]:
    """Go's size fields of ``cfg`` (Dense and SwiGLU keep theirs in InputHeight / OutputHeight)."""
    if cfg.type in ("dense", "swiglu"):
        return {"InputHeight": cfg.input_size, "OutputHeight": cfg.output_size}
    out = {
        "InputHeight": cfg.input_height,
        "InputWidth": cfg.input_width,
        "OutputHeight": cfg.output_height,
        "OutputWidth": cfg.output_width,
    }
    if cfg.type in ("rnn", "lstm"):
        out["RNNInputSize"] = cfg.input_size
    return out


def _floats(values: Any) -> list[float] | None:
    if values is None:
        return None
    flat = np.asarray(to_numpy(values), dtype=np.float32).reshape(-1)
    return flat.tolist() if flat.size else None


def layer_config_to_json(cfg: LayerConfig) -> dict[str, Any]:
    """Go's JSON object of a ``LayerConfig`` (all fields, Go's order; loom extensions last).

    Parameters
    ----------
    cfg : LayerConfig
        Any layer (Parallel branches are written recursively in ``ParallelBranches``).

    Returns
    -------
    dict
        JSON-ready: ints, floats (the exact float32 values), bools, lists and ``None``.
    """
    out: dict[str, Any] = dict.fromkeys(GO_LAYER_FIELDS)  # arrays stay None (Go's nil slices)
    out.update(
        Type=cfg.type_id,
        Activation=int(cfg.activation),
        KernelSize=cfg.kernel_size,
        Stride=cfg.stride,
        Padding=cfg.padding,
        Filters=cfg.filters,
        InputHeight=0,
        InputWidth=0,
        InputChannels=cfg.input_channels,
        OutputHeight=0,
        OutputWidth=0,
        NumHeads=cfg.num_heads,
        NumKVHeads=cfg.num_kv_heads,
        HeadDim=cfg.head_dim,
        DModel=cfg.d_model,
        SeqLength=cfg.seq_length,
        HiddenSize=cfg.hidden_size,
        RNNInputSize=0,
        SoftmaxVariant=SOFTMAX_VARIANT_IDS.get(cfg.softmax_variant, 0),
        SoftmaxRows=cfg.softmax_rows,
        SoftmaxCols=cfg.softmax_cols,
        Temperature=float(np.float32(cfg.temperature)),
        GumbelNoise=bool(cfg.gumbel_noise),
        Mask=list(cfg.mask) if cfg.mask is not None else None,
        HierarchyLevels=list(cfg.hierarchy_levels) if cfg.hierarchy_levels is not None else None,
        AdaptiveClusters=[list(c) for c in cfg.adaptive_clusters] if cfg.adaptive_clusters is not None else None,
        MixtureWeights=_floats(cfg.mixture_weights) if cfg.mixture_weights is not None else None,
        EntmaxAlpha=float(np.float32(cfg.entmax_alpha)),
        NormSize=cfg.norm_size,
        Epsilon=float(np.float32(cfg.epsilon)),
        ResidualSkip=0,
        ParallelBranches=[layer_config_to_json(b) for b in cfg.branches] or None,
        CombineMode=cfg.combine_mode if cfg.type == "parallel" else "",
        GridPositions=[
            {
                "BranchIndex": p.branch_index,
                "TargetRow": p.target_row,
                "TargetCol": p.target_col,
                "TargetLayer": p.target_layer,
            }
            for p in cfg.grid_positions
        ]
        or None,
        GridOutputRows=cfg.grid_output_rows,
        GridOutputCols=cfg.grid_output_cols,
        GridOutputLayers=cfg.grid_output_layers,
        Causal=bool(cfg.causal),
        RopeTheta=float(cfg.rope_theta),
        Stateful=bool(cfg.stateful),
    )
    out.update(_sizes(cfg))
    if cfg.params:
        for name, values in kind_for(cfg.type).export_weights(cfg, to_numpy).items():
            field = _WEIGHT_FIELDS.get(name)
            if field is not None:
                out[field] = _floats(values)
    return out


# ---------------------------------------------------------------------------------------------- decode
def _go_fields(obj: dict[str, Any], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        name = _FIELD_BY_LOWER.get(str(key).lower())
        if name is None:
            hint = difflib.get_close_matches(str(key), GO_LAYER_FIELDS, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{where}.{key}: not a LayerConfig field{did_you_mean}")
        fields[name] = value
    return fields


def _enum(value: Any, names: dict[int, str], where: str, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ConfigError(f"{where}: expected a {what} id (an integer), got {value!r}")
    if int(value) not in names:
        raise ConfigError(f"{where}: unknown {what} id {int(value)}; expected one of {sorted(names)}")
    return names[int(value)]


def _go_spec(obj: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(loom layer spec, loom-named weights with ``branch_weights``) of a Go-field object."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a LayerConfig object, got {type(obj).__name__}")
    f = _go_fields(obj, where)
    type_name = _enum(f.get("Type") or 0, _TYPE_NAMES, f"{where}.Type", "LayerType")
    spec: dict[str, Any] = {"type": type_name, "activation": f.get("Activation") or 0}
    weights = {loom: f[go] for loom, go in _WEIGHT_FIELDS.items() if f.get(go) is not None}
    if type_name == "conv2d":
        weights.pop("biases", None)
    else:
        weights.pop("conv_bias", None)

    def put(key: str, field: str) -> None:
        if f.get(field) not in (None, 0, "", [], False):
            spec[key] = f[field]

    if type_name in ("dense", "swiglu"):
        put("input_size", "InputHeight")
        put("output_size", "OutputHeight")
        if type_name == "dense" and "input_size" not in spec and weights.get("biases") and weights.get("kernel"):
            n_out = len(weights["biases"])
            if n_out and len(weights["kernel"]) % n_out == 0:
                spec["output_size"], spec["input_size"] = n_out, len(weights["kernel"]) // n_out
    elif type_name == "conv2d":
        for key, field in (
            ("input_channels", "InputChannels"),
            ("filters", "Filters"),
            ("kernel_size", "KernelSize"),
            ("stride", "Stride"),
            ("padding", "Padding"),
            ("input_height", "InputHeight"),
            ("input_width", "InputWidth"),
            ("output_height", "OutputHeight"),
            ("output_width", "OutputWidth"),
        ):
            put(key, field)
    elif type_name == "multi_head_attention":
        for key, field in (
            ("d_model", "DModel"),
            ("num_heads", "NumHeads"),
            ("num_kv_heads", "NumKVHeads"),
            ("head_dim", "HeadDim"),
            ("seq_length", "SeqLength"),
            ("rope_theta", "RopeTheta"),
        ):
            put(key, field)
        if f.get("Causal") is False:
            spec["causal"] = False
    elif type_name in ("rnn", "lstm"):
        for key, field in (
            ("input_size", "RNNInputSize"),
            ("hidden_size", "HiddenSize"),
            ("seq_length", "SeqLength"),
            ("stateful", "Stateful"),
        ):
            put(key, field)
    elif type_name == "softmax":
        spec["softmax_variant"] = _enum(
            f.get("SoftmaxVariant") or 0, _VARIANT_NAMES, f"{where}.SoftmaxVariant", "SoftmaxType"
        )
        for key, field in (
            ("softmax_rows", "SoftmaxRows"),
            ("softmax_cols", "SoftmaxCols"),
            ("temperature", "Temperature"),
            ("gumbel_noise", "GumbelNoise"),
            ("mask", "Mask"),
            ("hierarchy_levels", "HierarchyLevels"),
            ("adaptive_clusters", "AdaptiveClusters"),
            ("mixture_weights", "MixtureWeights"),
            ("entmax_alpha", "EntmaxAlpha"),
        ):
            put(key, field)
    elif type_name in ("layer_norm", "rms_norm"):
        put("norm_size", "NormSize")
        put("epsilon", "Epsilon")
    elif type_name == "parallel":
        for key, field in (
            ("combine_mode", "CombineMode"),
            ("grid_output_rows", "GridOutputRows"),
            ("grid_output_cols", "GridOutputCols"),
            ("grid_output_layers", "GridOutputLayers"),
        ):
            put(key, field)
        positions = f.get("GridPositions") or []
        if not isinstance(positions, list):
            raise ConfigError(f"{where}.GridPositions: expected a list of GridPosition objects")
        spec["grid_positions"] = [
            {
                "branch_index": p.get("BranchIndex", 0),
                "target_row": p.get("TargetRow", 0),
                "target_col": p.get("TargetCol", 0),
                "target_layer": p.get("TargetLayer", 0),
            }
            if isinstance(p, dict)
            else p
            for p in positions
        ]
        branches = f.get("ParallelBranches") or []
        if not isinstance(branches, list):
            raise ConfigError(f"{where}.ParallelBranches: expected a list of LayerConfig objects")
        pairs = [_go_spec(b, f"{where}.ParallelBranches[{i}]") for i, b in enumerate(branches)]
        spec["branches"] = [s for s, _ in pairs]
        weights["branch_weights"] = [w for _, w in pairs]
    return spec, weights


def _loom_spec(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = {k: v for k, v in obj.items() if str(k).lower() != "weights"}
    weights = next((v for k, v in obj.items() if str(k).lower() == "weights"), None) or {}
    return spec, weights


def _all_numbers(values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "fiu"
    return isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _import_weights(cfg: LayerConfig, weights: Any, rng: np.random.Generator) -> None:
    """Parameters from ``weights`` (loom names), or LOOM's InitializeWeights draws where none are given."""
    kind = kind_for(cfg.type)
    weights = weights if isinstance(weights, dict) else {}
    given = {k: v for k, v in weights.items() if k != "branch_weights" and v is not None}
    for name, values in given.items():
        if not _all_numbers(values):
            field = _WEIGHT_FIELDS.get(name, name)
            raise ConfigError(f"{cfg.path}.{field}: expected a flat list of numbers")
    if given:
        try:
            cfg.params = kind.import_weights(cfg, given, cfg.path)
        except ModelFormatError as exc:
            raise ConfigError(str(exc)) from exc
    elif kind.param_shapes(cfg):
        cfg.params = kind.init_params(cfg, rng)
    branch_weights = weights.get("branch_weights") or []
    for i, branch in enumerate(cfg.branches):
        _import_weights(branch, branch_weights[i] if i < len(branch_weights) else {}, rng)


def layer_config_from_json(obj: Any, where: str = "cfg", *, seed: int | None = None) -> LayerConfig:
    """A ``LayerConfig`` (with parameters) from Go's JSON object or loom's layer JSON.

    Parameters
    ----------
    obj : dict
        Go fields (``{"Type": 0, "Activation": 1, "Kernel": [...], ...}``, any case) or,
        when its ``type`` is a string, a loom layer object (``{"type": "dense", ...}`` with
        an optional ``"weights"`` object of bundle weight names).
    where : str
        Name used in error messages (``"SetLayer: parameter 3 (cfg)"``).
    seed : int, optional
        Seed for the initialisation of layers that come without weights.

    Returns
    -------
    LayerConfig

    Raises
    ------
    ConfigError
        Unknown fields (with a did-you-mean hint), bad enums, sizes or weight lengths.
    """
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a LayerConfig object, got {type(obj).__name__}")
    type_value = next((v for k, v in obj.items() if str(k).lower() == "type"), None)
    spec, weights = _loom_spec(obj) if isinstance(type_value, str) else _go_spec(obj, where)
    cfg = parse_layer(spec, where)
    cfg.path = where
    if cfg.branches:
        assign_paths(cfg.branches, f"{where}.branches")
    kind_for(cfg.type).infer(cfg, None, where)
    _import_weights(cfg, weights, np.random.default_rng(seed))
    return cfg
