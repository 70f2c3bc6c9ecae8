"""Whole epochs of a tiny network's training in one CUDA kernel launch.

A network of a few hundred weights does microseconds of arithmetic per step; launched as
kernels one by one (or even as a CUDA graph of ~50 nodes), each step pays tens of microseconds
of launch and dependency latency, and the GPU loses to NumPy. Here the fused step's graph
(:mod:`loom.nn.fused_codegen`: stages of affine leaves sharing a ``[in + 1, N]`` block, Parallel
merges) is written out as the body of one CUDA kernel that runs in a single thread block:
forward, loss, backward, global-norm clipping and the optimizer update of every batch of an
epoch, phases separated by ``__syncthreads``, activations in global scratch memory that stays
in the multiprocessor's L1. One launch and one host read (the epoch's losses) per epoch.

Covered: Dense (every activation), one-step stateless RNN and LSTM leaves, Parallel merges
(``add``, ``avg``, ``concat``, ``grid_scatter``, nested), MSE / cross-entropy / binary
cross-entropy in both conventions, SGD (momentum, Nesterov, decay), Adam, AdamW, RMSprop, the
divergence guard (the kernel stops at the first non-finite loss, before that step's backward
pass, and keeps the parameters before each update in the guard's copy). Every batch of the
epoch must have the same size. Anything else — layers run through their kinds (Conv2D, MHA,
norms ...), gradient hooks, per-batch callbacks, more than :data:`MAX_STEP_MACS`
multiply-adds per step — trains through the GPU step of :mod:`loom.nn.gpu_training`.

``LOOM_DEBUG_FUSED=1`` prints each generated kernel's source to stderr; ``LOOM_TINY_EPOCH_KERNEL=0``
switches the epoch kernel off. The math is the fused step's (the reference the tests compare
against), element by element in float32 with float64 loss and norm sums; products sum in a
different order than BLAS does, so results agree to float rounding, not bit for bit.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.backend.cuda_train import optimizer_arguments
from loom.nn.fused_codegen import _AffineSlot, _DenseLeaf, _GraphContext, _LSTMLeaf, _Merge, _RNNLeaf, _Stage

if TYPE_CHECKING:
    from loom.nn.gpu_training import DeviceStep

__all__ = ["MAX_PARAMETERS", "MAX_STEP_MACS", "EpochKernel", "epoch_kernel_source"]

#: Multiply-adds of one step (forward and backward) above which the cuBLAS step is faster.
MAX_STEP_MACS = 1 << 22
#: Parameters above which the cuBLAS step is used.
MAX_PARAMETERS = 1 << 20
#: Threads of the one block.
THREADS = 256
_KERNEL = "loom_tiny_epoch"
_LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")


def _f(value: float) -> str:
    """``value`` rounded to float32 as an exact CUDA literal."""
    return f"{float(np.float32(value)).hex()}f"


def _d(value: float) -> str:
    """``value`` as an exact double literal."""
    return float(value).hex()


class _Buffers:
    """Offsets of the kernel's scratch arrays (float32) in one allocation."""

    def __init__(self) -> None:
        self.size = 0
        self.lines: list[str] = []

    def new(self, name: str, length: int) -> str:
        self.lines.append(f"    float* const {name} = scratch + {self.size};  // [{length}]")
        self.size += max(int(length), 1)
        return name


