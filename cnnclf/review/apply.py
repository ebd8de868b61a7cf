"""`cnnclf review --apply decisions.csv`: a person's decisions applied to the data, undoably.

decisions.csv (what the gallery downloads): a header `path,action,label`, one row per image;
`action` is keep, relabel (to `label`, a class of the review) or remove.

- class folders: a relabelled image moves to its new class folder; a removed one moves to
  `_removed/<split folder>/<class>/` beside the split's folder (inside it, `_removed` would be
  read as a class). Nothing is deleted; a name already taken gets a `-2`, `-3`... suffix.
- label files (CSV, JSON Lines, one `label` per row): a corrected copy is written beside the
  file (`train.reviewed.csv`); the original is untouched. Point data.train_dir at the copy.

The undo log, REVIEW/applied/<digest>.json, is the state machine (rundir.py's pattern):

    PLANNED   the log lists every move, written by one rename before anything moves
    DONE      every move made; the log says so (rewritten by one rename)
    UNDONE    --undo moved everything back; the log is renamed <digest>.undone-<time>.json

A kill between PLANNED and DONE leaves some files moved: `--undo LOG` moves back those that
were (each move is one rename). A decisions file whose digest has a log is refused: the same
decisions are never applied twice. Every bad row is reported as one line naming it, and nothing
moves unless every row is good.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cnnclf.errors import ConfigError, DataError
from cnnclf.training.filesystem import fsync_dir, write_atomically, write_json_atomically

ACTIONS = ("keep", "relabel", "remove")
APPLIED_DIR = "applied"


@dataclass(frozen=True)
class Decision:
    where: str  # "decisions.csv: row 3", for messages
    path: str
    action: str
    label: str


@dataclass
class Plan:
    """What applying does: file moves, and corrected label-file copies to write."""

    moves: list[tuple[str, str]] = field(default_factory=list)
    copies: dict[str, bytes] = field(default_factory=dict)  # new file -> its contents
    lines: list[str] = field(default_factory=list)  # what a dry run prints
    handled: set[str] = field(default_factory=set)  # Decision.where of each row found


def read_decisions(path: Path, class_names: list[str]) -> list[Decision]:
    """The rows that change something (keep rows are dropped), each checked."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--apply {path}: cannot be read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"path", "action"} <= set(reader.fieldnames):
        raise DataError(f"{path}: header must be path,action,label (got {reader.fieldnames})")
    decisions = []
    for number, row in enumerate(reader, start=1):
        where = f"{path}: row {number}"
        image, action = (row.get("path") or "").strip(), (row.get("action") or "").strip()
        label = (row.get("label") or "").strip()
        if not image:
            raise DataError(f"{where}: empty path")
        if action not in ACTIONS:
            raise DataError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
        if action == "relabel" and label not in class_names:
            raise DataError(
                f"{where}: {label!r} is not a class of this review "
                f"(classes: {', '.join(class_names)})"
            )
        if action != "keep":
            decisions.append(Decision(where, os.path.abspath(image), action, label))
    return decisions


def plan(decisions: list[Decision], review_plan: dict) -> Plan:
    """Where each decided image goes, checked against the data as it is now."""
    result = Plan()
    for key in ("train_dir", "test_dir"):
        root = review_plan.get(key)
        if root is None:
            continue
        mine = [d for d in decisions if _belongs(d.path, root)]
        if str(root).lower().endswith((".csv", ".jsonl")):
            _plan_label_file(Path(root), mine, result)
        else:
            _plan_folder(Path(root), mine, result)
    for decision in decisions:
        if decision.where not in result.handled:
            raise DataError(
                f"{decision.where}: {decision.path} is not an image of this review's data"
            )
    return result


def _belongs(path: str, root: str) -> bool:
    if str(root).lower().endswith((".csv", ".jsonl")):
        return True  # decided by the file's rows
    return path.startswith(os.path.abspath(root) + os.sep)


def _plan_folder(root: Path, decisions: list[Decision], result: Plan) -> None:
    taken: set[str] = set()
    for d in decisions:
        source = Path(d.path)
        if not source.is_file():
            raise DataError(f"{d.where}: {d.path} does not exist (moved or applied already?)")
        given = source.relative_to(os.path.abspath(root)).parts[0]
        result.handled.add(d.where)
        if d.action == "relabel":
            if d.label == given:
                continue
            folder = root / d.label
        else:
            folder = root.parent / "_removed" / root.name / given
        target = _free_name(folder / source.name, taken)
        taken.add(str(target))
        result.moves.append((str(source), str(target)))
        result.lines.append(f"{d.where}: move {source} -> {target}")


def _free_name(target: Path, taken: set[str]) -> Path:
    candidate, n = target, 1
    while candidate.exists() or str(candidate) in taken:
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


