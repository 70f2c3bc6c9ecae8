"""The fuzz campaign in CI: >= 10,000 generated cases, zero failures of any kind.

Every target declares the error types and the message start its failures must carry
(``Expect``), and every message must say what was expected or wrong, so every error of
the campaign is asserted on. ``nox -s fuzz`` runs a longer campaign (``--scale``).
"""

from __future__ import annotations

import signal

import pytest

from tests.fuzz.campaign import all_targets, run

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the harness needs POSIX signals")


def test_fuzz_campaign(capsys: pytest.CaptureFixture[str], shared_dir) -> None:
    targets = all_targets()
    report = run(targets)
    table = report.table(targets)
    with capsys.disabled():
        print(f"\nfuzz campaign: {report.total()} cases in {report.seconds:.1f} s\n{table}")
    assert report.total() >= 10_000
    assert report.failures() == dict.fromkeys(report.failures(), 0), f"{table}\n{report.details()}"
    areas = {t.area for t in targets}
    assert {"network configs", "bundles", "training", "forward inputs", "LLM files", "chat templates"} <= areas
    for target in targets:  # no target is vacuous: each reaches both outcomes
        counts = report.counts[target.name]
        assert counts["LoomError"] > 0 and counts["ok"] + counts["extreme overflow"] > 0, (target.name, counts)
