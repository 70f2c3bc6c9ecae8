"""Multi-head attention layer kind (LOOM type 2): ``[B][S][d] -> [B][S][d]``.

Forward as Go LOOM (causal, RoPE theta 1e6, ``S = len(sample) / d_model``),
with loom's optional keys ``causal``, ``rope_theta``, ``num_kv_heads`` (GQA)
and ``head_dim``; every sample of a batch is its own sequence (Go runs a batch as one
sequence: ``docs/differences-from-go.md#fixed-on-purpose``).
No activation is applied. The hidden residual stream is added by the Network
(``residual_role = "add_output"``).

Storage follows Go: ``q_weights``/``output_weight`` are ``[d][d]``; K/V are
``[d][kv_dim]``, except that a layer without ``num_kv_heads`` keeps Go's
``[d][d]`` arrays, of which (when ``d`` is not a multiple of ``num_heads``)
only the first ``d * kv_dim`` values are read as a ``[d][kv_dim]`` matrix, and
only the first ``H * hd`` query columns / output rows are used (layers.md §3
step 9). Unused values get zero gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loom.errors import ConfigError, ShapeError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import (
    ForwardContext,
    LayerKind,
    add_grad,
    register_kind,
    spec_bool,
    spec_float,
    spec_int,
)
from loom.ops.attention import mha_backward, mha_forward

DEFAULT_ROPE_THETA = 1_000_000.0
_WEIGHT_NAMES = ("q_weights", "k_weights", "v_weights", "output_weight")
_BIAS_NAMES = ("q_bias", "k_bias", "v_bias", "output_bias")


def _kv_heads(cfg: LayerConfig) -> int:
    return cfg.num_kv_heads or cfg.num_heads


def _kv_columns(cfg: LayerConfig) -> int:
    """Stored K/V width: Go's ``d`` without ``num_kv_heads``, else ``num_kv_heads * head_dim``."""
    return cfg.d_model if cfg.num_kv_heads == 0 else cfg.num_kv_heads * cfg.head_dim


