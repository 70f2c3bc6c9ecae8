"""Softmax layer kind (LOOM type 5): every LOOM variant, forward as Go, exact gradients.

Variants (``softmax_variant``): ``standard`` / ``temperature`` (``softmax(z / T)``, T = 0
means 1), ``grid`` (one softmax per row of ``softmax_cols``), ``hierarchical`` (a grid
whose rows are the last level), ``gumbel`` (noise from the network's seeded RNG, always
added), ``masked`` (``-1e9`` on masked-out logits), ``sparse`` / ``sparsemax``,
``adaptive`` and ``mixture`` (plain softmax, T = 1, as Go), ``entmax`` (Go's blend).

Every sample of a batch is its own distribution (its own grid rows, its own mask):
the flat input of ``batch_size`` samples is split into ``batch_size`` equal parts.
Go normalises the whole flat batch as one vector (rows of different samples do not sum
to 1); at batch 1 both are the same (docs/differences-from-go.md). Sizes that do not
fit are a :class:`~loom.errors.ConfigError` (Go silently falls back to a plain softmax
or leaves zeros). A temperature must be finite; ``softmax(z / T)`` is computed as
``exp((z - max z) / T)`` normalised, so a tiny ``T`` cannot overflow.
"""

from __future__ import annotations

import math
from typing import Any

from loom.errors import ConfigError, ShapeError
from loom.nn import gojson
from loom.nn.layer_config import LayerConfig
from loom.nn.layers.base import ForwardContext, LayerKind, register_kind, spec_bool, spec_float, spec_int
from loom.ops.softmax import (
    MASKED_LOGIT,
    entmax_blend_backward,
    entmax_blend_forward,
    gumbel_noise,
    softmax_backward,
    softmax_forward,
    sparsemax_backward,
    sparsemax_forward,
)

__all__ = ["SOFTMAX_VARIANTS", "SoftmaxKind"]

#: Accepted ``softmax_variant`` names -> canonical name (Go's names; ``sparsemax`` is loom's alias).
SOFTMAX_VARIANTS: dict[str, str] = {
    "standard": "standard",
    "grid": "grid",
    "hierarchical": "hierarchical",
    "temperature": "temperature",
    "gumbel": "gumbel",
    "masked": "masked",
    "sparse": "sparse",
    "sparsemax": "sparse",
    "adaptive": "adaptive",
    "mixture": "mixture",
    "entmax": "entmax",
}


def _list(spec: dict[str, Any], key: str, path: str, item_type: type, what: str) -> list[Any] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, item_type) and (item_type is bool or not isinstance(v, bool)) for v in value
    ):
        raise ConfigError(f"{path}.{key}: expected a list of {what}, got {value!r:.80}")
    return list(value)


def _int_list(spec: dict[str, Any], key: str, path: str) -> list[int] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(f"{path}.{key}: expected a list of integers, got {value!r:.80}")
    return [spec_int({f"{key}[{i}]": v}, f"{key}[{i}]", path) for i, v in enumerate(value)]


