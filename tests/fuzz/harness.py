"""Fuzz harness: forked workers with a memory cap and a per-case time limit, and the classification.

A *target* generates cases from a seed and runs one case. Every case ends in exactly
one category:

* ``ok`` - it returned and every output array is finite;
* ``LoomError`` - it raised a :class:`loom.errors.LoomError` of a type the target
  declares, whose message starts with the declared location and says what was wrong;
* ``bad message`` - a LoomError of another type or with a message that does not;
* ``other exception`` - any other exception (or a worker that died);
* ``silent non-finite`` - it returned NaN / inf from inputs and files without extreme
  finite values (see ``mutate.free_of_extremes``): from moderate values, or after
  accepting a NaN / inf it should have rejected;
* ``extreme overflow`` - it returned inf / NaN after valid files with *extreme* finite
  values (1e30 weights, ...): float32 overflow, reported but not a failure;
* ``over time`` - the case passed the per-case limit (``SIGALRM`` in the worker; a
  worker stuck past three times the limit is killed);
* ``over memory`` - a ``MemoryError`` under the worker's address-space cap
  (``resource.setrlimit(RLIMIT_AS)``: the fork's size plus ``memory_mb``).

Workers are forked from the parent (fixtures are loaded once, before the fork) and take
jobs of up to ``CHUNK`` cases from a queue, so two cores stay busy.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import re
import resource
import signal
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loom.errors import LoomError

CATEGORIES = (
    "ok",
    "LoomError",
    "bad message",
    "other exception",
    "silent non-finite",
    "extreme overflow",
    "over time",
    "over memory",
)
FAILURES = ("bad message", "other exception", "silent non-finite", "over time", "over memory")
CHUNK = 100
#: What an error message must say besides where: what was expected / what was wrong.
WHAT = re.compile(
    r"expected|got |must |required|missing|unknown|invalid|exceeds|more than|mismatch|does not|cannot|"
    r"outside|not allowed|unsupported|needs|diverged|out of|not a |no such|too |runs? past|deadline|limit|"
    r"not found|not supported|failed",
    re.IGNORECASE,
)


class CaseTimeout(BaseException):
    """Raised in a worker by SIGALRM when a case passes the per-case time limit."""


@dataclass(frozen=True)
class Expect:
    """The errors a target's cases may raise: types and a regex the message must start with."""

    types: tuple[type[LoomError], ...]
    where: str


@dataclass
class Outcome:
    """What a case returned: arrays that must be finite, and whether its inputs were free of extremes."""

    arrays: list[Any] = field(default_factory=list)
    moderate: bool = True


@dataclass
class Target:
    """A fuzz target: ``cases(seed, count)`` yields payloads, ``run(payload)`` runs one."""

    name: str
    area: str
    cases: Callable[[int, int], Iterator[Any]]
    run: Callable[[Any], Outcome | None]
    expect: Expect
    count: int


