"""RNN and LSTM layer kinds (LOOM types 3 and 4).

Input per sample: ``seq_length * input_size`` values (``[seq][in]``); output:
every hidden state, ``seq_length * hidden_size`` values. Gradients are exact
BPTT. ``stateful: true`` keeps the last hidden (and cell) state between
forward calls, as a constant for the next call; ``reset_state()`` clears it.

The LSTM stores its gates fused (``kernel_ih [I, 4H]``, ``kernel_hh [H, 4H]``,
``bias [4H]``, gate order i, f, g, o); bundles still carry LOOM's twelve arrays
(``weight_ii`` ... ``bias_o``), converted in :meth:`LSTMKind.export_weights` /
:meth:`LSTMKind.import_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from loom.errors import ConfigError, ModelFormatError, ShapeError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import (
    ForwardContext,
    LayerKind,
    add_grad,
    float32_vector,
    register_kind,
    spec_bool,
    spec_int,
)
from loom.ops.recurrent import lstm_backward, lstm_forward, rnn_backward, rnn_forward

__all__ = ["LSTM_GATES", "LSTMKind", "RNNKind", "fuse_lstm_weights", "split_lstm_weights"]

#: LSTM gate letters in LOOM's (and the fused arrays') order.
LSTM_GATES = ("i", "f", "g", "o")


class _RecurrentKind(LayerKind):
    """Shared JSON rules of RNN and LSTM: ``input_size``, ``hidden_size``, ``seq_length``, ``stateful``."""

    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        cfg.input_size = spec_int(spec, "input_size", path)
        cfg.hidden_size = spec_int(spec, "hidden_size", path)
        cfg.seq_length = spec_int(spec, "seq_length", path)
        cfg.stateful = spec_bool(spec, "stateful", path)

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        if cfg.hidden_size <= 0:
            raise ConfigError(f"{path}.hidden_size: required for an {cfg.type} layer (a positive integer)")
        seq, n_in = cfg.seq_length, cfg.input_size
        if in_features:
            if n_in <= 0 and seq <= 0:
                raise ConfigError(
                    f"{path}.seq_length: missing, and input_size is missing too: {in_features} input features "
                    "could be any seq_length x input_size; give at least one of them"
                )
            if n_in <= 0:
                n_in = in_features // seq
            elif seq <= 0:
                seq = in_features // n_in
            if seq * n_in != in_features:
                raise ConfigError(
                    f"{path}.input_size: seq_length {seq} x input_size {n_in} = {seq * n_in} does not match "
                    f"the {in_features} features the previous layer produces"
                )
            cfg.input_size, cfg.seq_length = n_in, seq
        elif n_in <= 0:
            raise ConfigError(
                f"{path}.input_size: missing and cannot be inferred (give input_size here, or a "
                "top-level input_size / a previous layer with a known output size)"
            )
        return cfg.seq_length * cfg.hidden_size if cfg.seq_length > 0 else None

    def work_size(self, cfg: LayerConfig, in_features: int | None, out_features: int | None) -> int:
        return 10 * (cfg.seq_length + 1) * cfg.hidden_size  # states, gates and outputs

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        return {
            "input_size": cfg.input_size,
            "hidden_size": cfg.hidden_size,
            "seq_length": cfg.seq_length,
            "stateful": cfg.stateful,
        }

    def _input_3d(self, cfg: LayerConfig, x: Any, batch: int) -> Any:
        """Flat input -> ``[B, S, I]``; a missing ``seq_length`` is taken from the input length."""
        n_in, seq = cfg.input_size, cfg.seq_length
        if seq <= 0:
            per_step = batch * n_in
            if x.shape[0] == 0 or x.shape[0] % per_step:
                raise ShapeError(
                    f"{cfg.path} ({cfg.type}): expected a positive multiple of batch {batch} x input_size {n_in} "
                    f"input values (seq_length is not set), got {x.shape[0]}"
                )
            cfg.seq_length = seq = x.shape[0] // per_step
        elif x.shape[0] != batch * seq * n_in:
            raise ShapeError(
                f"{cfg.path} ({cfg.type}): expected {batch * seq * n_in} input values (batch {batch} x "
                f"seq_length {seq} x input_size {n_in}), got {x.shape[0]}"
            )
        return x.reshape(batch, seq, n_in)

    def _initial_state(self, cfg: LayerConfig, key: str, batch: int) -> Any:
        if not cfg.stateful:
            return None
        state = cfg.state.get(key)
        if state is not None and state.shape[0] != batch:
            raise ShapeError(
                f"{cfg.path} ({cfg.type}): expected batch {state.shape[0]} (the samples of the kept state), got "
                f"batch {batch}; call reset_state() before changing the batch size of a stateful layer"
            )
        return state


@register_kind
class RNNKind(_RecurrentKind):
    """Elman RNN with tanh (LOOM type 3): ``h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)``.

    Weights: ``weight_ih [H][I]``, ``weight_hh [H][H]``, ``bias_h [H]`` (LOOM names/layouts).
    The ``activation`` field is ignored (always tanh), as in LOOM.
    """

    type_name = "rnn"

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        n_in, hidden = cfg.input_size, cfg.hidden_size
        return {"weight_ih": (hidden, n_in), "weight_hh": (hidden, hidden), "bias_h": (hidden,)}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n_in, hidden = cfg.input_size, cfg.hidden_size
        w_ih = rng.random(hidden * n_in, dtype=np.float32) * np.float32(0.2) - np.float32(0.1)
        w_hh = rng.random(hidden * hidden, dtype=np.float32) * np.float32(0.2) - np.float32(0.1)
        return {
            "weight_ih": w_ih.reshape(hidden, n_in),
            "weight_hh": w_hh.reshape(hidden, hidden),
            "bias_h": np.zeros(hidden, dtype=np.float32),
        }

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        batch, xp, params = ctx.batch_size, ctx.xp, cfg.params
        x3 = self._input_3d(cfg, x, batch)
        w_ih, w_hh = params["weight_ih"], params["weight_hh"]
        h0 = self._initial_state(cfg, "h", batch)
        hs = rnn_forward(x3, w_ih, w_hh, params["bias_h"], h0, xp)  # [B, S, H]
        if cfg.stateful:
            cfg.state["h"] = hs[:, -1, :]

        need_grad_x = ctx.needs_input_grad

        def backprop(grad_y: Any) -> Any:
            grad_x, g_ih, g_hh, g_b = rnn_backward(
                grad_y.reshape(hs.shape), x3, hs, h0, w_ih, w_hh, xp, need_grad_x=need_grad_x
            )
            add_grad(cfg, "weight_ih", g_ih)
            add_grad(cfg, "weight_hh", g_hh if g_hh is not None else _zeros_like_param(cfg, "weight_hh", xp))
            add_grad(cfg, "bias_h", g_b)
            return None if grad_x is None else grad_x.reshape(-1)

        return hs.reshape(-1), backprop


def _zeros_like_param(cfg: LayerConfig, name: str, xp: Any) -> Any:
    """A cached all-zero gradient for ``name`` (its gradient is exactly zero this step; nothing writes to it)."""
    key = "_zero_grad_" + name
    zero = cfg.state.get(key)
    param = cfg.params[name]
    if zero is None or zero.shape != param.shape or zero.dtype != param.dtype or type(zero) is not type(param):
        zero = xp.zeros_like(param)
        cfg.state[key] = zero
    return zero


def fuse_lstm_weights(weights: dict[str, np.ndarray], n_in: int, hidden: int) -> dict[str, np.ndarray]:
    """LOOM's twelve LSTM arrays (any shape with the right size) -> the fused parameters.

    Returns ``kernel_ih [I, 4H]``, ``kernel_hh [H, 4H]``, ``bias [4H]`` (gate blocks i, f, g, o).
    """

    def block(name: str, cols: int) -> np.ndarray:
        return np.asarray(weights[name], dtype=np.float32).reshape(hidden, cols).T

    return {
        "kernel_ih": np.ascontiguousarray(np.concatenate([block(f"weight_i{g}", n_in) for g in LSTM_GATES], axis=1)),
        "kernel_hh": np.ascontiguousarray(np.concatenate([block(f"weight_h{g}", hidden) for g in LSTM_GATES], axis=1)),
        "bias": np.concatenate([np.asarray(weights[f"bias_{g}"], dtype=np.float32).reshape(-1) for g in LSTM_GATES]),
    }


def split_lstm_weights(params: dict[str, np.ndarray], hidden: int) -> dict[str, np.ndarray]:
    """Fused LSTM parameters (NumPy) -> LOOM's twelve flat arrays (``weight_ii`` ``[H][I]`` ...)."""
    out: dict[str, np.ndarray] = {}
    for k, gate in enumerate(LSTM_GATES):
        cols = slice(k * hidden, (k + 1) * hidden)
        out[f"weight_i{gate}"] = np.ascontiguousarray(params["kernel_ih"][:, cols].T).reshape(-1)
        out[f"weight_h{gate}"] = np.ascontiguousarray(params["kernel_hh"][:, cols].T).reshape(-1)
        out[f"bias_{gate}"] = np.ascontiguousarray(params["bias"][cols]).reshape(-1)
    return out


