"""Straight-line Python source of one fused training step (forward, loss, backward, then the engine's update).

:class:`~loom.nn.flat_parameters.FlatParameters` lays the parameters out; this module turns the
network into a graph of *stages* (one per top-level layer) and writes one Python
function per batch size whose body is the step spelled out call by call, with every
buffer, kernel and bound merge function a global of the function. On networks of a
few hundred weights the interpreter's attribute lookups, loops and method calls cost
as much as the arithmetic; straight-line code with local variables removes them.

Graph pieces, each emitting its own lines:

* affine leaves (Dense, one-step stateless RNN / LSTM) take their columns of the
  stage's block product ``z = [x, 1] @ block``; column-adjacent Dense leaves with the
  same activation form one *unit* (one activation call);
* kind leaves run their layer kind's ``forward`` / ``backprop`` and copy gradients
  into the flat buffer;
* Parallel merges: the first step runs :mod:`loom.ops.combine`'s functions behind
  ParallelKind's own size checks; the step is then compiled again with the merges
  inline (``a + b`` sums, one concatenation, gradient slices) or, for grid_scatter of
  several samples, the bound ops function.

The math is the ops' own (activation kernels, RNN step, LSTM cell, combine functions). The
function ends with ``finish(lr)``, the engine's gradient hooks, clipping and optimizer update on
the flat buffers. Its source is registered with :mod:`linecache` under a name derived from its
text, so tracebacks through it show the failing line; ``LOOM_DEBUG_FUSED=1`` prints it to
stderr when it is compiled.
"""

from __future__ import annotations

import hashlib
import linecache
import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom.backend.fast_paths import constant
from loom.errors import ShapeError
from loom.nn.flat_parameters import ParameterView, StageBlock, affine_columns
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import ForwardContext, kind_for
from loom.nn.layers.parallel import ParallelKind, checked_merge_functions
from loom.ops.activations import activation_kernels
from loom.ops.recurrent import lstm_cell, lstm_cell_backward, lstm_gate_constants, rnn_step, rnn_step_backward

if TYPE_CHECKING:
    from loom.nn.fused import FusedTrainer

__all__ = ["affine_columns", "compile_step"]

_PARALLEL = ParallelKind()


class _Source:
    """The generated function's lines and the globals they read."""

    def __init__(self, raw: Any, gpu: Any = None) -> None:
        self.raw = raw  # the array module (NumPy / CuPy) of the buffers
        self.gpu = gpu  # TrainKernels (loom.backend.cuda_train) of the GPU step, or None
        self.names: dict[str, Any] = {}
        self.forward: list[str] = []
        self._count = 0

    def bind(self, value: Any, hint: str) -> str:
        """A global name holding ``value``."""
        name = self.local(hint)
        self.names[name] = value
        return name

    def local(self, hint: str) -> str:
        """A fresh variable name."""
        self._count += 1
        return f"{hint}_{self._count}"


# ------------------------------------------------------------------------------------------ leaves
class _DenseLeaf:
    """``y = act(z)`` (an activation kernel with its constants bound)."""

    def __init__(self, cfg: LayerConfig, xp: Any, like: Any) -> None:
        self.act = int(cfg.activation)
        self.kernels = activation_kernels(self.act, xp, like.dtype)
        self.z = self.y = ""
        self.device = False  # True when the stage's bias + activation kernel computed y (GPU step)

    def emit_forward(self, src: _Source, z: str) -> str:
        self.z, self.y = z, src.local("y")
        src.forward.append(f"{self.y} = {src.bind(self.kernels[0], 'act')}({z})")
        return self.y

    def emit_backward(self, src: _Source, lines: list[str], grad_y: str) -> str:
        grad_z = src.local("gz")
        if self.device:
            gpu = src.gpu
            contiguous = src.bind(src.raw.ascontiguousarray, "contiguous")
            act_bw = src.bind(gpu.act_backward, "act_backward")
            lines.append(f"{grad_z} = {act_bw}({contiguous}({grad_y}), {self.z}, {self.y}, {self.act})")
            return grad_z
        lines.append(f"{grad_z} = {src.bind(self.kernels[1], 'act_bw')}({grad_y}, {self.z}, {self.y})")
        return grad_z


