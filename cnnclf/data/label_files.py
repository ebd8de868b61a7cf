"""Label files: images listed with their labels in a CSV or JSON Lines file, not sorted into
class folders (medical sets, Kaggle competitions and labelling tools ship them this way).

Reading is plain Python, streamed row by row, so a bad file is reported before TensorFlow's
slow import and a 100,000-row file parses in a fraction of a second. The parser only reads the
label file; whether the images it names exist is `existing_rows`' question, so check-data and
training can decide what a missing image means (a problem line, a skip with a count).

Each problem is one `LabelIssue` naming the file, the row (CSV: 1-based data row, the header
not counted; JSON Lines: the line number) and what is wrong. `fatal` issues would train the
wrong thing, so `train` stops on them; the rest (a path listed twice with the same labels) are
warnings.

Example:
    labels = read_label_file("labels/train.csv", "data.train_dir")
    labels.class_names  # ['cat', 'dog']
    [str(i) for i in labels.issues]  # ['labels/train.csv: row 7: empty label cell (column label)']
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

from cnnclf.data.listing import not_regular_reason
from cnnclf.errors import DataError

LABEL_FILE_SUFFIXES = (".csv", ".jsonl")
# The path column's accepted names, in order of preference (matched case-insensitively).
PATH_COLUMNS = ("path", "image", "file", "filename")
FORMS = ("label", "labels", "one-hot")
# A label file this large is a mistake (an image archive renamed, say), not a list of images:
# 1 GiB holds some ten million rows.
MAX_LABEL_FILE_BYTES = 1 << 30
# One JSON Lines record; a longer line is reported as malformed without being read whole.
MAX_LINE_CHARS = 1 << 20
# What `labels` separates class names with; a class name in that column cannot contain it.
LABELS_SEPARATOR = "space"


def is_label_file(path: str | os.PathLike[str] | None) -> bool:
    """Whether `path` names a label file (by its extension), rather than a class-folder tree."""
    return path is not None and str(path).lower().endswith(LABEL_FILE_SUFFIXES)


@dataclass(frozen=True)
class LabelIssue:
    """One problem in a label file; `str()` is the one line check-data and train print."""

    file: str
    where: str  # "row 3" (CSV data row), "line 7" (JSON Lines) or "header"
    problem: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.problem}"


@dataclass(frozen=True)
class LabelRow:
    path: str  # the label file's entry joined to its folder (unless absolute), normalised
    labels: tuple[str, ...]
    where: str


@dataclass
class LabelFile:
    """A parsed label file: its rows (one per image, duplicates dropped) and its problems."""

    file: str
    form: str  # one of FORMS: a `label` column (or key), `labels`, or one 0/1 column per class
    rows: list[LabelRow] = field(default_factory=list)
    issues: list[LabelIssue] = field(default_factory=list)
    class_columns: tuple[str, ...] = ()  # one-hot: the class columns, as in the header

    @property
    def class_names(self) -> list[str]:
        """Sorted, as class folder names are: the same file always gives the same indices."""
        if self.form == "one-hot":
            return sorted(self.class_columns)
        return sorted({label for row in self.rows for label in row.labels})

    @property
    def fatal(self) -> list[LabelIssue]:
        return [issue for issue in self.issues if issue.fatal]

    def multi_label_row(self) -> LabelRow | None:
        """The first row with other than exactly one label: it makes the file multi-label."""
        return next((row for row in self.rows if len(row.labels) != 1), None)

    def describe(self, row: LabelRow) -> str:
        """'row 4 has 2 labels (a, b)' / 'row 4 has no label', for messages."""
        if not row.labels:
            return f"{row.where} has no label"
        return f"{row.where} has {len(row.labels)} labels ({', '.join(row.labels)})"

    def source(self) -> dict:
        """Where the labels came from, as bundle.json and check-data record it: the file (its
        SHA-256 says whether it changed since), how it was read, and the images it lists."""
        try:
            with open(self.file, "rb") as f:
                digest: str | None = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            digest = None
        return {
            "file": os.path.abspath(self.file),
            "format": _format(self.file),
            "form": self.form,
            "rows": len(self.rows),
            "sha256": digest,
        }


def read_label_file(path: str | os.PathLike[str], key: str) -> LabelFile:
    """Parses a CSV or JSON Lines label file; row problems become `LabelFile.issues`.

    Args:
        path: a `.csv` (with a header) or `.jsonl` file.
        key: what names it in errors (`data.train_dir`, `DATA_DIR`).

    Returns:
        The rows, paths joined to the file's folder, each path once.

    Raises:
        DataError: one line, for a file that cannot be read at all (missing, too large, not
            UTF-8) or whose header has no path column or no label column.
    """
    file = os.fspath(path)
    try:
        size = os.stat(file).st_size
        if size > MAX_LABEL_FILE_BYTES:
            raise DataError(
                f"{key}: {file} is {size / 2**30:.1f} GiB, more than the "
                f"{MAX_LABEL_FILE_BYTES >> 30} GiB a label file may be; split it"
            )
        # utf-8-sig: spreadsheets write a byte-order mark before the header.
        with open(file, encoding="utf-8-sig", newline="") as f:
            if file.lower().endswith(".jsonl"):
                return _read_jsonl(f, file, key)
            return _read_csv(f, file, key)
    except FileNotFoundError:
        raise DataError(f"{key}: label file {file} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{key}: {file} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save it "
            "as UTF-8 (CSV UTF-8 in a spreadsheet)"
        ) from None
    except IsADirectoryError:
        raise DataError(f"{key}: {file} is a folder; a label file ends in .csv or .jsonl") from None
    except OSError as exc:
        raise DataError(f"{key}: {file} cannot be read ({exc.strerror or exc})") from None


def _read_csv(f: io.TextIOBase, file: str, key: str) -> LabelFile:
    reader = csv.reader(f)
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise DataError(f"{key}: {file}: header: cannot be read as CSV ({exc})") from None
    path_col, form, columns = _header_layout(header, file, key)
    found = _Rows(file)
    number = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number += 1
            found.issue(f"row {number}", f"malformed row ({exc})")
            continue
        number += 1
        where = f"row {number}"
        if not any(cell.strip() for cell in fields):
            continue  # a blank row: counted, so row numbers stay those of the file
        if len(fields) != len(header):
            found.issue(where, f"malformed row: {len(fields)} fields, the header has {len(header)}")
            continue
        labels = _csv_labels(fields, header, form, columns, found, where)
        if labels is not None:
            found.add(fields[path_col], labels, where)
    return found.result(form, tuple(header[c] for c in columns) if form == "one-hot" else ())


def _header_layout(header: list[str], file: str, key: str) -> tuple[int, str, list[int]]:
    """(path column, form, label columns) from a CSV header; DataError when it has none."""
    lower = [name.lower() for name in header]
    if not any(header):
        raise DataError(f"{key}: {file} is empty; it needs a header row such as path,label")
    repeated = sorted({name for name in lower if name and lower.count(name) > 1})
    if repeated:
        raise DataError(f"{key}: {file}: header: column {repeated[0]} appears twice")
    path_col = next((lower.index(name) for name in PATH_COLUMNS if name in lower), None)
    if path_col is None:
        raise DataError(
            f"{key}: {file}: header: no path column ({', '.join(PATH_COLUMNS)}); the header "
            f"is {','.join(header)}"
        )
    if "label" in lower and "labels" in lower:
        raise DataError(f"{key}: {file}: header: has both label and labels; keep one")
    for form in ("label", "labels"):
        if form in lower:
            return path_col, form, [lower.index(form)]
    columns = [i for i, name in enumerate(header) if i != path_col and name]
    if not columns:
        raise DataError(
            f"{key}: {file}: header: no label column: give a label column (one class per "
            "row), a labels column (classes separated by spaces) or one 0/1 column per class"
        )
    return path_col, "one-hot", columns


def _csv_labels(fields, header, form, columns, found, where) -> tuple[str, ...] | None:
    """A row's labels, or None (with the issue recorded) when a cell is unusable."""
    if form == "label":
        label = fields[columns[0]].strip()
        if not label:
            found.issue(where, f"empty label cell (column {header[columns[0]]})")
            return None
        return (label,)
    if form == "labels":
        # Empty: an image with no label (multi-label data has them).
        return tuple(dict.fromkeys(fields[columns[0]].split()))
    labels = []
    for c in columns:
        value = _zero_or_one(fields[c])
        if value is None:
            found.issue(where, f"column {header[c]}: {_one_hot_problem(fields[c])}")
            return None
        if value:
            labels.append(header[c])
    return tuple(labels)