@register_kind
class LSTMKind(_RecurrentKind):
    """LSTM (LOOM type 4), gates i, f, g, o; outputs every hidden state.

    Parameters live fused (``kernel_ih [I, 4H]``, ``kernel_hh [H, 4H]``, ``bias [4H]``);
    saved bundles use LOOM's ``weight_i* [H][I]``, ``weight_h* [H][H]``, ``bias_* [H]``.
    """

    type_name = "lstm"

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        n_in, hidden = cfg.input_size, cfg.hidden_size
        return {"kernel_ih": (n_in, 4 * hidden), "kernel_hh": (hidden, 4 * hidden), "bias": (4 * hidden,)}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n_in, hidden = cfg.input_size, cfg.hidden_size
        # Go draws the four gates interleaved: for j: W_i[j], W_f[j], W_g[j], W_o[j].
        ih = rng.random(hidden * n_in * 4, dtype=np.float32) * np.float32(0.2) - np.float32(0.1)
        hh = rng.random(hidden * hidden * 4, dtype=np.float32) * np.float32(0.2) - np.float32(0.1)
        ih, hh = ih.reshape(hidden * n_in, 4), hh.reshape(hidden * hidden, 4)
        weights: dict[str, np.ndarray] = {}
        for k, gate in enumerate(LSTM_GATES):
            weights[f"weight_i{gate}"] = ih[:, k]
            weights[f"weight_h{gate}"] = hh[:, k]
            weights[f"bias_{gate}"] = np.zeros(hidden, dtype=np.float32)
        return fuse_lstm_weights(weights, n_in, hidden)

    def export_weights(self, cfg: LayerConfig, to_numpy: Callable[[Any], np.ndarray]) -> dict[str, np.ndarray]:
        if not cfg.params:
            return {}
        return split_lstm_weights({k: to_numpy(v) for k, v in cfg.params.items()}, cfg.hidden_size)

    def import_weights(self, cfg: LayerConfig, weights: dict[str, Any], path: str) -> dict[str, np.ndarray]:
        n_in, hidden = cfg.input_size, cfg.hidden_size
        checked: dict[str, np.ndarray] = {}
        for gate in LSTM_GATES:
            for name, shape in (
                (f"weight_i{gate}", (hidden, n_in)),
                (f"weight_h{gate}", (hidden, hidden)),
                (f"bias_{gate}", (hidden,)),
            ):
                values = weights.get(name)
                if values is None:
                    raise ModelFormatError(f"{path}: weights: missing array {name!r} for an lstm layer")
                checked[name] = float32_vector(values, shape, f"{path}: weights.{name}")
        return fuse_lstm_weights(checked, n_in, hidden)

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        batch, xp, params = ctx.batch_size, ctx.xp, cfg.params
        x3 = self._input_3d(cfg, x, batch)
        k_ih, k_hh = params["kernel_ih"], params["kernel_hh"]
        h0 = self._initial_state(cfg, "h", batch)
        c0 = self._initial_state(cfg, "c", batch) if h0 is not None else None
        hs, h_last, c_last, cache = lstm_forward(x3, k_ih, k_hh, params["bias"], h0, c0, xp)
        if cfg.stateful:
            cfg.state["h"], cfg.state["c"] = h_last, c_last

        need_grad_x = ctx.needs_input_grad

        def backprop(grad_y: Any) -> Any:
            grad_x, g_ih, g_hh, g_b = lstm_backward(
                grad_y.reshape(hs.shape), x3, hs, cache, k_ih, k_hh, xp, need_grad_x=need_grad_x
            )
            add_grad(cfg, "kernel_ih", g_ih)
            add_grad(cfg, "kernel_hh", g_hh if g_hh is not None else _zeros_like_param(cfg, "kernel_hh", xp))
            add_grad(cfg, "bias", g_b)
            return None if grad_x is None else grad_x.reshape(-1)

        return hs.reshape(-1), backprop

    def reset_state(self, cfg: LayerConfig) -> None:
        for key in ("h", "c"):
            cfg.state.pop(key, None)
