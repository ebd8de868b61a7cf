"""`cnnclf review --apply decisions.csv`: a person's decisions applied to the data, undoably.

decisions.csv (what the gallery downloads): a header `path,action,label`, one row per image;
`action` is keep, relabel (to `label`, a class of the review) or remove. In a review of
multi-label data, `label` is the image's whole new set of classes, space-separated
(`effusion atelectasis`; empty for no label). A multi-label review's class names have no
spaces (review/folds.check_column_names refuses them before it starts); a single-label one's
may (`big dog`: its `label` is one class, read whole).

- class folders: a relabelled image moves to its new class folder; a removed one moves to
  `_removed/<split folder>/<class>/` beside the split's folder (inside it, `_removed` would be
  read as a class). Nothing is deleted; a name already taken gets a `-2`, `-3`... suffix.
- label files (CSV or JSON Lines; a `label` column or key, a `labels` column or list, or one
  0/1 column per class): a corrected copy is written beside the file (`train.reviewed.csv`),
  in the file's own form; the original is untouched. Point data.train_dir at the copy. A
  relabel of a row that gives several labels is refused (one line naming the row), unless the
  review is multi-label: the row's labels then become the decided set (a JSON Lines `label`
  key given several becomes a `labels` list; a CSV `label` column, which holds one class, is
  refused for any other number). A copy that exists already is refused: it holds an earlier
  --apply's edits, which a copy made again from the original would silently lose (and that
  apply's --undo would then delete this one's); undo the earlier one first.

The undo log, REVIEW/applied/<digest>.json, is the state machine (rundir.py's pattern):

    PLANNED   the log lists every move, written by one rename before anything moves
    DONE      every move made; the log says so (rewritten by one rename)
    UNDONE    --undo moved everything back; the log is renamed <digest>.undone-<time>.json

The invariant, whenever the process dies (tests/test_review_faults.py kills it at each
APPLY_FAULT_POINTS instant): every file the log lists is at exactly one of its two places, old
or new (each move is one rename), so the log plus the file system say which moves happened;
no file is lost or duplicated; a corrected copy exists whole or not at all (one rename; a
leftover `.NAME.tmp` is the log's too). Before the log exists nothing has moved. After a kill
the same --apply is refused (the log exists, PLANNED); `--undo LOG` puts every file back and
removes what was written, after which the decisions can be applied again. A kill during
--undo leaves the log in place: running --undo again finishes it.

A decisions file whose digest has a log is refused: the same decisions are never applied
twice. Every bad row is reported as one line naming it, and nothing moves unless every row is
good.
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
from cnnclf.review.folds import check_column_names
from cnnclf.training.filesystem import fsync_dir, write_atomically, write_json_atomically
from cnnclf.training.rundir import fault_point

ACTIONS = ("keep", "relabel", "remove")
APPLIED_DIR = "applied"
# Where CNNCLF_FAULT="point[@n]=action" (rundir.fault_point) can stop an --apply or --undo.
APPLY_FAULT_POINTS = (
    "apply.logged",  # the PLANNED log in place, nothing moved yet
    "apply.moved",  # @n: the n-th move made
    "apply.copy_written",  # @n: the n-th corrected copy in place
    "apply.done",  # the log says DONE
    "undo.moved",  # @n: the n-th file moved back
)


@dataclass(frozen=True)
class Decision:
    where: str  # "decisions.csv: row 3", for messages
    path: str
    action: str
    label: str
    # A relabel's classes, in class order (multi-label: possibly several, or none); None:
    # just `label`.
    labels: tuple[str, ...] | None = None
    given: str = field(default="", compare=False)  # the path as the row wrote it, for messages

    @property
    def classes(self) -> tuple[str, ...]:
        if self.labels is not None:
            return self.labels
        return (self.label,) if self.label else ()


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
    return parse_decisions(text, str(path), class_names)


def parse_decisions(text: str, path: str, class_names: list[str]) -> list[Decision]:
    """read_decisions on text already read (serve --review checks a body with it); `path`
    names the rows in messages."""
    return [d for d in parse_rows(text, path, class_names) if d.action != "keep"]


def parse_rows(text: str, path: str, class_names: list[str]) -> list[Decision]:
    """Every row, keep rows too: serve --review checks and saves those as well."""
    reader = csv.DictReader(io.StringIO(text))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:  # e.g. a header field over csv's 131,072-character limit
        raise DataError(f"{path}: header: not readable as CSV ({exc})") from None
    if not fieldnames or not {"path", "action"} <= set(fieldnames):
        raise DataError(f"{path}: header must be path,action,label (got {fieldnames})")
    decisions = []
    first_row: dict[str, int] = {}  # image -> the row that decides it
    for number, row in _numbered(reader, path):
        where = f"{path}: row {number}"
        image, action = (row.get("path") or "").strip(), (row.get("action") or "").strip()
        label = (row.get("label") or "").strip()
        if not image:
            raise DataError(f"{where}: empty path")
        earlier = first_row.setdefault(os.path.abspath(image), number)
        if earlier != number:  # two decisions for one image: which one is meant is a person's call
            raise DataError(
                f"{where}: {image} is decided on row {earlier} already; keep one row per image"
            )
        if action not in ACTIONS:
            raise DataError(f"{where}: action {action!r} is not one of {', '.join(ACTIONS)}")
        labels = _classes(where, label, class_names) if action == "relabel" else None
        decisions.append(Decision(where, os.path.abspath(image), action, label, labels, image))
    return decisions


def _numbered(reader: csv.DictReader, path: str):
    """The reader's rows, numbered from 1; a row csv cannot read (a field over its
    131,072-character limit, say) is one line naming it, not csv.Error's traceback."""
    number = 0
    try:
        for number, row in enumerate(reader, start=1):
            yield number, row
    except csv.Error as exc:
        raise DataError(f"{path}: row {number + 1}: not readable as CSV ({exc})") from None