def _zero_or_one(cell: str) -> int | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def _one_hot_problem(cell: str) -> str:
    text = cell.strip()
    if not text:
        what = "blank (unknown)"
    elif _number(text) == -1:
        what = f"{text} (uncertain)"
    else:
        what = repr(text[:40])
    return f"{what} is not allowed: a class column holds 0 or 1 (write 0 or 1 in every cell)"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_jsonl(f: io.TextIOBase, file: str, key: str) -> LabelFile:
    found = _Rows(file)
    forms = set()
    number = 0
    while True:
        line = f.readline(MAX_LINE_CHARS)
        if not line:
            break
        number += 1
        where = f"line {number}"
        if len(line) == MAX_LINE_CHARS and not line.endswith("\n"):
            found.issue(where, f"malformed: longer than {MAX_LINE_CHARS} characters")
            while line and not line.endswith("\n"):  # skip the rest of that line
                line = f.readline(MAX_LINE_CHARS)
            continue
        if not line.strip():
            continue
        record = _json_record(line, found, where)
        if record is None:
            continue
        path, labels, form = record
        forms.add(form)
        found.add(path, labels, where)
    return found.result("labels" if "labels" in forms else "label")


def _json_record(line: str, found, where: str) -> tuple[str, tuple[str, ...], str] | None:
    """(path, labels, form) of one JSON Lines record, or None with the issue recorded."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        found.issue(where, f"malformed: not valid JSON ({exc})")
        return None
    if not isinstance(record, dict):
        found.issue(where, 'malformed: not a JSON object like {"path": ..., "label": ...}')
        return None
    path_key = next((k for k in PATH_COLUMNS if k in record), None)
    path = record.get(path_key) if path_key else None
    if not isinstance(path, str) or not path.strip():
        found.issue(where, f"malformed: no path (a {' or '.join(PATH_COLUMNS)} string)")
        return None
    if ("label" in record) == ("labels" in record):
        found.issue(where, 'malformed: give either "label" (one class) or "labels" (a list)')
        return None
    if "label" in record:
        label = _class_name(record["label"])
        if not label:
            found.issue(where, "empty label" if label == "" else "label is not a string")
            return None
        return path, (label,), "label"
    values = record["labels"]
    names = [_class_name(v) for v in values] if isinstance(values, list) else [None]
    if not all(names):
        found.issue(where, "labels must be a list of non-empty strings")
        return None
    return path, tuple(dict.fromkeys(n for n in names if n)), "labels"


def _class_name(value) -> str | None:
    """A class name from JSON: a string (stripped) or an integer; None for anything else."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class _Rows:
    """Rows as they are read: paths joined to the file's folder, each path kept once."""

    def __init__(self, file: str):
        self.file = file
        self.base = os.path.dirname(os.path.abspath(file))
        self.rows: list[LabelRow] = []
        self.issues: list[LabelIssue] = []
        self.first: dict[str, LabelRow] = {}

    def issue(self, where: str, problem: str, fatal: bool = True) -> None:
        self.issues.append(LabelIssue(self.file, where, problem, fatal))

    def add(self, entry: str, labels: tuple[str, ...], where: str) -> None:
        entry = entry.strip()
        if not entry:
            self.issue(where, "malformed row: empty path")
            return
        path = os.path.normpath(os.path.join(self.base, entry))
        row = LabelRow(path, labels, where)
        first = self.first.setdefault(path, row)
        if first is row:
            self.rows.append(row)
        elif set(first.labels) == set(labels):
            self.issue(where, f"{entry} is listed again (as on {first.where}); kept once", False)
        else:
            self.issue(
                where,
                f"{entry} is also on {first.where} with different labels "
                f"({_shown(labels)} here, {_shown(first.labels)} there); keep one row",
            )

    def result(self, form: str, class_columns: tuple[str, ...] = ()) -> LabelFile:
        return LabelFile(self.file, form, self.rows, self.issues, class_columns)


