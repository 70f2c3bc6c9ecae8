"""Small synthetic data sets made with NumPy, for examples, tests and the ``loom dataset`` command.

Examples
--------
>>> x, y = make_moons(1000, noise=0.1, seed=0)
>>> x.shape, x.dtype, sorted(set(y.tolist()))
((1000, 2), dtype('float32'), [0, 1])
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from loom.atomic_files import write_file_atomically
from loom.errors import ConfigError

__all__ = ["DATASETS", "make_moons", "write_csv"]


def make_moons(samples: int = 1000, *, noise: float = 0.1, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (scikit-learn's ``make_moons`` construction), shuffled.

    Parameters
    ----------
    samples : int
        Points in total; the outer moon (class 0) gets ``samples // 2``, the inner one the rest.
    noise : float
        Standard deviation of the Gaussian noise added to every coordinate.
    seed : int, optional
        Seed of ``numpy.random.default_rng`` (shuffle, then noise).

    Returns
    -------
    x : ndarray ``[samples, 2]``, float32
    y : ndarray ``[samples]``, int64
        Class labels 0 (outer moon) and 1 (inner moon).
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ConfigError(f"make_moons.samples: expected an integer >= 2, got {samples!r}")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
        raise ConfigError(f"make_moons.noise: expected a number >= 0, got {noise!r}")
    outer, inner = samples // 2, samples - samples // 2
    t_outer = np.linspace(0.0, np.pi, outer)
    t_inner = np.linspace(0.0, np.pi, inner)
    x = np.concatenate(
        [
            np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1),
            np.stack([1.0 - np.cos(t_inner), 1.0 - np.sin(t_inner) - 0.5], axis=1),
        ]
    )
    y = np.concatenate([np.zeros(outer, dtype=np.int64), np.ones(inner, dtype=np.int64)])
    rng = np.random.default_rng(seed)
    order = rng.permutation(samples)
    x, y = x[order], y[order]
    x = x + rng.normal(scale=noise, size=x.shape)
    return x.astype(np.float32), y


def write_csv(path: str | Path, x: np.ndarray, y: np.ndarray, columns: list[str]) -> Path:
    """Write features ``x [N, F]`` and labels ``y [N]`` as CSV with a header (atomically)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row, label in zip(np.asarray(x, dtype=np.float32).tolist(), y.tolist(), strict=True):
        writer.writerow([*(f"{v:.9g}" for v in row), int(label)])  # 9 digits: float32 round-trips
    target = Path(path)
    write_file_atomically(target, buffer.getvalue().encode("utf-8"))
    return target


#: Data set name -> (maker, CSV column names).
DATASETS = {"moons": (make_moons, ["x1", "x2", "label"])}
