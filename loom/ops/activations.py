"""Element-wise activations and their derivatives, LOOM conventions included.

Ids 0-4 are LOOM's own (``relu`` is LOOM's *ScaledReLU* ``max(0, 1.1 x)``);
5 is the identity (LOOM's out-of-range id); 6+ are the further activations
the LOOM README promises. Every derivative is evaluated from the
**pre-activation** value, as LOOM does (derivative of ScaledReLU at 0 is 0,
of LeakyReLU at 0 is 1). Functions take arrays of any backend; they only use
operators and array-API functions of the namespace passed in (``xp``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from enum import IntEnum
from functools import partial
from typing import Any, NamedTuple

from loom.backend.fast_paths import astype, constant, elementwise
from loom.errors import ConfigError

__all__ = [
    "ACTIVATION_NAMES",
    "Activation",
    "activate",
    "activation_backward",
    "activation_derivative",
    "activation_from_name",
    "activation_kernels",
    "activation_name",
    "erf",
]

SCALED_RELU_SLOPE = 1.1
LEAKY_SLOPE = 0.1
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Activation(IntEnum):
    """LOOM activation ids (0-4 as in Go LOOM, 5 = identity, 6+ loom extensions)."""

    SCALED_RELU = 0
    SIGMOID = 1
    TANH = 2
    SOFTPLUS = 3
    LEAKY_RELU = 4
    LINEAR = 5
    GELU = 6
    SILU = 7
    ELU = 8
    SELU = 9
    MISH = 10
    HARD_SIGMOID = 11
    HARD_TANH = 12
    SOFTSIGN = 13
    RELU6 = 14
    PLAIN_RELU = 15

    RELU = 0  # LOOM's "relu" is ScaledReLU (alias)


#: Canonical JSON name written for each id (LOOM's names for 0-4).
_CANONICAL_NAMES: dict[int, str] = {
    0: "relu",
    1: "sigmoid",
    2: "tanh",
    3: "softplus",
    4: "leaky_relu",
    5: "linear",
    6: "gelu",
    7: "silu",
    8: "elu",
    9: "selu",
    10: "mish",
    11: "hard_sigmoid",
    12: "hard_tanh",
    13: "softsign",
    14: "relu6",
    15: "plain_relu",
}

#: Every accepted JSON activation name (lower case) -> id.
ACTIVATION_NAMES: dict[str, int] = {
    **{name: act for act, name in _CANONICAL_NAMES.items()},
    "scaled_relu": 0,
    "identity": 5,
    "none": 5,
    "swish": 7,
    "hardsigmoid": 11,
    "hardtanh": 12,
    "leakyrelu": 4,
}


def activation_from_name(name: Any, path: str = "activation") -> Activation:
    """Parse a JSON activation (name or integer id); unknown names raise ``ConfigError``.

    A missing activation (``None`` or ``""``) is LOOM's default, ScaledReLU.
    """
    if name is None or name == "":
        return Activation.SCALED_RELU
    if isinstance(name, bool):
        raise ConfigError(f"{path}: expected an activation name, got {name!r}")
    if isinstance(name, int) or (isinstance(name, float) and name.is_integer()):
        act = int(name)
        if act in _CANONICAL_NAMES:
            return Activation(act)
        raise ConfigError(f"{path}: unknown activation id {str(act)[:80]}; expected 0..{max(_CANONICAL_NAMES)}")
    if not isinstance(name, str):
        raise ConfigError(f"{path}: expected an activation name string, got {type(name).__name__}")
    key = name.strip().lower()
    if key in ACTIVATION_NAMES:
        return Activation(ACTIVATION_NAMES[key])
    hint = difflib.get_close_matches(key, list(ACTIVATION_NAMES), n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(
        f"{path}: unknown activation {name!r:.80}{did_you_mean}; accepted: " + ", ".join(sorted(ACTIVATION_NAMES))
    )


def activation_name(act: int) -> str:
    """JSON name loom writes for an activation id."""
    return _CANONICAL_NAMES.get(int(act), "linear")


class _GeluConstants(NamedTuple):
    """Constants of :func:`_gelu_parts`: Python floats, or 0-d arrays bound once (:mod:`loom.backend.fast_paths`)."""

    one: Any = 1.0
    half: Any = 0.5
    sqrt_half: Any = _SQRT_HALF
    inv_sqrt_2pi: Any = _INV_SQRT_2PI
    p: Any = 0.3275911  # Abramowitz & Stegun 7.1.26
    a1: Any = 0.254829592
    a2: Any = -0.284496736
    a3: Any = 1.421413741
    a4: Any = -1.453152027
    a5: Any = 1.061405429


_GELU = _GeluConstants()


def _erf_parts(z: Any, xp: Any, c: _GeluConstants = _GELU) -> tuple[Any, Any]:
    """``erf(z)`` (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7) and ``exp(-z^2)``, which it computes on the way."""
    a = xp.abs(z)
    t = c.one / (c.one + c.p * a)
    poly = t * (c.a1 + t * (c.a2 + t * (c.a3 + t * (c.a4 + t * c.a5))))
    gauss = xp.exp(-(a * a))
    return xp.copysign(c.one - poly * gauss, z), gauss


def erf(x: Any, xp: Any) -> Any:
    """Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): the array API has none."""
    return _erf_parts(x, xp)[0]


def _gelu_parts(x: Any, xp: Any, c: _GeluConstants = _GELU) -> tuple[Any, Any, Any]:
    """GELU ``x Phi(x)``, ``Phi(x)`` and ``exp(-x^2 / 2)`` (the derivative is ``Phi + x exp(-x^2/2) / sqrt(2 pi)``)."""
    erf_z, gauss = _erf_parts(x * c.sqrt_half, xp, c)
    cdf = (c.one + erf_z) * c.half
    return x * cdf, cdf, gauss


def _gelu_derivative(x: Any, cdf: Any, gauss: Any, c: _GeluConstants = _GELU) -> Any:
    return cdf + x * (gauss * c.inv_sqrt_2pi)


def _gelu_kernels(xp: Any, dtype: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any, Any], Any]]:
    """GELU forward/backward with bound constants; the backward reuses the last forward's ``Phi`` and Gaussian."""
    c = _GeluConstants(*(constant(value, xp, dtype) for value in _GELU))
    saved: list[Any] = [None, None, None]  # pre-activation, Phi, exp(-x^2/2) of the last forward

    def forward(x: Any) -> Any:
        y, saved[1], saved[2] = _gelu_parts(x, xp, c)
        saved[0] = x
        return y

    def backward(grad_y: Any, pre: Any, y: Any) -> Any:
        if saved[0] is not pre:  # not the last forward's input: recompute
            _, saved[1], saved[2] = _gelu_parts(pre, xp, c)
            saved[0] = pre
        return grad_y * _gelu_derivative(pre, saved[1], saved[2], c)

    return forward, backward


