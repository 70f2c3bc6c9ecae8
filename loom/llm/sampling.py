"""Next-token selection: small pure functions on host logits with an explicit RNG.

Like llama2.c's ``sample_argmax`` / ``sample_mult`` / ``sample_topp``: every
function takes a 1-D ``numpy`` logits vector ``[V]`` and, where randomness is
involved, a ``numpy.random.Generator`` — so a seeded generator gives the same
tokens every run. Filters follow Hugging Face's warpers, applied in its order
(temperature → top-k → top-p); removed tokens get ``-inf``.

:func:`sample_array` is the same draw written against the array API, for
logits that stay on a device: it takes the uniform number instead of the
generator (one ``rng.random()`` per token, as :func:`sample` draws), so a
seeded generation picks the same tokens on NumPy and on CuPy.

:class:`SamplingParams` is the one value that says how tokens are chosen
(temperature, top-k, top-p, seed); it travels unchanged from
:class:`~loom.llm.generation.TextGenerator`, the module functions of
:mod:`loom.llm.api` and :meth:`~loom.llm.model.Transformer.generate` /
``stream`` down to the decoders. A :class:`Sampler` is that value with the random
generator of one generation.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from loom.backend import to_numpy
from loom.errors import ConfigError

__all__ = [
    "Sampler",
    "SamplingParams",
    "apply_temperature",
    "greedy",
    "probabilities",
    "sample",
    "sample_array",
    "sample_from_probabilities",
    "top_k_filter",
    "top_p_filter",
]


def greedy(logits: np.ndarray) -> int:
    """Index of the largest logit (first one on ties).

    Examples
    --------
    >>> greedy(np.array([0.1, 2.0, 2.0]))
    1
    """
    return int(np.argmax(logits))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``logits / temperature`` as float64 ``[V]``; ``temperature`` must be > 0."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    return np.asarray(logits, dtype=np.float64) / temperature


def top_k_filter(logits: np.ndarray, k: int | None) -> np.ndarray:
    """Keep the ``k`` largest logits (and ties with the k-th), set the rest to ``-inf``.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[V]``.
    k : int or None
        None or ``k >= V`` keeps everything.

    Returns
    -------
    numpy.ndarray
        ``[V]`` filtered copy.

    Examples
    --------
    >>> top_k_filter(np.array([1.0, 3.0, 2.0]), 2).tolist()
    [-inf, 3.0, 2.0]
    """
    logits = np.array(logits, dtype=np.float64)
    if k is None or k >= logits.shape[-1]:
        return logits
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    kth = np.partition(logits, -k)[-k]
    logits[logits < kth] = -np.inf
    return logits


def top_p_filter(logits: np.ndarray, p: float | None) -> np.ndarray:
    """Nucleus filter: keep the most likely tokens whose probability mass first reaches ``p``.

    A token is kept when the probability of all strictly more likely tokens
    is below ``p``; the most likely token is always kept.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[V]``.
    p : float or None
        In ``(0, 1]``; None or 1.0 keeps everything.

    Returns
    -------
    numpy.ndarray
        ``[V]`` filtered copy.

    Examples
    --------
    >>> top_p_filter(np.log(np.array([0.5, 0.3, 0.2])), 0.6).round(3).tolist()
    [-0.693, -1.204, -inf]
    """
    logits = np.array(logits, dtype=np.float64)
    if p is None or p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    order = np.argsort(-logits, kind="stable")  # [V] most likely first
    probs = probabilities(logits)[order]
    mass_before = np.cumsum(probs) - probs  # [V] mass of strictly more likely tokens
    removed = order[mass_before >= p]
    logits[removed] = -np.inf
    return logits


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax of ``[V]`` logits in float64 (``-inf`` → 0)."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - np.max(logits))
    return e / e.sum()


def sample_from_probabilities(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one index from ``probs`` ``[V]`` by inverse CDF with one uniform from ``rng``."""
    cdf = np.cumsum(probs)
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


def sample(
    logits: np.ndarray,
    rng: np.random.Generator,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> int:
    """Pick the next token: greedy for ``temperature <= 0``, else a filtered random draw.

    Parameters
    ----------
    logits : numpy.ndarray
        ``[V]`` next-token logits.
    rng : numpy.random.Generator
        Source of randomness (seed it for reproducible output).
    temperature : float
        Softmax temperature; ``<= 0`` means argmax.
    top_k : int, optional
        Keep only the ``top_k`` most likely tokens.
    top_p : float, optional
        Keep the smallest set of likely tokens with mass ``>= top_p``.

    Returns
    -------
    int
        The chosen token id.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sample(np.array([0.0, 5.0, 1.0]), rng, temperature=0.0)
    1
    >>> sample(np.array([0.0, 5.0, 1.0]), rng, temperature=1.0, top_k=1)
    1
    """
    if temperature <= 0:
        return greedy(logits)
    scaled = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)
    return sample_from_probabilities(probabilities(scaled), rng)