class _RNNLeaf:
    """One RNN step from a zero state: ``h = tanh(z)``."""

    def __init__(self, cfg: LayerConfig, xp: Any, like: Any) -> None:
        self.xp, self.one = xp, constant(1.0, xp, like.dtype)
        self.h = ""

    def emit_forward(self, src: _Source, z: str) -> str:
        self.h = src.local("h")
        src.forward.append(f"{self.h} = {src.bind(rnn_step, 'rnn')}({z}, {src.bind(self.xp, 'xp')})")
        return self.h

    def emit_backward(self, src: _Source, lines: list[str], grad_h: str) -> str:
        grad_z = src.local("gz")
        lines.append(
            f"{grad_z} = {src.bind(rnn_step_backward, 'rnn_bw')}({grad_h}, {self.h}, {src.bind(self.one, 'one')})"
        )
        return grad_z


class _LSTMLeaf:
    """One LSTM step from zero states; ``z`` holds the ``[i, f, g, o]`` gate pre-activations."""

    def __init__(self, cfg: LayerConfig, xp: Any, like: Any) -> None:
        self.hidden, self.xp = cfg.hidden_size, xp
        self.consts = lstm_gate_constants(cfg.hidden_size, like, xp)
        self.gates = self.tanh_gates = self.tanh_cell = ""

    def _args(self, src: _Source) -> str:
        return f"{self.hidden}, {src.bind(self.xp, 'xp')}, {src.bind(self.consts, 'gate_consts')}"

    def emit_forward(self, src: _Source, z: str) -> str:
        self.gates, self.tanh_gates, self.tanh_cell = src.local("gates"), src.local("tg"), src.local("ct")
        h, cell = src.local("h"), src.bind(lstm_cell, "lstm_cell")
        src.forward.append(
            f"{self.gates}, {self.tanh_gates}, _, {self.tanh_cell}, {h} = {cell}({z}, None, {self._args(src)})"
        )
        return h

    def emit_backward(self, src: _Source, lines: list[str], grad_h: str) -> str:
        grad_z, cell_bw = src.local("gz"), src.bind(lstm_cell_backward, "lstm_bw")
        saved = f"{self.gates}, {self.tanh_gates}, {self.tanh_cell}"
        lines.append(f"{grad_z} = {cell_bw}({grad_h}, None, {saved}, None, {self._args(src)})[0]")
        return grad_z


_LEAF_TYPES = {"dense": _DenseLeaf, "rnn": _RNNLeaf, "lstm": _LSTMLeaf}