class _Writer:
    """The kernel body: lines, fresh names, scratch buffers."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.buffers = _Buffers()
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}{self._count}"

    def loop(self, count: int, body: Sequence[str]) -> None:
        self.lines.append(f"        for (int i = tid; i < {count}; i += nt) {{")
        self.lines += [f"            {line}" for line in body]
        self.lines.append("        }")

    def sync(self) -> None:
        if self.lines and self.lines[-1] != "        __syncthreads();":
            self.lines.append("        __syncthreads();")


class _Unsupported(Exception):
    """The network (or these batches) cannot run in the epoch kernel: use the step kernels."""


def _sizes(node: Any, batch: int) -> int:
    """Flat output length of a graph node (and ``node.size`` set on the way)."""
    if isinstance(node, _AffineSlot):
        node.size = batch * node.shape[1]
        return node.size
    if isinstance(node, _Merge):
        sizes = [_sizes(child, batch) for child in node.children]
        if node.mode in ("add", "avg"):
            if len(set(sizes)) != 1:
                raise _Unsupported("branch sizes differ")  # the step raises ParallelKind's ShapeError
            node.size = sizes[0]
        else:
            if node.mode == "grid_scatter" and any(s % batch for s in sizes):
                raise _Unsupported("grid_scatter sizes")
            node.size = sum(sizes)
        node.sizes = sizes
        return node.size
    raise _Unsupported(f"layer {node.cfg.type!r} runs through its kind")


class _StageCode:
    """Forward and backward code of one stage."""

    def __init__(self, stage: _Stage, offset: int, w: _Writer) -> None:
        self.stage, self.offset, self.w = stage, offset, w
        self.n_in, self.batch = stage.n_in, stage.batch
        self.cols = stage.block.shape[1]
        _sizes(stage.root, stage.batch)
        self.x = ""  # the stage input's name
        self.z = w.buffers.new(w.name("z"), self.batch * self.cols)
        self.gz = w.buffers.new(w.name("gz"), self.batch * self.cols)

    # ------------------------------------------------------------------ forward
    def forward(self, x: str) -> str:
        w, b, n_in, cols, off = self.w, self.batch, self.n_in, self.cols, self.offset
        self.x = x
        w.lines.append(
            f"        // stage {self.stage.cfg.path}: z = [x, 1] @ block  ([{b}, {n_in}] @ [{n_in + 1}, {cols}])"
        )
        w.loop(
            b * cols,
            [
                f"const int r = i / {cols}, c = i - r * {cols};",
                f"const float* xr = {x} + r * {n_in};",
                f"const float* wc = P + {off} + c;",
                "float acc = 0.0f;",
                f"for (int k = 0; k < {n_in}; ++k) acc += xr[k] * wc[k * {cols}];",
                f"{self.z}[i] = acc + wc[{n_in * cols}];",
            ],
        )
        w.sync()
        for slot in self.stage.affine:
            self._leaf_forward(slot)
        w.sync()
        for merge in self.stage.merges:  # post-order: children first
            self._merge_forward(merge)
            w.sync()
        return self.stage.root.out

    def _leaf_forward(self, slot: _AffineSlot) -> None:
        w, b, cols, leaf = self.w, self.batch, self.cols, slot.leaf
        width = slot.shape[1]
        slot.out = w.buffers.new(w.name("out"), b * width)
        if isinstance(leaf, _DenseLeaf):
            w.loop(
                b * width,
                [
                    f"const int r = i / {width}, j = i - r * {width};",
                    f"{slot.out}[i] = loom_act({leaf.act}, {self.z}[r * {cols} + {slot.start} + j]);",
                ],
            )
        elif isinstance(leaf, _RNNLeaf):
            w.loop(
                b * width,
                [
                    f"const int r = i / {width}, j = i - r * {width};",
                    f"{slot.out}[i] = tanhf({self.z}[r * {cols} + {slot.start} + j]);",
                ],
            )
        elif isinstance(leaf, _LSTMLeaf):
            h = width
            slot.tanh_gates = w.buffers.new(w.name("tg"), b * 4 * h)
            slot.tanh_cell = w.buffers.new(w.name("ct"), b * h)
            w.loop(
                b * h,
                [
                    f"const int r = i / {h}, j = i - r * {h};",
                    f"const float* zr = {self.z} + r * {cols} + {slot.start};",
                    f"float* tg = {slot.tanh_gates} + r * {4 * h};",
                    "const float ti = tanhf(zr[j] * 0.5f), tf = tanhf(zr[j + " + str(h) + "] * 0.5f);",
                    f"const float tgg = tanhf(zr[j + {2 * h}]), to = tanhf(zr[j + {3 * h}] * 0.5f);",
                    f"tg[j] = ti; tg[j + {h}] = tf; tg[j + {2 * h}] = tgg; tg[j + {3 * h}] = to;",
                    "const float c = (ti * 0.5f + 0.5f) * tgg, ct = tanhf(c);",
                    f"{slot.tanh_cell}[i] = ct;",
                    f"{slot.out}[i] = (to * 0.5f + 0.5f) * ct;",
                ],
            )
        else:  # pragma: no cover - the leaf types of fused_codegen
            raise _Unsupported(type(leaf).__name__)

    def _merge_forward(self, merge: _Merge) -> None:
        w, b = self.w, self.batch
        outs = [child.out for child in merge.children]
        merge.out = w.buffers.new(w.name("merged"), merge.size)
        if merge.mode in ("add", "avg"):
            total = " + ".join(f"{o}[i]" for o in outs)
            if merge.mode == "avg":
                total = f"({total}) * {_f(1.0 / len(outs))}"
            w.loop(merge.size, [f"{merge.out}[i] = {total};"])
            return
        order = merge.order if merge.mode == "grid_scatter" else list(range(len(outs)))
        if merge.mode == "concat" or b == 1:  # whole flat blocks one after another
            start = 0
            for i in order:
                size = merge.sizes[i]
                w.loop(size, [f"{merge.out}[{start} + i] = {outs[i]}[i];"])
                start += size
            return
        total = merge.size // b  # grid_scatter of several samples: per sample, the branches' features in cell order
        start = 0
        for i in order:
            feat = merge.sizes[i] // b
            w.loop(
                merge.sizes[i],
                [
                    f"const int r = i / {feat}, j = i - r * {feat};",
                    f"{merge.out}[r * {total} + {start} + j] = {outs[i]}[i];",
                ],
            )
            start += feat

    # ------------------------------------------------------------------ backward
    def backward(self, grad: str, needs_input_grad: bool) -> str | None:
        w, b, n_in, cols, off = self.w, self.batch, self.n_in, self.cols, self.offset
        self.stage.root.grad = grad
        for merge in reversed(self.stage.merges):  # parents before children
            self._merge_backward(merge)
            w.sync()
        for slot in self.stage.affine:
            self._leaf_backward(slot)
        w.sync()
        w.lines.append("        // gradient block = [x, 1]^T @ gz, input gradient = gz @ W^T")
        w.loop(
            (n_in + 1) * cols,
            [
                f"const int k = i / {cols}, c = i - k * {cols};",
                "float acc = 0.0f;",
                f"if (k < {n_in}) {{",
                f"    for (int r = 0; r < {b}; ++r) acc += {self.x}[r * {n_in} + k] * {self.gz}[r * {cols} + c];",
                "} else {  // the bias row: x is 1",
                f"    for (int r = 0; r < {b}; ++r) acc += {self.gz}[r * {cols} + c];",
                "}",
                f"G[{off} + i] = acc;",
            ],
        )
        grad_x = None
        if needs_input_grad:
            grad_x = w.buffers.new(w.name("gx"), b * n_in)
            w.loop(
                b * n_in,
                [
                    f"const int r = i / {n_in}, k = i - r * {n_in};",
                    f"const float* gr = {self.gz} + r * {cols};",
                    f"const float* wk = P + {off} + k * {cols};",
                    "float acc = 0.0f;",
                    f"for (int c = 0; c < {cols}; ++c) acc += gr[c] * wk[c];",
                    f"{grad_x}[i] = acc;",
                ],
            )
        w.sync()
        return grad_x

    def _merge_backward(self, merge: _Merge) -> None:
        w, b, grad = self.w, self.batch, merge.grad
        n = len(merge.children)
        if merge.mode == "add":
            for child in merge.children:
                child.grad = grad
            return
        if merge.mode == "avg":
            scaled = w.buffers.new(w.name("gavg"), merge.size)
            w.loop(merge.size, [f"{scaled}[i] = {grad}[i] * {_f(1.0 / n)};"])
            for child in merge.children:
                child.grad = scaled
            return
        order = merge.order if merge.mode == "grid_scatter" else list(range(n))
        if merge.mode == "concat" or b == 1:
            start = 0
            for i in order:
                merge.children[i].grad = f"({grad} + {start})"
                start += merge.sizes[i]
            return
        total, start = merge.size // b, 0
        for i in order:
            feat = merge.sizes[i] // b
            child = merge.children[i]
            child.grad = w.buffers.new(w.name("gsplit"), merge.sizes[i])
            w.loop(
                merge.sizes[i],
                [
                    f"const int r = i / {feat}, j = i - r * {feat};",
                    f"{child.grad}[i] = {grad}[r * {total} + {start} + j];",
                ],
            )
            start += feat

    def _leaf_backward(self, slot: _AffineSlot) -> None:
        w, b, cols, leaf, gy = self.w, self.batch, self.cols, slot.leaf, slot.grad
        width = slot.shape[1]
        col = f"r * {cols} + {slot.start} + j"
        if isinstance(leaf, _DenseLeaf):
            w.loop(
                b * width,
                [
                    f"const int r = i / {width}, j = i - r * {width};",
                    f"{self.gz}[{col}] = loom_act_backward({leaf.act}, {gy}[i], {self.z}[{col}], {slot.out}[i]);",
                ],
            )
        elif isinstance(leaf, _RNNLeaf):
            w.loop(
                b * width,
                [
                    f"const int r = i / {width}, j = i - r * {width};",
                    f"const float h = {slot.out}[i];",
                    f"{self.gz}[{col}] = {gy}[i] * (1.0f - h * h);",
                ],
            )
        else:  # LSTM from zero states: d_z = [dc g, dc c_prev (= 0: no forget-gate gradient), dc i, dh tanh(c)] * slope
            h = width
            w.loop(
                b * h,
                [
                    f"const int r = i / {h}, j = i - r * {h};",
                    f"const float* tg = {slot.tanh_gates} + r * {4 * h};",
                    f"float* gzr = {self.gz} + r * {cols} + {slot.start};",
                    f"const float ti = tg[j], tf = tg[j + {h}], tgg = tg[j + {2 * h}], to = tg[j + {3 * h}];",
                    f"const float dh = {gy}[i], ct = {slot.tanh_cell}[i];",
                    "const float gi = ti * 0.5f + 0.5f, go = to * 0.5f + 0.5f;",
                    "const float dc = dh * go * (1.0f - ct * ct);",
                    "gzr[j] = dc * tgg * ((1.0f - ti * ti) * 0.25f);",
                    f"gzr[j + {h}] = dc * ct * ((1.0f - tf * tf) * 0.0f);",
                    f"gzr[j + {2 * h}] = dc * gi * (1.0f - tgg * tgg);",
                    f"gzr[j + {3 * h}] = dh * ct * ((1.0f - to * to) * 0.25f);",
                ],
            )


def _loss_code(w: _Writer, name: str, reduction: str, y: str, n: int, batch: int) -> str:
    """Lines computing the loss gradient into a new buffer and ``s``, this thread's share of the loss sum."""
    grad = w.buffers.new(w.name("gloss"), n)
    if name == "mse":
        body = ["const float d = y[i] - t[i];", f"{grad}[i] = d * {_f(2.0 / n)};", "s += (double)d * (double)d;"]
        divisor = n
    elif name == "cross_entropy":
        divisor = n if reduction == "loom" else batch
        body = [
            "const float ti = t[i], yi = y[i];",
            "const double p = fmin(fmax((double)yi, 1e-7), 1.0 - 1e-7);",
            "if (ti > 0.0f) s += (double)ti * log(p);",
            f"{grad}[i] = ti > 0.0f ? -(ti / fmaxf(yi, 1e-7f)) * {_f(1.0 / divisor)} : 0.0f;",
        ]
        w.lines.append("        // cross-entropy: the sum is negated below")
    else:
        divisor = n
        body = [
            f"const float ti = t[i], p = loom_clampf(y[i], 1e-7f, {_f(1.0 - 1e-7)});",
            "const double p64 = (double)p, t64 = (double)ti;",
            "s += t64 * log(p64) + (1.0 - t64) * log(1.0 - p64);",
            f"{grad}[i] = (p - ti) / (p * (1.0f - p)) * {_f(1.0 / n)};",
        ]
    w.lines.append("        double s = 0.0;")
    w.lines.append(f"        const float* y = {y};")
    w.loop(n, body)
    sign = "" if name == "mse" else "-"
    w.lines.append(f"        const double loss = {sign}loom_block_sum_d(s, red) / {_d(float(divisor))};")
    return grad


