"""Dense layer kind: ``y = act(x @ kernel + biases)`` with LOOM's ``[in][out]`` kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from loom.errors import ConfigError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import (
    ForwardContext,
    LayerKind,
    add_grad,
    check_length,
    register_kind,
    spec_int,
)
from loom.ops.dense import dense_backward, dense_forward


def first_positive(spec: dict[str, Any], keys: tuple[str, ...], path: str) -> int:
    """Value of the first key in ``keys`` holding a positive integer (0 if none)."""
    for key in keys:
        value = spec_int(spec, key, path)
        if value > 0:
            return value
    return 0


@register_kind
class DenseKind(LayerKind):
    """Fully connected layer (LOOM type 0)."""

    type_name = "dense"

    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        # Explicit sizes win; saved bundles carry width/height = 1 next to input/output_height.
        cfg.input_size = first_positive(spec, ("input_size", "input_height", "width"), path)
        cfg.output_size = first_positive(spec, ("output_size", "output_height", "height"), path)

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        if cfg.input_size <= 0:
            if not in_features:
                raise ConfigError(
                    f"{path}.input_size: missing and cannot be inferred (give input_size here "
                    "or a top-level input_size / a previous layer with a known output size)"
                )
            cfg.input_size = in_features
        elif in_features and in_features != cfg.input_size:
            raise ConfigError(
                f"{path}.input_size: {cfg.input_size} does not match the {in_features} features "
                "the previous layer produces"
            )
        if cfg.output_size <= 0:
            raise ConfigError(f"{path}.output_size: required for a dense layer (a positive integer)")
        return cfg.output_size

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        sizes = {"input_height": cfg.input_size, "output_height": cfg.output_size}
        return sizes if in_branch else {"width": 1, "height": 1, **sizes}

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        return {"biases": (cfg.output_size,), "kernel": (cfg.input_size, cfg.output_size)}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n_in, n_out = cfg.input_size, cfg.output_size
        scale = np.float32(1.0 / n_in)
        kernel = (rng.random(n_in * n_out, dtype=np.float32) * 2 - 1) * scale
        biases = rng.random(n_out, dtype=np.float32) * np.float32(0.01)
        return {"biases": biases, "kernel": kernel.reshape(n_in, n_out)}

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        batch, n_in = ctx.batch_size, cfg.input_size
        if x.shape[0] != batch * n_in:
            check_length(cfg, x, batch * n_in, f"batch {batch} x input_size {n_in}")
        params, act, xp = cfg.params, cfg.activation, ctx.xp
        kernel = params["kernel"]
        x2 = x.reshape(batch, n_in)
        y, pre = dense_forward(x2, kernel, params["biases"], act, xp)
        need_grad_x = ctx.needs_input_grad

        def backprop(grad_y: Any) -> Any:
            grad_x, grad_kernel, grad_bias = dense_backward(
                grad_y.reshape(y.shape), x2, pre, kernel, act, xp, y, need_grad_x=need_grad_x
            )
            add_grad(cfg, "kernel", grad_kernel)
            add_grad(cfg, "biases", grad_bias)
            return None if grad_x is None else grad_x.reshape(-1)

        return y.reshape(-1), backprop