def _classes(where: str, label: str, class_names: list[str]) -> tuple[str, ...]:
    """A relabel's `label` cell as classes in class order: one class, or (multi-label) a
    space-separated set of them, possibly empty. Whether a set may have other than one class
    is the review's to say (`plan`)."""
    if label in class_names:
        return (label,)
    words = label.split()
    for word in words:
        if word not in class_names:
            within = f" (in {label!r})" if word != label else ""
            raise DataError(
                f"{where}: {word!r}{within} is not a class of this review "
                f"(classes: {', '.join(class_names)})"
            )
    return tuple(name for name in class_names if name in words)


def plan(decisions: list[Decision], review_plan: dict) -> Plan:
    """Where each decided image goes, checked against the data as it is now."""
    result = Plan()
    multi = review_plan.get("multi_label") is True
    if multi:  # a review written before folds.py refused spaced names: its sets are ambiguous
        check_column_names(list(review_plan.get("class_names") or []), review_plan.get("train_dir"))
    for d in decisions:
        if d.action == "relabel" and not multi and len(d.classes) != 1:
            raise DataError(
                f"{d.where}: relabel to {len(d.classes)} classes ({d.label!r}); this review's "
                "data gives each image one class: give one"
            )
    for key in ("train_dir", "test_dir"):
        root = review_plan.get(key)
        if root is None:
            continue
        mine = [d for d in decisions if _belongs(d.path, root)]
        if str(root).lower().endswith((".csv", ".jsonl")):
            _plan_label_file(Path(root), mine, result, multi)
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


