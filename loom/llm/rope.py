"""RoPE inverse frequencies, computed exactly as Hugging Face transformers does.

One function, :func:`rope_inv_freq`, turns a :class:`~loom.llm.config.RopeConfig`
into the ``[rotary_dim / 2]`` float32 inverse frequencies and the attention
scaling applied to cos/sin (1.0 except for YaRN). Supported ``rope_type``:

* ``default`` – ``1 / theta ** (2i / d)``;
* ``linear`` – default divided by ``factor``;
* ``dynamic`` – equal to default up to ``max_position_embeddings`` (the only
  range loom runs it in);
* ``llama3`` – LLaMA 3.1 wavelength-dependent smoothing;
* ``yarn`` – NTK-by-parts interpolation with the ``mscale`` attention factor.

Everything runs on the host in NumPy at load time; the per-position tables are
built by :func:`loom.ops.rope.rope_tables`, the RoPE ``loom.nn``'s attention uses too, and
kept on the model's device by :class:`RopeTables`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loom.llm.config import RopeConfig
from loom.ops.rope import rope_frequencies, rope_tables

__all__ = ["RopeTables", "rope_inv_freq"]


def rope_inv_freq(rope: RopeConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies and cos/sin scaling of a RoPE configuration.

    Parameters
    ----------
    rope : RopeConfig
        Parsed RoPE settings.

    Returns
    -------
    inv_freq : numpy.ndarray
        ``[rotary_dim // 2]`` float32.
    attention_scaling : float
        Factor multiplied into cos and sin.

    Examples
    --------
    >>> from loom.llm.config import RopeConfig
    >>> inv, scale = rope_inv_freq(RopeConfig("default", 10000.0, 4))
    >>> inv.tolist(), scale
    ([1.0, 0.009999999776482582], 1.0)
    """
    dim = rope.rotary_dim
    inv_freq = rope_frequencies(rope.theta, dim, np.float32)  # [dim/2], in float32 as torch
    params = rope.params
    if rope.rope_type in ("default", "dynamic"):
        return inv_freq, 1.0
    if rope.rope_type == "linear":
        return (inv_freq / np.float32(params["factor"])).astype(np.float32), 1.0
    if rope.rope_type == "llama3":
        return _llama3(inv_freq, params), 1.0
    if rope.rope_type == "yarn":
        return _yarn(rope, dim)
    raise ValueError(f"unknown rope_type {rope.rope_type!r}")


def _llama3(inv_freq: np.ndarray, params: dict) -> np.ndarray:
    factor = float(params["factor"])
    low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
    old_context = float(params["original_max_position_embeddings"])
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(factor), inv_freq)
    smooth = ((old_context / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def _yarn(rope: RopeConfig, dim: int) -> tuple[np.ndarray, float]:
    params = rope.params
    base = rope.theta
    original = float(params["original_max_position_embeddings"])
    factor = params.get("factor") or rope.max_position_embeddings / original
    attention_factor = params.get("attention_factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = get_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = (base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))).astype(np.float32)
    extrapolation = (1.0 / pos_freqs).astype(np.float32)
    interpolation = (1.0 / (factor * pos_freqs)).astype(np.float32)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation_factor = (1 - ramp).astype(np.float32)
    inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv_freq.astype(np.float32), float(attention_factor)


class RopeTables:
    """A model's RoPE cos/sin tables on its device, grown on demand (doubling) up to its context.

    Parameters
    ----------
    rope : RopeConfig
        The model's RoPE settings.
    xp : module
        Namespace of the model's backend.
    dtype : dtype
        The model's compute dtype.
    max_positions : int, optional
        The model's context (tables never grow past it).

    Attributes
    ----------
    cos, sin : array
        ``[P, R]`` tables of the positions built so far (``None`` before the first use).
    """

    def __init__(self, rope: RopeConfig, xp: Any, dtype: Any, max_positions: int | None = None) -> None:
        self.inv_freq, self.scaling = rope_inv_freq(rope)
        self.xp, self.dtype, self.max_positions = xp, dtype, max_positions
        self.cos: Any = None
        self.sin: Any = None

    def upto(self, n: int) -> tuple[Any, Any]:
        """The tables, covering at least positions ``0 .. n-1`` (``[P, R]``, ``P >= n``)."""
        if self.cos is None or self.cos.shape[0] < n:
            size = max(n, 256, 2 * (0 if self.cos is None else self.cos.shape[0]))
            if self.max_positions is not None:
                size = min(size, self.max_positions)
            cos, sin = rope_tables(self.inv_freq, size, self.scaling, self.xp)
            if cos.dtype != self.dtype:
                cos, sin = self.xp.astype(cos, self.dtype), self.xp.astype(sin, self.dtype)
            self.cos, self.sin = cos, sin
        return self.cos, self.sin

    def rows(self, start: int, t: int, heads: int) -> tuple[Any, Any]:
        """Tables of positions ``start .. start+T-1``: ``[T, R]``, or ``[T, heads, R]`` when ``T > 1``.

        For many tokens the rows are repeated for the ``heads`` rotated heads once (contiguous),
        rather than broadcast in every layer.
        """
        xp = self.xp
        cos, sin = self.upto(start + t)
        cos, sin = cos[start : start + t], sin[start : start + t]  # [T, R]
        if t > 1:
            shape = (t, heads, cos.shape[-1])
            cos = xp.asarray(xp.broadcast_to(cos[:, None, :], shape), copy=True)  # [T, heads, R]
            sin = xp.asarray(xp.broadcast_to(sin[:, None, :], shape), copy=True)
        return cos, sin