def _sigmoid(x: Any, xp: Any, one: Any = 1.0) -> Any:
    return one / (one + xp.exp(-x))


def _scaled_relu(x: Any, xp: Any, slope: Any = SCALED_RELU_SLOPE, zero: Any = 0.0) -> Any:
    return xp.maximum(x * slope, zero)  # = where(x > 0, 1.1 x, 0)


def _scaled_relu_backward(grad_y: Any, y: Any, sign: Any, slope: Any = SCALED_RELU_SLOPE) -> Any:
    return grad_y * (sign(y) * slope)  # y = max(1.1 x, 0) is > 0 exactly where x > 0


def _sigmoid_backward(grad_y: Any, y: Any, xp: Any, one: Any = 1.0) -> Any:
    return grad_y * (y * (one - y))


def _tanh_backward(grad_y: Any, y: Any, xp: Any, one: Any = 1.0) -> Any:
    return grad_y * (one - y * y)


def _softplus(x: Any, xp: Any) -> Any:
    # log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|)
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


def _zero_like(x: Any) -> Any:
    return x * 0.0


_Fn = Callable[[Any, Any], Any]

_FORWARD: dict[int, _Fn] = {
    0: _scaled_relu,
    1: _sigmoid,
    2: lambda x, xp: xp.tanh(x),
    3: _softplus,
    4: lambda x, xp: xp.where(x < 0, x * LEAKY_SLOPE, x),
    5: lambda x, xp: x,
    6: lambda x, xp: _gelu_parts(x, xp)[0],
    7: lambda x, xp: x * _sigmoid(x, xp),
    8: lambda x, xp: xp.where(x > 0, x, xp.expm1(xp.minimum(x, 0.0))),
    9: lambda x, xp: _SELU_SCALE * xp.where(x > 0, x, _SELU_ALPHA * xp.expm1(xp.minimum(x, 0.0))),
    10: lambda x, xp: x * xp.tanh(_softplus(x, xp)),
    11: lambda x, xp: xp.clip(x / 6.0 + 0.5, 0.0, 1.0),
    12: lambda x, xp: xp.clip(x, -1.0, 1.0),
    13: lambda x, xp: x / (1.0 + xp.abs(x)),
    14: lambda x, xp: xp.clip(x, 0.0, 6.0),
    15: lambda x, xp: xp.maximum(x, 0.0),
}


def _mish_derivative(x: Any, xp: Any) -> Any:
    t = xp.tanh(_softplus(x, xp))
    return t + x * (1.0 - t * t) * _sigmoid(x, xp)