@dataclass
class Report:
    """Counts per target and category, failure samples, time."""

    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    error_types: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    samples: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0

    def add(self, target: str, category: str, detail: str | None) -> None:
        self.counts[target][category] += 1
        if detail and category != "ok":
            if category in ("LoomError", "other exception", "bad message"):
                self.error_types[target][detail.split(":", 1)[0]] += 1
            if category in FAILURES or category == "extreme overflow":
                bucket = self.samples[(target, category)]
                if len(bucket) < 5:
                    bucket.append(detail)

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def failures(self) -> dict[str, int]:
        return {cat: sum(c[cat] for c in self.counts.values()) for cat in FAILURES}

    def table(self, targets: list[Target]) -> str:
        areas: dict[str, Counter] = defaultdict(Counter)
        for target in targets:
            areas[target.area].update(self.counts[target.name])
        header = ("area", "cases", *CATEGORIES)
        rows = [header]
        for area, counter in areas.items():
            rows.append((area, str(sum(counter.values())), *(str(counter[c]) for c in CATEGORIES)))
        total = Counter()
        for counter in areas.values():
            total.update(counter)
        rows.append(("total", str(sum(total.values())), *(str(total[c]) for c in CATEGORIES)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    def details(self) -> str:
        lines = []
        for target, counter in self.error_types.items():
            lines.append(f"{target}: " + ", ".join(f"{k} {v}" for k, v in counter.most_common()))
        for (target, category), samples in self.samples.items():
            lines.append(f"-- {target} / {category}:")
            lines.extend(f"   {s}" for s in samples)
        return "\n".join(lines)


# ------------------------------------------------------------------ classification (in the worker)
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _finite(array: Any) -> bool:
    values = np.asarray(array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else array)
    return values.dtype.kind not in "fc" or bool(np.all(np.isfinite(values)))


def classify(target: Target, payload: Any) -> tuple[str, str | None]:
    """Run one case and return ``(category, detail)``."""
    try:
        outcome = target.run(payload)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        chain = list(_chain(exc))
        message = f"{type(exc).__name__}: {exc}"[:400]
        where = f" <- {repr(payload)[:300]}"
        if any(isinstance(e, CaseTimeout) for e in chain):
            return "over time", message + where
        if any(isinstance(e, MemoryError) for e in chain):
            return "over memory", message + where
        if isinstance(exc, LoomError):
            text = str(exc)
            if isinstance(exc, target.expect.types) and re.match(target.expect.where, text) and WHAT.search(text):
                return "LoomError", message
            return "bad message", message + where
        return "other exception", message + where
    if outcome is None:
        return "ok", None
    if all(_finite(a) for a in outcome.arrays):
        return "ok", None
    category = "silent non-finite" if outcome.moderate else "extreme overflow"
    return category, f"non-finite output <- {repr(payload)[:400]}"


# ------------------------------------------------------------------ workers
def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout("case time limit")


def _cap_memory(extra_mb: int) -> None:
    try:
        with open("/proc/self/statm") as fh:
            virtual = int(fh.read().split()[0]) * resource.getpagesize()
    except OSError:
        return
    limit = virtual + extra_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _worker(slot: int, targets: dict[str, Target], jobs: Any, results: Any, shared: Any, settings: dict) -> None:
    """Take jobs until ``None``; send each case's result at once (``results``: this worker's pipe end)."""
    import warnings

    from threadpoolctl import threadpool_limits

    warnings.simplefilter("ignore")  # overflow casts and unknown-pre-tokenizer notes would flood the log
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the parent may have used its thread pool before the fork
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - verbose training cases print
    started, slot_job, slot_case = shared
    threadpool_limits(1)
    try:
        import loom.limits
    except ImportError:  # measuring a loom without limits (the table of issue #11)
        pass
    else:
        loom.limits.set_limits(**settings["limits"])
    _cap_memory(settings["memory_mb"])
    signal.signal(signal.SIGALRM, _on_alarm)
    case_seconds = settings["case_seconds"]
    while True:
        job = jobs.get()
        if job is None:
            return
        job_id, name, seed, count, skip = job
        target = targets[name]
        slot_job[slot], index = job_id, -1
        try:
            for index, payload in enumerate(target.cases(seed, count)):
                if index < skip:
                    continue
                slot_case[slot] = index
                started[slot] = time.monotonic()
                signal.setitimer(signal.ITIMER_REAL, case_seconds)
                try:
                    category, detail = classify(target, payload)
                except CaseTimeout:  # fired between the case and the classification
                    category, detail = "over time", repr(payload)[:300]
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    started[slot] = 0.0
                results.send((job_id, index, category, detail))
        except BaseException as exc:  # the generator itself failed: report it as the case it was on
            if isinstance(exc, KeyboardInterrupt):
                raise
            results.send((job_id, index + 1, "other exception", f"case generator: {type(exc).__name__}: {exc}"[:400]))
        slot_job[slot] = -1
        results.send((job_id, None, None, None))


@dataclass
class _Job:
    target: str
    seed: int
    count: int


def job_seed(seed: int, name: str, chunk: int) -> int:
    """The seed of one job: the same campaign seed, target and chunk give the same cases."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 10_007 + chunk) % 2**31


def run_campaign(
    targets: list[Target],
    *,
    scale: float = 1.0,
    seed: int = 0,
    workers: int | None = None,
    case_seconds: float = 10.0,
    memory_mb: int = 1024,
    limits: dict[str, Any] | None = None,
) -> Report:
    """Run every target's ``count * scale`` cases on forked workers and return the report.

    Parameters
    ----------
    targets : list of Target
    scale : float
        Multiplies every target's case count (``nox -s fuzz`` runs a larger scale).
    seed : int
        Base seed: the same seed gives the same cases.
    workers : int, optional
        Worker processes (default: the CPU count, at most 4).
    case_seconds : float
        Per-case time limit.
    memory_mb : int
        Address space a worker may add to what it had when forked.
    limits : dict, optional
        ``loom.limits.set_limits`` keywords applied in every worker.
    """
    ctx = mp.get_context("fork")
    workers = workers or max(1, min(os.cpu_count() or 1, 4))
    by_name = {t.name: t for t in targets}
    job_list: list[_Job] = []
    for target in targets:
        total = max(1, round(target.count * scale))
        for chunk, start in enumerate(range(0, total, CHUNK)):
            job_list.append(_Job(target.name, job_seed(seed, target.name, chunk), min(CHUNK, total - start)))
    jobs = ctx.Queue()
    shared = (
        ctx.Array("d", workers, lock=False),
        ctx.Array("i", workers, lock=False),
        ctx.Array("i", workers, lock=False),
    )
    for slot in range(workers):
        shared[1][slot] = -1
    settings = {"limits": limits or {}, "memory_mb": memory_mb, "case_seconds": case_seconds}
    for job_id, job in enumerate(job_list):
        jobs.put((job_id, job.target, job.seed, job.count, 0))

    pipes: list[Any] = [None] * workers

    def spawn(slot: int) -> Any:
        receiver, sender = ctx.Pipe(duplex=False)  # synchronous sends: nothing is lost when a worker dies
        proc = ctx.Process(target=_worker, args=(slot, by_name, jobs, sender, shared, settings), daemon=True)
        proc.start()
        sender.close()
        pipes[slot] = receiver
        return proc

    report = Report()
    begin = time.monotonic()
    procs = [spawn(i) for i in range(workers)]
    remaining = len(job_list)

    def receive(conn: Any) -> None:
        nonlocal remaining
        job_id, index, category, detail = conn.recv()
        if index is None:
            remaining -= 1
        else:
            report.add(job_list[job_id].target, category, detail)

    def replace(slot: int, stuck: bool) -> None:
        """Drain a dead or stuck worker's results, charge its case, requeue the rest of its job, respawn."""
        proc, conn = procs[slot], pipes[slot]
        elapsed = time.monotonic() - started[slot]
        if stuck:
            proc.kill()
        proc.join()
        try:
            while conn.poll():
                receive(conn)
        except (EOFError, OSError):
            pass
        job_id, case = slot_job[slot], slot_case[slot]
        if job_id >= 0:
            job = job_list[job_id]
            reason = (
                f"killed after 3x the case time limit ({elapsed:.1f} s)"
                if stuck
                else f"worker died (exit code {proc.exitcode})"
            )
            report.add(job.target, "over time" if stuck else "other exception", f"{reason} (case {case})")
            jobs.put((job_id, job.target, job.seed, job.count, case + 1))
        started[slot], slot_job[slot] = 0.0, -1
        procs[slot] = spawn(slot)

    started, slot_job, slot_case = shared
    try:
        while remaining:
            ready = mp.connection.wait([p for p, proc in zip(pipes, procs, strict=True) if proc.is_alive()], 0.5)
            for conn in ready:
                with contextlib.suppress(EOFError, OSError):  # a worker that is gone is replaced below
                    receive(conn)
            now = time.monotonic()
            for slot, proc in enumerate(procs):
                since = started[slot]  # read without a lock: a torn value is < begin, a real one is stable
                stuck = since >= begin and now - since > 3 * case_seconds and started[slot] == since
                if stuck or not proc.is_alive():
                    replace(slot, stuck)
    finally:
        for _ in procs:
            jobs.put(None)
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    report.seconds = time.monotonic() - begin
    return report
