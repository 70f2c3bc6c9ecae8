"""Conv2D layer kind (LOOM type 1): ``[B][C][H][W] -> [B][F][oH][oW]``, activation applied.

The kernel is LOOM's ``[F][C][k][k]`` (weight ``kernel``), the bias ``conv_bias``.
``output_height``/``output_width`` are ``(in + 2 * padding - k) // stride + 1``; a
config or bundle that states other values is a ``ConfigError`` (Go trusts the stated
sizes and returns extra or missing outputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loom.errors import ConfigError
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import ForwardContext, LayerKind, add_grad, check_length, register_kind, spec_int
from loom.ops.conv2d import conv2d_backward, conv2d_forward, conv2d_output_size

_GEOMETRY = (
    "input_channels",
    "filters",
    "kernel_size",
    "stride",
    "padding",
    "input_height",
    "input_width",
    "output_height",
    "output_width",
)
_REQUIRED = ("input_channels", "input_height", "input_width", "kernel_size", "filters")


@register_kind
class Conv2DKind(LayerKind):
    """2-D convolution with zero padding (LOOM type 1)."""

    type_name = "conv2d"

    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        for key in _GEOMETRY:
            setattr(cfg, key, spec_int(spec, key, path))

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        for key in _REQUIRED:
            if getattr(cfg, key) <= 0:
                raise ConfigError(f"{path}.{key}: required for a conv2d layer (a positive integer)")
        if cfg.stride <= 0:
            raise ConfigError(f"{path}.stride: required for a conv2d layer (a positive integer, got {cfg.stride})")
        expected_in = cfg.input_channels * cfg.input_height * cfg.input_width
        if in_features and in_features != expected_in:
            raise ConfigError(
                f"{path}.input_channels: input_channels x input_height x input_width = {expected_in} does not "
                f"match the {in_features} features the previous layer produces"
            )
        for out_key, in_key in (("output_height", "input_height"), ("output_width", "input_width")):
            size = conv2d_output_size(getattr(cfg, in_key), cfg.kernel_size, cfg.stride, cfg.padding)
            if size <= 0:
                raise ConfigError(
                    f"{path}.{out_key}: kernel_size {cfg.kernel_size} does not fit {in_key} "
                    f"{getattr(cfg, in_key)} with padding {cfg.padding}"
                )
            stated = getattr(cfg, out_key)
            if stated > 0 and stated != size:
                raise ConfigError(
                    f"{path}.{out_key}: expected {size} = ({in_key} {getattr(cfg, in_key)} + 2 x padding "
                    f"{cfg.padding} - kernel_size {cfg.kernel_size}) // stride {cfg.stride} + 1, got {stated}"
                )
            setattr(cfg, out_key, size)
        return cfg.filters * cfg.output_height * cfg.output_width

    def work_size(self, cfg: LayerConfig, in_features: int | None, out_features: int | None) -> int:
        patches = cfg.input_channels * cfg.kernel_size**2 * cfg.output_height * cfg.output_width
        return 2 * (out_features or 0) + patches

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        return {key: getattr(cfg, key) for key in _GEOMETRY}

    def param_shapes(self, cfg: LayerConfig) -> dict[str, tuple[int, ...]]:
        k = cfg.kernel_size
        return {"kernel": (cfg.filters, cfg.input_channels, k, k), "conv_bias": (cfg.filters,)}

    def init_params(self, cfg: LayerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        shape = self.param_shapes(cfg)["kernel"]
        scale = np.float32(1.0 / (cfg.input_channels * cfg.kernel_size * cfg.kernel_size))
        kernel = (rng.random(int(np.prod(shape)), dtype=np.float32) * 2 - 1) * scale
        bias = rng.random(cfg.filters, dtype=np.float32) * np.float32(0.01)
        return {"kernel": kernel.reshape(shape), "conv_bias": bias}

    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        batch, xp = ctx.batch_size, ctx.xp
        shape = (batch, cfg.input_channels, cfg.input_height, cfg.input_width)
        check_length(
            cfg,
            x,
            batch * shape[1] * shape[2] * shape[3],
            f"batch {batch} x channels {shape[1]} x {shape[2]} x {shape[3]}",
        )
        kernel, act = cfg.params["kernel"], cfg.activation
        stride, padding = cfg.stride, cfg.padding
        y, pre, cols = conv2d_forward(
            x.reshape(shape),
            kernel,
            cfg.params["conv_bias"],
            stride,
            padding,
            cfg.output_height,
            cfg.output_width,
            act,
            xp,
        )  # [B, C, H, W] -> [B, F, oH, oW]

        def backprop(grad_y: Any) -> Any:
            grad_x, grad_kernel, grad_bias = conv2d_backward(
                grad_y.reshape(pre.shape), pre, cols, kernel, shape, stride, padding, act, xp, y
            )
            add_grad(cfg, "kernel", grad_kernel)
            add_grad(cfg, "conv_bias", grad_bias)
            return grad_x.reshape(-1)

        return y.reshape(-1), backprop
