"""One flat parameter buffer and one flat gradient buffer for a whole network: the training engine's storage.

While a network trains, every parameter array of every layer (branches included) is a *view* of
one flat buffer, and its gradient has a view of the same shape in a second buffer with the same
layout. Optimizers, clipping, divergence snapshots and a data-parallel all-reduce then act on one
array each, on whichever backend holds the network (NumPy or CuPy).

Layout, per top-level layer (a *stage*): the *affine leaves* that read the stage input — Dense
layers and one-step stateless RNN / LSTM layers, the layer itself or any branch of its (nested)
Parallels — share one augmented block ``[in + 1, N]``: kernels side by side, biases in the last
row (the fused step computes every leaf's pre-activation with one product ``[x, 1] @ block``).
Every other parameter follows, flat, in layer order.

Lifecycle: :meth:`FlatParameters.attach` copies the layers' current values into the buffer and
binds the views; :meth:`FlatParameters.detach` gives every layer C-contiguous copies again, so a
network forwards after training exactly (bit for bit) as it does after a save / load round trip,
and arrays users replace between calls are picked up by the next attach. A network keeps its
layout (and the engine caches stored on it, such as compiled steps) while its layers do not
change: see :meth:`loom.nn.network.Network.training_parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.nn.layer_config import LayerConfig

if TYPE_CHECKING:
    from loom.nn.network import Network

__all__ = ["BLOCK_PARAMS", "FlatParameters", "ParameterView", "StageBlock", "affine_columns"]

#: Parameters of an affine leaf that live in its stage's block: (kernel name, bias name).
BLOCK_PARAMS: dict[str, tuple[str, str]] = {
    "dense": ("kernel", "biases"),
    "rnn": ("weight_ih", "bias_h"),
    "lstm": ("kernel_ih", "bias"),
}


def affine_columns(cfg: LayerConfig) -> int:
    """Columns a layer takes in an augmented weight block (0: not an affine leaf).

    Dense: its outputs; a one-step stateless RNN: its hidden units; a one-step stateless
    LSTM: four gates per hidden unit.
    """
    if cfg.type == "dense":
        return cfg.output_size
    if cfg.type in ("rnn", "lstm") and cfg.seq_length == 1 and not cfg.stateful:
        return cfg.hidden_size * (4 if cfg.type == "lstm" else 1)
    return 0


@dataclass(frozen=True, eq=False)
class ParameterView:
    """One parameter of one layer inside the flat buffers.

    Attributes
    ----------
    layer : LayerConfig
        The layer (or branch) owning the parameter.
    name : str
        Its LOOM weight name (``kernel``, ``biases``, ``weight_ih`` ...).
    value, grad : array
        Views of the parameter and gradient buffers, in the parameter's shape.
    start, size : int
        Where the parameter lies in flat order (block parameters are strided: ``start`` is
        that of their block).
    """

    layer: LayerConfig
    name: str
    value: Any
    grad: Any
    start: int
    size: int

    @property
    def path(self) -> str:
        """``layers[1].branches[0].kernel``-style name, for messages."""
        return f"{self.layer.path}.{self.name}"


@dataclass(frozen=True, eq=False)
class StageBlock:
    """The augmented weight block ``[in + 1, N]`` of one stage and its gradient twin."""

    params: Any
    grads: Any
    n_in: int
    leaves: tuple[LayerConfig, ...] = field(default=())


class FlatParameters:
    """Every parameter of a network as views of one flat buffer (see the module docstring).

    Parameters
    ----------
    net : Network
        The network; its layers are read, not changed, until :meth:`attach`.

    Attributes
    ----------
    params, grads : array ``[P]``
        The flat parameter and gradient buffers (the network's backend, one dtype).
    views : list of ParameterView
        Every parameter, in flat layer order (block parameters first within a stage).
    blocks : list of StageBlock or None
        One entry per top-level layer: its affine block, or ``None``.
    affine_position : dict
        ``id(layer) -> (first, last + 1)`` columns of an affine leaf in its stage block.
    kind_views : dict
        ``id(layer) -> [ParameterView]`` of the parameters outside any block.
    stage_ranges : list of tuple of (int, int)
        One entry per top-level layer: the ``[start, stop)`` ranges of the flat buffers holding
        its parameters (its block, then its other parameters); empty for a layer without any.
        A data-parallel run all-reduces a stage's gradient as soon as its backward pass is done.
    caches : dict
        Storage for engine objects that depend on this layout (compiled steps).
    """

    def __init__(self, net: Network) -> None:
        backend = net.array_backend
        self.backend, self.xp, self.raw = backend, backend.xp, backend.raw
        self.signature = layout_signature(net)
        self.layers: list[LayerConfig] = list(net.layers)
        self.views: list[ParameterView] = []
        self.blocks: list[StageBlock | None] = []
        self.affine_position: dict[int, tuple[int, int]] = {}
        self.kind_views: dict[int, list[ParameterView]] = {}
        self.stage_ranges: list[tuple[tuple[int, int], ...]] = []
        self.caches: dict[str, Any] = {}
        self.attached = False
        self._layout()

    # ----- layout -------------------------------------------------------------------------
    def _layout(self) -> None:
        plans = []
        size = 0
        for cfg in self.layers:
            first = next((c for c in cfg.iter_layers() if affine_columns(c)), None)
            n_in = first.input_size if first is not None else 0
            leaves: list[LayerConfig] = []
            if first is not None and n_in > 0:
                _collect_affine_leaves(cfg, n_in, leaves)
            width = sum(affine_columns(c) for c in leaves)
            plans.append((leaves, n_in, width, size))
            size += (n_in + 1) * width if leaves else 0
        block_ids = {id(c) for leaves, _, _, _ in plans for c in leaves}
        rest = [
            (stage, c, name, p)
            for stage, cfg in enumerate(self.layers)
            for c in cfg.iter_layers()
            for name, p in c.params.items()
            if not (id(c) in block_ids and name in BLOCK_PARAMS[c.type])
        ]
        size += sum(_size(p) for _, _, _, p in rest)
        arrays = [p for cfg in self.layers for c in cfg.iter_layers() for p in c.params.values()]
        dtype = np.result_type(*[p.dtype for p in arrays]) if arrays else self.backend.float_dtype
        raw = self.raw
        self.params = raw.zeros(size, dtype=dtype)
        self.grads = raw.zeros(size, dtype=dtype)
        for leaves, n_in, width, start in plans:
            if not leaves:
                self.blocks.append(None)
                continue
            end = start + (n_in + 1) * width
            block = StageBlock(
                self.params[start:end].reshape(n_in + 1, width),
                self.grads[start:end].reshape(n_in + 1, width),
                n_in,
                tuple(leaves),
            )
            self.blocks.append(block)
            col = 0
            for c in leaves:
                cols = affine_columns(c)
                self.affine_position[id(c)] = (col, col + cols)
                for name, (value, grad) in _block_views(c, block, col, cols).items():
                    self.views.append(ParameterView(c, name, value, grad, start, _size(value)))
                col += cols
        offset = sum((n_in + 1) * width for _, n_in, width, _ in plans)
        ranges: list[list[tuple[int, int]]] = [
            [(start, start + (n_in + 1) * width)] if leaves else [] for leaves, n_in, width, start in plans
        ]
        for stage, c, name, p in rest:
            n = _size(p)
            if n and ranges[stage] and ranges[stage][-1][1] == offset:  # contiguous: one range
                ranges[stage][-1] = (ranges[stage][-1][0], offset + n)
            elif n:
                ranges[stage].append((offset, offset + n))
            view = ParameterView(
                c,
                name,
                self.params[offset : offset + n].reshape(p.shape),
                self.grads[offset : offset + n].reshape(p.shape),
                offset,
                n,
            )
            self.views.append(view)
            self.kind_views.setdefault(id(c), []).append(view)
            offset += n
        self.stage_ranges = [tuple(r) for r in ranges]

    @property
    def size(self) -> int:
        """Number of scalars in the buffer."""
        return int(self.params.shape[0])

    def matches(self, net: Network) -> bool:
        """True while ``net`` has the layers, configs and parameter shapes this layout was built for."""
        return net.array_backend is self.backend and layout_signature(net) == self.signature

    # ----- binding ------------------------------------------------------------------------
    def attach(self) -> None:
        """Copy every layer's current parameter values into the buffer and make the layers use the views."""
        for view in self.views:
            params = view.layer.params
            current = params[view.name]
            if current is not view.value:
                view.value[...] = current
                params[view.name] = view.value
        self.attached = True

    def detach(self) -> None:
        """Give every layer a C-contiguous copy of its parameters (the buffer keeps its values)."""
        for view in self.views:
            params = view.layer.params
            if params.get(view.name) is view.value:
                params[view.name] = view.value.copy()
        self.attached = False

    # ----- gradients ----------------------------------------------------------------------
    def gather_gradients(self) -> None:
        """Copy the layers' gradients (``cfg.grads``, layer-by-layer backward) into the gradient buffer.

        A parameter without a gradient gets zeros.
        """
        for view in self.views:
            grad = view.layer.grads.get(view.name)
            if grad is None:
                view.grad[...] = 0
            elif grad is not view.grad:
                view.grad[...] = grad

    def export_gradients(self, scale: Any = 1.0) -> None:
        """Put ``scale`` times the gradient buffer into every layer's ``cfg.grads`` (copies, as backward does)."""
        for cfg in self.layers:
            for c in cfg.iter_layers():
                c.grads = {}
        for view in self.views:
            view.layer.grads[view.name] = view.grad * scale


def layout_signature(net: Network) -> tuple[Any, ...]:
    """What a layout depends on: the layer objects, their configs and every parameter's name, shape and dtype."""
    layers = list(net.iter_all_layers())
    return (
        tuple(id(cfg) for cfg in layers),
        tuple(repr(cfg) for cfg in net.layers),
        tuple((name, tuple(p.shape), str(p.dtype)) for cfg in layers for name, p in cfg.params.items()),
    )


def _size(array: Any) -> int:
    return int(np.prod(array.shape)) if array.shape else 1


def _collect_affine_leaves(cfg: LayerConfig, n_in: int, out: list[LayerConfig]) -> None:
    if cfg.type == "parallel":
        for branch in cfg.branches:
            _collect_affine_leaves(branch, n_in, out)
    elif affine_columns(cfg) and cfg.input_size == n_in and cfg.params:
        out.append(cfg)


def _block_views(cfg: LayerConfig, block: StageBlock, col: int, cols: int) -> dict[str, tuple[Any, Any]]:
    """Parameter and gradient views of an affine leaf inside its stage's ``[in + 1, N]`` block."""
    n_in = block.n_in
    kernel = (block.params[:n_in, col : col + cols], block.grads[:n_in, col : col + cols])
    bias = (block.params[n_in, col : col + cols], block.grads[n_in, col : col + cols])
    if cfg.type == "rnn":  # LOOM's weight_ih is [H][I]: the transpose of the block's columns
        kernel = (kernel[0].T, kernel[1].T)
    kernel_name, bias_name = BLOCK_PARAMS[cfg.type]
    return {kernel_name: kernel, bias_name: bias}