def epoch_kernel_source(
    stages: list[_Stage],
    offsets: list[int],
    loss: tuple[str, str],
    optimizer: Any,
    clip: float,
    guard: bool,
    n_params: int,
    x_len: int,
    t_len: int,
) -> tuple[str, int]:
    """CUDA source of the epoch kernel ``loom_tiny_epoch`` for these stages (see the module docstring).

    Parameters
    ----------
    stages : list of _Stage
        The fused step's stages of one batch size, every node an affine leaf or a merge.
    offsets : list of int
        Flat offset of each stage's ``[in + 1, N]`` block.
    loss : (str, str)
        Loss name and reduction (:class:`~loom.nn.training_engine.LossFunction`).
    optimizer : Optimizer
    clip : float
        Global-norm clipping threshold (0: none).
    guard : bool
        Stop at the first non-finite loss (before its backward pass) and keep the parameters
        before each update in ``backup``.
    n_params : int
        Length of the flat buffers.
    x_len, t_len : int
        Flat input and target length of one batch.

    Returns
    -------
    source : str
    scratch : int
        Float32 values of scratch memory the kernel needs.
    """
    w = _Writer()
    batch = stages[0].batch
    codes = [_StageCode(stage, offset, w) for stage, offset in zip(stages, offsets, strict=True)]
    x = "x"
    for code in codes:
        x = code.forward(x)
    if x is None:
        raise _Unsupported("no output")
    y_len = stages[-1].root.size
    if y_len != t_len:
        raise _Unsupported("target length")  # the step raises the loss' ShapeError
    grad = _loss_code(w, loss[0], loss[1], x, t_len, batch)
    w.lines.append("        if (tid == 0) losses[b] = loss;")
    if guard:
        w.lines.append("        if (!loom_finite(loss)) break;  // the same value in every thread: a uniform exit")
    for i in range(len(codes) - 1, -1, -1):
        grad = codes[i].backward(grad, i > 0)
    fields = optimizer_arguments(optimizer)
    literal = [str(int(v)) if isinstance(v, np.integer) else _f(float(v)) for v in fields]
    w.lines.append("        // clipping factor and the optimizer update of the whole flat buffer")
    w.lines.append("        const LoomOptimizer o = {" + ", ".join(literal) + "};")
    if clip > 0:
        w.lines.append("        double q = 0.0;")
        w.loop(n_params, ["const double g = (double)G[i];", "q += g * g;"])
        w.lines.append("        const double norm = sqrt(loom_block_sum_d(q, red));")
        w.lines.append(f"        const float sc = norm > {_d(clip)} ? (float)({_d(clip)} / norm) : 1.0f;")
        w.lines.append("        if (tid == 0) scale[0] = sc;")
        scaled = "1"
    else:
        w.lines.append("        const float sc = 1.0f;")
        scaled = "0"
    b1 = getattr(optimizer, "beta1", 0.9)
    b2 = getattr(optimizer, "beta2", 0.999)
    w.lines.append("        const double tstep = (double)(step0 + updates + 1);")
    w.lines.append(
        f"        const LoomStep st = {{(float)lr, (float)(1.0 - lr * {_d(optimizer.weight_decay)}), "
        f"(float)(lr / (1.0 - pow({_d(b1)}, tstep))), (float)sqrt(1.0 - pow({_d(b2)}, tstep))}};"
    )
    keep = "backup[i] = p; " if guard else ""
    w.loop(
        n_params,
        [
            "const float p = P[i];",
            f"{keep}P[i] = loom_update_element(o, st, p, G[i], sc, {scaled}, S0 + i, S1 + i);",
        ],
    )
    w.lines.append("        ++updates;")
    w.sync()
    head = f"""
// Generated by loom.nn.fused_cuda: {len(stages)} stages, batch {batch}, {n_params} parameters.
extern "C" __global__ void __launch_bounds__({THREADS}) {_KERNEL}(
        float* P, float* G, float* S0, float* S1, float* backup, float* scale, const float* X, const float* T,
        const int* order, int batches, double lr, int step0, float* scratch, double* losses) {{
    __shared__ double red[32];
    const int tid = threadIdx.x, nt = blockDim.x;
    int updates = 0;
"""
    body = [
        *w.buffers.lines,
        "    for (int b = 0; b < batches; ++b) {",
        f"        const float* x = X + (long long)order[b] * {x_len};",
        f"        const float* t = T + (long long)order[b] * {t_len};",
        *w.lines,
        "    }",
        "}",
    ]
    source = head + "\n".join(body) + "\n"
    return source, w.buffers.size