# ------------------------------------------------------------------------------------------ graph nodes
class _AffineSlot:
    """An affine leaf: columns ``[start, stop)`` of its stage's block, output ``[B, width]``."""

    def __init__(self, leaf: Any, start: int, stop: int, batch: int) -> None:
        self.leaf, self.start, self.stop = leaf, start, stop
        self.shape = (batch, (stop - start) // (4 if type(leaf) is _LSTMLeaf else 1))  # LSTM: 4H columns, H outputs
        self.var = self.grad_var = ""  # names of its flat output and output gradient in the source


class _KindSlot:
    """A layer run through its kind's ``forward`` / ``backprop`` (gradients copied into the buffer)."""

    def __init__(self, cfg: LayerConfig, ctx: ForwardContext, batch: int, views: list[ParameterView]) -> None:
        self.cfg, self.ctx, self.batch, self.views = cfg, ctx, batch, views
        self.forward_fn = kind_for(cfg.type).forward
        self.backprop: Any = None
        self.var = self.grad_var = ""

    def run(self, x: Any, needs_input_grad: bool) -> Any:
        """The layer's output for the flat input ``x`` (keeps its backprop)."""
        ctx = self.ctx
        ctx.batch_size, ctx.needs_input_grad = self.batch, needs_input_grad
        out, self.backprop = self.forward_fn(self.cfg, x, ctx)
        return out

    def run_backward(self, grad: Any) -> Any:
        """The input gradient (``None`` when not needed); parameter gradients into the flat buffer."""
        self.cfg.grads = {}
        grad_x = self.backprop(grad)
        grads = self.cfg.grads
        for view in self.views:
            value = grads.get(view.name)
            view.grad[...] = 0.0 if value is None else value
        return grad_x


class _Merge:
    """A Parallel layer's merge of its branches' flat outputs and the split of the gradient."""

    def __init__(self, cfg: LayerConfig, children: list[Any], ctx: ForwardContext, batch: int) -> None:
        self.cfg, self.children, self.ctx, self.batch = cfg, children, ctx, batch
        self.mode, _, self.order = _PARALLEL._plan(cfg)
        self.merge: Any = None  # bound at the first step, once the branch output sizes are checked
        self.split: Any = None
        self.sizes: list[int] = []
        self.var = self.grad_var = ""

    def forward(self, outputs: list[Any]) -> Any:
        """The merged flat output (first call: ParallelKind's checks, then bind the merge functions)."""
        if self.merge is None:
            self._bind(outputs)
        return self.merge(outputs)

    def _bind(self, outputs: list[Any]) -> None:
        self.sizes = [y.shape[0] for y in outputs]
        self.merge, self.split = checked_merge_functions(
            self.cfg, self.mode, self.order, self.sizes, self.batch, self.ctx.xp
        )  # ShapeError (ParallelKind's message) on a size mismatch

    def split_grad(self, grad: Any) -> list[Any]:
        """One gradient per branch."""
        return self.split(grad)

    def emit_forward(self, src: _Source) -> str:
        """The line computing the merged output: once bound, :mod:`loom.ops.combine`'s expressions inline.

        ``add`` is the left-to-right sum, ``avg`` that sum times ``1 / n``, and ``concat`` (and
        ``grid_scatter`` of one sample: branches in cell order) one concatenation.
        """
        outputs = [child.var for child in self.children]
        if self.merge is None:  # first step: checks first
            return f"{self.var} = {src.bind(self, 'merge')}.forward([{', '.join(outputs)}])"
        if self.mode in ("add", "avg"):
            total = " + ".join(outputs)
            if self.mode == "avg":
                total = f"({total}) * {src.bind(1.0 / len(outputs), 'inv_count')}"
            return f"{self.var} = {total}"
        segments = self._segments()
        if segments is None:
            return f"{self.var} = {src.bind(self.merge, 'merge')}([{', '.join(outputs)}])"
        parts = [outputs[i] for i, _, _ in segments]
        joined = parts[0] if len(parts) == 1 else f"{src.bind(self.ctx.xp.concat, 'concat')}([{', '.join(parts)}])"
        return f"{self.var} = {joined}"

    def emit_backward(self, src: _Source, lines: list[str]) -> None:
        """Set every child's gradient variable (slices, aliases or the bound split function)."""
        if self.split is None or (self.mode not in ("add", "avg") and self._segments() is None):
            names = [src.local("g") for _ in self.children]
            call = f"{src.bind(self, 'merge')}.split_grad" if self.split is None else src.bind(self.split, "split")
            lines.append(f"{', '.join(names)}, = {call}({self.grad_var})")
        elif self.mode in ("add", "avg"):
            name = self.grad_var
            if self.mode == "avg":
                name = src.local("g")
                lines.append(f"{name} = {self.grad_var} * {src.bind(1.0 / len(self.children), 'inv_count')}")
            names = [name] * len(self.children)
        else:
            names = [""] * len(self.children)
            for i, start, stop in self._segments():
                names[i] = src.local("g")
                lines.append(f"{names[i]} = {self.grad_var}[{start}:{stop}]")
        for child, name in zip(self.children, names, strict=True):
            child.grad_var = name

    def _segments(self) -> list[tuple[int, int, int]] | None:
        """``(branch, start, stop)`` of each branch's block in merged order, for concat-like merges of flat blocks."""
        if self.mode == "concat":
            order = list(range(len(self.children)))
        elif self.mode == "grid_scatter" and self.batch == 1:
            order = self.order
        else:
            return None
        segments, start = [], 0
        for i in order:
            segments.append((i, start, start + self.sizes[i]))
            start += self.sizes[i]
        return segments


class _Unit:
    """Column-adjacent affine leaves run by one call: a lone leaf, or Dense leaves sharing an activation."""

    def __init__(self, slots: list[_AffineSlot]) -> None:
        self.slots, self.leaf = slots, slots[0].leaf
        self.start, self.stop = slots[0].start, slots[-1].stop


def _units(slots: list[_AffineSlot]) -> list[_Unit]:
    groups: list[list[_AffineSlot]] = []
    for slot in slots:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and type(slot.leaf) is _DenseLeaf
            and type(last.leaf) is _DenseLeaf
            and slot.leaf.act == last.leaf.act
            and slot.start == last.stop
        ):
            groups[-1].append(slot)
        else:
            groups.append([slot])
    return [_Unit(group) for group in groups]