def _shown(labels: tuple[str, ...]) -> str:
    return " ".join(labels) or "no label"


def _format(file: str) -> str:
    return "jsonl" if file.lower().endswith(".jsonl") else "csv"


def unknown_classes(labels: LabelFile, class_names: list[str], of: str) -> list[LabelIssue]:
    """One issue per row of `labels` (a test file) naming a class that `of` (the training
    data, or the model) does not have."""
    known = set(class_names)
    if labels.form == "one-hot":
        extra = sorted(set(labels.class_columns) - known)
        return [
            LabelIssue(labels.file, "header", f"class column {name} is not a class of {of}")
            for name in extra
        ]
    hint = (
        " (labels are separated by spaces, so a class name cannot contain one)"
        if labels.form == "labels"
        else ""
    )
    issues = []
    for row in labels.rows:
        unknown = [label for label in row.labels if label not in known]
        if unknown:
            issues.append(
                LabelIssue(
                    labels.file,
                    row.where,
                    f"class {', '.join(unknown)} is not a class of {of}{hint}",
                )
            )
    return issues


def existing_rows(labels: LabelFile) -> tuple[list[LabelRow], dict[str, str]]:
    """(rows whose image is a regular file, missing path -> reason): what training skips."""
    kept, missing = [], {}
    for row in labels.rows:
        try:
            reason = not_regular_reason(row.path, os.stat(row.path))
        except FileNotFoundError:
            reason = "does not exist"
        except OSError as exc:
            reason = f"cannot be read ({exc.strerror or exc})"
        if reason is None:
            kept.append(row)
        else:
            missing[row.path] = f"listed on {labels.file} {row.where}, but {reason}"
    return kept, missing


