"""Residual layer kind (LOOM type 7): an element-wise activation (default ScaledReLU).

Go LOOM builds and saves this type but cannot load it; loom builds, saves and
loads it (``docs/differences-from-go.md#fixed-on-purpose``). It has no parameters and no size of its own: the
output has the input's length, ``y = act(x)``, and the backward pass is the
exact ``grad * act'(x)``.
"""

from __future__ import annotations

from typing import Any

from loom.errors import ShapeError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import ForwardContext, LayerKind, register_kind
from loom.ops.activations import activate, activation_backward


@register_kind
class ResidualKind(LayerKind):
    """Element-wise activation layer (LOOM type 7)."""

    type_name = "residual"

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        if x.shape[0] == 0:
            raise ShapeError(f"{cfg.path} ({cfg.type}): expected a non-empty input, got 0 values")
        act, xp = cfg.activation, ctx.xp
        y = activate(x, act, xp)  # [n] -> [n]

        def backprop(grad_y: Any) -> Any:
            return activation_backward(grad_y, x, y, act, xp)

        return y, backprop