# ------------------------------------------------------------------------------------------ stages
class _Stage:
    """One top-level layer: the block product of its affine leaves, its kind leaves, its merge tree."""

    def __init__(self, cfg: LayerConfig, block: StageBlock | None, graph: _GraphContext) -> None:
        self.cfg, self.batch, self.ctx = cfg, graph.batch, graph.ctx
        self.block = None if block is None else block.params  # [in + 1, N]
        self.grad_block = None if block is None else block.grads
        self.n_in = 0 if block is None else block.n_in
        self.affine: list[_AffineSlot] = []
        self.kinds: list[_KindSlot] = []
        self.merges: list[_Merge] = []  # post-order: children before parents
        self.root = self._node(cfg, graph)
        self.units = _units(self.affine)
        self.gpu = graph.gpu
        self.x2 = ""  # GPU step: name of the stage input as [B, in]
        if self.affine:
            raw, batch, n_in, dtype = graph.raw, self.batch, self.n_in, self.block.dtype
            self.grad_z = raw.empty((batch, self.block.shape[1]), dtype=dtype)  # [B, N]
            if self.gpu is None:
                self.x_aug = raw.ones((batch, n_in + 1), dtype=dtype)  # [B, in + 1], last column stays 1
                self.x_in = self.x_aug[0, :n_in] if batch == 1 else self.x_aug[:, :n_in]  # where the input is copied

    def _node(self, cfg: LayerConfig, graph: _GraphContext) -> Any:
        if cfg.type == "parallel":
            merge = _Merge(cfg, [self._node(branch, graph) for branch in cfg.branches], graph.ctx, self.batch)
            self.merges.append(merge)
            return merge
        position = graph.affine_position.get(id(cfg))
        if position is not None:
            slot = _AffineSlot(_LEAF_TYPES[cfg.type](cfg, graph.xp, self.block), *position, self.batch)
            self.affine.append(slot)
            return slot
        kind_slot = _KindSlot(cfg, graph.ctx, self.batch, graph.kind_views.get(id(cfg), []))
        self.kinds.append(kind_slot)
        return kind_slot

    def shape_error(self, x: Any) -> None:
        """Raise the layer's own ShapeError for a wrong input length (as the layer-by-layer path does)."""
        kind_for(self.cfg.type).forward(self.cfg, x, self.ctx)
        raise ShapeError(f"{self.cfg.path}: expected {self.batch * self.n_in} input values, got {x.shape[0]}")

    def emit_forward(self, src: _Source, x: str, needs_input_grad: bool) -> str:
        lines, batch, n_in = src.forward, self.batch, self.n_in
        if self.affine and self.gpu is not None:
            lines.append(f"if {x}.shape[0] != {batch * n_in}: {src.bind(self.shape_error, 'shape_error')}({x})")
            self._emit_device_forward(src, x)
        elif self.affine:
            lines.append(f"if {x}.shape[0] != {batch * n_in}: {src.bind(self.shape_error, 'shape_error')}({x})")
            source = x if batch == 1 else f"{x}.reshape({batch}, {n_in})"
            lines.append(f"{src.bind(self.x_in, 'x_in')}[...] = {source}")
            z = src.local("z")
            lines.append(f"{z} = {src.bind(self.x_aug, 'x_aug')}.dot({src.bind(self.block, 'block')})")
            whole = len(self.units) == 1
            for unit in self.units:
                z_unit = z
                if not whole:
                    z_unit = src.local("z")
                    lines.append(f"{z_unit} = {z}[:, {unit.start}:{unit.stop}]")
                y = unit.leaf.emit_forward(src, z_unit)
                for slot in unit.slots:
                    slot.var = src.local("out")
                    part = y if len(unit.slots) == 1 else f"{y}[:, {slot.start - unit.start}:{slot.stop - unit.start}]"
                    lines.append(f"{slot.var} = {part}.reshape(-1)")
        for slot in self.kinds:
            slot.var = src.local("out")
            lines.append(f"{slot.var} = {src.bind(slot, 'kind')}.run({x}, {needs_input_grad})")
        for merge in self.merges:
            merge.var = src.local("merged")
            lines.append(merge.emit_forward(src))
        return self.root.var

    def _emit_device_forward(self, src: _Source, x: str) -> None:
        """GPU step: ``z = x @ W`` (cuBLAS), then the bias and, for one Dense unit, its activation in one kernel."""
        lines, gpu, batch, n_in = src.forward, self.gpu, self.batch, self.n_in
        self.x2, z = src.local("x2"), src.local("z")
        contiguous = src.bind(src.raw.ascontiguousarray, "contiguous")
        lines.append(f"{self.x2} = {contiguous}({x}).reshape({batch}, {n_in})")
        weights = src.bind(self.block[:n_in], "weights")
        lines.append(f"{z} = {src.bind(gpu.gemm, 'gemm')}({self.x2}, {weights})")
        bias, bias_act = src.bind(self.block[n_in], "bias"), src.bind(gpu.bias_act, "bias_act")
        if len(self.units) == 1 and type(self.units[0].leaf) is _DenseLeaf:
            unit, y = self.units[0], src.local("y")
            leaf = unit.leaf
            lines.append(f"{y} = {bias_act}({z}, {bias}, {leaf.act})")
            leaf.z, leaf.y, leaf.device = z, y, True
            for slot in unit.slots:
                slot.var = src.local("out")
                part = y if len(unit.slots) == 1 else f"{y}[:, {slot.start}:{slot.stop}]"
                lines.append(f"{slot.var} = {part}.reshape(-1)")
            return
        lines.append(f"{bias_act}({z}, {bias}, 5, {z})  # z += bias")
        for unit in self.units:
            z_unit = src.local("z")
            lines.append(f"{z_unit} = {z}[:, {unit.start}:{unit.stop}]")
            y = unit.leaf.emit_forward(src, z_unit)
            for slot in unit.slots:
                slot.var = src.local("out")
                part = y if len(unit.slots) == 1 else f"{y}[:, {slot.start - unit.start}:{slot.stop - unit.start}]"
                lines.append(f"{slot.var} = {part}.reshape(-1)")

    def emit_backward(self, src: _Source, grad: str, needs_input_grad: bool) -> tuple[list[str], str | None]:
        lines: list[str] = []
        self.root.grad_var = grad
        for merge in reversed(self.merges):  # parents before children
            merge.emit_backward(src, lines)
        grad_x = None
        if self.affine:
            concat = src.bind(src.raw.concatenate, "concatenate")
            grad_zs = []
            for unit in self.units:
                shapes = [f"{slot.grad_var}.reshape({slot.shape[0]}, {slot.shape[1]})" for slot in unit.slots]
                grad_y = src.local("gy")
                lines.append(
                    f"{grad_y} = " + (shapes[0] if len(shapes) == 1 else f"{concat}([{', '.join(shapes)}], axis=1)")
                )
                grad_zs.append(unit.leaf.emit_backward(src, lines, grad_y))
            grad_z = grad_zs[0]
            if len(grad_zs) > 1:
                grad_z = src.bind(self.grad_z, "grad_z")
                lines.append(f"{concat}([{', '.join(grad_zs)}], axis=1, out={grad_z})")
            if self.gpu is not None:
                grad_x = self._emit_device_backward(src, lines, grad_z, needs_input_grad)
        if self.affine and self.gpu is None:
            x_col, grad_block = src.bind(self.x_aug.T, "x_col"), src.bind(self.grad_block, "grad_block")
            lines.append(f"{x_col}.dot({grad_z}, out={grad_block})  # every kernel and bias gradient at once")
            if needs_input_grad:
                grad_x = src.local("gx")
                kernel_t = src.bind(self.block[: self.n_in].T, "kernel_t")
                lines.append(f"{grad_x} = {grad_z}.dot({kernel_t}).reshape(-1)")
        return self._emit_kind_backward(src, lines, grad_x, needs_input_grad)

    def _emit_device_backward(self, src: _Source, lines: list[str], grad_z: str, needs_input_grad: bool) -> str | None:
        """GPU step: ``gW = x^T gz``, ``gx = gz W^T`` (cuBLAS, transposes as flags), ``gb`` = column sums of ``gz``."""
        gpu, n_in = self.gpu, self.n_in
        gemm = src.bind(gpu.gemm, "gemm")
        contiguous, name = src.bind(src.raw.ascontiguousarray, "contiguous"), src.local("gz")
        lines.append(f"{name} = {contiguous}({grad_z})  # the kernels read C order (no copy when it is)")
        grad_z = name
        lines.append(f"{gemm}({self.x2}, {grad_z}, {src.bind(self.grad_block[:n_in], 'grad_weights')}, ta=True)")
        lines.append(
            f"{src.bind(gpu.column_sum, 'column_sum')}({grad_z}, {src.bind(self.grad_block[n_in], 'grad_bias')})"
        )
        if not needs_input_grad:
            return None
        grad_x = src.local("gx")
        lines.append(f"{grad_x} = {gemm}({grad_z}, {src.bind(self.block[:n_in], 'weights')}, tb=True).reshape(-1)")
        return grad_x

    def _emit_kind_backward(
        self, src: _Source, lines: list[str], grad_x: str | None, needs_input_grad: bool
    ) -> tuple[list[str], str | None]:
        for slot in self.kinds:
            call = f"{src.bind(slot, 'kind')}.run_backward({slot.grad_var})"
            if not needs_input_grad:
                lines.append(call)
            elif grad_x is None:
                grad_x = src.local("gx")
                lines.append(f"{grad_x} = {call}")
            else:
                lines.append(f"{grad_x} = {grad_x} + {call}")
        return lines, grad_x