def _inside(x: Any, lo: float, hi: float, slope: float, xp: Any) -> Any:
    return xp.where((x > lo) & (x < hi), _zero_like(x) + slope, _zero_like(x))


_DERIVATIVE: dict[int, _Fn] = {
    0: lambda x, xp: xp.where(x > 0, _zero_like(x) + SCALED_RELU_SLOPE, _zero_like(x)),
    1: lambda x, xp: _sigmoid(x, xp) * (1.0 - _sigmoid(x, xp)),
    2: lambda x, xp: 1.0 - xp.tanh(x) ** 2,
    3: _sigmoid,
    4: lambda x, xp: xp.where(x >= 0, _zero_like(x) + 1.0, _zero_like(x) + LEAKY_SLOPE),
    5: lambda x, xp: _zero_like(x) + 1.0,
    6: lambda x, xp: _gelu_derivative(x, *_gelu_parts(x, xp)[1:]),
    7: lambda x, xp: _sigmoid(x, xp) * (1.0 + x * (1.0 - _sigmoid(x, xp))),
    8: lambda x, xp: xp.where(x > 0, _zero_like(x) + 1.0, xp.exp(xp.minimum(x, 0.0))),
    9: lambda x, xp: _SELU_SCALE * xp.where(x > 0, _zero_like(x) + 1.0, _SELU_ALPHA * xp.exp(xp.minimum(x, 0.0))),
    10: _mish_derivative,
    11: lambda x, xp: _inside(x, -3.0, 3.0, 1.0 / 6.0, xp),
    12: lambda x, xp: _inside(x, -1.0, 1.0, 1.0, xp),
    13: lambda x, xp: 1.0 / (1.0 + xp.abs(x)) ** 2,
    14: lambda x, xp: _inside(x, 0.0, 6.0, 1.0, xp),
    15: lambda x, xp: xp.where(x > 0, _zero_like(x) + 1.0, _zero_like(x)),
}


def activate(x: Any, act: int, xp: Any) -> Any:
    """Apply activation ``act`` element-wise to ``x`` (any shape, float32 kept)."""
    forward = _FORWARD.get(act)  # ids hash like ints: no int() per call
    return (forward or _FORWARD.get(int(act), _FORWARD[5]))(x, xp)


def activation_kernels(act: int, xp: Any, dtype: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any, Any], Any]]:
    """``forward(x)`` and ``backward(grad_y, pre, y)`` of activation ``act`` with their constants bound once.

    Same math as :func:`activate` / :func:`activation_backward`; on NumPy the constants are
    0-d arrays of ``dtype`` (:func:`loom.backend.fast_paths.constant`), which halves the cost of each
    call on tiny arrays. For code that applies one activation many times.
    """
    act = int(act)
    if act == 0:
        slope, zero = constant(SCALED_RELU_SLOPE, xp, dtype), constant(0.0, xp, dtype)
        forward = partial(_scaled_relu, xp=xp, slope=slope, zero=zero)
        sign = elementwise(xp, "sign")
        return forward, lambda grad_y, pre, y: _scaled_relu_backward(grad_y, y, sign, slope)
    if act in (1, 2):
        one = constant(1.0, xp, dtype)
        if act == 1:
            return partial(_sigmoid, xp=xp, one=one), lambda grad_y, pre, y: _sigmoid_backward(grad_y, y, xp, one)
        return xp.tanh, lambda grad_y, pre, y: _tanh_backward(grad_y, y, xp, one)
    if act == 6:
        return _gelu_kernels(xp, dtype)
    return partial(activate, act=act, xp=xp), partial(activation_backward, act=act, xp=xp)


def activation_derivative(pre: Any, act: int, xp: Any) -> Any:
    """Derivative of activation ``act`` evaluated at the pre-activation ``pre``."""
    return _DERIVATIVE.get(int(act), _DERIVATIVE[5])(pre, xp)


def activation_backward(grad_y: Any, pre: Any, y: Any, act: int, xp: Any) -> Any:
    """``grad_y * f'(pre)``, reusing the forward output ``y = f(pre)`` where that saves work.

    Same values as ``grad_y * activation_derivative(pre, act, xp)`` (sigmoid and tanh
    derivatives are taken from ``y``, which is what they recompute).
    """
    if act == 0:  # ScaledReLU
        if y is None:
            return (grad_y * SCALED_RELU_SLOPE) * astype(pre > 0, grad_y.dtype, xp)
        return _scaled_relu_backward(grad_y, y, xp.sign)
    if act == 1:  # sigmoid
        return _sigmoid_backward(grad_y, y, xp)
    if act == 2:  # tanh
        return _tanh_backward(grad_y, y, xp)
    if act == 5:  # identity
        return grad_y
    return grad_y * activation_derivative(pre, act, xp)
