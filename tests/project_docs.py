"""The project's documentation as the tests read it: ``README.md`` and ``docs/*.md``.

Tests that hold a document to the code (the configuration table equals what the
settings generate, the dead-letter reasons the replayer writes, every alert's runbook
anchor) find the text through here, so moving a section between the README and
``docs/`` changes one place, and a failure names the file to fix.

Anchors are GitHub's: the heading lowercased, punctuation dropped, spaces made hyphens
(``## Runbook: DalloshWorkerDown`` -> ``#runbook-dalloshworkerdown``), which is what a
``runbook_url`` or a ``[link](file.md#anchor)`` must name.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = "README.md"
RUNBOOKS = "docs/runbooks.md"  # where every alert's runbook_url points

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def doc_files() -> list[str]:
    """README.md and every docs/*.md, as paths relative to the repository root."""
    return [README] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))


def read_doc(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every heading outside code blocks (a `# comment` in a shell
    block is not a heading)."""
    prose = _FENCE.sub("", text)
    return [(len(m.group(1)), m.group(2)) for m in _HEADING.finditer(prose)]


def anchors(relative: str) -> set[str]:
    return {github_anchor(title) for _, title in headings(read_doc(relative))}


def section(relative: str, title_start: str) -> str:
    """The text under the first heading of ``relative`` whose title starts with
    ``title_start``, up to the next heading of the same or a higher level."""
    text = read_doc(relative)
    lines = text.splitlines(keepends=True)
    start = level = None
    in_fence = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if not match:
            continue
        if start is None and match.group(2).startswith(title_start):
            start, level = i + 1, len(match.group(1))
        elif start is not None and len(match.group(1)) <= level:
            return "".join(lines[start:i])
    if start is None:
        raise AssertionError(f"{relative} has no heading starting with {title_start!r}")
    return "".join(lines[start:])
