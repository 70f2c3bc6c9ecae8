"""References to the design documents resolve: every ``differences-from-go.md#anchor`` names a
section of ``docs/differences-from-go.md``, and no text cites numbered decisions (``Q6``,
``decisions Q11``, ``spec Q7``) of a document that is not in the repository.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIFFERENCES = ROOT / "docs" / "differences-from-go.md"
SCANNED = ("loom/**/*.py", "tests/**/*.py", "examples/**/*.py", "bench/**/*.py", "docs/*.md", "*.md")

ANCHOR_REFERENCE = re.compile(r"differences-from-go\.md#([\w-]+)")
#: ``Q12``, ``Q28-Q33`` (not GGUF's ``Q4_0`` / ``Q6_K`` quantisation names) and ``decisions.md``.
NUMBERED_DECISION = re.compile(r"(?<![\w/])Q\d+(?:[-–]Q\d+)?(?![\w])|\bdecisions\.md\b")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading.strip().lower())
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def section_anchors(markdown: str) -> set[str]:
    """Anchors of every heading of a Markdown text (repeated headings get ``-1``, ``-2``, ... as on GitHub)."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug, n = github_slug(match.group(1)), 0
            while (slug if n == 0 else f"{slug}-{n}") in anchors:
                n += 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def unresolved_references(text: str, anchors: set[str]) -> list[str]:
    """The anchors of ``text`` that are not in ``anchors`` and its numbered-decision citations."""
    bad = [f"#{a}" for a in ANCHOR_REFERENCE.findall(text) if a not in anchors]
    return bad + NUMBERED_DECISION.findall(text)


def _scanned_files() -> list[Path]:
    files = {p for pattern in SCANNED for p in ROOT.glob(pattern) if ".venv" not in p.parts}
    return sorted(files - {Path(__file__).resolve()})


def test_every_reference_resolves() -> None:
    anchors = section_anchors(DIFFERENCES.read_text(encoding="utf-8"))
    assert {"fixed-on-purpose", "kept-exactly-as-go-forward-semantics", "transformer-inference-loomllm"} <= anchors
    problems, references = [], 0
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8")
        references += len(ANCHOR_REFERENCE.findall(text))
        problems += [f"{path.relative_to(ROOT)}: {ref}" for ref in unresolved_references(text, anchors)]
    assert references >= 8, "the scan found almost no references: is it reading the tree?"
    assert problems == [], "unresolved references:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("see docs/differences-from-go.md#fixed-on-purpose", []),
        ("see docs/differences-from-go.md#layernorm-rows", ["#layernorm-rows"]),
        ("every row (decisions Q12)", ["Q12"]),
        ("as Go (spec Q28–Q33)", ["Q28–Q33"]),
        ("recorded in spec/decisions.md", ["decisions.md"]),
        ("GGUF Q4_0, Q6_K and Q8_0 weights", []),
    ],
)
def test_the_checker_flags_what_does_not_resolve(text: str, found: list[str]) -> None:
    anchors = section_anchors("# Title\n\n## Fixed on purpose\n\n```\n# not a heading\n```\n")
    assert anchors == {"title", "fixed-on-purpose"}
    assert unresolved_references(text, anchors) == found
