"""Parallel layer kind (LOOM type 10): branches on the same input, one merge per combine mode.

Every branch (any layer type, nested Parallels to any depth) receives the same
flat input; the outputs are merged by the combine mode's function from
:mod:`loom.ops.combine` (``concat`` — also for an omitted mode —, ``add``,
``avg`` / ``average``, ``grid_scatter``). Gradients flow into every branch and
every parameter. Branches run outside LOOM's hidden residual stream (an MHA or
SwiGLU inside a branch adds no residual), as in Go.

Differences from Go (``docs/differences-from-go.md#fixed-on-purpose``): ``grid_scatter`` honours ``branch_index``;
two branches on one cell, a position outside the output grid, a branch without
(or with two) positions and an unknown combine mode are ``ConfigError``s at
build / load time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from loom.errors import ConfigError, ShapeError
from loom.nn.layer_config import GridPosition, LayerConfig
from loom.nn.layers.base import (
    ForwardContext,
    LayerKind,
    kind_for,
    lower_keys,
    memoized,
    parse_layer,
    register_kind,
    spec_int,
)
from loom.ops.combine import (
    add_backward,
    add_forward,
    avg_backward,
    avg_forward,
    concat_backward,
    concat_forward,
    grid_scatter_backward,
    grid_scatter_forward,
)

__all__ = ["COMBINE_MODES", "ParallelKind", "checked_merge_functions", "grid_cell_order", "merge_functions"]

#: Accepted ``combine_mode`` strings -> merge function family.
COMBINE_MODES: dict[str, str] = {
    "": "concat",
    "concat": "concat",
    "add": "add",
    "avg": "avg",
    "average": "avg",
    "grid_scatter": "grid_scatter",
}

_POSITION_KEYS = ("branch_index", "target_row", "target_col", "target_layer")


def _mode(cfg: LayerConfig, path: str) -> str:
    mode = COMBINE_MODES.get(cfg.combine_mode) if isinstance(cfg.combine_mode, str) else None
    if mode is None:
        raise ConfigError(
            f"{path}.combine_mode: unknown combine mode {cfg.combine_mode!r:.80}; accepted: "
            "concat, add, avg, average, grid_scatter"
        )
    return mode


def merge_functions(
    mode: str, order: list[int] | None, sizes: list[int], batch: int, xp: Any
) -> tuple[Callable[[list[Any]], Any], Callable[[Any], list[Any]]]:
    """``merge(outputs)`` and ``split(grad)`` of one merge family for branch outputs of ``sizes`` (checked)."""
    if mode == "grid_scatter":
        return (
            partial(grid_scatter_forward, order=order, batch=batch, xp=xp),
            partial(grid_scatter_backward, order=order, sizes=sizes, batch=batch, xp=xp),
        )
    if mode == "concat":
        return partial(concat_forward, xp=xp), partial(concat_backward, sizes=sizes)
    if mode == "add":
        return partial(add_forward, xp=xp), partial(add_backward, count=len(sizes))
    return partial(avg_forward, xp=xp), partial(avg_backward, count=len(sizes))


def checked_merge_functions(
    cfg: LayerConfig, mode: str, order: list[int] | None, sizes: list[int], batch: int, xp: Any
) -> tuple[Callable[[list[Any]], Any], Callable[[Any], list[Any]]]:
    """:func:`merge_functions` after checking the branch output lengths ``sizes`` (``ShapeError`` naming the branch)."""
    if mode == "grid_scatter" and batch != 1:
        for i, size in enumerate(sizes):
            if size % batch:
                raise ShapeError(f"{cfg.path}.branches[{i}]: output length {size} is not a multiple of batch {batch}")
    if mode in ("add", "avg"):
        for i, size in enumerate(sizes):
            if size != sizes[0]:
                raise ShapeError(
                    f"{cfg.path}.branches[{i}]: output size {size} does not match {sizes[0]} "
                    f"(branch 0) for combine mode {cfg.combine_mode!r}"
                )
    return merge_functions(mode, order, sizes, batch, xp)


def grid_cell_order(cfg: LayerConfig, path: str | None = None) -> list[int]:
    """Branch index of each occupied output-grid cell, in cell-index order.

    Validates the ``grid_scatter`` settings of ``cfg`` (one position per branch,
    ``branch_index`` honoured, targets inside the ``grid_output_*`` grid, one branch per
    cell) and raises :class:`~loom.errors.ConfigError` naming the field otherwise.
    """
    path = cfg.path if path is None else path
    positions, n_branches = cfg.grid_positions, len(cfg.branches)
    rows, cols, layers = cfg.grid_output_rows, cfg.grid_output_cols, cfg.grid_output_layers
    if len(positions) != n_branches:
        raise ConfigError(
            f"{path}.grid_positions: grid_scatter needs one position per branch: "
            f"{len(positions)} positions for {n_branches} branches"
        )
    if rows <= 0 or cols <= 0 or layers <= 0:
        raise ConfigError(
            f"{path}.grid_output_rows: grid_scatter needs positive grid_output_rows, grid_output_cols and "
            f"grid_output_layers, got {rows} x {cols} x {layers}"
        )
    cells: dict[int, int] = {}
    placed: dict[int, int] = {}
    for k, pos in enumerate(positions):
        where = f"{path}.grid_positions[{k}]"
        for name, value, limit in (
            ("branch_index", pos.branch_index, n_branches),
            ("target_row", pos.target_row, rows),
            ("target_col", pos.target_col, cols),
            ("target_layer", pos.target_layer, layers),
        ):
            if not 0 <= value < limit:
                raise ConfigError(f"{where}.{name}: {value} is outside 0..{limit - 1}")
        if pos.branch_index in placed:
            raise ConfigError(
                f"{where}.branch_index: expected one position per branch, got a second one for branch "
                f"{pos.branch_index} (first: grid_positions[{placed[pos.branch_index]}])"
            )
        placed[pos.branch_index] = k
        cell = pos.target_row * cols * layers + pos.target_col * layers + pos.target_layer
        if cell in cells:
            raise ConfigError(
                f"{where}: cell (row {pos.target_row}, col {pos.target_col}, layer {pos.target_layer}) already "
                f"holds branch {cells[cell]}; two branches cannot share a grid_scatter cell"
            )
        cells[cell] = pos.branch_index
    return [cells[c] for c in sorted(cells)]


def _parse_positions(value: Any, path: str) -> list[GridPosition]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}.grid_positions: expected a list of position objects, got {value!r:.80}")
    positions = []
    for k, item in enumerate(value):
        where = f"{path}.grid_positions[{k}]"
        if isinstance(item, GridPosition):
            positions.append(item)
            continue
        spec = lower_keys(item, where, _POSITION_KEYS)
        positions.append(GridPosition(*(spec_int(spec, key, where) for key in _POSITION_KEYS)))
    return positions


@register_kind
class ParallelKind(LayerKind):
    """Run branches on the same input and merge their outputs (LOOM type 10).

    Examples
    --------
    >>> import loom
    >>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
    ...     "layers_per_cell": 1, "layers": [{"type": "parallel", "combine_mode": "concat",
    ...     "branches": [{"type": "dense", "input_size": 2, "output_size": 3},
    ...                  {"type": "dense", "input_size": 2, "output_size": 1}]}]}, seed=0)
    >>> net.forward([1.0, 2.0]).shape
    (4,)
    """

    type_name = "parallel"

    # ----- configuration -------------------------------------------------------
    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        mode = spec.get("combine_mode")
        if mode is None or mode == "":
            mode = "concat"  # Go's builder stores "concat" for a missing mode
        cfg.combine_mode = mode
        _mode(cfg, path)
        cfg.grid_output_rows = spec_int(spec, "grid_output_rows", path)
        cfg.grid_output_cols = spec_int(spec, "grid_output_cols", path)
        cfg.grid_output_layers = spec_int(spec, "grid_output_layers", path)
        cfg.grid_positions = _parse_positions(spec.get("grid_positions"), path)
        branches = spec.get("branches")
        if not isinstance(branches, list) or not branches:
            raise ConfigError(f"{path}.branches: a parallel layer needs a non-empty list of branch layers")
        cfg.branches = [parse_layer(b, f"{path}.branches[{i}]") for i, b in enumerate(branches)]
        if COMBINE_MODES[cfg.combine_mode] == "grid_scatter":
            grid_cell_order(cfg, path)

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        mode = _mode(cfg, path)
        if not cfg.branches:
            raise ConfigError(f"{path}.branches: a parallel layer needs at least one branch")
        if mode == "grid_scatter":
            grid_cell_order(cfg, path)
        sizes = []
        for i, branch in enumerate(cfg.branches):
            branch_path = f"{path}.branches[{i}]"
            sizes.append(kind_for(branch.type, f"{branch_path}.type").infer(branch, in_features, branch_path))
        if mode in ("add", "avg"):
            known = [(i, s) for i, s in enumerate(sizes) if s is not None]
            for i, size in known[1:]:
                if size != known[0][1]:
                    raise ConfigError(
                        f"{path}.branches[{i}]: output size {size} does not match branch {known[0][0]}'s "
                        f"{known[0][1]}; combine mode {cfg.combine_mode!r} needs equal output sizes"
                    )
            return known[0][1] if len(known) == len(sizes) else None
        return None if any(s is None for s in sizes) else sum(sizes)

    def work_size(self, cfg: LayerConfig, in_features: int | None, out_features: int | None) -> int:
        total = 2 * (out_features or 0)
        for i, branch in enumerate(cfg.branches):
            kind = kind_for(branch.type)
            branch_out = kind.infer(branch, in_features, f"{cfg.path}.branches[{i}]")  # sizes are filled: no change
            total += kind.work_size(branch, in_features, branch_out)
        return total

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        return {
            "combine_mode": cfg.combine_mode,
            "grid_positions": [{key: int(getattr(pos, key)) for key in _POSITION_KEYS} for pos in cfg.grid_positions],
            "grid_output_rows": cfg.grid_output_rows,
            "grid_output_cols": cfg.grid_output_cols,
            "grid_output_layers": cfg.grid_output_layers,
        }

    # ----- math ----------------------------------------------------------------
    def _cell_order(self, cfg: LayerConfig) -> list[int]:
        key = (
            cfg.grid_output_rows,
            cfg.grid_output_cols,
            cfg.grid_output_layers,
            len(cfg.branches),
            tuple((p.branch_index, p.target_row, p.target_col, p.target_layer) for p in cfg.grid_positions),
        )
        cached = cfg.state.get("_grid_order")
        if cached is None or cached[0] != key:
            cached = (key, grid_cell_order(cfg))
            cfg.state["_grid_order"] = cached
        return cached[1]

    def _plan(self, cfg: LayerConfig) -> tuple[str, list[Any], list[int] | None]:
        """Merge family, ``kind.forward`` of every branch, and the grid-cell order (grid_scatter only)."""
        mode = COMBINE_MODES.get(cfg.combine_mode) if isinstance(cfg.combine_mode, str) else None
        if mode is None:
            mode = _mode(cfg, cfg.path)
        if not cfg.branches:
            raise ConfigError(f"{cfg.path}.branches: a parallel layer needs at least one branch")
        forwards = [kind_for(branch.type).forward for branch in cfg.branches]
        return mode, forwards, self._cell_order(cfg) if mode == "grid_scatter" else None

    def _merge(self, cfg: LayerConfig, mode: str, order: list[int] | None, outputs: list[Any], ctx: ForwardContext):
        """Merged output of the branch ``outputs`` and the function splitting its gradient per branch."""
        sizes = [y.shape[0] for y in outputs]
        merge, split = checked_merge_functions(cfg, mode, order, sizes, ctx.batch_size, ctx.xp)
        return merge(outputs), split

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        mode, forwards, order = memoized(ctx, cfg, lambda: self._plan(cfg))
        outputs, backprops = [], []
        for branch_forward, branch in zip(forwards, cfg.branches, strict=True):
            y, backprop = branch_forward(branch, x, ctx)
            outputs.append(y)
            backprops.append(backprop)
        merged, split = self._merge(cfg, mode, order, outputs, ctx)

        def backprop(grad: Any) -> Any:
            grad_x = None
            for branch_backprop, branch_grad in zip(backprops, split(grad), strict=True):
                d = branch_backprop(branch_grad)  # None when the input gradient is not needed
                if d is not None:
                    grad_x = d if grad_x is None else grad_x + d
            return grad_x

        return merged, backprop
