"""`cnnclf serve`: one model kept loaded behind a web page and a REST API."""

from __future__ import annotations

import re
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
    help="Require 'Authorization: Bearer TOKEN' on every API route. On the command "
    "line every user of the machine can read it (ps): prefer CNNCLF_TOKEN or --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="Read the token from this file (its first line), instead of --token.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Answer requests for this host name too (the Host header; default: IP "
    "addresses, localhost and --host). Repeatable; '*' answers any (behind a proxy that "
    "checks it). Guards against DNS rebinding.",
)
@click.option(
    "--docs",
    is_flag=True,
    help="With --token: serve the API pages /docs and /redoc too (they load their scripts "
    "from a CDN) and a public /openapi.json (it names the model and its classes). Without a "
    "token they are served anyway, as before.",
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
    "--max-bodies-mb",
    type=click.FloatRange(0, 65536, min_open=True),
    default=None,
    help="Request bodies held in memory at once (default: 4 x --max-upload-mb); "
    "requests beyond it wait, then get 503 with Retry-After.",
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
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=ServeSettings.max_connections,
    show_default=True,
    help="Open connections per worker. Past it a new one closes the connection waiting "
    "longest for a request (idle or slow); when all are in a request it gets 503. Lowered, "
    "with a warning, to what the open-file limit (ulimit -n) allows.",
)
@click.option(
    "--max-concurrent-requests",
    type=click.IntRange(1, 100_000),
    default=ServeSettings.max_concurrent_requests,
    show_default=True,
    help="Requests handled at once per worker; more get 503 with Retry-After at once. "
    "/healthz and /readyz always answer.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    default=ServeSettings.header_timeout,
    show_default=True,
    metavar="SECONDS",
    help="Time for a request's line and headers, from connecting or from the previous "
    "response; then the connection is closed (408).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    default=ServeSettings.body_timeout,
    show_default=True,
    metavar="SECONDS",
    help="Time for a request's body, plus one second per KiB received (a body slower "
    "than 1 KiB/s on average gets 408).",
)
@click.option(
    "--keep-alive-timeout",
    type=click.FloatRange(0, 3600, min_open=True),
    default=ServeSettings.keep_alive_timeout,
    show_default=True,
    metavar="SECONDS",
    help="How long an idle connection stays open after a response.",
)
@click.option(
    "--shutdown-grace",
    type=click.FloatRange(0, 3600),
    default=ServeSettings.shutdown_grace,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM or Ctrl-C, how long requests in flight may take to finish (a body "
    "still arriving then gets 503); below docker stop's 10 s.",
)
@click.option(
    "--notice",
    default=ServeSettings.notice,
    show_default=True,
    metavar="TEXT",
    help="The line the web page shows above everything (also the model card's "
    "'notice'), e.g. your site's intended-use statement; --notice '' shows none.",
)
@click.option(
    "--review",
    "review_dir",
    type=click.Path(),
    metavar="DIR",
    help="Serve this folder from `cnnclf review` at /review/ too: its gallery, which saves "
    "decisions into DIR/decisions.csv for `cnnclf review --apply`. Without --model, the "
    "review alone (no model is loaded).",
)
@common_options
def serve_command(model_dir, host, port, workers, name, token, token_file, cors_origins, **limits):
    """Serve a model: a web page and a REST API on http://HOST:PORT (Ctrl-C stops it).

    \b
      cnnclf serve --model runs/demo-20261125-101500
      curl -F file=@image.png http://127.0.0.1:8000/predict
      cnnclf serve --review runs/review-demo   (its gallery at /review/)
    """
    if token is not None and not token.strip():
        raise ConfigError("--token: must not be empty (or unset CNNCLF_TOKEN)")
    token = _token(token, token_file)
    for allowed in limits["allowed_hosts"]:
        _host_name(allowed)
    if limits["review_dir"] is not None:  # a bad folder is one line, before any model loads
        limits["review_dir"] = _review_folder(limits["review_dir"])
        if model_dir is None:
            _serve_review_alone(host, port, workers, token, (*cors_origins,), limits)
            return
    model_dir = Path(model_or_newest(model_dir))
    check_servable(model_dir)
    settings = ServeSettings(
        name=name or model_dir.resolve().name,
        token=token,
        cors_origins=tuple(cors_origins),
        host=host,
        **limits,  # max_upload_mb, max_batch_size, max_wait_ms, allowed_hosts, docs, ...
    )
    server = _lazy.serve_server()
    warning = server.exposure_warning(host, token)
    if warning:
        click.echo(warning, err=True)
    for warning in _security_warnings(host, settings):
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


def _review_folder(review_dir: str) -> str:
    """--review's folder, checked and made absolute (workers and the page need no cwd)."""
    from cnnclf.serve.review import open_review

    return str(open_review(review_dir).path)


def _serve_review_alone(host: str, port: int, workers: int, token, cors, limits: dict) -> None:
    """`serve --review DIR` without --model: the review's page only, no model looked for."""
    if workers > 1:
        raise ConfigError(
            f"--workers {workers}: a review served without --model runs in one process; "
            "drop --workers (or add --model)"
        )
    settings = ServeSettings(name="review", token=token, cors_origins=cors, host=host, **limits)
    server = _lazy.serve_server()
    for warning in [server.exposure_warning(host, token), *_security_warnings(host, settings)]:
        if warning:
            click.echo(warning, err=True)
    state = flags()
    state["own_shutdown"] = True  # as serve_command: the process's end is Python's
    review_dir = Path(str(settings.review_dir))
    server.serve_review(review_dir, settings, host=host, port=port, verbose=state["verbose"])
    click.echo("stopped", err=True)


def _token(token: str | None, token_file: str | None) -> str | None:
    """The token from --token / CNNCLF_TOKEN or from --token-file (not both)."""
    if token_file is None:
        return token
    if token is not None:
        raise ConfigError("--token-file: give the token one way, not also --token/CNNCLF_TOKEN")
    try:
        lines = Path(token_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"--token-file {token_file}: cannot read it ({reason})") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"--token-file {token_file}: its first line is empty")
    return lines[0].strip()


def _security_warnings(host: str, settings: ServeSettings) -> list[str]:
    """What the console says about --token on the command line, a wildcard --host, --docs."""
    from cnnclf.serve.hosts import host_warning

    warnings = []
    source = click.get_current_context().get_parameter_source("token")
    if source is click.core.ParameterSource.COMMANDLINE:
        warnings.append(
            "warning: --token on the command line is visible to every user of this machine "
            "(ps); pass it in CNNCLF_TOKEN or --token-file"
        )
    if (wildcard := host_warning(host, settings.allowed_hosts)) is not None:
        warnings.append(wildcard)
    if settings.docs and settings.token:
        warnings.append(
            "warning: --docs: /docs and /redoc load their scripts from cdn.jsdelivr.net, "
            "and /openapi.json names the model and its classes to anyone"
        )
    return warnings


def _host_name(name: str) -> str:
    """An --allowed-host value as the Host header could carry it: a DNS name, or '*'."""
    if name == "*" or re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", name):
        return name
    raise ConfigError(
        f"--allowed-host {name!r}: not a host name (letters, digits, dots and hyphens, "
        "without a port or a path; or '*')"
    )
