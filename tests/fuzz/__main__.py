"""Run the fuzz campaign from the command line: ``python -m tests.fuzz [--scale N] [--seed S] [--only NAME]``.

``nox -s fuzz`` runs it at a larger scale than CI. Prints the per-area table and the
failure samples; exits 1 when a case is in a failure category.
"""

from __future__ import annotations

import argparse
import sys

from tests.fuzz.campaign import FAILURES, all_targets, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every target's case count (CI: 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (same seed, same cases)")
    parser.add_argument("--only", action="append", default=[], help="run only targets whose name contains this")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    targets = [t for t in all_targets() if not args.only or any(o in t.name for o in args.only)]
    report = run(targets, scale=args.scale, seed=args.seed, workers=args.workers)
    print(report.table(targets))
    print(f"{report.total()} cases in {report.seconds:.1f} s")
    print(report.details())
    return 1 if any(report.failures()[c] for c in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