def _plan_label_file(file: Path, decisions: list[Decision], result: Plan, multi: bool) -> None:
    """A corrected copy of a CSV or JSON Lines label file, in the file's own form."""
    from cnnclf.data.label_files import read_label_file

    labels = read_label_file(file, str(file))
    by_path = {d.path: d for d in decisions}
    text = file.read_text(encoding="utf-8-sig")
    if file.suffix.lower() == ".jsonl":
        out, used = _corrected_jsonl(file, text, by_path, multi)
    else:
        out, used = _corrected_csv(file, text, by_path, labels.form, multi)
    for d in decisions:
        if d.path in used:
            result.handled.add(d.where)
            new = " ".join(d.classes) or "no label"
            what = "remove the row" if d.action == "remove" else f"relabel to {new}"
            result.lines.append(f"{d.where}: {what} of {d.path} in {file}")
    if used:
        copy = file.with_name(f"{file.stem}.reviewed{file.suffix}")
        result.copies[str(copy)] = out.encode("utf-8")
        result.lines.append(f"write {copy} (the corrected copy of {file})")


def _full(file: Path, entry: str) -> str:
    """An entry's absolute path: label files name images relative to their own folder."""
    return os.path.abspath(os.path.join(file.parent, os.path.expanduser(entry.strip())))


def _single(file: Path, where: str, labels: list[str], d: Decision) -> None:
    """Relabelling replaces the one label a row has; a row with several is a person's call."""
    if d.action == "relabel" and len(labels) > 1:
        raise DataError(
            f"{d.where}: {file} {where} gives {d.path} several labels ({' '.join(labels)}); "
            "--apply relabels single-label rows only: edit that row by hand"
        )


def _new_labels(file: Path, where: str, given: list[str], d: Decision, multi: bool) -> list[str]:
    """The classes a relabelled row gets: the decided set in a multi-label review, else the
    one class (a row that gives several refused)."""
    if multi:
        return list(d.classes)
    _single(file, where, given, d)
    return [d.label]


def _corrected_jsonl(file: Path, text: str, by_path: dict, multi: bool) -> tuple[str, set[str]]:
    """JSON Lines: a relabelled record gets `label` (or a one-element `labels`) = the class;
    multi-label, `labels` = the set (a `label` key given other than one class becomes it)."""
    from cnnclf.data.label_files import PATH_COLUMNS

    used: set[str] = set()
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        record = json.loads(line) if line.strip() else None
        key = next((k for k in PATH_COLUMNS if isinstance(record, dict) and k in record), None)
        d = by_path.get(_full(file, str(record[key]))) if key and record else None
        if d is None or record is None:
            lines.append(line)
            continue
        used.add(d.path)
        if d.action == "remove":
            continue
        given = record.get("labels", [record.get("label")])
        given = [str(label) for label in given] if isinstance(given, list) else []
        new = _new_labels(file, f"line {number}", given, d, multi)
        if "labels" in record or len(new) != 1:
            record.pop("label", None)
            record["labels"] = new
        else:
            record["label"] = new[0]
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n", used


