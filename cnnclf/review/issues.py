"""The review's findings: one `Issue` row each, and issues.csv / issues.json.

Rows are ordered as people fix them: label issues first in rank order (most likely wrong
first), then ambiguous images, near duplicates, outliers, and check-data's findings.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cnnclf.training.filesystem import write_atomically

KINDS = ("label", "ambiguous", "near_duplicate", "outlier")
FIELDS = ("path", "label", "suggested", "score", "issue", "split", "detail")


@dataclass(frozen=True)
class Issue:
    """One finding. `score` is 0..1, higher = more likely a real problem; `suggested` is the
    label the models prefer ('' when they have no better one)."""

    path: str
    label: str
    suggested: str
    score: float
    issue: str  # one of KINDS, or a check-data problem kind (duplicate, leakage, unreadable...)
    split: str = "train"
    detail: str = ""

    def to_json(self) -> dict:
        return {**asdict(self), "score": round(self.score, 6)}


def order(issues: list[Issue]) -> list[Issue]:
    """Label issues first, then the other kinds in KINDS order, then check-data's; a stable
    sort, so each kind keeps the rank order it was found in."""
    rank = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(issues, key=lambda issue: rank.get(issue.issue, len(KINDS)))


def write_issues(folder: Path, issues: list[Issue]) -> None:
    """issues.csv and issues.json, each appearing complete by one rename."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for issue in issues:
        writer.writerow(issue.to_json())
    text = buffer.getvalue().encode("utf-8")
    write_atomically(folder / "issues.csv", lambda f: f.write(text))
    data = json.dumps([issue.to_json() for issue in issues], indent=1).encode("utf-8")
    write_atomically(folder / "issues.json", lambda f: f.write(data))


def read_issues(folder: Path) -> list[Issue]:
    rows = json.loads((folder / "issues.json").read_text(encoding="utf-8"))
    return [Issue(**row) for row in rows]
