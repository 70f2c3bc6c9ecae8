"""The fuzz harness itself: every category is reached by a case built to reach it."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from loom.errors import ConfigError, ShapeError
from tests.fuzz.harness import Expect, Outcome, Target, run_campaign

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the harness needs POSIX signals")


def _cases(seed: int, count: int):
    return iter(range(count))


def _target(name: str, run, count: int = 4) -> Target:
    return Target(name, "harness", _cases, run, Expect((ConfigError,), r"layers\[\d+\]"), count)


def _raise(exc: BaseException):
    def run(i: int):
        raise exc

    return run


def _block_alarm_and_spin(i: int):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # nothing can interrupt it: the parent must kill
    while True:
        pass


def _die(i: int):
    if i == 1:
        os._exit(3)
    return Outcome([np.zeros(2)])


def _spin(i: int):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass


TARGETS = [
    _target("fine", lambda i: Outcome([np.ones(3)])),
    _target("expected error", _raise(ConfigError("layers[2].size: expected 3, got 4"))),
    _target("wrong type", _raise(ShapeError("layers[2]: expected 3 values, got 4"))),
    _target("vague message", _raise(ConfigError("layers[2] is broken"))),
    _target("type error", _raise(TypeError("unsupported operand"))),
    _target("silent nan", lambda i: Outcome([np.array([1.0, np.nan])], moderate=True)),
    _target("overflow", lambda i: Outcome([np.array([np.inf])], moderate=False)),
    _target("memory", lambda i: Outcome([np.ones(2**31, np.float32)]), count=2),
    _target("slow", _spin, count=2),
    _target("stuck", _block_alarm_and_spin, count=1),
    _target("dies", _die, count=3),
]


def test_every_category_is_detected() -> None:
    report = run_campaign(TARGETS, workers=2, case_seconds=0.5, memory_mb=512)
    counts = {name: dict(counter) for name, counter in report.counts.items()}
    assert counts["fine"] == {"ok": 4}
    assert counts["expected error"] == {"LoomError": 4}
    assert counts["wrong type"] == {"bad message": 4}
    assert counts["vague message"] == {"bad message": 4}
    assert counts["type error"] == {"other exception": 4}
    assert counts["silent nan"] == {"silent non-finite": 4}
    assert counts["overflow"] == {"extreme overflow": 4}
    assert counts["memory"] == {"over memory": 2}
    assert counts["slow"] == {"over time": 2}
    assert counts["stuck"] == {"over time": 1}
    assert counts["dies"] == {"ok": 2, "other exception": 1}
    assert report.total() == 4 * 7 + 2 + 2 + 1 + 3 == 36
    assert report.failures() == {
        "bad message": 8,
        "other exception": 5,
        "silent non-finite": 4,
        "over time": 3,
        "over memory": 2,
    }
    table = report.table(TARGETS)
    assert table.splitlines()[2].startswith("| harness | 36 ")
    assert "killed after 3x the case time limit" in report.details()
    assert "worker died (exit code 3)" in report.details()
