"""Rendering for the terminal or a file: predictions (table, JSON, JSON Lines, CSV), evaluation
reports (table, JSON, Markdown) and check-data reports (table, JSON)."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from cnnclf.data.check_labels import label_file_lines

if TYPE_CHECKING:
    from cnnclf.inference.predict import Prediction


def render(predictions: list[Prediction], fmt: str, class_names: list[str]) -> str:
    """All of `predictions` at once, as `PredictionRows` writes them, without the last newline."""
    multi_label = any(p.labels is not None for p in predictions)
    rows = PredictionRows(fmt, class_names, [p.path for p in predictions], "", multi_label)
    text = rows.begin() + "".join(rows.row(p) for p in predictions) + rows.end()
    return text.rstrip("\n")


class PredictionRows:
    """Predictions rendered one at a time, so `predict` can print each as soon as it is ready.

    Column widths are fixed from what is known before the first prediction: the table's path
    column from every input path, its label column from the class names. A JSON array is
    written element by element (the same text as `json.dumps(list, indent=2)`); `end()` closes
    it, so an interrupted run still leaves a complete array of what was done.

    Args:
        fmt: "table", "json", "jsonl" or "csv".
        class_names: the model's classes, in index order.
        paths: every path that may get a row (sets the table's path column).
        heading: the table's first line, above its header (`model_heading`); tables only.
        multi_label: rows of a multi-label model: each lists its labels (possibly none).

    Example:
        rows = PredictionRows("csv", ["cat", "dog"], paths)
        out.write(rows.begin())
        for p in predictions:
            out.write(rows.row(p))
        out.write(rows.end())
    """

    def __init__(
        self,
        fmt: str,
        class_names: list[str],
        paths: list[str],
        heading: str = "",
        multi_label: bool = False,
    ):
        self.fmt, self.class_names, self.heading = fmt, class_names, heading
        self.count = 0
        self._path_width = max([len("path"), *(len(p) for p in paths)])
        self._label_width = max([len("label"), *(len(c) for c in class_names)])
        self.multi_label = multi_label

    def begin(self) -> str:
        """What comes before the first row: the CSV header (the table's waits for a row)."""
        if self.fmt == "csv" and self.multi_label:
            # labels: space-separated, as a label file's `labels` column takes them back.
            return self._csv(["path", "labels"] + [f"p_{c}" for c in self.class_names])
        if self.fmt == "csv":
            return self._csv(
                ["path", "label", "probability"] + [f"p_{c}" for c in self.class_names]
            )
        return ""

    def row(self, p: Prediction) -> str:
        """One prediction, ending in a newline (with the table's header before the first)."""
        first, self.count = self.count == 0, self.count + 1
        if self.fmt == "json":
            element = "\n".join(
                "  " + line for line in json.dumps(p.to_json(), indent=2).split("\n")
            )
            return ("[\n" if first else ",\n") + element
        if self.fmt == "jsonl":
            return json.dumps(p.to_json()) + "\n"
        if p.labels is not None:
            return self._multi_label_row(p, first)
        if self.fmt == "csv":
            return self._csv(
                [p.path, p.label, f"{p.probability:.6f}"]
                + [f"{p.probabilities[c]:.6f}" for c in self.class_names]
            )
        head = ""
        if first:
            head = self.heading + "\n" if self.heading else ""
            head += f"{'path':<{self._path_width}}  {'label':<{self._label_width}}  probability"
            head += ("  top_k" if p.top_k is not None else "") + "\n"
        line = (
            f"{p.path:<{self._path_width}}  {p.label:<{self._label_width}}  {p.probability:<11.2f}"
        )
        if p.top_k is not None:
            line += "  " + ", ".join(f"{t['label']} {t['probability']:.2f}" for t in p.top_k)
        return head + line.rstrip() + "\n"

    def _multi_label_row(self, p: Prediction, first: bool) -> str:
        """CSV: path, labels, p_<class>...; table: path, then each label with its
        probability ('effusion 0.91, atelectasis 0.64'), or '(none)' when no class reaches
        its threshold."""
        assert p.labels is not None  # only called for a multi-label prediction
        if self.fmt == "csv":
            return self._csv(
                [p.path, " ".join(p.labels)]
                + [f"{p.probabilities[c]:.6f}" for c in self.class_names]
            )
        head = ""
        if first:
            head = self.heading + "\n" if self.heading else ""
            head += f"{'path':<{self._path_width}}  labels (probability; over threshold)\n"
        shown = ", ".join(f"{name} {p.probabilities[name]:.2f}" for name in p.labels)
        return head + f"{p.path:<{self._path_width}}  {shown or '(none)'}\n"

    def end(self) -> str:
        """What completes the output after the last row (closes the JSON array)."""
        if self.fmt == "json":
            return "[]\n" if self.count == 0 else "\n]\n"
        return ""

    @staticmethod
    def _csv(values: list[str]) -> str:
        # The writer quotes a field holding a character of its line terminator, so with "\n"
        # alone a file name with a CR went out bare and split the row for every CSV reader:
        # write with "\r\n" (both quoted) and end the row with "\n" as before.
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(values)
        return out.getvalue()[: -len("\r\n")] + "\n"


def model_heading(model_dir, class_names: list[str], newest: bool, shown: int = 8) -> str:
    """The prediction table's first line: which model answered, and what it can answer.

    A model trained on other images still answers with one of its own classes (a brain scan
    labelled "shirt"), so the table opens with the model and its classes where a reader looks
    first; JSON, JSON Lines and CSV stay as they are, for programs.

    Example: `# model runs/demo-20261204-030332 (newest under runs/): classes ankle_boot, sneaker`
    """
    where = " (newest under runs/)" if newest else ""
    names = ", ".join(class_names[:shown])
    if len(class_names) > shown:
        names += f" and {len(class_names) - shown} more"
    return f"# model {model_dir}{where}: classes {names}"


def render_report(report: dict, fmt: str) -> str:
    """An evaluation report as JSON, a terminal table, or Markdown to paste into a document."""
    if fmt == "json":
        return json.dumps(report, indent=2)
    if report.get("multi_label"):
        return _render_multi_label_report(report, fmt == "markdown")
    md = fmt == "markdown"
    names = report["confusion_matrix"]["labels"]
    lines = []

    def table(header, rows):
        if md:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(" --- " for _ in header) + "|")
            lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
        else:
            widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
            for row in [header] + rows:
                lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        lines.append("")

    title = "# Evaluation report" if md else "Evaluation report"
    lines += [title, ""]
    facts = _report_facts(report)
    for key, value in facts:
        lines.append(f"- **{key}**: {value}" if md else f"{key + ':':<11}{value}")
    lines.append("")
    summary = [["accuracy", f"{report['accuracy']:.4f}"]]
    if report.get("roc_auc") is not None:
        label = "ROC AUC" if "threshold" in report else "ROC AUC (one-vs-rest, macro)"
        summary.append([label, f"{report['roc_auc']:.4f}"])
    for key in ("sensitivity", "specificity"):
        if report.get(key) is not None:
            summary.append([key, f"{report[key]:.4f}"])
    summary += _calibration_rows(report)
    table(["metric", "value"], summary)
    rows = [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
        for name, m in report["per_class"].items()
    ]
    for avg in ("macro_avg", "weighted_avg"):
        m = report[avg]
        rows.append(
            [
                avg.replace("_", " "),
                f"{m['precision']:.4f}",
                f"{m['recall']:.4f}",
                f"{m['f1']:.4f}",
                m["support"],
            ]
        )
    table(["class", "precision", "recall", "f1", "support"], rows)
    matrix = report["confusion_matrix"]["matrix"]
    table(["true \\ predicted"] + names, [[n] + row for n, row in zip(names, matrix)])
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    if report.get("plots"):
        lines.append("Plots: " + ", ".join(report["plots"]))
    return "\n".join(lines).rstrip()


def _render_multi_label_report(report: dict, md: bool) -> str:
    """A multi-label report: the summary figures, then one row per class with its
    threshold, precision, recall, F1, AP, AUC and confusion counts."""

    def number(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = ["# Evaluation report" if md else "Evaluation report", ""]
    facts = [
        ("bundle", report["bundle"]),
        ("data", f"{report['data_dir']} ({report['data_source']})"),
        ("images", f"{report['n_images']} (multi-label)"),
    ]
    if report.get("skipped_files"):
        facts.append(("skipped", f"{len(report['skipped_files'])} unreadable file(s)"))
    lines += [f"- **{k}**: {v}" if md else f"{k + ':':<11}{v}" for k, v in facts] + [""]
    cards = report["label_cardinality"]
    summary = [
        ["mAP (macro average precision)", number(report["mean_average_precision"])],
        ["micro average precision", number(report["micro_average_precision"])],
        ["ROC AUC (macro)", number(report["roc_auc"])],
        ["micro F1", number(report["micro_avg"]["f1"])],
        ["macro F1", number(report["macro_avg"]["f1"])],
        ["subset accuracy", number(report["subset_accuracy"])],
        ["Hamming loss", number(report["hamming_loss"])],
        ["labels per image (true / predicted)", f"{cards['true']:.2f} / {cards['predicted']:.2f}"],
        *_calibration_rows(report),
    ]
    header = ["class", "threshold", "precision", "recall", "f1", "AP", "AUC", "tp/fp/fn/tn"]
    rows = [
        [name, f"{m['threshold']:.3f}"]
        + [number(m[k]) for k in ("precision", "recall", "f1", "average_precision", "roc_auc")]
        + ["/".join(str(m["confusion"][k]) for k in ("tp", "fp", "fn", "tn"))]
        for name, m in report["per_class"].items()
    ]
    for head, body in ((["metric", "value"], summary), (header, rows)):
        if md:
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join(" --- " for _ in head) + "|")
            lines.extend("| " + " | ".join(row) + " |" for row in body)
        else:
            widths = [max(len(x) for x in col) for col in zip(head, *body)]
            lines += [
                "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body]
            ]
        lines.append("")
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    if report.get("plots"):
        lines.append("Plots: " + ", ".join(report["plots"]))
    return "\n".join(lines).rstrip()


def _calibration_rows(report: dict) -> list[list[str]]:
    """The summary's calibration rows: ECE beside what sampling noise alone gives calibrated
    probabilities on these images and, for a calibrated bundle, the figures before."""
    calibration = report.get("calibration")
    if not isinstance(calibration, dict) or calibration.get("ece") is None:
        return []
    over = "every image-class pair" if report.get("multi_label") else "top label"
    rows = [[f"ECE ({calibration.get('bins')} bins, {over})", f"{calibration['ece']:.4f}"]]
    if calibration.get("ece_noise") is not None:
        rows.append(
            [
                "ECE from sampling noise alone (mean / 95%)",
                f"{calibration['ece_noise']:.4f} / {calibration['ece_noise_p95']:.4f}",
            ]
        )
    if calibration.get("ece_uncalibrated") is not None:
        rows.append(["ECE before calibration", f"{calibration['ece_uncalibrated']:.4f}"])
    rows.append(["Brier score", f"{calibration['brier']:.4f}"])
    if calibration.get("brier_uncalibrated") is not None:
        rows.append(["Brier before calibration", f"{calibration['brier_uncalibrated']:.4f}"])
    if isinstance(report.get("tta"), dict):
        rows.append(["test-time augmentation", f"{report['tta'].get('views')} views an image"])
    return rows


def _report_facts(report: dict) -> list[tuple[str, str]]:
    """The report's header: what was evaluated, on what, and how."""
    counts = ", ".join(f"{n} {c}" for n, c in report["images_per_class"].items())
    facts = [
        ("bundle", report["bundle"]),
        ("data", f"{report['data_dir']} ({report['data_source']})"),
        ("images", f"{report['n_images']} ({counts})"),
    ]
    if "threshold" in report:
        rule = report.get("threshold_rule")
        how = f", chosen by rule {rule}" if isinstance(rule, str) else ""
        facts.append(
            (
                "threshold",
                f"{report['threshold']:.4g} ({report['threshold_source']}"
                f"{how}); positive class: {report['positive_class']}",
            )
        )
    if report.get("absent_classes"):
        facts.append(
            (
                "absent",
                f"{', '.join(report['absent_classes'])} (the model's classes "
                f"with no folder here: not reported on)",
            )
        )
    if report.get("skipped_files"):
        facts.append(("skipped", f"{len(report['skipped_files'])} unreadable file(s)"))
    return facts


def render_check(report: dict, fmt: str) -> str:
    """A `check-data` report as JSON or as a terminal summary."""
    if fmt == "json":
        return json.dumps(report, indent=2)
    lines = []
    for split, counts in report["splits"].items():
        ratio = report["imbalance_ratio"].get(split)
        total = sum(counts.values())
        lines.append(f"{split}: {total} images" + (f", imbalance {ratio:.2f}x" if ratio else ""))
        held = report.get("validation_split") or {}
        if held.get("from") == split:
            out = held["held_out"]
            lines += [
                f"  {name:<24} {count}  ({out[name]} to validation, {count - out[name]} to train)"
                for name, count in counts.items()
            ]
            lines.append(
                f"  no test set: data.validation_split {held['fraction']:g} holds out "
                f"{sum(out.values())} of these {total} images to validate on"
            )
            continue
        lines += [f"  {name:<24} {count}" for name, count in counts.items()]
    lines += label_file_lines(report)
    by_kind = report["problem_counts"]
    if by_kind:
        lines.append("problems: " + ", ".join(f"{n} {k}" for k, n in by_kind.items()))
    lines += _grouped_problems(report["problems"])
    lines += [f"suggestion: {s}" for s in report["suggestions"]]
    lines += [f"fatal: {f}" for f in report["fatal"]]
    if not by_kind and not report["fatal"]:
        lines.append("no problems found")
    return "\n".join(lines)


# More problems of one kind than this are shown as a count and this many examples; JSON keeps all.
_EXAMPLES = 3


def _grouped_problems(problems: list[dict]) -> list[str]:
    by_kind: dict[str, list[dict]] = {}
    for problem in problems:
        by_kind.setdefault(problem["kind"], []).append(problem)
    lines = []
    for kind, group in by_kind.items():
        head = f"  {group[0]['severity']:<7} {kind:<15}"
        if len(group) <= _EXAMPLES:
            lines += [f"{head} {p['path']}{_detail(p)}: {p['advice']}" for p in group]
            continue
        lines.append(f"{head} {len(group)} files: {group[0]['advice']}")
        lines += [f"{'':<25} {p['path']}{_detail(p)}" for p in group[:_EXAMPLES]]
        lines.append(
            f"{'':<25} ... and {len(group) - _EXAMPLES} more (--format json lists every one)"
        )
    return lines


def _detail(problem: dict) -> str:
    return f" ({problem['detail']})" if problem["detail"] else ""
