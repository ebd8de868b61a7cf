"""`cnnclf predict`, `evaluate` and `explain`: a trained model applied to images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cnnclf.cli import _lazy
from cnnclf.cli.bundles import load_model, model_or_newest
from cnnclf.cli.group import common_options, format_option

_MODEL_HELP = (
    "Bundle folder, or an s3:// or gs:// URL (default: the newest complete bundle under ./runs/)."
)
_THRESHOLD_HELP = (
    "Binary models: override the bundle's decision threshold. Multi-label models: one "
    "threshold for every class, instead of the bundle's per-class ones."
)


# Shared by predict and evaluate, so the two cannot drift apart.
_batch_size = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per model call.",
)
_threshold = click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help=_THRESHOLD_HELP,
)
_tta = click.option(
    "--tta",
    is_flag=True,
    help="Test-time augmentation: average the model's outputs over the image, a 1.05x centre "
    "zoom and, where training used them, their flips, rescaled by the temperature training "
    "fitted for that average. Costs 2-6 forward passes an image.",
)


@click.command("predict")
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_dir", type=click.Path(), help=_MODEL_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "jsonl", "csv"]),
    help="Output format (default: table, or from --output's extension). JSON Lines: one "
    "object per line.",
)
@_batch_size
@_threshold
@_tta
@click.option(
    "--top-k",
    "top_k",
    type=click.IntRange(min=1),
    help="Multi-class models: also list the K most probable classes (JSON: top_k).",
)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    help="Write the results to this file (format from --format, else from the "
    ".json/.jsonl/.csv extension); Ctrl-C keeps the rows already written.",
)
@common_options
def predict(paths, model_dir, fmt, batch_size, threshold, tta, top_k, output):
    """Predict the class of images: files, folders (recursive) or globs.

    Each row is printed (or written to --output) as soon as its batch is predicted.
    """
    from cnnclf.cli.render import PredictionRows, model_heading
    from cnnclf.data.layout import expand_inputs
    from cnnclf.storage import mirror_inputs

    images = expand_inputs(mirror_inputs(paths))  # URLs: mirrored into the cache first
    used = model_or_newest(model_dir)
    bundle = load_model(used, threshold=threshold, top_k=top_k)
    predicting = _lazy.predict()
    if output and fmt is None:
        fmt = _FORMAT_OF_EXTENSION.get(Path(output).suffix.lower(), "table")
    heading = model_heading(used, bundle.class_names, newest=model_dir is None)
    rows = PredictionRows(
        fmt or "table", bundle.class_names, images, heading, bundle.preprocessing.multi_label
    )
    results = predicting.predict_paths(
        bundle, images, batch_size=batch_size, threshold=threshold, top_k=top_k, tta=tta
    )
    failures = 0
    with _Destination(output) as out, _progress(len(images), out) as progress:
        try:
            out.write(rows.begin())
            for result in results:
                if isinstance(result, predicting.Failure):
                    failures += 1
                    _clear_bar(progress)
                    click.echo(f"error: {result.path}: {result.reason}", err=True)
                else:
                    out.write(rows.row(result))
                if progress:
                    progress.advance()
        except KeyboardInterrupt:
            out.write(rows.end())  # a complete file (a closed JSON array) of what was done
            out.commit()
            if progress:
                progress.close()  # the message starts on its own line, not after the bar
            done = f"wrote {rows.count} of {len(images)} predictions to {output}"
            if not output:
                done = f"printed {rows.count} of {len(images)} predictions"
            click.echo(f"interrupted: {done}", err=True)
            sys.exit(130)
        out.write(rows.end())
        out.commit()
    if output:
        click.echo(f"wrote {rows.count} prediction(s) to {output}", err=True)
    if failures:
        click.echo(f"error: {failures} of {len(images)} image(s) could not be predicted", err=True)
        sys.exit(1)


@click.command("evaluate")
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--model", "model_dir", type=click.Path(), help=_MODEL_HELP)
@format_option(
    "Report format.",
    choices=("table", "json", "markdown"),
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False),
    help="Write confusion_matrix.png (and, for binary models, roc_curve.png and "
    "pr_curve.png) into this folder; for multi-label models, pr_curve_<class index>.png "
    "per class; for single-label models also reliability_diagram.png (accuracy against "
    "confidence).",
)
@_batch_size
@_threshold
@_tta
@common_options
def evaluate(data_dir, model_dir, fmt, plots_dir, batch_size, threshold, tta):
    """Report accuracy, per-class metrics, confusion matrix, ROC AUC and calibration (ECE,
    Brier score; before and after for a calibrated bundle) on labelled images.

    DATA_DIR has one sub-folder per class, like the training data, or is a .csv/.jsonl label
    file (default: the data the bundle was validated on).
    """
    from cnnclf.cli.render import render_report
    from cnnclf.storage import mirror_inputs

    bundle = load_model(model_dir, threshold=threshold)
    if data_dir is not None:
        data_dir = mirror_inputs([data_dir])[0]  # a URL: mirrored into the cache first
    report = _lazy.evaluate().evaluate(
        bundle,
        data_dir,
        threshold=threshold,
        batch_size=batch_size,
        plots_dir=plots_dir,
        tta=tta,
    )
    if bundle.preprocessing.multi_label and threshold is not None:
        # load_model put the one threshold in every class's place; the bundle's note on how
        # its own thresholds were chosen is about cuts this report did not use.
        report["threshold_source"] = "--threshold"
        report.pop("note", None)
    if report.get("absent_classes"):
        click.echo(
            f"note: {report['data_dir']} has "
            f"{'no row' if Path(report['data_dir']).is_file() else 'no folder'} for class(es) "
            f"{', '.join(report['absent_classes'])}; the report covers the "
            f"{len(report['images_per_class'])} present",
            err=True,
        )
    if report["skipped_files"]:
        click.echo(
            f"warning: {len(report['skipped_files'])} unreadable image(s) left out, "
            "listed in the JSON report",
            err=True,
        )
    click.echo(render_report(report, fmt))


@click.command("explain")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_dir", type=click.Path(), help=_MODEL_HELP)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for the <image>_gradcam.png files (multi-label models: "
    "<image>_gradcam_<class>.png, one per class explained).",
)
@click.option(
    "--class",
    "class_name",
    metavar="NAME",
    help="Explain this class's score instead of the prediction (default: the predicted "
    "label; multi-label models: each label over its threshold, or the most probable class "
    "when none is).",
)
@common_options
def explain(images, model_dir, out_dir, class_name):
    """Grad-CAM heatmaps: what in each image drove its prediction."""
    from cnnclf.data.layout import expand_inputs
    from cnnclf.errors import ConfigError

    paths = expand_inputs(images)
    bundle = load_model(model_dir, keras_only="Grad-CAM")
    if class_name is not None and class_name not in bundle.class_names:
        raise ConfigError(
            f"--class {class_name}: not one of the model's classes "
            f"({', '.join(bundle.class_names)})"
        )
    for row in _lazy.explain().explain(bundle, paths, out_dir, class_name):
        click.echo(
            f"{row['path']}  {row['label']}  {row['probability']:.2f}  "
            f"{row['heatmap']}" + (f"  note: {row['note']}" if row["note"] else "")
        )


class _Destination:
    """Where predict's rows go: stdout, or `--output` FILE.

    A file is written through a temporary sibling and renamed into place by `commit()`, so it
    is never half-written: complete, or (a crash, an error) not there. Each write is flushed,
    so rows appear as they are predicted.

    A file name that is not valid UTF-8 reaches Python with its odd bytes as surrogates
    (PEP 383); they are written back as those same bytes ("surrogateescape"), so every row is
    kept and names the file as the OS does, instead of one name failing the whole output.
    """

    def __init__(self, output: str | None):
        self.path = Path(output) if output else None
        self.file = None
        if self.path is not None:
            self.temporary = self.path.with_name(f".{self.path.name}.partial")
            # Closed by commit() or __exit__: it outlives this method.
            self.file = open(  # noqa: SIM115
                self.temporary, "w", encoding="utf-8", errors="surrogateescape", newline=""
            )

    def __enter__(self) -> _Destination:
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:  # not committed: leave nothing behind
            self.file.close()
            self.temporary.unlink(missing_ok=True)

    @property
    def is_terminal(self) -> bool:
        return self.file is None and sys.stdout.isatty()

    def write(self, text: str) -> None:
        if not text:
            return
        if self.file is None:
            # As bytes: a text stdout would refuse a surrogate (the OS's bytes of an odd name).
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            click.echo(text.encode(encoding, "surrogateescape"), nl=False)  # flushes
        else:
            self.file.write(text)
            self.file.flush()

    def commit(self) -> None:
        import os

        if self.file is not None and self.path is not None:
            self.file.close()
            self.file = None
            os.replace(self.temporary, self.path)


# Fewer images than this are predicted in a blink: no bar.
_BAR_FROM = 100
_FORMAT_OF_EXTENSION = {".json": "json", ".jsonl": "jsonl", ".csv": "csv"}


def _progress(total: int, out: _Destination):
    """A bar on stderr when it is a terminal, unless the rows themselves go to that terminal."""
    import contextlib

    from cnnclf.progress import Progress

    if total < _BAR_FROM or out.is_terminal or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    return Progress(f"predicting {total} images", total, announce=False)


def _clear_bar(progress) -> None:
    """Erases the bar's line, so a message printed next is not glued to it."""
    if progress and progress.drawn:
        progress.stream.write("\r\033[K")
        progress.stream.flush()
        progress.drawn = False
