"""The fuzz campaign: every target, and the limits the workers run under."""

from __future__ import annotations

from typing import Any

from tests.fuzz.harness import FAILURES, Report, Target, run_campaign

__all__ = ["FAILURES", "WORKER_LIMITS", "all_targets", "run"]

#: loom.limits in the workers: small budgets, so that what the budgets allow fits the
#: worker's memory cap and time limit many times over (the defaults are 2**27).
WORKER_LIMITS = {
    "max_parameters": 2**21,
    "max_activations": 2**22,
    "template_seconds": 0.25,
    "template_output_chars": 200_000,
    "template_work_chars": 2_000_000,
}


def all_targets() -> list[Target]:
    """Every fuzz target (the LLM ones need the ``gguf`` package and the LLM fixtures)."""
    from tests.fuzz import targets_llm, targets_nn

    return [*targets_nn.TARGETS, *targets_llm.targets()]


def run(targets: list[Target], **options: Any) -> Report:
    """:func:`~tests.fuzz.harness.run_campaign` with the worker limits of the suite."""
    options.setdefault("limits", WORKER_LIMITS)
    options.setdefault("case_seconds", 10.0)
    options.setdefault("memory_mb", 1024)
    return run_campaign(targets, **options)