def _corrected_csv(
    file: Path, text: str, by_path: dict, form: str, multi: bool
) -> tuple[str, set[str]]:
    """CSV: a relabelled row's `label` or `labels` cell becomes the class (multi-label: the
    `labels` cell the space-separated set); one-hot rows get a 1 in each new class's column
    and 0 in the others."""
    from cnnclf.data.label_files import PATH_COLUMNS

    used: set[str] = set()
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip().lower() for h in rows[0]]
    column = next(header.index(k) for k in PATH_COLUMNS if k in header)
    # One-hot: class -> column, by the stripped name, as the label reader takes it (`path, left`
    # has a class `left`); the copy keeps the header's own text.
    label_columns = {
        name.strip(): i for i, name in enumerate(rows[0]) if i != column and name.strip()
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(rows[0])
    for number, row in enumerate(rows[1:], start=1):
        d = by_path.get(_full(file, row[column])) if len(row) > column else None
        if d is None:
            writer.writerow(row)
            continue
        used.add(d.path)
        if d.action == "remove":
            continue
        row = list(row)
        if form == "one-hot":
            given = [name for name, i in label_columns.items() if _is_one(row[i])]
            new = _new_labels(file, f"row {number}", given, d, multi)
            for name, i in label_columns.items():
                row[i] = "1" if name in new else "0"
        else:
            cell = header.index(form)
            given = row[cell].split() if form == "labels" else [row[cell]]
            new = _new_labels(file, f"row {number}", given, d, multi)
            if form == "label" and len(new) != 1:
                raise DataError(
                    f"{d.where}: {file} row {number} has a label column, which holds one class; "
                    f"relabel {d.path} to one, or give the file a labels column"
                )
            row[cell] = " ".join(new)
        writer.writerow(row)
    return buffer.getvalue(), used


def _is_one(cell: str) -> bool:
    try:
        return float(cell) == 1.0
    except ValueError:
        return False


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


def refuse_earlier_copies(review_folder: Path, the_plan: Plan) -> None:
    """Raises DataError if a corrected copy the plan would write exists already.

    A copy is made from the original file, so one already there (an earlier --apply's) would
    lose that apply's edits; and undoing this apply, which deletes the copies it wrote, would
    then delete it too. The message names the earlier apply's undo log when this review has it.
    """
    for copy in the_plan.copies:
        if not Path(copy).exists():
            continue
        log = _log_that_wrote(Path(review_folder), copy)
        if log is None:
            raise DataError(
                f"{copy} exists, and no undo log of this review wrote it; move the file away "
                "(or undo the --apply that wrote it) and apply again"
            )
        raise DataError(
            f"{copy} exists from an earlier --apply ({log}); undo that first with "
            f"cnnclf review --undo {log}, or move the file away"
        )


def _log_that_wrote(review_folder: Path, copy: str) -> Path | None:
    """The live (not undone) undo log of this review that lists `copy` as written."""
    for log in sorted((review_folder / APPLIED_DIR).glob("*.json")):
        if ".undone-" in log.name:
            continue
        try:
            created = json.loads(log.read_text(encoding="utf-8")).get("created", [])
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(created, list) and copy in created:
            return log
    return None


def apply(review_folder: Path, decisions_file: Path, the_plan: Plan) -> Path:
    """Writes the undo log, then moves and writes; returns the log's path.

    Raises:
        DataError: these decisions were applied already (their log exists), or a corrected
            copy they would write exists already (refuse_earlier_copies); nothing is written.
    """
    log = refuse_applied(review_folder, decisions_file)
    refuse_earlier_copies(review_folder, the_plan)
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
    fault_point("apply.logged")
    for done, (source, target) in enumerate(the_plan.moves):
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except OSError as exc:  # the log already names every move: --undo takes back the done
            raise DataError(
                f"--apply {decisions_file}: moving {source} failed ({exc.strerror or exc}) after "
                f"{done} of {len(the_plan.moves)} moves; undo them with --undo {log}"
            ) from None
        fault_point("apply.moved")
    for copy, data in the_plan.copies.items():
        write_atomically(Path(copy), lambda f, data=data: f.write(data))
        fault_point("apply.copy_written")
    write_json_atomically(log, {**record, "state": "done"})
    fault_point("apply.done")
    return log


def undo(log: Path) -> list[str]:
    """Moves everything `log` moved back, removes the copies it wrote; returns what it did."""
    try:
        record = json.loads(Path(log).read_text(encoding="utf-8"))
        moves, created = record["moves"], record["created"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--undo {log}: not a review undo log ({exc})") from None
    partial = record.get("state") == "planned"  # stopped midway: some moves never ran
    for source, target in moves:
        if not Path(target).exists() and not Path(source).exists() and not partial:
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
            fault_point("undo.moved")
    for copy in created:
        # The copy, or what a kill left of it under write_atomically's temporary name.
        for path in (Path(copy), Path(copy).with_name(f".{Path(copy).name}.tmp")):
            if path.exists():
                os.unlink(path)
                done.append(f"remove {path}")
    Path(log).rename(
        Path(log).with_name(f"{Path(log).stem}.undone-{time.strftime('%Y%m%d-%H%M%S')}.json")
    )
    return done
