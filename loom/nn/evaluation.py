"""LOOM's evaluation metric: per-sample deviation, 7 buckets and a 0-100 score.

Each sample runs alone (batch size 1); the prediction is the argmax of the
output (its single value for a one-output network). Deviation is
``|actual - expected| / |expected| * 100`` (``* 100`` without the division when
``expected`` is 0); the score is the mean of ``max(0, 100 - deviation)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loom.backend import to_numpy
from loom.errors import ShapeError

__all__ = ["BUCKETS", "DeviationMetrics", "PredictionResult", "evaluate_network", "evaluate_predictions"]

#: Bucket name -> (range_min, range_max), in LOOM's order.
BUCKETS: dict[str, tuple[float, float]] = {
    "0-10%": (0.0, 10.0),
    "10-20%": (10.0, 20.0),
    "20-30%": (20.0, 30.0),
    "30-40%": (30.0, 40.0),
    "40-50%": (40.0, 50.0),
    "50-100%": (50.0, 100.0),
    "100%+": (100.0, math.inf),
}


def _bucket_of(deviation: float) -> str:
    for name, (_, upper) in BUCKETS.items():
        if deviation <= upper:
            return name
    return "100%+"


def _sanitise(value: float) -> float:
    if math.isnan(value):
        return 0.0
    if math.isinf(value):
        return 1e9 if value > 0 else -1e9
    return value


@dataclass
class PredictionResult:
    """One evaluated sample."""

    sample_index: int
    expected: float
    actual: float
    deviation: float
    bucket: str

    def to_dict(self) -> dict[str, Any]:
        """LOOM's JSON keys."""
        return {
            "sample_index": self.sample_index,
            "expected": self.expected,
            "actual": self.actual,
            "deviation": self.deviation,
            "bucket": self.bucket,
        }


@dataclass
class DeviationMetrics:
    """LOOM's ``DeviationMetrics``: buckets, score (0-100), average deviation, failures."""

    score: float = 0.0
    avg_deviation: float = 0.0
    total_samples: int = 0
    failures: int = 0
    buckets: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            name: {"range_min": lo, "range_max": hi, "count": 0, "samples": []} for name, (lo, hi) in BUCKETS.items()
        }
    )
    results: list[PredictionResult] = field(default_factory=list)

    def add(self, index: int, expected: float, actual: float) -> PredictionResult:
        """Score one prediction (LOOM's ``EvaluatePrediction`` + ``UpdateMetrics``)."""
        if abs(expected) < 1e-10:
            deviation = abs(actual - expected) * 100.0
        else:
            deviation = abs((actual - expected) / expected * 100.0)
        if not math.isfinite(deviation):
            deviation = 100.0
        bucket = _bucket_of(deviation)
        entry = self.buckets[bucket]
        entry["count"] += 1
        entry["samples"].append(index)
        self.total_samples += 1
        if bucket == "100%+":
            self.failures += 1
        result = PredictionResult(index, expected, actual, deviation, bucket)
        self.results.append(result)
        return result

    def finalize(self) -> DeviationMetrics:
        """Compute ``score`` and ``avg_deviation`` (LOOM's ``ComputeFinalMetrics``)."""
        if self.total_samples == 0:
            self.score, self.avg_deviation = 0.0, 0.0
            return self
        score_sum = sum(max(0.0, 100.0 - r.deviation) for r in self.results)
        self.score = max(0.0, score_sum / self.total_samples)
        self.avg_deviation = sum(r.deviation for r in self.results) / self.total_samples
        return self

    def samples_in_bucket(self, name: str) -> list[int]:
        """Sample indices in a bucket (empty for an unknown name)."""
        return list(self.buckets.get(name, {}).get("samples", []))

    def worst_samples(self, n: int) -> list[PredictionResult]:
        """The ``n`` results with the largest deviation."""
        return sorted(self.results, key=lambda r: r.deviation, reverse=True)[:n]

    def to_dict(self) -> dict[str, Any]:
        """LOOM's JSON keys (``buckets`` sorted by name as Go writes them; infinities sanitised)."""
        buckets = {
            name: {
                "range_min": _sanitise(b["range_min"]),
                "range_max": _sanitise(b["range_max"]),
                "count": b["count"],
                "samples": list(b["samples"]),
            }
            for name, b in sorted(self.buckets.items())
        }
        return {
            "buckets": buckets,
            "score": self.score,
            "total_samples": self.total_samples,
            "failures": self.failures,
            "results": [r.to_dict() for r in self.results],
            "avg_deviation": self.avg_deviation,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict())

    def summary(self) -> str:
        """Human-readable bucket histogram (LOOM's ``PrintSummary``)."""
        lines = [
            f"Quality score: {self.score:.2f}/100, average deviation: {self.avg_deviation:.2f}%, "
            f"failures: {self.failures}/{self.total_samples}"
        ]
        for name, b in self.buckets.items():
            pct = 100.0 * b["count"] / self.total_samples if self.total_samples else 0.0
            lines.append(f"  {name:>8}: {b['count']:4d} ({pct:5.1f}%) {'█' * int(pct / 2)}")
        return "\n".join(lines)


def evaluate_predictions(expected: Any, actual: Any) -> DeviationMetrics:
    """Metrics from raw expected / actual values (LOOM's ``EvaluateModel``)."""
    expected = [float(v) for v in expected]
    actual = [float(v) for v in actual]
    if len(expected) != len(actual):
        raise ShapeError(f"mismatched expected ({len(expected)}) vs actual ({len(actual)}) output sizes")
    metrics = DeviationMetrics()
    for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
        metrics.add(i, e, a)
    return metrics.finalize()


def evaluate_network(net: Any, inputs: Any, expected_outputs: Any) -> DeviationMetrics:
    """Evaluate ``net`` one sample at a time (LOOM's ``EvaluateNetwork``).

    Parameters
    ----------
    inputs : sequence of array-like
        One sample per entry (``input_size`` values each).
    expected_outputs : sequence of float
        Expected value per sample (a class index for multi-output networks).

    The network's recorded forward state (used by ``backward``) is left untouched.
    """
    inputs = list(inputs) if not hasattr(inputs, "shape") else [inputs[i] for i in range(inputs.shape[0])]
    expected = [
        float(v)
        for v in (to_numpy(expected_outputs).reshape(-1) if hasattr(expected_outputs, "shape") else expected_outputs)
    ]
    if len(inputs) != len(expected):
        raise ShapeError(f"mismatched inputs ({len(inputs)}) vs expected outputs ({len(expected)})")
    metrics = DeviationMetrics()
    with net.tape_preserved():
        for i, sample in enumerate(inputs):
            x, _, _ = net.prepare_input(sample)
            y = to_numpy(net.forward_tape(x.reshape(-1), 1)).reshape(-1)
            if y.size == 0:
                raise ShapeError(f"inputs[{i}]: the network produced an empty output")
            actual = float(y[0]) if y.size == 1 else float(np.argmax(y))
            metrics.add(i, expected[i], actual)
    return metrics.finalize()