def _step_macs(stages: list[_Stage]) -> int:
    return sum(3 * s.batch * (s.n_in + 1) * s.block.shape[1] for s in stages)


class EpochKernel:
    """The compiled epoch kernel of one network layout, batch size and training setting, with its scratch memory.

    Built by :meth:`for_step` (``None`` when the network, loss, optimizer or sizes are not
    covered) and cached with the network's flat buffers; :meth:`run` trains one epoch.
    """

    def __init__(self, device: DeviceStep, stages: list[_Stage], offsets: list[int], x_len: int, t_len: int) -> None:
        stepper = device.stepper
        flat = stepper.flat
        self.raw = flat.raw
        loss = (stepper.loss.name, stepper.loss.reduction)
        source, scratch = epoch_kernel_source(
            stages, offsets, loss, stepper.optimizer, device.clip, stepper.guard, flat.size, x_len, t_len
        )
        self.source = source
        if os.environ.get("LOOM_DEBUG_FUSED", "").strip() not in ("", "0"):
            sys.stderr.write(f"# <loom epoch kernel, batch {stages[0].batch}>\n{source}\n")
        self.kernel = device.gpu.compile_epoch(source, _KERNEL)
        self.scratch = self.raw.zeros(scratch, dtype=np.float32)

    @classmethod
    def for_step(cls, device: DeviceStep, batch: int, x_len: int, t_len: int) -> EpochKernel | None:
        """The epoch kernel for batches of ``batch`` samples, or ``None`` where the step kernels must run."""
        stepper = device.stepper
        fused, flat, optimizer = stepper.fused, stepper.flat, stepper.optimizer
        if fused is None or device.hooks or stepper.loss.name not in _LOSSES or flat.size > MAX_PARAMETERS:
            return None
        setting = (
            batch,
            x_len,
            t_len,
            stepper.loss.key,
            optimizer.name,
            tuple(float(v) for v in optimizer_arguments(optimizer)),
            device.clip,
            stepper.guard,
        )
        cache = flat.caches.setdefault("epoch_kernels", {})
        if setting in cache:
            return cache[setting]
        cache[setting] = None  # also when building fails below: the step kernels then run
        graph = _GraphContext(fused, batch)
        try:
            stages = [_Stage(cfg, block, graph) for cfg, block in zip(fused.layers, flat.blocks, strict=True)]
            if any(s.kinds or not s.affine for s in stages) or _step_macs(stages) > MAX_STEP_MACS:
                return None
            if x_len != batch * stages[0].n_in:
                return None  # the step raises the layer's ShapeError
            offsets, start = [], 0
            for s in stages:
                offsets.append(start)
                start += (s.n_in + 1) * s.block.shape[1]
            cache[setting] = cls(device, stages, offsets, x_len, t_len)
        except _Unsupported:
            return None
        return cache[setting]

    def run(self, device: DeviceStep, batches: list[Any], lr: float) -> list[float]:
        """Train one epoch over ``batches`` (``(x, target, batch, extra)``); returns the batch losses.

        Under the guard the list ends at the first non-finite loss (nothing after it ran).
        """
        stepper = device.stepper
        flat, optimizer = stepper.flat, stepper.optimizer
        xs, ts, order = device.stacked(batches)
        losses = self.raw.empty(len(batches), dtype=np.float64)
        s0, s1 = device.state
        backup = device.backup if device.backup is not None else flat.params
        args = (
            flat.params,
            flat.grads,
            s0,
            s1,
            backup,
            device.scale,
            xs,
            ts,
            order,
            np.int32(len(batches)),
            np.float64(lr),
            np.int32(optimizer.step_count),
            self.scratch,
            losses,
        )
        self.kernel((1,), (THREADS,), args)
        values = [float(v) for v in device.backend.fetch(losses)]  # the epoch's one device-to-host transfer
        if stepper.guard:
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    values = values[: i + 1]
                    break
            optimizer.step_count += sum(1 for v in values if math.isfinite(v))
        else:
            optimizer.step_count += len(values)
        stepper.last_output = None
        return values
