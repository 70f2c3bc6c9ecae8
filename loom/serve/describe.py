"""Human-readable facts about a network's layers: one-line descriptions, the layer table, methods.

Used by the lab page (layer table, introspection list) and by :mod:`loom.serve.diagram`.
"""

from __future__ import annotations

from typing import Any

from loom.backend import to_numpy
from loom.nn.layer_config import LayerConfig
from loom.ops.activations import activation_name

__all__ = ["describe_layer", "layer_rows", "layer_title", "method_list", "probe_sizes"]

#: Layer types whose ``activation`` field is used by their forward pass.
_ACTIVATED = ("dense", "conv2d")


def layer_title(cfg: LayerConfig) -> str:
    """``"dense · relu"``, ``"lstm"``, ``"parallel · grid_scatter"``."""
    if cfg.type in _ACTIVATED:
        return f"{cfg.type} · {activation_name(cfg.activation)}"
    if cfg.type == "parallel":
        return f"parallel · {cfg.combine_mode}"
    if cfg.type == "softmax":
        return f"softmax · {cfg.softmax_variant}"
    return cfg.type


def describe_layer(cfg: LayerConfig) -> str:
    """The sizes of one layer in a few words (``"8→16"``, ``"d_model 64, 4 heads"``)."""
    t = cfg.type
    if t in ("dense", "swiglu"):
        return f"{cfg.input_size}→{cfg.output_size}"
    if t in ("rnn", "lstm"):
        seq = f", seq {cfg.seq_length}" if cfg.seq_length and cfg.seq_length > 1 else ""
        return f"{cfg.input_size}→{cfg.hidden_size}{seq}"
    if t == "conv2d":
        return (
            f"{cfg.input_height}×{cfg.input_width}×{cfg.input_channels} → {cfg.filters} filters "
            f"{cfg.kernel_size}×{cfg.kernel_size}, stride {cfg.stride}, pad {cfg.padding}"
        )
    if t == "multi_head_attention":
        kv = f"/{cfg.num_kv_heads} kv" if cfg.num_kv_heads and cfg.num_kv_heads != cfg.num_heads else ""
        return f"d_model {cfg.d_model}, {cfg.num_heads}{kv} heads, seq {cfg.seq_length}"
    if t in ("layer_norm", "rms_norm"):
        return f"size {cfg.norm_size}"
    if t == "softmax":
        if cfg.softmax_rows or cfg.softmax_cols:
            return f"{cfg.softmax_rows}×{cfg.softmax_cols}"
        return ""
    if t == "parallel":
        text = f"{len(cfg.branches)} branches"
        if cfg.combine_mode == "grid_scatter":
            text += f" → grid {cfg.grid_output_rows}×{cfg.grid_output_cols}×{cfg.grid_output_layers}"
        return text
    return ""


def probe_sizes(net: Any, sample: Any) -> list[tuple[int, int]] | None:
    """``(in, out)`` values per sample of every top-level layer, from one forward pass on ``sample``.

    Returns None when the sample does not fit the network (the table then shows the
    configured sizes only). The network's recorded forward state is restored.
    """
    saved = (net._activations, net._tape)
    try:
        net.forward(sample)
        acts = [int(to_numpy(a).size) for a in net.activations()]
    except Exception:  # a sample that does not fit: the sizes stay unknown, the error shows elsewhere
        return None
    finally:
        net._activations, net._tape = saved
    batch = max(int(net.batch_size), 1)
    return [(acts[i] // batch, acts[i + 1] // batch) for i in range(len(acts) - 1)]


def layer_rows(net: Any, sizes: list[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """The layer table: one row per layer, nested branches after their Parallel (``depth`` > 0).

    Each row: ``path`` (JSON path), ``depth``, ``grid`` (``"r,c,l"`` for top-level layers),
    ``type``, ``activation`` (for Dense/Conv2D), ``detail``, ``in`` / ``out`` (values per
    sample, top-level layers, when ``sizes`` is given) and ``params``.
    """
    rows: list[dict[str, Any]] = []
    per_row = net.grid_cols * net.layers_per_cell
    for index, top in enumerate(net.layers):
        r, rest = divmod(index, per_row)
        c, lyr = divmod(rest, net.layers_per_cell)

        def visit(cfg: LayerConfig, depth: int, grid: str | None, io: tuple[int, int] | None) -> None:
            rows.append(
                {
                    "path": cfg.path,
                    "depth": depth,
                    "grid": grid,
                    "type": cfg.type,
                    "activation": activation_name(cfg.activation) if cfg.type in _ACTIVATED else None,
                    "detail": describe_layer(cfg),
                    "in": None if io is None else io[0],
                    "out": None if io is None else io[1],
                    "params": cfg.num_parameters(),
                }
            )
            for branch in cfg.branches:
                visit(branch, depth + 1, None, None)

        visit(top, 0, f"{r},{c},{lyr}", None if sizes is None else sizes[index])
    return rows


def method_list(net: Any) -> list[dict[str, str]]:
    """Every public method with its signature (``net.get_method_signature``), sorted by name."""
    return [{"name": name, "signature": net.get_method_signature(name)} for name in net.list_methods()]
