"""Fused training step: the layer graph compiled once per ``train`` call into a few array calls.

Small LOOM networks (the README demos) spend their time in per-call overhead, not in
arithmetic, so :func:`train_network` compiles the network into *stages*, one per
top-level layer:

* The *affine leaves* of a stage — Dense layers and one-step stateless RNN / LSTM
  layers, the layer itself or any branch of (nested) Parallels on the stage input —
  share one augmented weight block ``[in + 1, N]`` in the flat parameter buffer:
  kernels side by side, biases in the last row. One product ``[x, 1] @ block`` gives
  every leaf's pre-activation, one ``[x, 1]^T @ grad_z`` every leaf's kernel *and* bias
  gradient, one product the input gradient.
* Any other layer (Conv2D, MHA, norms, softmax, multi-step or stateful recurrences)
  is a *kind leaf*: its layer kind's own ``forward`` / ``backprop``, gradients copied
  into the buffer.
* Parallel merges are :mod:`loom.ops.combine`'s; each leaf's math is the ops' own
  (activation kernels, RNN step, LSTM cell).

The whole step is generated as one straight-line Python function
(:mod:`loom.nn.fused_codegen`). Parameters become views of one flat buffer, gradients land
in a second one, and clipping plus the SGD update are three array calls. The trainer is
kept on the network and reused by the next ``train`` call while nothing changed. Results
equal the layer-by-layer path up to float rounding (the bias is added inside the product).
Networks with LOOM's hidden residual stream (top-level MHA, SwiGLU, norms) or mixed
parameter dtypes are not compiled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loom.nn.fused_codegen import affine_columns, compile_step
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import kind_for
from loom.nn.layers.parallel import COMBINE_MODES

__all__ = ["FusedTrainer"]

#: Set to False to always train layer by layer (tests compare both paths).
ENABLED = True


# ------------------------------------------------------------------------------------------ trainer
class FusedTrainer:
    """Forward, backward and SGD step of a whole network on flat parameter / gradient buffers.

    Build with :meth:`build` (``None`` when the network is not eligible); call :meth:`step`
    per batch (compiled by :func:`loom.nn.fused_codegen.compile_step` once per batch size);
    :meth:`export_grads` writes the last step's (clipped) gradients into ``cfg.grads``.
    """

    def __init__(self, net: Any) -> None:
        self.net, self.xp, self.raw = net, net.xp, net._backend.raw
        self.ctx = net._training_context()
        self.layers: list[LayerConfig] = list(net.layers)
        self.affine_position: dict[int, tuple[int, int]] = {}
        self.kind_grads: dict[int, list[tuple[LayerConfig, str, Any]]] = {}
        self.blocks: list[tuple[Any, Any, int]] = []
        self.steps: dict[tuple[int, str], Any] = {}
        self.grad_factor = 1.0
        self.signature = _signature(net)
        self._layout()

    @classmethod
    def build(cls, net: Any) -> FusedTrainer | None:
        """A trainer for ``net``, or ``None`` when it has no parameters, mixed dtypes or a residual stream."""
        if not ENABLED or not net.layers:
            return None
        if any(kind_for(cfg.type).residual_role is not None for cfg in net.layers):
            return None
        params = [p for cfg in net.iter_all_layers() for p in cfg.params.values()]
        if not params or len({p.dtype for p in params}) != 1:
            return None
        if any(cfg.type == "parallel" and COMBINE_MODES.get(cfg.combine_mode) is None for cfg in net.iter_all_layers()):
            return None  # the layer-by-layer path raises the ConfigError
        return cls(net)

    @classmethod
    def for_network(cls, net: Any) -> FusedTrainer | None:
        """The trainer of ``net``'s previous ``train`` call when nothing it compiled changed, else :meth:`build`.

        Reused when every parameter is still a view of its buffer and every layer config reads
        the same (``repr``: types, sizes, activations, modes); calling ``train`` one epoch at a
        time then costs no new layout or compilation.
        """
        cached = getattr(net, "_fused_trainer", None)
        if cached is not None and ENABLED and cached._unchanged():
            cached.ctx.rng = net._rng  # net.seed() may have replaced the generator
            return cached
        trainer = cls.build(net)
        net._fused_trainer = trainer
        return trainer

    def _unchanged(self) -> bool:
        net = self.net
        if net.xp is not self.xp or self.signature != _signature(net):
            return False
        return all(cfg.params.get(name) is view for cfg, name, view, _ in self.views)

    # ----- layout -------------------------------------------------------------------------
    def _affine_leaves(self, cfg: LayerConfig, n_in: int, out: list[LayerConfig]) -> None:
        if cfg.type == "parallel":
            for branch in cfg.branches:
                self._affine_leaves(branch, n_in, out)
        elif affine_columns(cfg) and cfg.input_size == n_in and cfg.params:
            out.append(cfg)

    def _layout(self) -> None:
        """Move every parameter into one flat buffer (affine blocks first per stage) and bind views."""
        plans = []
        size = 0
        for cfg in self.layers:
            leaves: list[LayerConfig] = []
            first = next((c for c in cfg.iter_layers() if affine_columns(c)), None)
            n_in = first.input_size if first is not None else 0
            if first is not None and n_in > 0:
                self._affine_leaves(cfg, n_in, leaves)
            width = sum(affine_columns(c) for c in leaves)
            plans.append((leaves, n_in, width, size))
            size += (n_in + 1) * width if leaves else 0
        block_ids = {id(c) for leaves, _, _, _ in plans for c in leaves}
        rest = [
            (c, name, p)
            for cfg in self.layers
            for c in cfg.iter_layers()
            for name, p in c.params.items()
            if not (id(c) in block_ids and name in _BLOCK_PARAMS[c.type])
        ]
        size += sum(int(np.prod(p.shape)) for _, _, p in rest)
        dtype = next(p for c in self.net.iter_all_layers() for p in c.params.values()).dtype
        raw = self.raw
        self.flat = raw.zeros(size, dtype=dtype)
        self.grad = raw.zeros(size, dtype=dtype)
        self.step_buf = raw.empty(size, dtype=dtype)
        self.views: list[tuple[LayerConfig, str, Any, Any]] = []  # (cfg, name, param view, grad view)
        for leaves, n_in, width, start in plans:
            if not leaves:
                self.blocks.append((None, None, n_in))
                continue
            end = start + (n_in + 1) * width
            block = self.flat[start:end].reshape(n_in + 1, width)
            grad_block = self.grad[start:end].reshape(n_in + 1, width)
            self.blocks.append((block, grad_block, n_in))
            col = 0
            for c in leaves:
                cols = affine_columns(c)
                self.affine_position[id(c)] = (col, col + cols)
                for name, (p_view, g_view) in _block_views(c, block, grad_block, n_in, col, cols).items():
                    self._bind(c, name, p_view, g_view)
                col += cols
        offset = sum((n_in + 1) * width for _, n_in, width, _ in plans)
        for c, name, p in rest:
            n = int(np.prod(p.shape))
            self._bind(
                c,
                name,
                self.flat[offset : offset + n].reshape(p.shape),
                self.grad[offset : offset + n].reshape(p.shape),
            )
            offset += n
        for c, name, _, g_view in self.views:
            if id(c) not in self.affine_position:  # a kind leaf's gradients (its own parameters)
                self.kind_grads.setdefault(id(c), []).append((c, name, g_view))

    def _bind(self, cfg: LayerConfig, name: str, p_view: Any, g_view: Any) -> None:
        p_view[...] = cfg.params[name]
        cfg.params[name] = p_view
        self.views.append((cfg, name, p_view, g_view))

    # ----- running ------------------------------------------------------------------------
    def step(self, x: Any, target: Any, batch: int, loss_type: str, lr: float, clip: float, halt: bool) -> float:
        """One training step on the flat input ``x`` of ``batch`` samples; returns the loss.

        Forward, loss, backward, clipping to global norm ``clip`` (0 = off) and ``w -= lr * g``.
        With ``halt``, a non-finite loss returns before the backward pass (nothing is updated).
        """
        key = (batch, loss_type)
        step = self.steps.get(key)
        if step is None:
            step = self.steps[key] = compile_step(self, batch, loss_type)
        loss = step(x, target, lr, clip, halt)
        if step.provisional and math.isfinite(loss):  # merges are bound now: call them directly
            self.steps[key] = compile_step(self, batch, loss_type, step.stages)
        return loss

    def export_grads(self) -> None:
        """Leave the last step's (clipped) gradients in ``cfg.grads``, as the layer-by-layer path does."""
        for cfg in self.net.iter_all_layers():
            cfg.grads = {}
        factor = self.grad_factor
        for cfg, name, _, g_view in self.views:
            cfg.grads[name] = g_view * factor  # a copy: the buffer is overwritten by the next step


def _signature(net: Any) -> tuple[Any, ...]:
    """What a compiled step depends on besides the parameter arrays: batch size and every layer config."""
    return (net.batch_size, *(id(cfg) for cfg in net.iter_all_layers()), *(repr(cfg) for cfg in net.layers))


#: Parameters of an affine leaf that live in its stage's block.
_BLOCK_PARAMS = {"dense": ("kernel", "biases"), "rnn": ("weight_ih", "bias_h"), "lstm": ("kernel_ih", "bias")}


def _block_views(
    cfg: LayerConfig, block: Any, grad_block: Any, n_in: int, col: int, cols: int
) -> dict[str, tuple[Any, Any]]:
    """Parameter and gradient views of an affine leaf inside its stage's ``[in + 1, N]`` block."""
    kernel = (block[:n_in, col : col + cols], grad_block[:n_in, col : col + cols])
    bias = (block[n_in, col : col + cols], grad_block[n_in, col : col + cols])
    if cfg.type == "rnn":  # LOOM's weight_ih is [H][I]: the transpose of the block's columns
        kernel = (kernel[0].T, kernel[1].T)
    kernel_name, bias_name = _BLOCK_PARAMS[cfg.type]
    return {kernel_name: kernel, bias_name: bias}
