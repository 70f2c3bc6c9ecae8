"""The LOOM grid ``Network``: rows x cols x layers_per_cell layers run in flat order.

Data flows through the layers strictly in flat-index order
(``row * cols * lpc + col * lpc + layer``); the grid is an ordering device, as
in LOOM. Between layers the data is one flat vector holding ``batch_size``
samples back to back (LOOM's layout).

LOOM's *hidden residual stream* is reproduced in the forward pass: an RMSNorm
remembers its input, the next MHA/SwiGLU of matching length adds the remembered
vector to its output, a LayerNorm adds it to its input. Unlike Go, gradients
flow back through these additions.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loom.backend import Backend, resolve_backend, to_numpy
from loom.errors import ConfigError, LoomError, ShapeError
from loom.nn import batch_validation
from loom.nn.builder import NetworkSpec, assign_paths, infer_sizes, parse_config_text, parse_network_config
from loom.nn.introspection import IntrospectionMixin
from loom.nn.layer_config import LayerConfig
from loom.nn.layers import ForwardContext, kind_for
from loom.nn.loom_names import takes_python_values
from loom.nn.serialization import (
    bundle_network_spec,
    parse_bundle_text,
    read_bundle_file,
    save_model,
    save_model_to_string,
)

if TYPE_CHECKING:
    from loom.nn.array_types import Array, ArrayLike, TrainingBatchLike, TrainingConfigLike
    from loom.nn.evaluation import DeviationMetrics
    from loom.nn.go_compat import GoCompatibleMode
    from loom.nn.training import TrainingResult

if TYPE_CHECKING:
    from loom.backend.distributed import Communicator
    from loom.nn.flat_parameters import FlatParameters
    from loom.nn.optimizers import Optimizer
    from loom.nn.training_callbacks import History
    from loom.nn.training_engine import Callback, GradientHook

__all__ = [
    "Network",
    "create_network_from_json",
    "load_bundle_network",
    "load_model",
    "load_model_from_string",
    "network_from_layers",
    "network_from_spec",
    "new_network",
]


@takes_python_values
class Network(IntrospectionMixin):
    """A LOOM grid network.

    Parameters
    ----------
    grid_rows, grid_cols, layers_per_cell : int
        Grid shape; ``total_layers() = grid_rows * grid_cols * layers_per_cell``.
    layers : list of LayerConfig, optional
        Layers in flat order (default: size-less Dense layers, filled with ``set_layer``).
    batch_size : int
        Samples per flat input vector (LOOM's ``BatchSize``).
    input_size : int, optional
        Features of one input sample (informational; used for size inference).
    backend : str or Backend, optional
        ``"numpy"`` or ``"cupy"``; default: the current backend.

    Examples
    --------
    >>> import loom
    >>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
    ...     "layers_per_cell": 1, "layers": [{"type": "dense", "input_size": 2,
    ...     "output_size": 1, "activation": "sigmoid"}]})
    >>> net.forward([0.5, -0.5]).shape
    (1,)
    """

    def __init__(
        self,
        grid_rows: int,
        grid_cols: int,
        layers_per_cell: int,
        layers: Sequence[LayerConfig] | None = None,
        *,
        batch_size: int = 1,
        input_size: int | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        self.grid_rows = int(grid_rows)
        self.grid_cols = int(grid_cols)
        self.layers_per_cell = int(layers_per_cell)
        self.batch_size = int(batch_size) if batch_size else 1
        self.input_size = input_size
        self._backend = resolve_backend(backend)
        total = self.grid_rows * self.grid_cols * self.layers_per_cell
        if layers is None:
            layers = [LayerConfig(type="dense") for _ in range(total)]
        if len(layers) != total:
            raise ConfigError(
                f"layers: expected {total} layers (grid {grid_rows}x{grid_cols}x{layers_per_cell}), got {len(layers)}"
            )
        self.layers: list[LayerConfig] = list(layers)
        assign_paths(self.layers)
        self._activations: list[Any] = []
        self._tape: list[tuple[Any, int | None, str | None]] | None = None
        self._rng = self._backend.rng(None)
        self._flat: FlatParameters | None = None
        #: Set to True by a callback to end ``fit`` after the current epoch (as in Keras).
        self.stop_training = False

    def __deepcopy__(self, memo: dict[int, Any]) -> Network:
        """An independent copy: layers, parameters, gradients and state copied, the backend shared.

        The copy has no recorded forward pass (backward needs a forward first) and no compiled
        training step; its random generator continues from the original's state where the
        backend can copy it (NumPy), else it is a fresh one.
        """
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        skip = {"_activations", "_tape", "_rng", "_flat"}
        for key, value in self.__dict__.items():
            if key not in skip:
                setattr(twin, key, copy.deepcopy(value, memo))
        twin._activations, twin._tape, twin._flat = [], None, None
        try:
            twin._rng = copy.deepcopy(self._rng, memo)
        except TypeError:  # CuPy's generator holds a lock
            twin._rng = self._backend.rng(None)
        return twin

    # ------------------------------------------------------------------ backend
    @property
    def backend(self) -> str:
        """Name of the backend holding this network's arrays."""
        return self._backend.name

    @property
    def xp(self) -> Any:
        """Array-API namespace of this network's backend."""
        return self._backend.xp

    def to_backend(self, name: str | Backend) -> Network:
        """Move every parameter, gradient and state array to ``name`` (returns self)."""
        target = resolve_backend(name)
        for top in self.layers:
            for cfg in top.iter_layers():
                for store in (cfg.params, cfg.grads, cfg.state):
                    for key, value in store.items():
                        if hasattr(value, "shape"):
                            store[key] = target.asarray(to_numpy(value), dtype=value.dtype)
        self._backend = target
        self._rng = target.rng(None)
        self._activations = []
        self._tape = None
        self._flat = None
        return self

    # ------------------------------------------------------------------ grid
    def total_layers(self) -> int:
        """Number of layers (rows x cols x layers_per_cell)."""
        return len(self.layers)

    def _flat_index(self, row: int, col: int, layer: int) -> int:
        idx = row * self.grid_cols * self.layers_per_cell + col * self.layers_per_cell + layer
        if not (0 <= row < self.grid_rows and 0 <= col < self.grid_cols and 0 <= layer < self.layers_per_cell):
            raise IndexError(
                f"grid position ({row}, {col}, {layer}) outside the "
                f"{self.grid_rows}x{self.grid_cols}x{self.layers_per_cell} grid"
            )
        return idx

    def get_layer(self, row: int, col: int, layer: int) -> LayerConfig:
        """The :class:`LayerConfig` at a grid position (the live object, not a copy)."""
        return self.layers[self._flat_index(row, col, layer)]

    def set_layer(self, row: int, col: int, layer: int, cfg: LayerConfig) -> None:
        """Replace the layer at a grid position; parameters are created if it has none."""
        if not isinstance(cfg, LayerConfig):
            raise ConfigError(f"set_layer: expected a LayerConfig, got {type(cfg).__name__}")
        idx = self._flat_index(row, col, layer)
        kind = kind_for(cfg.type, f"layers[{idx}].type")
        self.layers[idx] = cfg
        assign_paths(self.layers)
        if not cfg.params and kind.param_shapes(cfg):
            self._init_layer(cfg, np.random.default_rng())
        else:
            self._move_layer(cfg)
        self._activations = []
        self._tape = None

    def get_activation(self, row: int, col: int, layer: int) -> int:
        """Activation id of the layer at a grid position."""
        return int(self.get_layer(row, col, layer).activation)

    # ------------------------------------------------------------------ weights
    def _init_layer(self, cfg: LayerConfig, rng: np.random.Generator) -> None:
        kind = kind_for(cfg.type)
        params = kind.init_params(cfg, rng)
        cfg.params = {k: self._backend.asarray(v) for k, v in params.items()}
        cfg.grads = {}
        cfg.state = {}
        for branch in cfg.branches:
            self._init_layer(branch, rng)

    def _move_layer(self, cfg: LayerConfig) -> None:
        for layer in cfg.iter_layers():
            layer.params = {k: self._backend.asarray(to_numpy(v)) for k, v in layer.params.items()}

    def initialize_weights(self, seed: int | None = None) -> None:
        """(Re-)initialise every parameter with LOOM's distributions.

        Parameters
        ----------
        seed : int, optional
            Makes the initialisation reproducible (and identical on NumPy and CuPy:
            weights are drawn on the host, then moved to the backend).
        """
        rng = np.random.default_rng(seed)
        for cfg in self.layers:
            self._init_layer(cfg, rng)
        self._rng = self._backend.rng(None if seed is None else seed + 1)
        self._activations = []
        self._tape = None

    def seed(self, seed: int) -> None:
        """Seed the generator of stochastic layers (Gumbel softmax noise)."""
        self._rng = self._backend.rng(seed)

    def iter_all_layers(self) -> Iterator[LayerConfig]:
        """Every layer and nested branch, depth first, in flat order."""
        for cfg in self.layers:
            yield from cfg.iter_layers()

    def num_parameters(self) -> int:
        """Total number of trainable scalars."""
        return sum(cfg.num_parameters() for cfg in self.layers)

    # ------------------------------------------------------------------ forward / backward
    def _as_input(self, x: Any, what: str = "input", *, check_finite: bool = False) -> tuple[Any, int, bool]:
        """Flat backend vector, batch size, and whether the caller passed 2-D.

        ``check_finite``: a NaN / infinite value is a ``ShapeError`` naming its sample and position.
        """
        backend = self._backend
        if not (
            hasattr(x, "shape") and type(x).__module__.split(".")[0] == backend.name and x.dtype == backend.float_dtype
        ):
            if isinstance(x, str | bytes | dict) or x is None:
                kind = type(x).__name__
                raise ShapeError(f"{what}: expected a flat or [batch, features] array of numbers, got {kind}")
            try:
                with np.errstate(over="ignore"):  # beyond float32: inf, reported by the finite check
                    x = backend.asarray(x)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ShapeError(f"{what}: expected a flat or [batch, features] array of numbers ({exc})") from exc
        if x.ndim == 2:
            flat, batch, two_d = x.reshape(-1), int(x.shape[0]), True
        elif x.ndim == 1:
            flat, batch, two_d = x, self.batch_size, False
        else:
            raise ShapeError(f"{what}: expected a flat vector or a [batch, features] matrix, got shape {x.shape}")
        if check_finite:
            batch_validation.check_finite(flat, batch, what, backend.raw)
        return flat, batch, two_d

    def _training_context(self) -> ForwardContext:
        """A forward context reused by every step of one ``train`` call (with a config memo)."""
        return ForwardContext(self._backend, self._backend.xp, self.batch_size, self._rng, memo={})

    def _plan(self, ctx: ForwardContext) -> list[tuple[Any, LayerConfig, str | None]]:
        """``(kind.forward, cfg, residual_role)`` of every top-level layer, memoised in ``ctx``."""
        memo = ctx.memo
        plan = None if memo is None else memo.get(id(self))
        if plan is None:
            plan = []
            for cfg in self.layers:
                kind = kind_for(cfg.type)
                plan.append((kind.forward, cfg, kind.residual_role))
            if memo is not None:
                memo[id(self)] = plan
        return plan

    def _forward(self, x: Any, batch_size: int, ctx: ForwardContext | None = None, *, input_grad: bool = True) -> Any:
        """Run every layer on the flat ``x`` and record the backward tape.

        ``ctx`` (default: a fresh one) may be reused between calls; ``input_grad=False``
        tells the first layer that ``_backward`` need not return the input gradient.
        """
        if ctx is None:
            ctx = ForwardContext(self._backend, self._backend.xp, batch_size, self._rng)
        else:
            ctx.batch_size = batch_size
        activations = [x]
        tape: list[tuple[Any, int | None, str | None]] = []
        residual: tuple[Any, int] | None = None
        for i, (forward, cfg, role) in enumerate(self._plan(ctx)):
            ctx.needs_input_grad = input_grad or i > 0
            source: int | None = None
            if role is None:
                y, backprop = forward(cfg, x, ctx)
            elif role == "add_input":
                if residual is not None and residual[0].shape == x.shape:
                    source = residual[1]
                    x = x + residual[0]
                y, backprop = forward(cfg, x, ctx)
                if residual is not None:
                    residual = (y, i + 1)
            elif role == "add_output":
                y, backprop = forward(cfg, x, ctx)
                if residual is not None and residual[0].shape == y.shape:
                    source = residual[1]
                    y = y + residual[0]
                residual = (y, i + 1)
            else:
                y, backprop = forward(cfg, x, ctx)
                if role == "save_input":
                    residual = (x, i)
            tape.append((backprop, source, role))
            activations.append(y)
            x = y
        ctx.needs_input_grad = True
        self._activations = activations
        self._tape = tape
        return x

    def _backward(self, grad: Any, accumulate: bool, all_layers: list[LayerConfig] | None = None) -> Any:
        """Back-propagate ``grad`` through the recorded tape; returns the input gradient.

        The result is ``None`` when the forward pass ran with ``input_grad=False``.
        """
        if self._tape is None:
            raise LoomError("backward: call forward first (no forward pass is recorded)")
        if not accumulate:
            for cfg in self.iter_all_layers() if all_layers is None else all_layers:
                cfg.grads = {}
        out = self._activations[-1]
        if grad.shape != out.shape:
            raise ShapeError(f"grad_output: expected {out.shape[0]} values (the output length), got {grad.shape[0]}")
        pending: dict[int, Any] = {}
        tape = self._tape
        for i in range(len(tape) - 1, -1, -1):
            backprop, source, role = tape[i]
            if source is None and not pending:
                grad = backprop(grad)
                continue
            extra = pending.pop(i + 1, None)
            if extra is not None:
                grad = grad + extra
            if source is not None and role == "add_output":
                pending[source] = grad if source not in pending else pending[source] + grad
            grad = backprop(grad)
            if source is not None and role == "add_input":
                pending[source] = grad if source not in pending else pending[source] + grad
        extra = pending.pop(0, None)
        return grad if extra is None or grad is None else grad + extra

    # ------------------------------------------------------------------ engine API (used by trainers)
    @property
    def array_backend(self) -> Backend:
        """The :class:`~loom.backend.Backend` object holding this network's arrays."""
        return self._backend

    @property
    def rng(self) -> np.random.Generator:
        """The backend random generator of stochastic layers (Gumbel noise); see :meth:`seed`."""
        return self._rng

    def prepare_input(
        self, x: ArrayLike, what: str = "input", *, check_finite: bool = False
    ) -> tuple[Array, int, bool]:
        """``x`` as the flat backend vector the layers read.

        Parameters
        ----------
        x : array-like
            Flat ``batch_size * input_size`` values (LOOM's layout) or 2-D ``[batch, features]``.
        what : str
            How error messages name ``x`` (``"batches[3].target"``).
        check_finite : bool
            A NaN / infinite value is a ``ShapeError`` naming its sample and position.

        Returns
        -------
        flat : array ``[batch * features]``
            Backend array of the network's float dtype (no copy when it already is one).
        batch : int
            Samples in it: the row count of a 2-D input, else ``batch_size``.
        two_d : bool
            Whether ``x`` was 2-D.
        """
        return self._as_input(x, what, check_finite=check_finite)

    def training_context(self, batch_size: int | None = None) -> ForwardContext:
        """A forward context to reuse across the steps of one training run (it memoises per-config values).

        Valid while the layer configs do not change.
        """
        ctx = self._training_context()
        if batch_size is not None:
            ctx.batch_size = batch_size
        return ctx

    def forward_tape(
        self, x: Array, batch_size: int, context: ForwardContext | None = None, *, input_grad: bool = True
    ) -> Array:
        """Run every layer on the flat backend vector ``x`` and record the tape :meth:`backward_tape` replays.

        Parameters
        ----------
        x : array ``[batch_size * input_size]``
            Flat input on this network's backend (see :meth:`prepare_input`).
        batch_size : int
            Samples in ``x``.
        context : ForwardContext, optional
            Reused between calls (:meth:`training_context`); default: a fresh one.
        input_grad : bool
            ``False`` tells the first layer that nobody needs the gradient w.r.t. ``x``
            (:meth:`backward_tape` then returns ``None``).

        Returns
        -------
        array ``[batch_size * output_size]``
        """
        return self._forward(x, batch_size, context, input_grad=input_grad)

    def backward_tape(
        self, grad: Array, *, accumulate: bool = False, layers: Sequence[LayerConfig] | None = None
    ) -> Array | None:
        """Back-propagate the flat ``dL/d(output)`` through the recorded tape into the layers' ``cfg.grads``.

        Parameters
        ----------
        grad : array ``[batch * output_size]``
            Backend array, the shape of the last forward's output.
        accumulate : bool
            Add to the stored gradients instead of replacing them.
        layers : sequence of LayerConfig, optional
            Every layer and branch (:meth:`iter_all_layers`), when the caller has the list at hand.

        Returns
        -------
        array or None
            ``dL/d(input)``; ``None`` when the forward ran with ``input_grad=False``.
        """
        return self._backward(grad, accumulate, layers)  # type: ignore[arg-type]

    def clear_tape(self) -> None:
        """Forget the recorded forward pass (a following ``backward`` raises until the next forward)."""
        self._activations, self._tape = [], None

    @contextlib.contextmanager
    def tape_preserved(self) -> Iterator[None]:
        """Context manager: forward passes inside leave the recorded tape (and :meth:`activations`) as they were."""
        saved = (self._activations, self._tape)
        try:
            yield
        finally:
            self._activations, self._tape = saved

    def named_parameters(self) -> list[tuple[str, Array]]:
        """``(path, array)`` of every parameter in flat order, e.g. ``("layers[1].branches[0].kernel", array)``.

        The arrays are the live ones: writing into them changes the network.
        """
        return [(f"{cfg.path}.{name}", p) for cfg in self.iter_all_layers() for name, p in cfg.params.items()]

    @contextlib.contextmanager
    def training_parameters(self) -> Iterator[FlatParameters]:
        """Context manager: the parameters as views of one flat buffer while the block runs.

        Yields the network's :class:`~loom.nn.flat_parameters.FlatParameters` (built once and
        reused while the layers do not change), attached: every layer's parameters are views of
        ``flat.params`` and ``flat.grads`` holds the gradient buffer. On exit every layer gets
        C-contiguous copies back. Nested uses share the outer attachment.
        """
        from loom.nn.flat_parameters import FlatParameters

        flat = self._flat
        if flat is not None and flat.attached:
            yield flat
            return
        if flat is None or not flat.matches(self):
            flat = self._flat = FlatParameters(self)
        flat.attach()
        try:
            yield flat
        finally:
            flat.detach()

    def forward(self, x: ArrayLike, *, check_finite: bool = True) -> Array:
        """Run the network.

        Parameters
        ----------
        x : array-like
            Flat input of ``batch_size * input_size`` values (LOOM's layout) or a
            2-D ``[batch, features]`` array (any batch count).
        check_finite : bool
            Reject NaN / infinite inputs with a ``ShapeError`` naming the sample and
            position (default). The check is one reduction over ``x``; pass False to skip
            it in hot loops whose inputs are known to be finite.

        Returns
        -------
        array
            Backend array; flat for a flat input, ``[batch, out]`` for a 2-D input.
        """
        flat, batch, two_d = self._as_input(x, check_finite=check_finite)
        y = self._forward(flat, batch)
        return y.reshape(batch, -1) if two_d else y

    def backward(self, grad_output: ArrayLike, *, accumulate: bool = False) -> Array:
        """Back-propagate ``dL/d(output)``; stores parameter gradients, returns ``dL/d(input)``.

        Gradients overwrite the stored ones (as LOOM) unless ``accumulate=True``.
        """
        grad, _, two_d = self._as_input(grad_output)
        dx = self._backward(grad, accumulate)
        if two_d:
            return dx.reshape(grad_output.shape[0] if hasattr(grad_output, "shape") else len(grad_output), -1)
        return dx

    def gradients(self) -> list[Array]:
        """Every stored gradient array (flat order, branches included)."""
        return [g for cfg in self.iter_all_layers() for g in cfg.grads.values()]

    def update_weights(self, learning_rate: float) -> None:
        """Plain SGD step ``w -= lr * grad`` on every parameter that has a gradient."""
        lr = float(learning_rate)
        for cfg in self.iter_all_layers():
            params = cfg.params
            for name, grad in cfg.grads.items():
                params[name] -= lr * grad

    def zero_gradients(self) -> None:
        """Set every stored gradient to zero (slots stay allocated)."""
        for cfg in self.iter_all_layers():
            for grad in cfg.grads.values():
                grad[...] = 0

    def kernel_gradients(self) -> list[dict[str, Array]]:
        """Per-layer gradient dictionaries (flat order)."""
        return [dict(cfg.grads) for cfg in self.layers]

    def activations(self) -> list[Array]:
        """Per-layer outputs of the last forward pass: ``[input, out_0, out_1, ...]``."""
        return list(self._activations)

    def reset_state(self) -> None:
        """Clear the hidden state of every ``stateful`` RNN/LSTM layer."""
        for cfg in self.iter_all_layers():
            kind_for(cfg.type).reset_state(cfg)

    # ------------------------------------------------------------------ training / evaluation / io
    def train(
        self,
        batches: Sequence[TrainingBatchLike],
        config: TrainingConfigLike | None = None,
        *,
        callbacks: Sequence[Callback] = (),
    ) -> TrainingResult:
        """Train with LOOM's loop; see :func:`loom.nn.training.train_network` (``callbacks``: Keras-style hooks)."""
        from loom.nn.training import train_network

        return train_network(self, batches, config, callbacks=callbacks)

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        learning_rate: float | None = None,
        optimizer: str | Optimizer = "adam",
        loss: str | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0,
        callbacks: Sequence[Callback] = (),
        verbose: bool | int | str = "auto",
        gradient_clip: float = 0.0,
        fused: bool = True,
        raise_on_divergence: bool = True,
        gradient_hooks: Sequence[GradientHook] = (),
        distributed: bool | Communicator = False,
        **options: float | bool | str,
    ) -> History:
        """Train on samples ``x [N, features]`` and targets ``y``, Keras-style; returns a :class:`History`.

        Parameters
        ----------
        x : array-like ``[N, features]``
            NumPy / CuPy array or nested lists.
        y : array-like
            Class labels ``[N]`` (integers, for a network with several outputs), or one-hot /
            real-valued targets ``[N, outputs]`` (``[N]`` for one output).
        epochs, batch_size : int
            Passes over the data; samples per step (the last step takes the rest).
        learning_rate : float, optional
            Default: the optimizer's (``torch.optim``'s): 1e-3, RMSprop 1e-2.
        optimizer : str or Optimizer
            ``"adam"`` (default), ``"adamw"``, ``"sgd"``, ``"rmsprop"``, or an object from
            :mod:`loom.nn.optimizers` (its state carries over between calls).
        loss : str, optional
            ``"mse"``, ``"cross_entropy"`` (softmax outputs), ``"binary_cross_entropy"`` (sigmoid
            outputs); default ``"cross_entropy"`` for class targets of a softmax output layer,
            else ``"mse"``. The loss is the mean over the batch's samples (Keras / PyTorch).
        shuffle : bool
            A new sample order every epoch, from ``seed``.
        validation_data : (x_val, y_val), optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        validation_split : float
            Fraction of the samples, taken from the end before shuffling, used as validation
            data (ignored when ``validation_data`` is given), as in Keras.
        callbacks : sequence of Callback
            e.g. :class:`~loom.nn.training_callbacks.EarlyStopping`,
            :class:`~loom.nn.training_callbacks.ModelCheckpoint`.
        verbose : 0, 1, 2 or "auto"
            0 silent; 2 a line per epoch; 1 / "auto" a progress bar on a terminal, else lines.
        gradient_clip : float
            Global L2 norm to clip each step's gradient to (0: off).
        fused : bool
            Train through the fused step when the network allows it (same results).
        raise_on_divergence : bool
            Stop with ``TrainingDivergedError`` on a non-finite loss (weights restored).
        gradient_hooks : sequence of callable
            Each called with the flat gradient buffer (all parameters, one array) after every
            backward pass and before clipping and the optimizer step; it may change it in place
            (with ``distributed``, after the gradient is reduced over the ranks).
        distributed : bool or Communicator
            Data-parallel training: every process of the job (``mpiexec -n N``,
            :func:`loom.distributed.launch`) makes this call on the same data; each trains on
            its shard of every global batch of ``world_size × batch_size`` samples and the
            gradients are averaged before each step, so the weights and the history equal one
            process with the larger batch. Only rank 0 runs ``ModelCheckpoint`` and the
            progress output. ``True`` joins the job (:func:`loom.distributed.init`); a
            communicator is used as given. See ``docs/distributed.md``.
        **options
            Optimizer options (``momentum``, ``nesterov``, ``beta1``, ``beta2``, ``epsilon``,
            ``weight_decay``, ``alpha``) and schedule options (``lr_schedule``,
            ``warmup_epochs``, ``lr_step_size``, ``lr_gamma``, ``lr_min``); unknown names are a
            ``ConfigError``.

        Returns
        -------
        History
            ``history.history["loss"]`` (and ``accuracy``, ``val_loss``, ``val_accuracy``)
            per epoch; ``history.plot(path)`` draws them.

        Examples
        --------
        >>> import numpy as np, loom
        >>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
        ...     "layers_per_cell": 2, "layers": [{"type": "dense", "input_size": 2, "output_size": 8,
        ...     "activation": "tanh"}, {"type": "dense", "output_size": 2, "activation": "sigmoid"}]}, seed=0)
        >>> x = np.random.default_rng(0).random((200, 2), dtype=np.float32)
        >>> history = net.fit(x, (x[:, 0] > x[:, 1]).astype(int), epochs=3, verbose=0, seed=0)
        >>> sorted(history.history)
        ['accuracy', 'loss']
        """
        from loom.nn.fit import fit_network

        return fit_network(
            self,
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            loss=loss,
            shuffle=shuffle,
            seed=seed,
            validation_data=validation_data,
            validation_split=validation_split,
            callbacks=callbacks,
            verbose=verbose,
            gradient_clip=gradient_clip,
            fused=fused,
            raise_on_divergence=raise_on_divergence,
            gradient_hooks=gradient_hooks,
            distributed=distributed,
            **options,
        )

    def predict(self, x: ArrayLike, batch_size: int | None = None) -> Array:
        """Outputs ``[N, outputs]`` (backend array) for samples ``x [N, features]``, ``batch_size`` rows per forward.

        The recorded forward pass (for ``backward``) is left alone.
        """
        from loom.nn.fit import predict_arrays

        return predict_arrays(self, x, batch_size)

    def evaluate(
        self, x: ArrayLike, y: ArrayLike, *, batch_size: int | None = None, loss: str | None = None
    ) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` on samples ``x`` and targets ``y`` with ``fit``'s conventions.

        ``accuracy`` is there when the targets are classes. LOOM's deviation metrics:
        :meth:`evaluate_network`.
        """
        from loom.nn.fit import evaluate_arrays

        return evaluate_arrays(self, x, y, batch_size=batch_size, loss=loss)

    def summary(self, print_fn: Callable[[str], object] = print) -> None:
        """Print a table of the layers: grid position, type, activation, in → out sizes, parameters, total.

        ``print_fn`` receives the text (default ``print``); :func:`loom.nn.summary.summary_text` returns it.
        """
        from loom.nn.summary import summary_text

        print_fn(summary_text(self))

    def evaluate_network(
        self, inputs: Sequence[ArrayLike] | Array, expected_outputs: Sequence[float] | Array
    ) -> DeviationMetrics:
        """LOOM's deviation metrics; see :func:`loom.nn.evaluation.evaluate_network`."""
        from loom.nn.evaluation import evaluate_network

        return evaluate_network(self, inputs, expected_outputs)

    def save_model_to_string(self, model_id: str = "model", *, go_compatible: GoCompatibleMode = False) -> str:
        """The network as LOOM bundle JSON text (``"type": "modelhost/bundle"``).

        ``go_compatible=True`` raises ``ConfigError`` listing every feature Go LOOM would run
        differently (``"warn"``: a ``GoCompatibilityWarning`` instead); see :mod:`loom.nn.go_compat`.
        """
        return save_model_to_string(self, model_id, go_compatible=go_compatible)

    def save_model(self, path: str | Path, model_id: str = "model", *, go_compatible: GoCompatibleMode = False) -> None:
        """Write the LOOM bundle to ``path`` atomically (temp file + rename); ``go_compatible`` as above."""
        save_model(self, path, model_id, go_compatible=go_compatible)

    def __repr__(self) -> str:
        types = ", ".join(cfg.type for cfg in self.layers)
        return (
            f"Network(grid={self.grid_rows}x{self.grid_cols}x{self.layers_per_cell}, "
            f"batch_size={self.batch_size}, backend={self.backend!r}, layers=[{types}])"
        )

    # ------------------------------------------------------------------ LOOM-compatible names
    def ForwardCPU(self, x: ArrayLike) -> tuple[list[float], int]:
        """LOOM name: forward pass returning ``(list_of_floats, duration_ns)``."""
        start = time.perf_counter_ns()
        y = self.forward(x)
        values = to_numpy(y).reshape(-1).tolist()
        return values, time.perf_counter_ns() - start

    def BackwardCPU(self, grad: ArrayLike) -> tuple[list[float], int]:
        """LOOM name: backward pass returning ``(list_of_floats, duration_ns)``."""
        start = time.perf_counter_ns()
        dx = self.backward(grad)
        return to_numpy(dx).reshape(-1).tolist(), time.perf_counter_ns() - start

    def UpdateWeights(self, learning_rate: float) -> None:
        """LOOM name of :meth:`update_weights`."""
        self.update_weights(learning_rate)

    def ZeroGradients(self) -> None:
        """LOOM name of :meth:`zero_gradients`."""
        self.zero_gradients()

    def Train(self, batches: Sequence[TrainingBatchLike], config: TrainingConfigLike | None = None) -> TrainingResult:
        """LOOM name of :meth:`train`."""
        return self.train(batches, config)

    def EvaluateNetwork(
        self, inputs: Sequence[ArrayLike] | Array, expected_outputs: Sequence[float] | Array
    ) -> DeviationMetrics:
        """LOOM name of :meth:`evaluate_network`."""
        return self.evaluate_network(inputs, expected_outputs)

    def SaveModelToString(self, model_id: str = "model", *, go_compatible: GoCompatibleMode = False) -> str:
        """LOOM name of :meth:`save_model_to_string`."""
        return self.save_model_to_string(model_id, go_compatible=go_compatible)

    def SaveModel(self, path: str | Path, model_id: str = "model", *, go_compatible: GoCompatibleMode = False) -> None:
        """LOOM name of :meth:`save_model`."""
        self.save_model(path, model_id, go_compatible=go_compatible)

    def GetLayer(self, row: int, col: int, layer: int) -> LayerConfig:
        """LOOM name of :meth:`get_layer`."""
        return self.get_layer(row, col, layer)

    def SetLayer(self, row: int, col: int, layer: int, cfg: LayerConfig) -> None:
        """LOOM name of :meth:`set_layer`."""
        self.set_layer(row, col, layer, cfg)

    def GetActivation(self, row: int, col: int, layer: int) -> int:
        """LOOM name of :meth:`get_activation`."""
        return self.get_activation(row, col, layer)

    def TotalLayers(self) -> int:
        """LOOM name of :meth:`total_layers`."""
        return self.total_layers()

    def Activations(self) -> list[list[float]]:
        """LOOM name: per-layer outputs of the last forward as lists of floats."""
        return [to_numpy(a).reshape(-1).tolist() for a in self._activations]

    def InitializeWeights(self) -> None:
        """LOOM name of :meth:`initialize_weights`."""
        self.initialize_weights()

    def ResetState(self) -> None:
        """LOOM name of :meth:`reset_state`."""
        self.reset_state()

    def KernelGradients(self) -> list[list[float]]:
        """LOOM name: per top-level layer, its weight (non-bias) gradients of the last backward, flat.

        ``[]`` for a layer without gradients (Go: ``nil``); Parallel layers include their branches.
        """
        return [_flat_gradients(cfg, bias=False) for cfg in self.layers]

    def BiasGradients(self) -> list[list[float]]:
        """LOOM name: per top-level layer, its bias gradients of the last backward, flat (``[]`` if none)."""
        return [_flat_gradients(cfg, bias=True) for cfg in self.layers]

    def InitGPU(self) -> None:
        """LOOM name: move the network to the GPU (CuPy); ``BackendUnavailableError`` without CuPy/CUDA."""
        self.to_backend("cupy")

    def ReleaseGPU(self) -> None:
        """LOOM name: move the network back to the CPU (NumPy)."""
        self.to_backend("numpy")

    def _require_gpu(self, name: str) -> None:
        if self.backend != "cupy":
            from loom.errors import BackendUnavailableError

            raise BackendUnavailableError(
                f"{name}: the network is on the {self.backend} backend; call InitGPU() first "
                "(needs CuPy and a CUDA device: pip install 'loom-nn[gpu]')"
            )

    def ForwardGPU(self, x: ArrayLike) -> tuple[list[float], int]:
        """LOOM name: :meth:`ForwardCPU` on the GPU (after :meth:`InitGPU`; the same math as on the CPU)."""
        self._require_gpu("ForwardGPU")
        return self.ForwardCPU(x)

    def BackwardGPU(self, grad: ArrayLike) -> tuple[list[float], int]:
        """LOOM name: :meth:`BackwardCPU` on the GPU (after :meth:`InitGPU`)."""
        self._require_gpu("BackwardGPU")
        return self.BackwardCPU(grad)

    def SerializeModel(self, model_id: str = "model") -> dict[str, str | dict[str, object]]:
        """LOOM name: the bundle's model entry ``{"id", "cfg", "weights"}`` (Go's ``SavedModel``) as a dict."""
        import json

        return json.loads(self.save_model_to_string(model_id))["models"][0]

    def EvaluateFromCheckpointFiles(
        self, files: Sequence[str | Path], expected_outputs: Sequence[float]
    ) -> tuple[DeviationMetrics, int, int]:
        """LOOM name: evaluate inputs stored one per JSON file (``[0.1, 0.2, ...]``).

        Returns
        -------
        (DeviationMetrics, int, int)
            The metrics, the total load time and the total forward time in nanoseconds.
            An unreadable file is a ``ModelFormatError`` naming it (Go logs and skips it).
        """
        import json

        from loom.errors import ModelFormatError

        inputs = []
        start = time.perf_counter_ns()
        for path in files:
            try:
                inputs.append(json.loads(Path(path).read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise ModelFormatError(f"{path}: cannot read a checkpoint input ({exc})") from exc
        loaded = time.perf_counter_ns()
        metrics = self.evaluate_network(inputs, expected_outputs)
        return metrics, loaded - start, time.perf_counter_ns() - loaded

    def load_model_from_string(self, text: str, model_id: str | None = None) -> Network:
        """Replace this network's grid, layers and weights with a LOOM bundle's (returns self)."""
        loaded = load_model_from_string(text, model_id, backend=self._backend)
        self.grid_rows, self.grid_cols = loaded.grid_rows, loaded.grid_cols
        self.layers_per_cell, self.batch_size, self.layers = loaded.layers_per_cell, loaded.batch_size, loaded.layers
        self._activations, self._tape = [], None
        self._flat = None
        return self

    def LoadModelFromString(self, text: str, model_id: str | None = None) -> Network:
        """LOOM README name of :meth:`load_model_from_string`."""
        return self.load_model_from_string(text, model_id)


def _flat_gradients(cfg: LayerConfig, *, bias: bool) -> list[float]:
    """The stored gradients of ``cfg`` (and its branches) whose names are (``bias``) or are not bias ones."""
    parts = [
        to_numpy(grad).reshape(-1)
        for layer in cfg.iter_layers()
        for name, grad in layer.grads.items()
        if ("bias" in name) == bias
    ]
    return np.concatenate(parts).tolist() if parts else []


def create_network_from_json(
    config: str | bytes | dict[str, Any], *, backend: str | Backend | None = None, seed: int | None = None
) -> Network:
    """Build a :class:`Network` from a LOOM JSON config and initialise its weights.

    Parameters
    ----------
    config : str, bytes or dict
        LOOM network JSON (``grid_rows``, ``grid_cols``, ``layers_per_cell``,
        ``batch_size``, ``layers``). A saved model bundle is detected and loaded.
    backend : str, optional
        ``"numpy"`` or ``"cupy"`` (default: the current backend).
    seed : int, optional
        Seed for reproducible weights.
    """
    data = parse_config_text(config)
    if data.get("type") == "modelhost/bundle":
        return load_bundle_network(data, None, backend=backend)
    net = network_from_spec(parse_network_config(data), backend=backend)
    net.initialize_weights(seed)
    return net


def network_from_spec(spec: NetworkSpec, *, backend: str | Backend | None = None) -> Network:
    """The network a :class:`~loom.nn.builder.NetworkSpec` describes (from a JSON config or a bundle).

    The spec's layers become the network's, weights included when the spec has them.
    """
    return Network(
        spec.grid_rows,
        spec.grid_cols,
        spec.layers_per_cell,
        spec.layers,
        batch_size=spec.batch_size,
        input_size=spec.input_size,
        backend=backend,
    )


def load_bundle_network(
    bundle: dict[str, Any], model_id: str | None = None, *, backend: str | Backend | None = None
) -> Network:
    """The :class:`Network` of one model of a parsed LOOM bundle (default: the first)."""
    be = resolve_backend(backend)
    return network_from_spec(bundle_network_spec(bundle, model_id, be), backend=be)


def load_model_from_string(
    text: str | bytes, model_id: str | None = None, *, backend: str | Backend | None = None
) -> Network:
    """Load a LOOM bundle (JSON text, as written by Go LOOM or by loom) into a Network.

    Parameters
    ----------
    text : str or bytes
        Bundle JSON.
    model_id : str, optional
        Which model of the bundle (default: the first).
    backend : str, optional
        ``"numpy"`` or ``"cupy"``.
    """
    return load_bundle_network(parse_bundle_text(text), model_id, backend=backend)


def load_model(
    path: str | os.PathLike[str], model_id: str | None = None, *, backend: str | Backend | None = None
) -> Network:
    """Load a LOOM bundle file; see :func:`load_model_from_string`."""
    return load_model_from_string(read_bundle_file(path), model_id, backend=backend)


def new_network(
    input_size: int,
    grid_rows: int,
    grid_cols: int,
    layers_per_cell: int,
    *,
    batch_size: int = 1,
    backend: str | Backend | None = None,
) -> Network:
    """An empty grid network (size-less Dense placeholders); fill it with ``set_layer``."""
    return Network(grid_rows, grid_cols, layers_per_cell, batch_size=batch_size, input_size=input_size, backend=backend)


def network_from_layers(
    layers: list[LayerConfig],
    *,
    batch_size: int = 1,
    input_size: int | None = None,
    backend: str | Backend | None = None,
    seed: int | None = None,
) -> Network:
    """A 1 x 1 x N network from layer configs (sizes inferred, weights initialised)."""
    assign_paths(layers)
    infer_sizes(layers, input_size, batch_size)
    net = Network(1, 1, len(layers), layers, batch_size=batch_size, input_size=input_size, backend=backend)
    net.initialize_weights(seed)
    return net