def sample_array(
    logits: Any,
    uniform: float,
    xp: Any,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Any:
    """:func:`sample` on a backend array: the chosen index as a 0-d integer array (no host transfer).

    Parameters
    ----------
    logits : array
        ``[V]`` next-token logits on any array-API backend.
    uniform : float
        A number in ``[0, 1)``, the generator's draw (``rng.random()``).
    xp : module
        Array namespace of ``logits``.
    temperature, top_k, top_p
        As in :func:`sample`.

    Returns
    -------
    array
        0-d integer index, equal to ``sample(logits, rng, ...)`` when ``uniform`` is
        that call's ``rng.random()``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> int(sample_array(np.array([0.0, 5.0, 1.0]), 0.5, xp, temperature=1.0, top_k=1))
    1
    """
    if temperature <= 0:
        return xp.argmax(logits)
    scaled = xp.astype(logits, xp.float64) / temperature  # [V]
    vocab = scaled.shape[0]
    if top_k is not None and top_k < vocab:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kth = xp.sort(scaled)[vocab - top_k]  # the k-th largest
        scaled = xp.where(scaled < kth, -xp.inf, scaled)
    if top_p is not None and top_p < 1.0:
        if top_p <= 0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        order = xp.argsort(-scaled, stable=True)  # [V] most likely first
        probs = xp.take(_probabilities_array(scaled, xp), order)
        mass_before = xp.cumulative_sum(probs) - probs  # [V] mass of strictly more likely tokens
        keep = xp.take(mass_before < top_p, xp.argsort(order))  # back to vocabulary order
        scaled = xp.where(keep, scaled, -xp.inf)
    cdf = xp.cumulative_sum(_probabilities_array(scaled, xp))  # [V]
    target = xp.reshape(cdf[-1] * uniform, (1,))
    index = xp.searchsorted(cdf, target, side="right")[0]
    return xp.minimum(index, vocab - 1)


def _probabilities_array(logits: Any, xp: Any) -> Any:
    e = xp.exp(logits - xp.max(logits))
    return e / xp.sum(e)


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen: greedy (``temperature <= 0``) or a filtered, seeded draw.

    Parameters
    ----------
    temperature : float
        Softmax temperature; ``<= 0`` picks the most likely token.
    top_k : int, optional
        Keep only the ``top_k`` most likely tokens (``>= 1``).
    top_p : float, optional
        Nucleus sampling: keep the most likely tokens whose mass reaches ``top_p`` (in ``(0, 1]``).
    seed : int, optional
        Seed of the generator the draws come from (the same seed, the same tokens).

    Raises
    ------
    ConfigError
        Naming the field, for a value outside these ranges.

    Examples
    --------
    >>> SamplingParams(temperature=0.7, top_p=0.9).greedy
    False
    >>> SamplingParams().with_options(top_k=5)
    SamplingParams(temperature=0.0, top_k=5, top_p=None, seed=None)
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, numbers.Real):
            raise ConfigError(f"temperature: expected a number, got {self.temperature!r:.80}")
        if not math.isfinite(self.temperature):
            raise ConfigError(f"temperature: expected a finite number, got {self.temperature!r}")
        if self.top_k is not None and not (_is_integer(self.top_k) and self.top_k >= 1):
            raise ConfigError(f"top_k: expected an integer >= 1 or None, got {self.top_k!r:.80}")
        if self.top_p is not None and (
            isinstance(self.top_p, bool) or not isinstance(self.top_p, numbers.Real) or not 0 < self.top_p <= 1
        ):
            raise ConfigError(f"top_p: expected a number in (0, 1] or None, got {self.top_p!r:.80}")
        if self.seed is not None and not _is_integer(self.seed):
            raise ConfigError(f"seed: expected an integer or None, got {self.seed!r:.80}")

    @property
    def greedy(self) -> bool:
        """True when the most likely token is always chosen."""
        return self.temperature <= 0

    def with_options(self, **options: Any) -> SamplingParams:
        """A copy with the given fields replaced (``temperature=``, ``top_k=``, ``top_p=``, ``seed=``).

        Raises ``TypeError`` for any other keyword, naming it and the accepted ones.
        """
        if not options:
            return self
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise TypeError(f"unexpected sampling option {unknown[0]!r}; accepted: {', '.join(fields)}")
        return dataclasses.replace(self, **options)


@dataclass
class Sampler:
    """The choice of every token of one generation: :class:`SamplingParams` and the generator drawn from.

    Parameters
    ----------
    params : SamplingParams
        How to choose.
    rng : numpy.random.Generator, optional
        Source of the draws (default: a new one seeded with ``params.seed``).
    """

    params: SamplingParams = SamplingParams()
    rng: np.random.Generator | None = None

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = np.random.default_rng(self.params.seed)

    @property
    def greedy(self) -> bool:
        """True when the most likely token is always chosen."""
        return self.params.greedy

    def choose(self, logits: Any, xp: Any) -> int:
        """The next token of ``[V]`` logits on any backend: a device argmax, or a host draw."""
        p = self.params
        if p.greedy:
            return int(xp.argmax(logits))
        return sample(to_numpy(logits), self.rng, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p)

    def pick(self, logits: Any, xp: Any) -> Any:
        """The chosen index of device logits ``[V]`` as a 0-d device array (one ``rng.random()`` draw)."""
        p = self.params
        return sample_array(logits, self.rng.random(), xp, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
