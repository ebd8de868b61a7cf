"""`cnnclf predict`, `evaluate` and `explain`: a trained model applied to images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cnnclf.cli import _lazy
from cnnclf.cli.bundles import load_model
from cnnclf.cli.group import common_options

_MODEL_HELP = "Bundle folder (default: the newest complete bundle under ./runs/)."
_THRESHOLD_HELP = "Binary models: override the bundle's decision threshold."


@click.command("predict")
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_dir", type=click.Path(), help=_MODEL_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    help="Output format (default: table, or from --output's extension).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per model call.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help=_THRESHOLD_HELP,
)
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
    ".json/.csv extension), with a progress bar on stderr.",
)
@common_options
def predict(paths, model_dir, fmt, batch_size, threshold, top_k, output):
    """Predict the class of images: files, folders (recursive) or globs."""
    from cnnclf.cli.render import render
    from cnnclf.data.layout import expand_inputs

    images = expand_inputs(paths)
    bundle = load_model(model_dir, threshold=threshold, top_k=top_k)
    predicting = _lazy.predict()
    if output and fmt is None:
        fmt = {".json": "json", ".csv": "csv"}.get(Path(output).suffix.lower(), "table")
    results = predicting.predict_paths(
        bundle, images, batch_size=batch_size, threshold=threshold, top_k=top_k
    )
    predictions, failures = [], 0
    with _progress(results, len(images), show=output is not None) as results:
        for result in results:
            if isinstance(result, predicting.Failure):
                failures += 1
                click.echo(f"error: {result.path}: {result.reason}", err=True)
            else:
                predictions.append(result)
    text = render(predictions, fmt or "table", bundle.class_names)
    if output:
        _write_atomically(Path(output), text + "\n" if text else "")
        click.echo(f"wrote {len(predictions)} prediction(s) to {output}", err=True)
    elif text:
        click.echo(text)
    if failures:
        click.echo(f"error: {failures} of {len(images)} image(s) could not be predicted", err=True)
        sys.exit(1)


@click.command("evaluate")
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--model", "model_dir", type=click.Path(), help=_MODEL_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False),
    help="Write confusion_matrix.png (and, for binary models, roc_curve.png and "
    "pr_curve.png) into this folder.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images per model call.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help=_THRESHOLD_HELP,
)
@common_options
def evaluate(data_dir, model_dir, fmt, plots_dir, batch_size, threshold):
    """Report accuracy, per-class metrics, confusion matrix and ROC AUC on labelled folders.

    DATA_DIR has one sub-folder per class, like the training data (default: the data the
    bundle was validated on).
    """
    from cnnclf.cli.render import render_report

    bundle = load_model(model_dir, threshold=threshold)
    report = _lazy.evaluate().evaluate(
        bundle, data_dir, threshold=threshold, batch_size=batch_size, plots_dir=plots_dir
    )
    if report.get("absent_classes"):
        click.echo(
            f"note: {report['data_dir']} has no folder for class(es) "
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
    help="Folder for the <image>_gradcam.png files.",
)
@common_options
def explain(images, model_dir, out_dir):
    """Grad-CAM heatmaps: what in each image drove its prediction."""
    from cnnclf.data.layout import expand_inputs

    paths = expand_inputs(images)
    bundle = load_model(model_dir, keras_only="Grad-CAM")
    for row in _lazy.explain().explain(bundle, paths, out_dir):
        click.echo(
            f"{row['path']}  {row['label']}  {row['probability']:.2f}  "
            f"{row['heatmap']}" + (f"  note: {row['note']}" if row["note"] else "")
        )


def _progress(iterable, length: int, show: bool):
    """A progress bar on stderr for long runs written to a file; a no-op otherwise."""
    import contextlib

    if not show or length < 100:
        return contextlib.nullcontext(iterable)
    return click.progressbar(iterable, length=length, label="predicting", file=sys.stderr)


def _write_atomically(path: Path, text: str) -> None:
    """Writes via a temporary sibling and a rename, so a crash never leaves half a file."""
    import os

    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
