"""Optimizers over a network's flat parameter and gradient buffers: SGD (momentum, Nesterov), Adam, AdamW, RMSprop.

Every update is ``torch.optim``'s formula with ``torch.optim``'s defaults, element-wise in the
buffers' dtype (``g`` the gradient, ``p`` the parameters, ``t`` the step count from 1, ``lr``
this step's learning rate):

* **SGD** (``lr=1e-3, momentum=0, nesterov=False, weight_decay=0``; no dampening):
  ``g += wd p``; with momentum ``b = mu b + g`` (``b`` starts at 0, so ``b_1 = g_1``) and
  ``g = g + mu b`` (Nesterov) or ``g = b``; ``p -= lr g``. Plain SGD is LOOM's ``UpdateWeights``.
* **Adam** (``lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0``): ``g += wd p``;
  ``m = m + (1 - b1)(g - m)``; ``v = b2 v + (1 - b2) g²``;
  ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
* **AdamW**: Adam without the ``g += wd p`` term, after ``p *= 1 - lr wd`` (``weight_decay=1e-2``).
* **RMSprop** (``lr=1e-2, alpha=0.99, epsilon=1e-8, momentum=0, weight_decay=0``; not centered):
  ``g += wd p``; ``v = alpha v + (1 - alpha) g²``; ``a = sqrt(v) + eps``; with momentum
  ``b = mu b + g / a``, ``p -= lr b``, else ``p -= lr g / a``.

State (momentum buffers, moment estimates) lives in flat arrays on the parameters' backend
(NumPy or CuPy), created at the first step; a parameter that got no gradient in a step counts
as a zero gradient. :meth:`Optimizer.bind` returns the ``update(lr, scale)`` function both
training paths call once the gradients are in place: it applies ``scale * grads`` (``scale`` is
the clipping factor, a float or a device scalar) and leaves the gradient buffer as it is. Only
the array module's in-place
element-wise functions (``multiply``, ``add``, ``sqrt`` ... with ``out=``) are used, so the same
code runs on every backend without host round trips. An optimizer object keeps its state
between ``fit`` calls when it is passed again.

Examples
--------
>>> from loom.nn.optimizers import make_optimizer
>>> make_optimizer("adam", 0.01, beta1=0.8)
Adam(learning_rate=0.01, beta1=0.8, beta2=0.999, epsilon=1e-08, weight_decay=0.0)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from loom.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "OPTIMIZER_OPTIONS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "make_optimizer",
]

#: Every optimizer option name, in documentation order.
OPTIMIZER_OPTIONS = ("momentum", "nesterov", "beta1", "beta2", "epsilon", "weight_decay", "alpha")

Update = Callable[[float, Any], None]


def _number(value: Any, name: str, *, low: float = 0.0, high: float | None = None, high_open: bool = True) -> float:
    """``value`` as a float in ``[low, high)`` (or ``[low, high]``), else a ``ConfigError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    value = float(value)
    if value < low or (high is not None and (value >= high if high_open else value > high)):
        bound = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ConfigError(f"{name}: expected a number >= {low}{bound}, got {value}")
    return value