def co_occurrence(rows: list[LabelRow], top: int = 10) -> list[tuple[str, str, int]]:
    """The `top` most common pairs of labels on one image, most common first."""
    pairs: Counter[tuple[str, str]] = Counter()
    for row in rows:
        pairs.update(combinations(sorted(row.labels), 2))
    return [(a, b, n) for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))][:top]


def label_counts(rows: list[LabelRow], class_names: list[str]) -> dict[str, int]:
    """Images carrying each class (an image with two labels counts for both)."""
    counts = dict.fromkeys(class_names, 0)
    for row in rows:
        for label in row.labels:
            if label in counts:
                counts[label] += 1
    return counts


def single_label_rows(
    labels: LabelFile, key: str, class_names: list[str] | None, multi_label, skipped: dict
) -> tuple[list[str], list[str], list[int]]:
    """(class names, paths, class indices) of a label file, for `layout.discover`'s `Split`.

    Sorted by class then path, as a folder tree lists them: the order of the rows does not
    change the model, and a CSV of a folder tree trains exactly as the folders do. Missing
    images go to `skipped` (path -> reason) and are counted, as a folder's unreadable entries
    are; problems that would train the wrong thing raise `DataError` naming the first.

    Args:
        labels: from `read_label_file`.
        key: data.train_dir or data.test_dir, for messages.
        class_names: None for the training file; the training classes for a test file.
        multi_label: data.multi_label (auto, True or False).
        skipped: collects the missing images.
    """
    fatal = labels.fatal
    if class_names is not None:
        fatal += unknown_classes(labels, class_names, "data.train_dir")
    if fatal:
        more = f" (and {len(fatal) - 1} more problem(s))" if len(fatal) > 1 else ""
        raise DataError(f"{key}: {fatal[0]}{more}; cnnclf check-data lists them all")
    several = labels.multi_label_row()
    if several is not None:
        raise DataError(_multi_label_message(labels, several, key, multi_label))
    names = class_names or labels.class_names
    if len(names) < 2:
        raise DataError(
            f"{key}: {labels.file} has only one class ({', '.join(names) or 'none'}); a "
            "classifier needs at least two"
        )
    kept, missing = existing_rows(labels)
    skipped.update(missing)
    index = {name: i for i, name in enumerate(names)}
    pairs = sorted((index[row.labels[0]], row.path) for row in kept)
    usable = {label for label, path in pairs if _usable(path)}
    for i, name in enumerate(names):
        if i in usable:
            continue
        listed = sum(1 for row in labels.rows if row.labels == (name,))
        raise DataError(
            f"{key}: class {name} has no usable image in {labels.file}: its {listed} row(s) "
            "name files that are missing, empty or unreadable; fix the paths (cnnclf "
            "check-data lists them)"
            if listed
            else f"{key}: class {name} has no row in {labels.file}; every class of "
            "data.train_dir needs images to validate on"
        )
    return names, [path for _, path in pairs], [label for label, _ in pairs]


