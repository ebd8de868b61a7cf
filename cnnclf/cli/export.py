"""`cnnclf export`: a bundle to SavedModel, TFLite or ONNX, checked against Keras."""

from __future__ import annotations

import click

from cnnclf.cli import _lazy
from cnnclf.cli.bundles import load_model
from cnnclf.cli.group import common_options


@click.command("export")
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
@common_options
def export(model_dir, fmt, quantize, out, data_dir, overwrite):
    """Export a bundle and check the export against Keras before succeeding."""
    exporting = _lazy.export()
    exporting.check_out(fmt, out, quantize, overwrite)  # before the model loads
    bundle = load_model(model_dir, keras_only="export")
    result = exporting.export(
        bundle, fmt, out, quantize=quantize, data_dir=data_dir, overwrite=overwrite
    )
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
