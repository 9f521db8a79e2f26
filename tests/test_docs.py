"""The documents describe the product as it is: no heading carries a work-in-progress marker."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRESS_MARKER = re.compile(
    r"\((?:done|todo|wip|in progress|planned|pending|next|new)\)|\bTODO\b|\bTBD\b", re.I
)


def test_no_heading_in_the_docs_carries_a_progress_marker() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    marked = [
        f"{document.relative_to(ROOT)}: {line}"
        for document in documents
        for line in document.read_text(encoding="utf-8").splitlines()
        if line.startswith("#") and PROGRESS_MARKER.search(line)
    ]
    assert marked == []
