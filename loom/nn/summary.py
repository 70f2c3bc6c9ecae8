"""``Network.summary()``: a table of the layers (grid position, type, activation, sizes, parameters).

Sizes are per sample, propagated from the first layer's own input size (or the network's
``input_size``) through each layer kind's size rules, without running the network; a size no
rule determines prints as ``?``. Parallel branches are listed under their layer.

Examples
--------
>>> import loom
>>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
...     "layers_per_cell": 2, "layers": [{"type": "dense", "input_size": 2, "output_size": 3,
...     "activation": "tanh"}, {"type": "dense", "output_size": 1, "activation": "sigmoid"}]})
>>> print(summary_text(net).splitlines()[-1])
Total params: 13
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers import kind_for
from loom.ops.activations import activation_name

if TYPE_CHECKING:
    from loom.nn.network import Network

__all__ = ["input_features", "layer_sizes", "output_features", "summary_rows", "summary_text"]

#: Layer types whose ``activation`` field is applied (others ignore it).
_ACTIVATED = ("dense", "conv2d", "residual")


def _own_input(cfg: LayerConfig) -> int | None:
    """Per-sample input size a layer's own config states (``None`` when it takes any)."""
    kind = cfg.type
    if kind in ("dense", "swiglu"):
        return cfg.input_size or None
    if kind == "conv2d":
        return cfg.input_channels * cfg.input_height * cfg.input_width or None
    if kind == "multi_head_attention":
        return (cfg.seq_length or 1) * cfg.d_model or None
    if kind in ("rnn", "lstm"):
        return cfg.seq_length * cfg.input_size or None
    if kind in ("layer_norm", "rms_norm"):
        return cfg.norm_size or None
    if kind == "parallel":
        return next((n for n in map(_own_input, cfg.branches) if n), None)
    return None


#: Layer types that keep the length of their input (norms, SwiGLU and softmax act row by row).
_LENGTH_PRESERVING = ("layer_norm", "rms_norm", "swiglu", "softmax", "residual")


def _network_input(net: Network) -> int | None:
    """Per-sample input size: ``net.input_size``, else the first layer that states a whole-sample size.

    Leading length-preserving layers pass the input through unchanged, so an RMSNorm of rows of 8
    in front of an attention layer over 3 tokens of 8 takes 24 values.
    """
    if net.input_size:
        return int(net.input_size)
    for cfg in net.layers:
        if cfg.type not in _LENGTH_PRESERVING:
            return _own_input(cfg)
    return _own_input(net.layers[0]) if net.layers else None


def _shape_copy(cfg: LayerConfig) -> LayerConfig:
    """The config without its arrays (size rules may fill in fields; the network's stay untouched)."""
    return dataclasses.replace(
        cfg, params={}, grads={}, state={}, branches=[_shape_copy(b) for b in cfg.branches], path=cfg.path
    )


def _output(cfg: LayerConfig, n_in: int | None) -> int | None:
    try:
        return kind_for(cfg.type).infer(_shape_copy(cfg), n_in, cfg.path)
    except LoomError:
        return None


def layer_sizes(net: Network, in_features: int | None = None) -> list[tuple[int | None, int | None]]:
    """``(input, output)`` values per sample of every top-level layer (``None``: unknown).

    Parameters
    ----------
    in_features : int, optional
        Features of one input sample (default: ``net.input_size`` or the first layer's own).
    """
    sizes: list[tuple[int | None, int | None]] = []
    features = in_features or _network_input(net)
    for cfg in net.layers:
        n_in = features or _own_input(cfg)
        features = _output(cfg, n_in)
        sizes.append((n_in, features))
    return sizes


def input_features(net: Network) -> int | None:
    """Features of one input sample, when the configs tell (``None`` otherwise)."""
    return layer_sizes(net)[0][0] if net.layers else None