class Optimizer:
    """Base class: hyper-parameters, flat state buffers and the update rule.

    Subclasses set :attr:`name`, :attr:`default_learning_rate`, :attr:`options` and implement
    :meth:`_make_update`.
    """

    name: ClassVar[str] = ""
    default_learning_rate: ClassVar[float] = 1e-3
    #: The option names this optimizer takes (constructor keywords).
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, learning_rate: float | None = None, *, path: str = "optimizer") -> None:
        lr = self.default_learning_rate if learning_rate is None else learning_rate
        self.learning_rate = _number(lr, f"{path}.learning_rate")
        self.path = path
        self.state: dict[str, Any] = {}
        self.step_count = 0

    def option_values(self) -> dict[str, Any]:
        """This optimizer's options and their values."""
        return {name: getattr(self, name) for name in self.options}

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.option_values().items())
        return f"{type(self).__name__}(learning_rate={self.learning_rate!r}{', ' + values if values else ''})"

    def reset(self) -> None:
        """Forget the state (moments, momentum buffers, step count)."""
        self.state.clear()
        self.step_count = 0

    def _buffer(self, key: str, like: Any, raw: Any) -> Any:
        """State array ``key`` shaped like ``like`` (zeros when new; the state resets on a size or backend change)."""
        array = self.state.get(key)
        if array is None or array.shape != like.shape or type(array) is not type(like) or array.dtype != like.dtype:
            if array is not None:
                self.reset()
            array = self.state[key] = raw.zeros_like(like)
        return array

    def bind(self, params: Any, grads: Any, raw: Any) -> Update:
        """The update function of this optimizer for flat buffers ``params`` / ``grads`` of array module ``raw``.

        ``update(lr, scale)`` changes ``params`` in place from ``scale * grads`` (``grads`` itself
        is left as it is) and advances :attr:`step_count`. ``scale`` is a float or a 0-d array
        of the same backend (a clipping factor computed on the device).
        """
        # scratch buffers are not state: they never carry values between steps
        scratch = [raw.empty_like(params) for _ in range(2)]
        return self._make_update(params, grads, raw, scratch)

    def _make_update(self, params: Any, grads: Any, raw: Any, scratch: list[Any]) -> Update:
        raise NotImplementedError

    def state_buffers(self, params: Any, raw: Any) -> tuple[Any, Any]:
        """The two flat state arrays of the GPU update kernel (:meth:`loom.backend.cuda_train.TrainKernels.update`).

        The same arrays as this optimizer's ``state`` (so both paths continue each other's
        state); ``params`` itself stands in for a state the settings do not use (never touched).
        """
        raise NotImplementedError

    def _gradient(self, params: Any, grads: Any, scale: Any, raw: Any, out: Any, decay: bool = True) -> Any:
        """``scale * grads + weight_decay * params`` (into ``out`` unless it is ``grads`` itself)."""
        wd = self.weight_decay if decay else 0.0  # type: ignore[attr-defined]
        unscaled = type(scale) is float and scale == 1.0
        if unscaled and not wd:
            return grads
        if unscaled:
            raw.multiply(params, wd, out=out)
            raw.add(grads, out, out=out)
            return out
        raw.multiply(grads, scale, out=out)
        if wd:
            raw.add(out, raw.multiply(params, wd), out=out)
        return out


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    Parameters
    ----------
    learning_rate : float, optional
        Default ``1e-3`` (torch's).
    momentum : float
        ``0`` is plain SGD (LOOM's update).
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0``).
    weight_decay : float
        L2 penalty added to the gradient.
    """

    name = "sgd"
    options = ("momentum", "nesterov", "weight_decay")

    def __init__(
        self,
        learning_rate: float | None = None,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        path: str = "optimizer",
    ) -> None:
        super().__init__(learning_rate, path=path)
        self.momentum = _number(momentum, f"{path}.momentum")
        if not isinstance(nesterov, bool):
            raise ConfigError(f"{path}.nesterov: expected true or false, got {nesterov!r}")
        if nesterov and self.momentum <= 0:
            raise ConfigError(f"{path}.nesterov: Nesterov momentum needs momentum > 0, got momentum={self.momentum}")
        self.nesterov = nesterov
        self.weight_decay = _number(weight_decay, f"{path}.weight_decay")

    def _make_update(self, params: Any, grads: Any, raw: Any, scratch: list[Any]) -> Update:
        multiply, add, subtract = raw.multiply, raw.add, raw.subtract
        step, decayed = scratch
        mu, nesterov = self.momentum, self.nesterov

        if mu == 0.0 and not self.weight_decay:

            def update(lr: float, scale: Any = 1.0) -> None:  # LOOM's UpdateWeights: p -= lr * g
                multiply(grads, lr * scale, out=step)
                subtract(params, step, out=params)
                self.step_count += 1

            return update
        buf = self._buffer("momentum_buffer", params, raw) if mu else None

        def update(lr: float, scale: Any = 1.0) -> None:
            g = self._gradient(params, grads, scale, raw, decayed)
            if buf is not None:
                multiply(buf, mu, out=buf)
                add(buf, g, out=buf)
                if nesterov:
                    multiply(buf, mu, out=step)
                    add(g, step, out=step)
                    g = step
                else:
                    g = buf
            multiply(g, lr, out=step)
            subtract(params, step, out=params)
            self.step_count += 1

        return update

    def state_buffers(self, params: Any, raw: Any) -> tuple[Any, Any]:
        """(momentum buffer, unused)."""
        buf = self._buffer("momentum_buffer", params, raw) if self.momentum else params
        return buf, params


class Adam(Optimizer):
    """Adam (Kingma & Ba) with torch's bias correction and L2 weight decay added to the gradient.

    Parameters
    ----------
    learning_rate : float, optional
        Default ``1e-3``.
    beta1, beta2 : float
        Decay rates of the first and second moment estimates (``0.9``, ``0.999``).
    epsilon : float
        Added to the bias-corrected ``sqrt(v)`` (``1e-8``).
    weight_decay : float
        L2 penalty added to the gradient (``0``).
    """

    name = "adam"
    options = ("beta1", "beta2", "epsilon", "weight_decay")
    default_weight_decay: ClassVar[float] = 0.0
    decoupled: ClassVar[bool] = False

    def __init__(
        self,
        learning_rate: float | None = None,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float | None = None,
        path: str = "optimizer",
    ) -> None:
        super().__init__(learning_rate, path=path)
        self.beta1 = _number(beta1, f"{path}.beta1", high=1.0)
        self.beta2 = _number(beta2, f"{path}.beta2", high=1.0)
        self.epsilon = _number(epsilon, f"{path}.epsilon")
        wd = self.default_weight_decay if weight_decay is None else weight_decay
        self.weight_decay = _number(wd, f"{path}.weight_decay")

    def _make_update(self, params: Any, grads: Any, raw: Any, scratch: list[Any]) -> Update:
        multiply, add, subtract, divide, sqrt = raw.multiply, raw.add, raw.subtract, raw.divide, raw.sqrt
        tmp, decayed = scratch
        m = self._buffer("exp_avg", params, raw)
        v = self._buffer("exp_avg_sq", params, raw)
        b1, b2, eps, wd = self.beta1, self.beta2, self.epsilon, self.weight_decay
        decoupled = self.decoupled

        def update(lr: float, scale: Any = 1.0) -> None:
            t = self.step_count = self.step_count + 1
            if decoupled and wd:
                multiply(params, 1.0 - lr * wd, out=params)
            g = self._gradient(params, grads, scale, raw, decayed, decay=not decoupled)
            subtract(g, m, out=tmp)  # m = m + (1 - b1)(g - m)   (torch: lerp)
            multiply(tmp, 1.0 - b1, out=tmp)
            add(m, tmp, out=m)
            multiply(v, b2, out=v)  # v = b2 v + (1 - b2) g^2
            multiply(g, g, out=tmp)
            multiply(tmp, 1.0 - b2, out=tmp)
            add(v, tmp, out=v)
            step_size = lr / (1.0 - b1**t)
            sqrt(v, out=tmp)  # denominator: sqrt(v) / sqrt(1 - b2^t) + eps
            divide(tmp, math.sqrt(1.0 - b2**t), out=tmp)
            add(tmp, eps, out=tmp)
            divide(m, tmp, out=tmp)
            multiply(tmp, step_size, out=tmp)
            subtract(params, tmp, out=params)

        return update

    def state_buffers(self, params: Any, raw: Any) -> tuple[Any, Any]:
        """(first moment m, second moment v)."""
        return self._buffer("exp_avg", params, raw), self._buffer("exp_avg_sq", params, raw)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay`` first.

    Same parameters as :class:`Adam`; ``weight_decay`` defaults to ``1e-2`` (torch's).
    """

    name = "adamw"
    default_weight_decay = 1e-2
    decoupled = True


class RMSprop(Optimizer):
    """RMSprop (Hinton), torch's non-centered variant with optional momentum.

    Parameters
    ----------
    learning_rate : float, optional
        Default ``1e-2`` (torch's).
    alpha : float
        Decay rate of the squared-gradient average (``0.99``).
    epsilon : float
        Added to ``sqrt(v)`` (``1e-8``).
    momentum : float
        Momentum on the scaled step (``0``).
    weight_decay : float
        L2 penalty added to the gradient (``0``).
    """

    name = "rmsprop"
    default_learning_rate = 1e-2
    options = ("alpha", "epsilon", "momentum", "weight_decay")

    def __init__(
        self,
        learning_rate: float | None = None,
        *,
        alpha: float = 0.99,
        epsilon: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        path: str = "optimizer",
    ) -> None:
        super().__init__(learning_rate, path=path)
        self.alpha = _number(alpha, f"{path}.alpha", high=1.0)
        self.epsilon = _number(epsilon, f"{path}.epsilon")
        self.momentum = _number(momentum, f"{path}.momentum")
        self.weight_decay = _number(weight_decay, f"{path}.weight_decay")

    def _make_update(self, params: Any, grads: Any, raw: Any, scratch: list[Any]) -> Update:
        multiply, add, subtract, divide, sqrt = raw.multiply, raw.add, raw.subtract, raw.divide, raw.sqrt
        tmp, decayed = scratch
        v = self._buffer("square_avg", params, raw)
        buf = self._buffer("momentum_buffer", params, raw) if self.momentum else None
        alpha, eps, mu = self.alpha, self.epsilon, self.momentum

        def update(lr: float, scale: Any = 1.0) -> None:
            self.step_count += 1
            g = self._gradient(params, grads, scale, raw, decayed)
            multiply(v, alpha, out=v)  # v = alpha v + (1 - alpha) g^2
            multiply(g, g, out=tmp)
            multiply(tmp, 1.0 - alpha, out=tmp)
            add(v, tmp, out=v)
            sqrt(v, out=tmp)  # a = sqrt(v) + eps
            add(tmp, eps, out=tmp)
            divide(g, tmp, out=tmp)
            if buf is not None:
                multiply(buf, mu, out=buf)
                add(buf, tmp, out=buf)
                multiply(buf, lr, out=tmp)
            else:
                multiply(tmp, lr, out=tmp)
            subtract(params, tmp, out=params)

        return update

    def state_buffers(self, params: Any, raw: Any) -> tuple[Any, Any]:
        """(square average v, momentum buffer)."""
        v = self._buffer("square_avg", params, raw)
        return v, (self._buffer("momentum_buffer", params, raw) if self.momentum else params)


#: Optimizer name -> class (names are matched case-insensitively).
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def make_optimizer(
    spec: str | Optimizer | None,
    learning_rate: float | None = None,
    *,
    path: str = "optimizer",
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Optimizer:
    """An :class:`Optimizer` from a name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``; any case).

    Parameters
    ----------
    spec : str or Optimizer or None
        A name (``None``: ``"sgd"``), or an optimizer object, returned as it is (then
        ``learning_rate`` and options must not be given).
    learning_rate : float, optional
        Base learning rate (default: the optimizer's, as in torch).
    path : str
        Prefix of error messages (``"training config"``, ``"fit"``).
    options, **kwargs
        Optimizer options (:data:`OPTIMIZER_OPTIONS`); ``None`` values mean "the default". An
        unknown option, or one this optimizer does not take (``momentum`` for Adam), is a
        ``ConfigError``.

    Returns
    -------
    Optimizer
    """
    given = {k: v for k, v in {**(options or {}), **kwargs}.items() if v is not None}
    for key in given:
        if key not in OPTIMIZER_OPTIONS:
            hint = difflib.get_close_matches(key, OPTIMIZER_OPTIONS, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{path}.{key}: unknown optimizer option{did_you_mean}")
    if isinstance(spec, Optimizer):
        if given or learning_rate is not None:
            extra = sorted(given) + (["learning_rate"] if learning_rate is not None else [])
            raise ConfigError(
                f"{path}.optimizer: got an optimizer object and {', '.join(extra)}; "
                "set those on the object (e.g. Adam(learning_rate=0.01, beta1=0.8))"
            )
        return spec
    name = "sgd" if spec is None else spec
    if not isinstance(name, str):
        raise ConfigError(f"{path}.optimizer: expected a name or an Optimizer, got {type(name).__name__}")
    cls = OPTIMIZERS.get(name.strip().lower())
    if cls is None:
        hint = difflib.get_close_matches(name.strip().lower(), list(OPTIMIZERS), n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{path}.optimizer: unknown optimizer {name!r}{did_you_mean}; expected one of {list(OPTIMIZERS)}"
        )
    for key in given:
        if key not in cls.options:
            raise ConfigError(f"{path}.{key}: not an option of {cls.name} (its options: {', '.join(cls.options)})")
    return cls(learning_rate, path=path, **given)