def _plan_label_file(file: Path, decisions: list[Decision], result: Plan) -> None:
    """A corrected copy of a `label`-form CSV or JSON Lines file."""
    from cnnclf.data.label_files import read_label_file

    labels = read_label_file(file, str(file))
    if labels.form != "label":
        raise DataError(
            f"{file}: --apply corrects label files with one `label` column; this one is "
            f"{labels.form!r}: apply the decisions in issues.csv by hand"
        )
    by_path = {d.path: d for d in decisions}
    folder = file.parent
    text = file.read_text(encoding="utf-8-sig")
    out, used = _corrected(file, text, folder, by_path)
    for d in decisions:
        if d.path in used:
            result.handled.add(d.where)
            what = "remove the row" if d.action == "remove" else f"relabel to {d.label}"
            result.lines.append(f"{d.where}: {what} of {d.path} in {file}")
    if used:
        copy = file.with_name(f"{file.stem}.reviewed{file.suffix}")
        result.copies[str(copy)] = out.encode("utf-8")
        result.lines.append(f"write {copy} (the corrected copy of {file})")


def _corrected(file: Path, text: str, folder: Path, by_path: dict) -> tuple[str, set[str]]:
    used: set[str] = set()

    def full(entry: str) -> str:
        return os.path.abspath(os.path.join(folder, os.path.expanduser(entry)))

    if file.suffix.lower() == ".jsonl":
        lines = []
        for line in text.splitlines():
            record = json.loads(line) if line.strip() else None
            key = next(
                (k for k in ("path", "image", "file", "filename") if record and k in record), None
            )
            d = by_path.get(full(str(record[key]))) if key and record else None
            if d is None:
                lines.append(line)
                continue
            used.add(d.path)
            if d.action == "relabel" and record is not None:
                record["label"] = d.label
                lines.append(json.dumps(record))
        return "\n".join(lines) + "\n", used
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip().lower() for h in rows[0]]
    column = next(header.index(k) for k in ("path", "image", "file", "filename") if k in header)
    label_column = header.index("label")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        d = by_path.get(full(row[column].strip())) if len(row) > column else None
        if d is not None:
            used.add(d.path)
            if d.action == "remove":
                continue
            row = list(row)
            row[label_column] = d.label
        writer.writerow(row)
    return buffer.getvalue(), used


def log_path(review_folder: Path, decisions_file: Path) -> Path:
    digest = hashlib.sha256(Path(decisions_file).read_bytes()).hexdigest()[:16]
    return Path(review_folder) / APPLIED_DIR / f"{digest}.json"


def refuse_applied(review_folder: Path, decisions_file: Path) -> Path:
    """The undo log these decisions would get; raises DataError if it exists already."""
    log = log_path(review_folder, decisions_file)
    if log.exists():
        raise DataError(
            f"--apply {decisions_file}: already applied (undo log {log}); "
            f"to undo it: cnnclf review --undo {log}"
        )
    return log


def apply(review_folder: Path, decisions_file: Path, the_plan: Plan) -> Path:
    """Writes the undo log, then moves and writes; returns the log's path.

    Raises:
        DataError: these decisions were applied already (their log exists).
    """
    log = refuse_applied(review_folder, decisions_file)
    log.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "decisions": str(Path(decisions_file).resolve()),
        "state": "planned",
        "moves": the_plan.moves,
        "created": list(the_plan.copies),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json_atomically(log, record)
    fsync_dir(log.parent)
    for source, target in the_plan.moves:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    for copy, data in the_plan.copies.items():
        write_atomically(Path(copy), lambda f, data=data: f.write(data))
    write_json_atomically(log, {**record, "state": "done"})
    return log


def undo(log: Path) -> list[str]:
    """Moves everything `log` moved back, removes the copies it wrote; returns what it did."""
    try:
        record = json.loads(Path(log).read_text(encoding="utf-8"))
        moves, created = record["moves"], record["created"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--undo {log}: not a review undo log ({exc})") from None
    for source, target in moves:
        if not Path(target).exists() and not Path(source).exists():
            raise DataError(
                f"--undo {log}: {target} is gone and {source} is not back; nothing moved"
            )
        if Path(target).exists() and Path(source).exists():
            raise DataError(f"--undo {log}: both {source} and {target} exist; nothing moved")
    done = []
    for source, target in reversed(moves):
        if Path(target).exists():
            Path(source).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, source)
            done.append(f"move {target} -> {source}")
    for copy in created:
        if Path(copy).exists():
            os.unlink(copy)
            done.append(f"remove {copy}")
    Path(log).rename(
        Path(log).with_name(f"{Path(log).stem}.undone-{time.strftime('%Y%m%d-%H%M%S')}.json")
    )
    return done