@register_kind
class SoftmaxKind(LayerKind):
    """Softmax of any LOOM variant; no parameters.

    Examples
    --------
    >>> import loom
    >>> net = loom.create_network_from_json({"batch_size": 1, "grid_rows": 1, "grid_cols": 1,
    ...     "layers_per_cell": 1, "layers": [{"type": "softmax", "softmax_variant": "grid",
    ...     "softmax_rows": 2, "softmax_cols": 2}]})
    >>> [round(float(v), 3) for v in net.forward([0.0, 0.0, 1.0, 1.0])]
    [0.5, 0.5, 0.5, 0.5]
    """

    type_name = "softmax"

    # ----- configuration -------------------------------------------------------
    def parse(self, cfg: LayerConfig, spec: dict[str, Any], path: str) -> None:
        variant = spec.get("softmax_variant")
        if variant is None or variant == "":
            variant = "standard"
        if not isinstance(variant, str) or variant.lower() not in SOFTMAX_VARIANTS:
            raise ConfigError(
                f"{path}.softmax_variant: unknown softmax variant {variant!r:.80}; accepted: "
                + ", ".join(SOFTMAX_VARIANTS)
            )
        cfg.softmax_variant = SOFTMAX_VARIANTS[variant.lower()]
        cfg.softmax_rows = spec_int(spec, "softmax_rows", path)
        cfg.softmax_cols = spec_int(spec, "softmax_cols", path)
        cfg.temperature = spec_float(spec, "temperature", path)
        cfg.gumbel_noise = spec_bool(spec, "gumbel_noise", path)
        cfg.mask = _list(spec, "mask", path, bool, "true/false values")
        cfg.hierarchy_levels = _int_list(spec, "hierarchy_levels", path)
        clusters = spec.get("adaptive_clusters")
        if clusters is not None:
            if not isinstance(clusters, list):
                raise ConfigError(f"{path}.adaptive_clusters: expected a list of integer lists, got {clusters!r:.80}")
            cfg.adaptive_clusters = [
                _int_list({"c": c}, "c", f"{path}.adaptive_clusters[{i}]") or [] for i, c in enumerate(clusters)
            ]
        weights = spec.get("mixture_weights")
        if weights is not None:
            if not isinstance(weights, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in weights
            ):
                raise ConfigError(f"{path}.mixture_weights: expected a list of numbers, got {weights!r:.80}")
            cfg.mixture_weights = [spec_float({"w": v}, "w", path) for v in weights]
        cfg.entmax_alpha = spec_float(spec, "entmax_alpha", path)
        if cfg.softmax_variant == "grid" and (cfg.softmax_rows <= 0 or cfg.softmax_cols <= 0):
            raise ConfigError(
                f"{path}.softmax_rows: the grid softmax needs positive softmax_rows and softmax_cols, "
                f"got rows={cfg.softmax_rows}, cols={cfg.softmax_cols}"
            )
        if cfg.softmax_variant == "hierarchical" and (
            not cfg.hierarchy_levels or any(v <= 0 for v in cfg.hierarchy_levels)
        ):
            raise ConfigError(
                f"{path}.hierarchy_levels: the hierarchical softmax needs a non-empty list of positive "
                f"level sizes, got {cfg.hierarchy_levels!r}"
            )

    def infer(self, cfg: LayerConfig, in_features: int | None, path: str) -> int | None:
        if in_features:
            self._check_size(cfg, in_features)
        return in_features

    def config_json(self, cfg: LayerConfig, *, in_branch: bool) -> dict[str, Any]:
        return {
            "softmax_variant": cfg.softmax_variant,
            "softmax_rows": cfg.softmax_rows,
            "softmax_cols": cfg.softmax_cols,
            "temperature": gojson.Float32(cfg.temperature),
            "gumbel_noise": cfg.gumbel_noise,
            "mask": list(cfg.mask) if cfg.mask else None,
            "hierarchy_levels": list(cfg.hierarchy_levels) if cfg.hierarchy_levels else None,
            "adaptive_clusters": [list(c) for c in cfg.adaptive_clusters] if cfg.adaptive_clusters else None,
            "mixture_weights": [gojson.Float32(w) for w in cfg.mixture_weights] if cfg.mixture_weights else None,
            "entmax_alpha": gojson.Float32(cfg.entmax_alpha),
        }

    # ----- sizes ---------------------------------------------------------------
    @staticmethod
    def _grid_shape(cfg: LayerConfig) -> tuple[int, int] | None:
        if cfg.softmax_variant == "grid":
            return cfg.softmax_rows, cfg.softmax_cols
        if cfg.softmax_variant == "hierarchical":
            levels = cfg.hierarchy_levels or []
            cols = levels[-1]
            return math.prod(levels) // cols, cols
        return None

    def _check_size(self, cfg: LayerConfig, length: int) -> None:
        """Validate one sample's ``length`` against the variant's sizes (grid, levels, mask)."""
        grid = self._grid_shape(cfg)
        if grid is not None:
            size = grid[0] * grid[1]
            if cfg.softmax_variant == "grid":
                what, field = f"softmax_rows x softmax_cols = {grid[0]} x {grid[1]}", "softmax_rows"
            else:
                what, field = f"the product of hierarchy_levels {cfg.hierarchy_levels}", "hierarchy_levels"
        elif cfg.softmax_variant == "masked" and cfg.mask:
            size, what, field = len(cfg.mask), f"the mask length {len(cfg.mask)}", "mask"
        else:
            return
        if length != size:
            raise ConfigError(
                f"{cfg.path}.{field}: {what} = {size} does not match the softmax input length {length} of one sample"
            )

    # ----- math ----------------------------------------------------------------
    def forward(self, cfg: LayerConfig, x: Any, ctx: ForwardContext):
        xp, variant, batch = ctx.xp, cfg.softmax_variant, ctx.batch_size
        temperature = cfg.temperature if cfg.temperature != 0 else 1.0
        n = x.shape[0]
        if n == 0 or n % batch:
            raise ShapeError(
                f"{cfg.path} ({cfg.type}): expected a positive multiple of batch {batch} input values "
                f"(one distribution per sample), got {n}"
            )
        z = x.reshape(batch, n // batch) if batch > 1 else x  # [B, m]: one distribution per sample
        self._check_size(cfg, n // batch)
        p, backward = self._variant(cfg, variant, z, temperature, ctx, xp)
        shape = z.shape
        return p.reshape(-1), lambda g: backward(g.reshape(shape)).reshape(-1)

    def _variant(self, cfg: LayerConfig, variant: str, z: Any, temperature: float, ctx: ForwardContext, xp: Any):
        """``(p, backward)`` of one variant along the last axis of ``z`` (``[m]`` or ``[B, m]``)."""
        if variant in ("standard", "temperature"):
            p = softmax_forward(z, temperature, xp)
            return p, lambda g: softmax_backward(g, p, temperature, xp)
        if variant in ("adaptive", "mixture"):
            p = softmax_forward(z, 1.0, xp)
            return p, lambda g: softmax_backward(g, p, 1.0, xp)
        if variant in ("grid", "hierarchical"):
            cols = self._grid_shape(cfg)[1]  # type: ignore[index]
            p2 = softmax_forward(z.reshape(-1, cols), temperature, xp)  # [B * rows, cols]

            def grid_backward(g: Any) -> Any:
                return softmax_backward(g.reshape(p2.shape), p2, temperature, xp).reshape(z.shape)

            return p2.reshape(z.shape), grid_backward
        if variant == "masked":
            if not cfg.mask:
                p = softmax_forward(z, temperature, xp)
                return p, lambda g: softmax_backward(g, p, temperature, xp)
            keep = self._mask_array(cfg, ctx)  # [m], broadcast over samples
            p = softmax_forward(xp.where(keep, z, xp.full_like(z, MASKED_LOGIT)), temperature, xp)
            return p, lambda g: xp.where(keep, softmax_backward(g, p, temperature, xp), xp.zeros_like(g))
        if variant == "gumbel":
            rng = ctx.rng if ctx.rng is not None else ctx.backend.rng(None)
            noise = xp.reshape(gumbel_noise(rng.random(z.size, dtype=z.dtype), xp), z.shape)
            p = softmax_forward(z + noise, temperature, xp)
            return p, lambda g: softmax_backward(g, p, temperature, xp)
        if variant == "sparse":
            p = sparsemax_forward(z, xp)
            return p, lambda g: sparsemax_backward(g, p, xp)
        if variant == "entmax":
            alpha = cfg.entmax_alpha
            p, cache = entmax_blend_forward(z, alpha, xp)
            return p, lambda g: entmax_blend_backward(g, p, alpha, cache, xp)
        raise ConfigError(f"{cfg.path}.softmax_variant: unknown softmax variant {variant!r}")

    @staticmethod
    def _mask_array(cfg: LayerConfig, ctx: ForwardContext) -> Any:
        """The boolean keep-mask of one sample on the backend, cached in ``cfg.state``."""
        key = ("_mask", ctx.backend.name, tuple(cfg.mask or ()))
        cached = cfg.state.get("_mask")
        if cached is not None and cached[0] == key:
            return cached[1]
        keep = ctx.backend.asarray(list(cfg.mask or ()), dtype=ctx.backend.raw.bool_)
        cfg.state["_mask"] = (key, keep)
        return keep