def output_features(net: Network, in_features: int | None = None) -> int | None:
    """Outputs per sample, when the configs tell (``None`` otherwise)."""
    return layer_sizes(net, in_features)[-1][1] if net.layers else None


def _type_text(cfg: LayerConfig) -> str:
    if cfg.type == "softmax":
        return f"softmax ({cfg.softmax_variant or 'standard'})"
    if cfg.type == "parallel":
        return f"parallel ({cfg.combine_mode or 'concat'}, {len(cfg.branches)} branches)"
    if cfg.type in ("rnn", "lstm") and cfg.seq_length:
        return f"{cfg.type} (seq {cfg.seq_length})"
    if cfg.type == "multi_head_attention":
        return f"multi_head_attention ({cfg.num_heads} heads)"
    if cfg.type == "conv2d":
        return f"conv2d ({cfg.filters} filters {cfg.kernel_size}x{cfg.kernel_size}/{cfg.stride})"
    return cfg.type


def _activation_text(cfg: LayerConfig) -> str:
    if cfg.type in _ACTIVATED:
        return activation_name(cfg.activation)
    return "tanh" if cfg.type == "rnn" else "-"


def _size_text(n_in: int | None, n_out: int | None) -> str:
    return f"{'?' if n_in is None else n_in} → {'?' if n_out is None else n_out}"


def summary_rows(net: Network) -> list[dict[str, Any]]:
    """One dict per layer and branch (``index``, ``position``, ``type``, ``activation``, ``sizes``, ``params``)."""
    rows: list[dict[str, Any]] = []
    cells = net.grid_cols * net.layers_per_cell

    def add_branches(cfg: LayerConfig, n_in: int | None, depth: int) -> None:
        for i, branch in enumerate(cfg.branches):
            rows.append(
                {
                    "index": "",
                    "position": f"{'  ' * (depth - 1)}└ branch {i}",
                    "type": _type_text(branch),
                    "activation": _activation_text(branch),
                    "sizes": _size_text(n_in, _output(branch, n_in)),
                    "params": branch.num_parameters(),
                    "depth": depth,
                }
            )
            add_branches(branch, n_in, depth + 1)

    for index, (cfg, (n_in, n_out)) in enumerate(zip(net.layers, layer_sizes(net), strict=True)):
        row, rest = divmod(index, cells)
        col, layer = divmod(rest, net.layers_per_cell)
        rows.append(
            {
                "index": str(index),
                "position": f"({row}, {col}, {layer})",
                "type": _type_text(cfg),
                "activation": _activation_text(cfg),
                "sizes": _size_text(n_in, n_out),
                "params": cfg.num_parameters(),
                "depth": 0,
            }
        )
        add_branches(cfg, n_in, 1)
    return rows


def summary_text(net: Network, title: str | None = None) -> str:
    """The summary table as text (what :meth:`~loom.nn.network.Network.summary` prints)."""
    rows = summary_rows(net)
    header = {
        "index": "#",
        "position": "grid (row, col, layer)",
        "type": "layer",
        "activation": "activation",
        "sizes": "in → out",
        "params": "params",
    }
    keys = list(header)
    widths = {k: max(len(header[k]), *(len(f"{r[k]:,}" if k == "params" else str(r[k])) for r in rows)) for k in keys}

    def line(values: dict[str, Any]) -> str:
        cells = []
        for k in keys:
            text = f"{values[k]:,}" if k == "params" and isinstance(values[k], int) else str(values[k])
            cells.append(text.rjust(widths[k]) if k in ("index", "params") else text.ljust(widths[k]))
        return "  ".join(cells).rstrip()

    first = title or (
        f"Network: grid {net.grid_rows}x{net.grid_cols}x{net.layers_per_cell}, batch_size {net.batch_size}, "
        f"backend {net.backend}"
    )
    rule = "─" * len(line(header))
    body = [line(r) for r in rows]
    total = net.num_parameters()
    return "\n".join([first, rule, line(header), rule, *body, rule, f"Total params: {total:,}"])
