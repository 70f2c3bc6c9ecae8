"""A drawing of a LOOM grid network as plain SVG (no scripts, no fonts, no network).

The grid is drawn as LOOM defines it: ``grid_rows`` x ``grid_cols`` cells, each holding
``layers_per_cell`` layers, data flowing through them in flat order
(``row * cols * lpc + col * lpc + layer``), shown by numbered arrows. A Parallel layer
opens into its branches side by side (nested Parallels too); its merge is drawn under
them: a node for ``concat`` / ``add`` / ``avg``, and for ``grid_scatter`` the output grid
(``grid_output_rows`` x ``grid_output_cols`` x ``grid_output_layers`` cells) with an arrow
from every branch to the cell its ``grid_positions`` entry places it in.

Every layer is a ``<g class="layer" data-path=... data-type=...>``, every scatter cell a
``<g class="scatter-cell" data-cell="r,c,l" data-branches=...>``, so the page and the
tests can find them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from loom.nn.layer_config import LayerConfig
from loom.serve.describe import describe_layer, layer_title

__all__ = ["network_svg"]

LEAF_W, LEAF_H = 168, 46
GAP = 16
PAD = 10
HEADER = 22
MERGE_H = 24
CELL_W, CELL_H = 70, 34
CELL_LABEL = 16
FLOW_GAP = 30

_FILL = {
    "dense": "#e8f0fe",
    "lstm": "#fdf0e2",
    "rnn": "#fdf0e2",
    "conv2d": "#e6f4ea",
    "multi_head_attention": "#f3e8fd",
    "softmax": "#fce8e6",
    "parallel": "#ffffff",
}


@dataclass
class _Size:
    w: float
    h: float
    branches: list[_Size] = field(default_factory=list)


def _measure(cfg: LayerConfig) -> _Size:
    if cfg.type != "parallel" or not cfg.branches:
        return _Size(LEAF_W, LEAF_H)
    branches = [_measure(b) for b in cfg.branches]
    inner_w = sum(b.w for b in branches) + GAP * (len(branches) - 1)
    inner_h = max(b.h for b in branches)
    if cfg.combine_mode == "grid_scatter":
        merge_w = _scatter_cols(cfg) * CELL_W
        merge_h = CELL_LABEL + max(cfg.grid_output_rows, 1) * CELL_H
    else:
        merge_w, merge_h = 90, MERGE_H
    w = max(inner_w, merge_w, LEAF_W) + 2 * PAD
    h = HEADER + GAP + inner_h + GAP + merge_h + PAD
    return _Size(w, h, branches)


def _scatter_cols(cfg: LayerConfig) -> int:
    return max(cfg.grid_output_cols, 1) * max(cfg.grid_output_layers, 1)


class _Canvas:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, *, fill: str, stroke: str = "#5f6368", dash: bool = False):
        extra = ' stroke-dasharray="5 3"' if dash else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.2"{extra}/>'
        )

    def text(self, x: float, y: float, content: str, *, size: int = 12, weight: str = "normal", fill: str = "#202124"):
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" fill="{fill}" '
            f'text-anchor="middle" font-family="sans-serif">{escape(content)}</text>'
        )

    def arrow(self, x1: float, y1: float, x2: float, y2: float, *, color: str = "#5f6368") -> None:
        if abs(x1 - x2) < 0.5:
            d = f"M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}"
        else:
            bend = max(abs(y2 - y1) / 2, 18)
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}"
        self.parts.append(
            f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.4" marker-end="url(#loom-arrow)"/>'
        )

    def arrow_across(self, x1: float, y1: float, x2: float, y2: float, *, color: str = "#5f6368") -> None:
        """A left-to-right arrow between two cells of one grid row."""
        bend = max((x2 - x1) / 2, 12)
        d = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        self.parts.append(
            f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.4" marker-end="url(#loom-arrow)"/>'
        )

    def open_group(self, cls: str, **data: Any) -> None:
        attrs = "".join(f" data-{k.replace('_', '-')}={quoteattr(str(v))}" for k, v in data.items())
        self.parts.append(f'<g class="{cls}"{attrs}>')

    def close_group(self) -> None:
        self.parts.append("</g>")


def _draw(cfg: LayerConfig, size: _Size, x: float, y: float, canvas: _Canvas, io: str | None) -> None:
    """Draw ``cfg`` with its top-left corner at (x, y)."""
    canvas.open_group("layer", path=cfg.path, type=cfg.type, params=cfg.num_parameters())
    params = cfg.num_parameters()
    if cfg.type != "parallel" or not cfg.branches:
        canvas.rect(x, y, size.w, size.h, fill=_FILL.get(cfg.type, "#f1f3f4"))
        canvas.text(x + size.w / 2, y + 18, layer_title(cfg), weight="bold")
        detail = io or describe_layer(cfg)
        sub = f"{detail} · {params:,} params" if detail else f"{params:,} params"
        canvas.text(x + size.w / 2, y + 35, sub, size=11)
        canvas.close_group()
        return
    canvas.rect(x, y, size.w, size.h, fill=_FILL["parallel"], dash=True)
    title = f"{layer_title(cfg)} ({len(cfg.branches)} branches, {params:,} params)"
    canvas.text(x + size.w / 2, y + 15, title, weight="bold")
    inner_w = sum(b.w for b in size.branches) + GAP * (len(size.branches) - 1)
    bx = x + (size.w - inner_w) / 2
    by = y + HEADER + GAP
    inner_h = max(b.h for b in size.branches)
    bottoms: list[tuple[float, float]] = []
    for branch, bsize in zip(cfg.branches, size.branches, strict=True):
        canvas.arrow(x + size.w / 2, y + HEADER, bx + bsize.w / 2, by)
        _draw(branch, bsize, bx, by, canvas, None)
        bottoms.append((bx + bsize.w / 2, by + bsize.h))
        bx += bsize.w + GAP
    my = by + inner_h + GAP
    if cfg.combine_mode == "grid_scatter":
        _draw_scatter(cfg, x + size.w / 2, my, bottoms, canvas)
    else:
        symbol = {"add": "⊕ add", "avg": "avg", "average": "avg", "concat": "⧺ concat"}.get(
            cfg.combine_mode, cfg.combine_mode
        )
        canvas.rect(x + size.w / 2 - 45, my, 90, MERGE_H, fill="#f8f9fa")
        canvas.text(x + size.w / 2, my + 16, symbol, size=11)
        for bx_, by_ in bottoms:
            canvas.arrow(bx_, by_, x + size.w / 2, my)
    canvas.close_group()


def _draw_scatter(cfg: LayerConfig, cx: float, y: float, bottoms: list[tuple[float, float]], canvas: _Canvas) -> None:
    rows, cols, layers = max(cfg.grid_output_rows, 1), max(cfg.grid_output_cols, 1), max(cfg.grid_output_layers, 1)
    width = cols * layers * CELL_W
    x0 = cx - width / 2
    canvas.text(cx, y + 11, f"output grid {rows}×{cols}×{layers} (row, col, layer)", size=10, fill="#5f6368")
    top = y + CELL_LABEL
    placed: dict[tuple[int, int, int], list[int]] = {}
    for pos in cfg.grid_positions:
        placed.setdefault((pos.target_row, pos.target_col, pos.target_layer), []).append(pos.branch_index)
    centers: dict[tuple[int, int, int], tuple[float, float]] = {}
    for r in range(rows):
        for c in range(cols):
            for lyr in range(layers):
                cx_ = x0 + (c * layers + lyr) * CELL_W
                cy_ = top + r * CELL_H
                branches = placed.get((r, c, lyr), [])
                canvas.open_group("scatter-cell", cell=f"{r},{c},{lyr}", branches=",".join(map(str, branches)))
                canvas.rect(cx_ + 2, cy_ + 2, CELL_W - 4, CELL_H - 4, fill="#fef7e0" if branches else "#f8f9fa")
                label = f"({r},{c},{lyr})" + (" ← b" + ",".join(map(str, branches)) if branches else "")
                canvas.text(cx_ + CELL_W / 2, cy_ + CELL_H / 2 + 4, label, size=10)
                canvas.close_group()
                centers[(r, c, lyr)] = (cx_ + CELL_W / 2, cy_ + 2)
    for pos in cfg.grid_positions:
        if 0 <= pos.branch_index < len(bottoms):
            bx, by = bottoms[pos.branch_index]
            tx, ty = centers.get((pos.target_row, pos.target_col, pos.target_layer), (cx, top))
            canvas.arrow(bx, by, tx, ty, color="#e37400")


def network_svg(net: Any, sizes: list[tuple[int, int]] | None = None) -> str:
    """The network as an SVG document (text).

    Parameters
    ----------
    net : Network
        Any LOOM grid network.
    sizes : list of (int, int), optional
        Values per sample in/out of each top-level layer (from a forward pass), shown on
        the layers and on the input/output nodes.

    Returns
    -------
    str
        ``<svg ...>...</svg>``, sized to its content (``viewBox``), scalable by CSS.
    """
    rows, cols, lpc = net.grid_rows, net.grid_cols, net.layers_per_cell
    measured = [_measure(cfg) for cfg in net.layers]

    def flat(r: int, c: int, lyr: int) -> int:
        return r * cols * lpc + c * lpc + lyr

    col_w = [max(measured[flat(r, c, lyr)].w for r in range(rows) for lyr in range(lpc)) for c in range(cols)]
    cell_h = [
        max(sum(measured[flat(r, c, lyr)].h for lyr in range(lpc)) + FLOW_GAP * (lpc - 1) for c in range(cols))
        for r in range(rows)
    ]
    cell_pad = 12
    top = 58
    width = sum(col_w) + (cols - 1) * GAP * 2 + 2 * (cell_pad + PAD) * cols
    canvas = _Canvas()
    positions: dict[int, tuple[float, float, _Size]] = {}
    y = top
    for r in range(rows):
        x = PAD
        for c in range(cols):
            cw = col_w[c] + 2 * cell_pad
            canvas.open_group("grid-cell", cell=f"{r},{c}")
            canvas.rect(x, y, cw, cell_h[r] + 2 * cell_pad + 14, fill="#fafafa", stroke="#dadce0")
            canvas.text(x + 40, y + 13, f"cell ({r}, {c})", size=10, fill="#5f6368")
            canvas.close_group()
            ly = y + cell_pad + 14
            for lyr in range(lpc):
                i = flat(r, c, lyr)
                m = measured[i]
                lx = x + cell_pad + (col_w[c] - m.w) / 2
                positions[i] = (lx, ly, m)
                ly += m.h + FLOW_GAP
            x += cw + GAP * 2
        y += cell_h[r] + 2 * cell_pad + 14 + GAP * 2
    height = y + 40
    # input node, layers, output node, numbered flow arrows in flat order
    first_x, _, first_m = positions[0]
    n_in = sizes[0][0] if sizes else None
    n_out = sizes[-1][1] if sizes else None
    in_cx = first_x + first_m.w / 2
    canvas.rect(in_cx - 60, 12, 120, 26, fill="#e8eaed")
    canvas.text(in_cx, 29, f"input ({n_in})" if n_in else "input", size=11)
    previous: tuple[float, float, float, float] | None = None  # x, y, w, h of the previous layer
    for i, cfg in enumerate(net.layers):
        lx, ly, m = positions[i]
        io = f"{sizes[i][0]}→{sizes[i][1]}" if sizes and cfg.type != "parallel" else None
        if previous is None:
            canvas.arrow(in_cx, 38.0, lx + m.w / 2, ly)
        else:
            px, py, pw, ph = previous
            same_row = (i - 1) // (cols * lpc) == i // (cols * lpc)
            if same_row and (i - 1) % lpc == lpc - 1:  # into the next cell of the row: across
                canvas.arrow_across(px + pw, py + min(ph, 60) / 2, lx, ly + min(m.h, 60) / 2)
            else:
                canvas.arrow(px + pw / 2, py + ph, lx + m.w / 2, ly)
        _draw(cfg, m, lx, ly, canvas, io)
        canvas.text(lx - 8, ly + 12, str(i), size=10, weight="bold", fill="#1a73e8")
        previous = (lx, ly, m.w, m.h)
    assert previous is not None
    last_x, last_y, last_w, last_h = previous
    out_cx = last_x + last_w / 2
    canvas.rect(out_cx - 60, height - 34, 120, 26, fill="#e8eaed")
    canvas.text(out_cx, height - 17, f"output ({n_out})" if n_out else "output", size=11)
    canvas.arrow(out_cx, last_y + last_h, out_cx, height - 34)
    width = max(width, in_cx + 70, out_cx + 70)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="grid {rows}x{cols}x{lpc} network with {len(net.layers)} layers">'
        '<defs><marker id="loom-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5f6368"/></marker></defs>'
    )
    return head + "".join(canvas.parts) + "</svg>"