class _GraphContext:
    """What building the stages of one batch size needs from the trainer."""

    def __init__(self, trainer: FusedTrainer, batch: int) -> None:
        self.batch, self.xp, self.raw, self.ctx = batch, trainer.xp, trainer.raw, trainer.ctx
        self.affine_position = trainer.flat.affine_position
        self.kind_views = trainer.flat.kind_views
        self.gpu = trainer.gpu


def compile_step(
    trainer: FusedTrainer,
    batch: int,
    loss_fn: Callable[[Any, Any], tuple[float, Any]],
    halt: bool,
    stages: list[_Stage] | None = None,
    parallel: str | None = None,
) -> Any:
    """``step(x, target, lr, finish) -> (loss, output)`` for flat inputs of ``batch`` samples.

    The step runs forward and ``loss, grad = loss_fn(output, target)``; with ``halt`` it returns
    right away when the loss is not finite (no backward, no update); else it runs backward into
    the flat gradient buffer and calls ``finish(lr)``.

    On the GPU step (``trainer.gpu`` set) the loss stays a device scalar: the step runs backward
    whatever its value and calls ``finish(lr, loss)``, whose update kernel does nothing unless the
    loss is finite (``halt``'s guarantee without a host round trip); the caller fetches the loss.

    ``step.provisional`` is true while some Parallel merge still checks its inputs on first
    use; compiling again with ``stages=step.stages`` after a step calls the bound merge functions
    directly.

    ``parallel`` (data-parallel training) makes it ``step(x, target, lr, finish, parallel)``
    (the protocol of :class:`loom.nn.training_engine.ParallelStep`): ``"reduce"`` hands the loss
    to ``parallel.start_loss`` and runs the backward pass, then the halt check reads
    ``parallel.global_loss()`` (every rank halts at the same batch, ``parallel.abandon()``);
    ``"overlap"`` also calls ``parallel.stage_done(i)`` as soon as the backward pass of stage
    ``i`` (a top-level layer with parameters) has written its gradient, so its all-reduce
    overlaps the backward pass of the stages before it.
    """
    if parallel not in (None, "reduce", "overlap"):
        raise ValueError(f"parallel: expected None, 'reduce' or 'overlap', got {parallel!r}")
    if stages is None:
        graph = _GraphContext(trainer, batch)
        stages = [_Stage(cfg, block, graph) for cfg, block in zip(trainer.layers, trainer.flat.blocks, strict=True)]
    gpu = trainer.gpu
    src = _Source(trainer.raw, gpu)
    x = "x"
    for i, stage in enumerate(stages):
        x = stage.emit_forward(src, x, i > 0)
    backward: list[str] = []
    grad = "grad"
    stage_ranges = trainer.flat.stage_ranges
    for i in range(len(stages) - 1, -1, -1):
        lines, grad = stages[i].emit_backward(src, grad, i > 0)
        backward.extend(lines)
        if parallel == "overlap" and stage_ranges[i]:
            backward.append(f"parallel.stage_done({i})")
    names = src.names
    names.update(loss_fn=loss_fn, isfinite=math.isfinite)
    if parallel:  # data-parallel steps run the generic (host-loss) step: the GPU step is single-process
        body = [
            *src.forward,
            f"loss, grad = loss_fn({x}, target)",
            "parallel.start_loss(loss)",
            *backward,
            "loss = parallel.global_loss()",
            *([f"if not isfinite(loss): parallel.abandon(); return loss, {x}"] if halt else []),
            "finish(lr)",
            f"return loss, {x}",
        ]
    else:
        body = [
            *src.forward,
            f"loss, grad = loss_fn({x}, target)",
            *([f"if not isfinite(loss): return loss, {x}"] if halt and gpu is None else []),
            *backward,
            "finish(lr)" if gpu is None else "finish(lr, loss)",
            f"return loss, {x}",
        ]
    signature = "x, target, lr, finish, parallel" if parallel else "x, target, lr, finish"
    source = f"def step({signature}):\n" + "".join(f"    {line}\n" for line in body)
    filename = _register_source(source, batch)
    exec(compile(source, filename, "exec"), names)
    step = names["step"]
    step.source, step.stages, step.loss_fn, step.parallel = source, stages, loss_fn, parallel
    step.provisional = any(merge.split is None for stage in stages for merge in stage.merges)
    return step


def _register_source(source: str, batch: int) -> str:
    """Put ``source`` into :mod:`linecache` under a name derived from its text; print it if ``LOOM_DEBUG_FUSED``."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:12]
    filename = f"<loom fused step {digest}, batch {batch}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    if os.environ.get("LOOM_DEBUG_FUSED", "").strip() not in ("", "0"):
        sys.stderr.write(f"# {filename}\n{source}\n")
    return filename
