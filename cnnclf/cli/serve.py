"""`cnnclf serve`: one model kept loaded behind a web page and a REST API."""

from __future__ import annotations

from pathlib import Path

import click

from cnnclf.cli import _lazy
from cnnclf.cli.bundles import check_servable, load_model, model_or_newest
from cnnclf.cli.group import common_options, flags
from cnnclf.errors import ConfigError
from cnnclf.serve.settings import ServeSettings


@click.command("serve")
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
@common_options
def serve_command(model_dir, host, port, workers, name, token, cors_origins, **limits):
    """Serve a model: a web page and a REST API on http://HOST:PORT (Ctrl-C stops it).

    \b
      cnnclf serve --model runs/demo-20261125-101500
      curl -F file=@image.png http://127.0.0.1:8000/predict
    """
    if token is not None and not token.strip():
        raise ConfigError("--token: must not be empty (or unset CNNCLF_TOKEN)")
    model_dir = Path(model_or_newest(model_dir))
    check_servable(model_dir)
    settings = ServeSettings(
        name=name or model_dir.resolve().name,
        token=token,
        cors_origins=tuple(cors_origins),
        **limits,  # max_upload_mb, max_batch_size, max_wait_ms
    )
    server = _lazy.serve_server()
    warning = server.exposure_warning(host, token)
    if warning:
        click.echo(warning, err=True)
    state = flags()
    state["own_shutdown"] = True  # `run` leaves the process's end to Python (see cli/entry.py)
    server.serve(
        lambda path: load_model(path),
        model_dir,
        settings,
        host=host,
        port=port,
        workers=workers,
        verbose=state["verbose"],
    )
    click.echo("stopped", err=True)
