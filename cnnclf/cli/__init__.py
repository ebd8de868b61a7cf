"""The `cnnclf` command line: parse, call one plain function, format the result.

This module imports neither TensorFlow nor the modules that need it at import time, so
`cnnclf --help` and config errors answer instantly. Errors the user can fix become one line on
stderr and an exit code (2 usage/config, 1 other); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from cnnclf import __version__
from cnnclf.errors import CnnclfError, ConfigError

log = logging.getLogger("cnnclf")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _flags(ctx: click.Context) -> dict:
    return ctx.find_root().ensure_object(dict)


def _common_options(command):
    """--debug/--verbose accepted after the command too (`cnnclf train ... --debug`)."""

    @click.option("--debug", is_flag=True, default=None, help="Show tracebacks on errors.")
    @click.option(
        "--verbose", is_flag=True, default=None, help="Show TensorFlow's own log messages."
    )
    @click.pass_context
    @functools.wraps(command)
    def wrapper(ctx, *args, debug=None, verbose=None, **kwargs):
        flags = _flags(ctx)
        flags["debug"] = bool(debug or flags.get("debug"))
        flags["verbose"] = bool(verbose or flags.get("verbose"))
        _setup_logging(flags["verbose"])
        try:
            return ctx.invoke(command, *args, **kwargs)
        except CnnclfError as exc:
            if flags["debug"]:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if flags["debug"]:
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException):
            raise  # click prints usage errors itself, with exit code 2
        except Exception as exc:  # anything unforeseen: still one line unless --debug
            if flags["debug"]:
                raise
            from cnnclf.tf_loader import TensorFlowMissing, is_tensorflow_missing

            if is_tensorflow_missing(exc):  # an `import keras` that bypassed import_tensorflow
                click.echo(f"error: {TensorFlowMissing()}", err=True)
                ctx.exit(1)
            first = (str(exc).strip().splitlines() or [""])[0]
            first = first if len(first) <= 300 else first[:300] + "..."
            click.echo(
                f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
                err=True,
            )
            ctx.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnclf")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log messages.")
@click.pass_context
def main(ctx, debug, verbose):
    """Train a CNN image classifier on class folders, then predict with it.

    \b
      cnnclf train --config configs/demo.yaml
      cnnclf predict path/to/image.png
    """
    _flags(ctx).update(debug=debug, verbose=verbose)


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML config (see configs/reference.yaml for every key).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key by dotted path, e.g. --set train.epochs=3 "
    "--set data.image_size=[96,96]. Repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write the bundle exactly here (default: a new folder under runs/).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Allow --out to replace an existing bundle (only once training succeeds).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run into --out DIR from its last completed epoch.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="Train on CPU only, require a GPU, or use what is there.",
)
@_common_options
def train(config_path, overrides, out_dir, overwrite, resume, device):
    """Train a model from a config and save it as a bundle."""
    from cnnclf.config import load_config
    from cnnclf.errors import RunStopped

    config = load_config(config_path, overrides)
    from cnnclf.training.run import train as run_training

    flags = _flags(click.get_current_context())
    try:
        result = run_training(
            config,
            out_dir=out_dir,
            config_path=config_path,
            overwrite=overwrite,
            resume=resume,
            verbose=flags["verbose"],
            device=device,
        )
    except RunStopped as exc:
        if flags["debug"]:
            raise
        click.echo(f"{'' if exc.exit_code in (130, 143) else 'error: '}{exc}", err=True)
        if exc.completed_epochs:
            import shlex

            words = ["cnnclf", "train", "--config", str(config_path)]
            for o in overrides:
                words += ["--set", o]
            words += ["--out", str(exc.destination), "--resume"]
            click.echo("resume with: " + shlex.join(words), err=True)
        sys.exit(exc.exit_code)
    if result.bundle_dir is None:
        return  # a non-chief multi_worker worker: the chief reports the bundle
    final = {k: v for k, v in result.final_metrics.items() if k != "learning_rate"}
    summary = ", ".join(f"{k} {v:.4f}" for k, v in final.items())
    click.echo(f"bundle: {result.bundle_dir}  ({summary}; {result.seconds:.1f} s)")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder (default: the newest complete bundle under ./runs/).",
)
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
    help="Binary models: override the bundle's decision threshold.",
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
@_common_options
def predict(paths, model_dir, fmt, batch_size, threshold, top_k, output):
    """Predict the class of images: files, folders (recursive) or globs."""
    from cnnclf.data.layout import expand_inputs

    images = expand_inputs(paths)
    bundle = _load_bundle(model_dir, threshold=threshold, top_k=top_k)
    from cnnclf.cli.render import render
    from cnnclf.inference.predict import Failure, predict_paths

    if output and fmt is None:
        fmt = {".json": "json", ".csv": "csv"}.get(Path(output).suffix.lower(), "table")
    results = predict_paths(bundle, images, batch_size=batch_size, threshold=threshold, top_k=top_k)
    predictions, failures = [], 0
    with _progress(results, len(images), show=output is not None) as results:
        for result in results:
            if isinstance(result, Failure):
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


@main.command()
@click.argument("data_dir", required=False, type=click.Path())
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder (default: the newest complete bundle under ./runs/).",
)
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
    help="Binary models: override the bundle's decision threshold.",
)
@_common_options
def evaluate(data_dir, model_dir, fmt, plots_dir, batch_size, threshold):
    """Report accuracy, per-class metrics, confusion matrix and ROC AUC on labelled folders.

    DATA_DIR has one sub-folder per class, like the training data (default: the data the
    bundle was validated on).
    """
    bundle = _load_bundle(model_dir, threshold=threshold)
    from cnnclf.cli.render import render_report
    from cnnclf.inference.evaluate import evaluate as run_evaluation

    report = run_evaluation(
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


def _load_bundle(
    model_dir,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    keras_only: str | None = None,
):
    """The bundle at `model_dir`, or the newest under runs/; checked before TensorFlow loads.

    Exports are run by their own runtime (ONNX Runtime, LiteRT), so predicting from one never
    imports TensorFlow where that runtime is installed. `threshold` and `top_k` are refused
    for models they cannot apply to; `keras_only` names what needs a Keras bundle.
    """
    from cnnclf.bundle import load_bundle, read_metadata
    from cnnclf.bundle.exported_models import is_export, load_export
    from cnnclf.tf_loader import import_tensorflow
    from cnnclf.training.runs import newest_bundle

    if model_dir is None:
        model_dir = newest_bundle()
        click.echo(f"using model {model_dir} (newest under runs/)", err=True)
    if is_export(Path(model_dir)):
        if keras_only:
            raise ConfigError(
                f"--model {model_dir}: {keras_only} needs a Keras bundle (the "
                "folder the export was made from), not an export"
            )
        bundle = load_export(Path(model_dir))
        _check_model_options(
            model_dir, bundle.class_names, bundle.preprocessing.class_mode, threshold, top_k
        )
        return bundle
    names, preprocessing, _ = read_metadata(Path(model_dir))
    _check_model_options(model_dir, names, preprocessing.class_mode, threshold, top_k)
    import_tensorflow(_flags(click.get_current_context())["verbose"])
    return load_bundle(model_dir)


def _check_model_options(model_dir, class_names, class_mode, threshold, top_k) -> None:
    """Refuses options that the model at `model_dir` would otherwise silently ignore."""
    if threshold is not None and class_mode != "binary":
        raise ConfigError(
            f"--threshold {threshold:g}: only binary models have a decision "
            f"threshold; {model_dir} has {len(class_names)} classes and predicts "
            "the most probable one"
        )
    if top_k is not None and class_mode == "binary":
        raise ConfigError(
            f"--top-k {top_k}: for multi-class models; {model_dir} is binary "
            "(both probabilities are in the JSON and CSV output already)"
        )
    if top_k is not None and top_k > len(class_names):
        raise ConfigError(f"--top-k {top_k}: {model_dir} has only {len(class_names)} classes")


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


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder (default: the newest complete bundle under ./runs/).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["savedmodel", "tflite", "onnx"]),
    required=True,
    help="Export format.",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "float16", "int8"]),
    default="none",
    show_default=True,
    help="TFLite only: weight/activation quantization.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(),
    required=True,
    help="Folder (savedmodel) or file (model.tflite, model.onnx) to write.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    help="Images for the parity check and int8 calibration (default: the bundle's "
    "own data folders).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing --out (only once the new export passes its check).",
)
@_common_options
def export(model_dir, fmt, quantize, out, data_dir, overwrite):
    """Export a bundle and check the export against Keras before succeeding."""
    from cnnclf.bundle.export import check_out
    from cnnclf.bundle.export import export as run_export

    check_out(fmt, out, quantize, overwrite)  # before the model loads
    bundle = _load_bundle(model_dir, keras_only="export")
    result = run_export(bundle, fmt, out, quantize=quantize, data_dir=data_dir, overwrite=overwrite)
    click.echo(
        f"exported {fmt}{'' if quantize == 'none' else ' ' + quantize} to "
        f"{result['out']} (labels {result['labels']}, preprocessing "
        f"{result['sidecar']})"
    )
    click.echo(
        f"parity on {result['images']} images: max |diff| "
        f"{result['max_abs_diff']:.2e}, label agreement {result['label_agreement']:.1%}"
        f" (needs {result['criterion']})"
    )


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder (default: the newest complete bundle under ./runs/).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for the <image>_gradcam.png files.",
)
@_common_options
def explain(images, model_dir, out_dir):
    """Grad-CAM heatmaps: what in each image drove its prediction."""
    from cnnclf.data.layout import expand_inputs

    paths = expand_inputs(images)
    bundle = _load_bundle(model_dir, keras_only="Grad-CAM")
    from cnnclf.inference.explain import explain as run_explain

    for row in run_explain(bundle, paths, out_dir):
        click.echo(
            f"{row['path']}  {row['label']}  {row['probability']:.2f}  "
            f"{row['heatmap']}" + (f"  note: {row['note']}" if row["note"] else "")
        )


@main.command("preview-augment")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML config whose data and augmentation to preview.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key by dotted path. Repeatable.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="How many training images.",
)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), required=True, help="PNG file to write."
)
@_common_options
def preview_augment(config_path, overrides, n, out):
    """Show training images before and after the configured augmentation, as a grid PNG."""
    from cnnclf.config import load_config

    config = load_config(config_path, overrides)
    from cnnclf.data.layout import discover

    discover(config.data, config.train.seed)  # layout errors before TensorFlow loads
    from cnnclf.tf_loader import import_tensorflow

    import_tensorflow(_flags(click.get_current_context())["verbose"])
    from cnnclf.data.preview import preview_grid

    result = preview_grid(config, n, out)
    click.echo(
        f"wrote {result['out']}: {result['images']} images, "
        f"{result['size'][0]}x{result['size'][1]} pixels"
    )


@main.command("check-data")
@click.argument("data_dir", required=False, type=click.Path())
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Check the config's data.train_dir/test_dir against its data.image_size.",
)
@click.option(
    "--image-size",
    type=(int, int),
    metavar="H W",
    help="Flag images smaller than this (default: the config's, if given).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--fix-to",
    "fix_to",
    type=click.Path(file_okay=False),
    help="Write a cleaned copy here: unreadable files, duplicates and leaked "
    "training copies dropped; odd formats converted; extensions corrected.",
)
@_common_options
def check_data_command(data_dir, config_path, image_size, fmt, fix_to):
    """Count images per split and class, and list every problem file with what to do.

    DATA_DIR holds training_set/ and test_set/ (or is itself one class-folder tree). Exits
    non-zero only for problems that would stop training.
    """
    from cnnclf.cli.render import render_check
    from cnnclf.data.check import check_data, find_splits, write_fixed_copy
    from cnnclf.errors import ConfigError

    if config_path:
        from cnnclf.config import load_config

        data = load_config(config_path).data
        if data.train_dir is None:
            raise ConfigError(
                "data.train_dir: is required (a folder with one sub-folder per class)"
            )
        splits = {"training_set": Path(data.train_dir)}
        if data.test_dir:
            splits["test_set"] = Path(data.test_dir)
        image_size = image_size or tuple(data.image_size)
    elif data_dir:
        splits = find_splits(data_dir)
    else:
        raise click.UsageError("give DATA_DIR or --config")
    report = check_data(splits, image_size)
    if config_path:
        model = load_config(config_path).model
        report.from_scratch = not (model.backbone or model.init_from)
    click.echo(render_check(report.to_json(), fmt))
    if fix_to:
        counts = write_fixed_copy(splits, report, Path(fix_to))
        click.echo(
            f"wrote a cleaned copy to {fix_to}: {counts['written']} images "
            f"({counts['converted']} converted), {counts['dropped']} dropped",
            err=True,
        )
    if report.fatal:
        sys.exit(1)


@main.command("config")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config to resolve (default: the built-in defaults).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key by dotted path. Repeatable.",
)
@click.option("--reference", is_flag=True, help="Print the fully commented reference config.")
@_common_options
def config_command(config_path, overrides, reference):
    """Validate a config and print it resolved (every key, defaults filled in)."""
    from cnnclf.config import dump_config, load_config, reference_yaml

    if reference:
        click.echo(reference_yaml(), nl=False)
        return
    click.echo(dump_config(load_config(config_path, overrides)), nl=False)


@main.command("summary")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder to describe, with its training metrics.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config whose model to describe (built for 2 classes).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --config: override a config key by dotted path. Repeatable.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@_common_options
def summary_command(model_dir, config_path, overrides, fmt):
    """Layers, parameters, per-block feature-map size and receptive field of a model.

    Give exactly one of --model (a trained bundle, with its metrics) or --config.
    """
    if (model_dir is None) == (config_path is None):
        raise ConfigError("summary: give exactly one of --model BUNDLE or --config FILE")
    if overrides and config_path is None:
        raise ConfigError("summary: --set needs --config (a bundle's config is fixed)")
    from cnnclf.inference.summary import format_summary, summarize_bundle, summarize_config

    if config_path is not None:
        from cnnclf.config import load_config

        config = load_config(config_path, overrides)
        from cnnclf.tf_loader import import_tensorflow

        import_tensorflow(_flags(click.get_current_context())["verbose"])
        summary = summarize_config(config)
    else:
        summary = summarize_bundle(_load_bundle(model_dir, keras_only="summary"))
    click.echo(format_summary(summary, fmt))


@main.command("serve")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder, SavedModel folder, .tflite or .onnx export (default: the "
    "newest complete bundle under ./runs/).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but 127.0.0.1/localhost/::1 is reachable "
    "from other machines (a warning says so).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port (0: any free port).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes. Each loads its own copy of the model (N times the "
    "memory); one is enough for one machine's cores with micro-batching.",
)
@click.option(
    "--name", help="Model name in /v1/models/<name> (default: the model folder's or file's name)."
)
@click.option(
    "--token",
    envvar="CNNCLF_TOKEN",
    show_envvar=True,
    help="Require 'Authorization: Bearer TOKEN' on every API route.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser pages from this origin (e.g. https://app.example.org) to "
    "call the API. Repeatable. Default: no CORS.",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0, 4096, min_open=True),
    default=20.0,
    show_default=True,
    help="Largest request body accepted.",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Most images gathered into one model call.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0, 10000),
    default=5.0,
    show_default=True,
    help="How long the first waiting image waits for others to join its batch.",
)
@_common_options
def serve_command(
    model_dir,
    host,
    port,
    workers,
    name,
    token,
    cors_origins,
    max_upload_mb,
    max_batch_size,
    max_wait_ms,
):
    """Serve a model: a web page and a REST API on http://HOST:PORT (Ctrl-C stops it).

    \b
      cnnclf serve --model runs/demo-20261125-101500
      curl -F file=@image.png http://127.0.0.1:8000/predict
    """
    from cnnclf.serve.server import exposure_warning

    if token is not None and not token.strip():
        raise ConfigError("--token: must not be empty (or unset CNNCLF_TOKEN)")
    if model_dir is None:
        from cnnclf.training.runs import newest_bundle

        model_dir = newest_bundle()
        click.echo(f"using model {model_dir} (newest under runs/)", err=True)
    _check_servable(Path(model_dir))
    from cnnclf.serve.app import ServeSettings
    from cnnclf.serve.server import serve

    settings = ServeSettings(
        name=name or Path(model_dir).resolve().name,
        token=token,
        cors_origins=tuple(cors_origins),
        max_upload_mb=max_upload_mb,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
    )
    warning = exposure_warning(host, token)
    if warning:
        click.echo(warning, err=True)
    flags = _flags(click.get_current_context())
    flags["own_shutdown"] = True  # `run` leaves the process's end to Python (see there)
    verbose = flags["verbose"]
    serve(
        lambda path: _load_bundle(path),
        Path(model_dir),
        settings,
        host=host,
        port=port,
        workers=workers,
        access_log=verbose,
    )
    click.echo("stopped", err=True)


def _check_servable(model_dir: Path) -> None:
    """A bundle's or export's sidecars checked without loading it (no TensorFlow)."""
    from cnnclf.bundle import read_metadata
    from cnnclf.bundle.exported_models import is_export

    if is_export(model_dir):
        return  # an export's sidecar is checked by load_export, without TensorFlow too
    read_metadata(model_dir)


def run() -> None:
    """The `cnnclf` executable and `python -m cnnclf`: `main`, then, where it is safe, an exit
    that skips the interpreter's teardown.

    Why: once the output is flushed and every file is closed there is nothing left to do, and
    tearing TensorFlow down costs time (predicting one image with the demo bundle here: 1.35 s
    from the last output to the exit, median of 5; 0.05 s without), can hang (a full disk
    left tf.data threads waiting), or abort (`free(): invalid pointer` after Ctrl-C, with
    tf.data threads running).

    Only here, never in `main`: click's CliRunner (the tests) calls `main` in-process, where
    `os._exit` would end the test run. `main` runs in click's standalone mode, so its error
    printing and exit codes are click's own; the command's with-blocks, temporary folders
    included, have all closed by the time it returns. atexit handlers still run: TensorFlow's
    remove the temporary files autograph writes. See `_can_skip_teardown` for when the
    interpreter's own exit is kept.
    """
    import os

    state: dict = {}
    try:
        main(obj=state)
        code = 0
    except SystemExit as exc:  # --debug tracebacks are other exceptions: they go the usual way
        if not _can_skip_teardown(state):
            raise
        code = exc.code
    if not isinstance(code, int):  # as the interpreter treats sys.exit("message")
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _can_skip_teardown(state: dict) -> bool:
    """Whether `run` may end the process without the interpreter's teardown.

    Not when TensorFlow was never imported (`--help`, `config`, `check-data`, an ONNX or
    LiteRT export: their teardown is quick), not while a thread that is not a daemon still
    runs (the interpreter would wait for it to finish its work), and not for a command that
    owns its shutdown (`serve`: uvicorn's worker processes and signal handling).
    """
    import threading

    if "tensorflow" not in sys.modules or state.get("own_shutdown"):
        return False
    return not any(
        t is not threading.main_thread() and not t.daemon and t.is_alive()
        for t in threading.enumerate()
    )


if __name__ == "__main__":  # pragma: no cover
    run()