def is_multi_label(labels: LabelFile, multi_label) -> bool:
    """Whether `labels` trains one sigmoid per class: data.multi_label true, or auto and some
    row has other than exactly one label. A one-hot file with a single 1 per row stays
    single-label under auto, as a `label` column would."""
    if multi_label is True:
        return True
    return multi_label == "auto" and labels.multi_label_row() is not None


def multi_label_rows(
    labels: LabelFile, key: str, class_names: list[str] | None, skipped: dict
) -> tuple[list[str], list[str], list[tuple[int, ...]]]:
    """(class names, paths, class-index tuples) of a multi-label file, sorted by path.

    An image may have no label (a scan with no finding); a class that no usable image carries
    cannot be learnt, so the training file (`class_names` None) must give each class one.
    Problems and missing images are handled as `single_label_rows` handles them.
    """
    fatal = labels.fatal
    if class_names is not None:
        fatal += unknown_classes(labels, class_names, "data.train_dir")
    if fatal:
        more = f" (and {len(fatal) - 1} more problem(s))" if len(fatal) > 1 else ""
        raise DataError(f"{key}: {fatal[0]}{more}; cnnclf check-data lists them all")
    names = class_names or labels.class_names
    if len(names) < 2 and class_names is None:
        raise DataError(
            f"{key}: {labels.file} has only one class ({', '.join(names) or 'none'}); a "
            "multi-label classifier needs at least two"
        )
    kept, missing = existing_rows(labels)
    skipped.update(missing)
    index = {name: i for i, name in enumerate(names)}
    rows = sorted((row.path, tuple(sorted(index[n] for n in row.labels))) for row in kept)
    if not rows:
        raise DataError(f"{key}: {labels.file} lists no usable image; fix the paths")
    if class_names is None:
        carried = {i for path, sets in rows if _usable(path) for i in sets}
        for i, name in enumerate(names):
            if i not in carried:
                raise DataError(
                    f"{key}: class {name} is on no usable image in {labels.file}; fix the "
                    "paths of its rows (cnnclf check-data lists them)"
                )
    return names, [path for path, _ in rows], [sets for _, sets in rows]


def _multi_label_message(labels: LabelFile, row: LabelRow, key: str, multi_label) -> str:
    why = (
        "data.multi_label is false"
        if multi_label is False
        else "a test file is read as its training file is, and data.train_dir is single-label"
    )
    hint = (
        " (the labels column separates classes by spaces: a class name cannot contain one)"
        if labels.form == "labels" and row.labels
        else ""
    )
    return (
        f"{key}: {labels.file}: {labels.describe(row)}: {why}; give each image exactly one "
        f"label{hint}"
    )


def _usable(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0 and os.access(path, os.R_OK)
    except OSError:
        return False