@register_kind
class MultiHeadAttentionKind(LayerKind):
    """Causal multi-head attention with rotary positions and grouped KV heads (LOOM type 2)."""

    type_name = "multi_head_attention"
    aliases = ("mha",)
    residual_role = "add_output"

    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        cfg.d_model = spec_int(spec, "d_model", path)
        cfg.num_heads = spec_int(spec, "num_heads", path)
        cfg.num_kv_heads = spec_int(spec, "num_kv_heads", path)
        cfg.head_dim = spec_int(spec, "head_dim", path)
        cfg.seq_length = spec_int(spec, "seq_length", path)
        cfg.causal = spec_bool(spec, "causal", path, default=True)
        cfg.rope_theta = spec_float(spec, "rope_theta", path, default=DEFAULT_ROPE_THETA)

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        if cfg.d_model <= 0:
            raise ConfigError(f"{path}.d_model: required for a multi_head_attention layer (a positive integer)")
        if cfg.num_heads <= 0:
            raise ConfigError(f"{path}.num_heads: required for a multi_head_attention layer (a positive integer)")
        if cfg.head_dim <= 0:
            cfg.head_dim = cfg.d_model // cfg.num_heads  # Go: integer division
        if cfg.head_dim <= 0 or cfg.num_heads * cfg.head_dim > cfg.d_model:
            raise ConfigError(
                f"{path}.num_heads: expected num_heads x head_dim <= d_model {cfg.d_model} (and head_dim >= 1), "
                f"got {cfg.num_heads} heads of size {cfg.head_dim}"
            )
        if cfg.num_heads % _kv_heads(cfg):
            raise ConfigError(
                f"{path}.num_kv_heads: num_heads {cfg.num_heads} is not a multiple of num_kv_heads {cfg.num_kv_heads}"
            )
        if not cfg.rope_theta > 0:
            raise ConfigError(f"{path}.rope_theta: expected a positive number, got {cfg.rope_theta}")
        if in_features:
            if in_features % cfg.d_model:
                raise ConfigError(
                    f"{path}.d_model: the {in_features} input features are not a whole number of "
                    f"tokens of width d_model {cfg.d_model}"
                )
            return in_features
        return cfg.seq_length * cfg.d_model if cfg.seq_length > 0 else None

    def work_size(self, cfg: LayerConfig, in_features: int | None, out_features: int | None) -> int:
        tokens = (in_features or cfg.seq_length * cfg.d_model) // cfg.d_model
        return 10 * tokens * cfg.d_model + 2 * cfg.num_heads * tokens * tokens  # projections, RoPE, scores

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"d_model": cfg.d_model, "num_heads": cfg.num_heads, "seq_length": cfg.seq_length}
        if cfg.num_kv_heads:
            out["num_kv_heads"] = cfg.num_kv_heads
        if cfg.num_heads and cfg.head_dim != cfg.d_model // cfg.num_heads:
            out["head_dim"] = cfg.head_dim
        if not cfg.causal:
            out["causal"] = False
        if cfg.rope_theta != DEFAULT_ROPE_THETA:
            out["rope_theta"] = np.float32(cfg.rope_theta)
        return out

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        d, kv = cfg.d_model, _kv_columns(cfg)
        return {
            "q_weights": (d, d),
            "k_weights": (d, kv),
            "v_weights": (d, kv),
            "output_weight": (d, d),
            "q_bias": (d,),
            "k_bias": (kv,),
            "v_bias": (kv,),
            "output_bias": (d,),
        }

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        shapes = self.param_shapes(cfg)
        d = cfg.d_model
        draws = rng.random((d * d, 4), dtype=np.float32) * np.float32(0.2) - np.float32(0.1)  # Go: interleaved
        params = {}
        for i, name in enumerate(_WEIGHT_NAMES):
            rows, cols = shapes[name]
            params[name] = np.ascontiguousarray(draws[: rows * cols, i]).reshape(rows, cols)
        for name in _BIAS_NAMES:
            params[name] = np.zeros(shapes[name], dtype=np.float32)
        return params

    def _used_weights(self, cfg: LayerConfig) -> tuple[Any, ...]:
        """The (possibly Go-truncated) views of the stored arrays the math reads."""
        p = cfg.params
        d, q_cols = cfg.d_model, cfg.num_heads * cfg.head_dim
        kv_dim = _kv_heads(cfg) * cfg.head_dim
        wq, bq, wo = p["q_weights"], p["q_bias"], p["output_weight"]
        if q_cols != d:
            wq, bq, wo = wq[:, :q_cols], bq[:q_cols], wo[:q_cols, :]
        wk, bk, wv, bv = p["k_weights"], p["k_bias"], p["v_weights"], p["v_bias"]
        if wk.shape[1] != kv_dim:
            wk = wk.reshape(-1)[: d * kv_dim].reshape(d, kv_dim)
            wv = wv.reshape(-1)[: d * kv_dim].reshape(d, kv_dim)
            bk, bv = bk[:kv_dim], bv[:kv_dim]
        return wq, bq, wk, bk, wv, bv, wo, p["output_bias"]

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        batch, d, xp = ctx.batch_size, cfg.d_model, ctx.xp
        n = x.shape[0]
        if n == 0 or n % (batch * d):
            raise ShapeError(
                f"{cfg.path} ({cfg.type}): expected a positive multiple of batch {batch} x d_model {d} "
                f"input values (whole tokens per sample), got {n}"
            )
        seq = n // (batch * d)
        wq, bq, wk, bk, wv, bv, wo, bo = self._used_weights(cfg)
        y, cache = mha_forward(
            x.reshape(batch, seq, d),
            wq,
            bq,
            wk,
            bk,
            wv,
            bv,
            wo,
            bo,
            cfg.num_heads,
            _kv_heads(cfg),
            cfg.causal,
            cfg.rope_theta,
            xp,
        )  # [B, S, d] -> [B, S, d]

        def backprop(grad_y: Any) -> Any:
            grad_x, grads = mha_backward(grad_y.reshape(batch, seq, d), cache, wo, xp)
            for name, grad in grads.items():
                stored = cfg.params[name]
                if grad.shape != stored.shape:
                    grad = _pad_grad(grad, stored.shape, name, xp)
                add_grad(cfg, name, grad)
            return grad_x.reshape(-1)

        return y.reshape(-1), backprop


def _pad_grad(grad: Any, shape: tuple[int, ...], name: str, xp: Any) -> Any:
    """Zero-extend the gradient of a Go-truncated view to the stored array's shape."""
    if name in ("k_weights", "v_weights", "k_bias", "v_bias"):  # leading values of the flat array
        flat = grad.reshape(-1)
        total = int(np.prod(shape))
        return xp.concat([flat, xp.zeros(total - flat.shape[0], dtype=flat.dtype)]).reshape(shape)
    if name == "q_weights":  # leading columns
        return xp.concat([grad, xp.zeros((shape[0], shape[1] - grad.shape[1]), dtype=grad.dtype)], axis=1)
    # q_bias (leading values), output_weight (leading rows)
    pad = xp.zeros((shape[0] - grad.shape[0], *shape[1:]), dtype=grad.dtype)
    return xp.concat([grad, pad], axis=0)
