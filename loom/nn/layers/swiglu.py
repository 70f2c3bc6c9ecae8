"""SwiGLU layer kind (LOOM type 9): rows of ``hidden`` values -> rows of ``hidden`` values.

``y = down(silu(gate(x)) * up(x))`` per row (``rows = len(x) / hidden``), no
activation. At top level the Network adds LOOM's hidden residual stream to the
output (``residual_role = "add_output"``). Sizes: hidden from ``input_size``
(else ``input_height``), intermediate from ``output_size`` (else
``output_height``); saved as ``input_height`` / ``output_height`` like Go.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loom.errors import ConfigError, ShapeError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import ForwardContext, LayerKind, add_grad, register_kind
from loom.nn.layers.dense import first_positive
from loom.ops.swiglu import swiglu_backward, swiglu_forward


@register_kind
class SwiGLUKind(LayerKind):
    """Gated feed-forward block ``down(silu(gate) * up)`` (LOOM type 9)."""

    type_name = "swiglu"
    residual_role = "add_output"

    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        cfg.input_size = first_positive(spec, ("input_size", "input_height"), path)
        cfg.output_size = first_positive(spec, ("output_size", "output_height"), path)

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        if cfg.input_size <= 0:
            raise ConfigError(f"{path}.input_size: required for a swiglu layer (the hidden size, a positive integer)")
        if cfg.output_size <= 0:
            raise ConfigError(
                f"{path}.output_size: required for a swiglu layer (the intermediate size, a positive integer)"
            )
        if in_features and in_features % cfg.input_size:
            raise ConfigError(
                f"{path}.input_size: the {in_features} input features are not a whole number of "
                f"rows of the hidden size {cfg.input_size}"
            )
        return in_features

    def work_size(self, cfg: LayerConfig, in_features: int | None, out_features: int | None) -> int:
        rows = (in_features or 0) // cfg.input_size
        return 3 * rows * cfg.output_size + 2 * (in_features or 0)  # gate, up, product; output

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        return {"input_height": cfg.input_size, "output_height": cfg.output_size}

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        hidden, inter = cfg.input_size, cfg.output_size
        return {
            "gate_weights": (hidden, inter),
            "up_weights": (hidden, inter),
            "down_weights": (inter, hidden),
            "gate_bias": (inter,),
            "up_bias": (inter,),
            "down_bias": (hidden,),
        }

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        hidden, inter = cfg.input_size, cfg.output_size
        scale, shift = np.float32(0.2), np.float32(0.1)
        gate_up = rng.random((hidden * inter, 2), dtype=np.float32) * scale - shift  # Go: interleaved draws
        down = rng.random(hidden * inter, dtype=np.float32) * scale - shift
        return {
            "gate_weights": np.ascontiguousarray(gate_up[:, 0]).reshape(hidden, inter),
            "up_weights": np.ascontiguousarray(gate_up[:, 1]).reshape(hidden, inter),
            "down_weights": down.reshape(inter, hidden),
            "gate_bias": np.zeros(inter, dtype=np.float32),
            "up_bias": np.zeros(inter, dtype=np.float32),
            "down_bias": np.zeros(hidden, dtype=np.float32),
        }

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        hidden, xp, p = cfg.input_size, ctx.xp, cfg.params
        n = x.shape[0]
        if n == 0 or n % hidden:
            raise ShapeError(
                f"{cfg.path} ({cfg.type}): expected a positive multiple of the hidden size {hidden} "
                f"input values, got {n}"
            )
        x2 = x.reshape(n // hidden, hidden)  # [rows, hidden]
        w_gate, w_up, w_down = p["gate_weights"], p["up_weights"], p["down_weights"]
        y, cache = swiglu_forward(x2, w_gate, p["gate_bias"], w_up, p["up_bias"], w_down, p["down_bias"], xp)

        def backprop(grad_y: Any) -> Any:
            grad_x, grads = swiglu_backward(grad_y.reshape(x2.shape), x2, cache, w_gate, w_up, w_down, xp)
            for name, grad in grads.items():
                add_grad(cfg, name, grad)
            return grad_x.reshape(-1)

        return y.reshape(-1), backprop
