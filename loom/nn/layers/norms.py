"""LayerNorm (LOOM type 6) and RMSNorm (LOOM type 8) layer kinds.

Both normalise every block of ``norm_size`` values of the flat input (every
row, ``docs/differences-from-go.md#fixed-on-purpose``; a trailing partial block is output as zeros, as Go), keep
the input length, and train ``gamma`` (and LayerNorm's ``beta``) with exact
gradients. Their parts in LOOM's hidden residual stream (the Network adds it):
LayerNorm adds the stream to its input (``"add_input"``), RMSNorm remembers its
input (``"save_input"``). A zero epsilon means 1e-5 (LayerNorm) / 1e-6
(RMSNorm) at run time, as in Go; the JSON builder stores 1e-5 when absent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loom.errors import ConfigError, ShapeError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import ForwardContext, LayerKind, add_grad, register_kind, spec_float, spec_int
from loom.ops.norms import (
    join_rows,
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
    split_rows,
)


class _NormKind(LayerKind):
    """Shared JSON rules of the two norms."""

    default_epsilon = 1e-5

    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        cfg.norm_size = spec_int(spec, "norm_size", path)
        cfg.epsilon = spec_float(spec, "epsilon", path)
        if cfg.epsilon < 0:
            raise ConfigError(f"{path}.epsilon: expected a non-negative number, got {spec.get('epsilon')!r}")

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        if cfg.norm_size <= 0:
            raise ConfigError(f"{path}.norm_size: required for a {cfg.type} layer (a positive integer)")
        return in_features

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        return {"norm_size": cfg.norm_size, "epsilon": np.float32(cfg.epsilon)}

    def _rows(self, cfg: LayerConfig, x: Any, xp: Any) -> tuple[Any, int, float]:
        if x.shape[0] == 0:
            raise ShapeError(f"{cfg.path} ({cfg.type}): expected a non-empty input, got 0 values")
        rows, tail = split_rows(x, cfg.norm_size, xp)  # [rows, n]
        return rows, tail, cfg.epsilon or self.default_epsilon


@register_kind
class LayerNormKind(_NormKind):
    """Layer normalisation with gain and bias (LOOM type 6)."""

    type_name = "layer_norm"
    aliases = ("layernorm",)
    residual_role = "add_input"
    default_epsilon = 1e-5

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        return {"gamma": (cfg.norm_size,), "beta": (cfg.norm_size,)}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = cfg.norm_size
        return {"gamma": np.ones(n, dtype=np.float32), "beta": np.zeros(n, dtype=np.float32)}

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        xp = ctx.xp
        rows, tail, eps = self._rows(cfg, x, xp)
        gamma = cfg.params["gamma"]
        y, cache = layer_norm_forward(rows, gamma, cfg.params["beta"], eps, xp)  # [rows, n] -> [rows, n]

        def backprop(grad_y: Any) -> Any:
            grad_rows, _ = split_rows(grad_y, cfg.norm_size, xp)
            grad_x, grad_gamma, grad_beta = layer_norm_backward(grad_rows, cache, gamma, xp)
            add_grad(cfg, "gamma", grad_gamma)
            add_grad(cfg, "beta", grad_beta)
            return join_rows(grad_x, tail, xp)

        return join_rows(y, tail, xp), backprop


@register_kind
class RMSNormKind(_NormKind):
    """Root-mean-square normalisation with gain (LOOM type 8)."""

    type_name = "rms_norm"
    aliases = ("rmsnorm",)
    residual_role = "save_input"
    default_epsilon = 1e-6

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        return {"gamma": (cfg.norm_size,)}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"gamma": np.ones(cfg.norm_size, dtype=np.float32)}

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        xp = ctx.xp
        rows, tail, eps = self._rows(cfg, x, xp)
        gamma = cfg.params["gamma"]
        y, inv_rms = rms_norm_forward(rows, gamma, eps, xp)  # [rows, n] -> [rows, n]

        def backprop(grad_y: Any) -> Any:
            grad_rows, _ = split_rows(grad_y, cfg.norm_size, xp)
            grad_x, grad_gamma = rms_norm_backward(grad_rows, rows, inv_rms, gamma, xp)
            add_grad(cfg, "gamma", grad_gamma)
            return join_rows(grad_x, tail, xp)

        return join_rows(y, tail, xp), backprop
