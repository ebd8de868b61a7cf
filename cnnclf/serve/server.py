"""Running the app under uvicorn: binding, workers, the console lines, a clean stop on SIGTERM.

The port is bound first (`bind`), so a taken port is one line and exit code 2 before the model
loads; uvicorn then serves on that very socket. With one worker the model is loaded here, before
uvicorn starts, so a bad --model is one line and exit code 1, not a server that answers 503
forever. With `workers` > 1 uvicorn starts that many processes and each loads its own copy of
the model (N times the memory, N model calls at once); they get their settings through the
environment (`SETTINGS_VARIABLE`).

The console is cnnclf's, not uvicorn's (whose own lines show with --verbose): `loading ...`,
then `ready: serving ...` once the warm-up has run and /readyz turns ready (one per worker),
then one line per request, `POST /predict 200 12.3 ms` (the /healthz and /readyz probes only
with --verbose).

SIGTERM and Ctrl-C make uvicorn stop accepting connections and finish the requests in flight
(the micro-batcher runs its queued batches) within `--shutdown-grace` seconds, then `serve`
returns and the command exits 0. A client still sending its body by then gets a 503
(connections.py), and a request the app is still working on is cancelled with one log line.

Connections are capped and timed out by connections.py (`GuardedConfig`), requests in the app
by admission.py (`RequestLimit`); the cap is fitted to the open-file limit first
(`fit_open_files`), so that accepting never fails for want of a descriptor.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect

from cnnclf.errors import CnnclfError, ConfigError
from cnnclf.serve.settings import ServeSettings

SETTINGS_VARIABLE = "CNNCLF_SERVE_SETTINGS"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
PROBES = ("/healthz", "/readyz")  # polled every few seconds: logged only with --verbose
log = logging.getLogger("cnnclf")


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning printed when the server is reachable from other machines, else None."""
    if host in LOCAL_HOSTS:
        return None
    return f"warning: binding {host}: other machines can reach this server" + (
        "" if token else "; anyone who can reach it can use the model (set --token or CNNCLF_TOKEN)"
    )


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` as uvicorn binds one, or a ConfigError saying why not.

    Example: `bind("127.0.0.1", 0).getsockname()[1]` is a free port, held until closed.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(_bind_error(host, port, exc)) from None
    sock.set_inheritable(True)  # for --workers' processes
    return sock


def _bind_error(host: str, port: int, exc: OSError) -> str:
    where = f"{_address(host)}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"--host {host}: not a known host name or address ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"--port {port}: {where} is already in use; stop what is using it or pass "
            "another --port"
        )
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return f"--port {port}: ports below 1024 need administrator rights; pass another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host}: not an address of this machine (127.0.0.1 is)"
    return f"--host {host} --port {port}: cannot listen on {where}: {exc.strerror or exc}"


def serve(
    bundle_loader,
    model_path: Path,
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    workers: int = 1,
    verbose: bool = False,
) -> None:
    """Serves the model at `model_path` until SIGTERM or Ctrl-C; returns after a clean stop.

    Args:
        bundle_loader: `path -> Bundle` (the CLI's loader: bundle or export, checked).
        model_path: the bundle folder or export.
        settings: see `ServeSettings`.
        host, port: where to listen; bound before the model loads (`bind`).
        workers: processes, each with its own copy of the model.
        verbose: uvicorn's own log lines too, and a line for each /healthz and /readyz.
    """
    sock = bind(host, port)
    try:
        _serve_on(sock, bundle_loader, model_path, settings, workers, verbose)
    finally:
        sock.close()


def serve_review(
    review_dir: Path, settings: ServeSettings, *, host: str, port: int, verbose: bool = False
) -> None:
    """Serves a review folder's gallery alone (`cnnclf serve --review DIR`, no --model) until
    SIGTERM or Ctrl-C, in one process: no model, so TensorFlow never loads."""
    import uvicorn

    from cnnclf.serve.connections import GuardedConfig
    from cnnclf.serve.review import create_review_app, open_review

    review = open_review(review_dir)
    sock = bind(host, port)
    try:
        url = f"http://{_address(sock.getsockname()[0])}:{sock.getsockname()[1]}"
        files, settings = _within_open_files(settings)

        def on_ready() -> None:
            sock.listen(files.backlog)  # as in _serve_on: the line never names a closed port
            log.info(f"ready: serving the review {review_dir} on {url}/review/ (Ctrl-C stops it)")

        app = _guarded(create_review_app(review, settings, on_ready), settings, verbose)
        config = GuardedConfig(
            app,
            settings,
            log_level="info" if verbose else "warning",
            access_log=False,
            backlog=files.backlog,
            server_header=False,
        )
        server = uvicorn.Server(config)
        with _signals_end_cleanly():
            server.run(sockets=[sock])
        if not server.started:  # uvicorn logged why
            raise CnnclfError(f"could not serve on {url} (see the message above)")
    finally:
        sock.close()


def _within_open_files(settings: ServeSettings):
    """(the open-file plan, `settings` with --max-connections cut to fit it), uvicorn's log
    filters installed: what every server does before it listens."""
    from cnnclf.serve.connections import fit_open_files, install_log_filters

    files = fit_open_files(settings.max_connections)
    if files.warning:
        log.warning(files.warning)
    install_log_filters()
    return files, dataclasses.replace(settings, max_connections=files.max_connections)


def _serve_on(sock, bundle_loader, model_path, settings, workers, verbose) -> None:
    import uvicorn

    from cnnclf.serve.connections import GuardedConfig

    url = f"http://{_address(sock.getsockname()[0])}:{sock.getsockname()[1]}"
    files, settings = _within_open_files(settings)
    common: dict[str, Any] = dict(
        log_level="info" if verbose else "warning",
        access_log=False,  # ours is `_RequestLog`
        backlog=files.backlog,
        server_header=False,
    )
    log.info(f"loading {model_path} ...")
    if workers > 1:
        os.environ[SETTINGS_VARIABLE] = json.dumps(
            {
                "model": str(Path(model_path).resolve()),
                "url": url,
                "verbose": verbose,
                **dataclasses.asdict(settings),
            }
        )
        config = GuardedConfig(
            "cnnclf.serve.server:app_from_environment",
            settings,
            factory=True,
            workers=workers,
            **common,
        )
    else:
        from cnnclf.serve.app import create_app

        bundle = bundle_loader(model_path)

        def on_ready() -> None:
            # uvicorn listens only after the app's startup, and a quick warm-up may end first:
            # listening now, the line never names a port that refuses connections.
            sock.listen(files.backlog)
            log.info(ready_line(model_path, settings.name, bundle.class_names, url))

        app = _guarded(create_app(bundle, settings, on_ready), settings, verbose)
        config = GuardedConfig(app, settings, **common)
    server = uvicorn.Server(config)
    with _signals_end_cleanly():
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
            if not server.started:  # uvicorn logged why
                raise CnnclfError(f"could not serve on {url} (see the message above)")


def ready_line(model_path, name: str, class_names: list[str], url: str, worker: str = "") -> str:
    """`ready: serving runs/demo as "demo" (classes a, b) on http://127.0.0.1:8000 ...`."""
    shown = ", ".join(class_names[:8])
    if len(class_names) > 8:
        shown += f" and {len(class_names) - 8} more"
    return (
        f'ready{worker}: serving {model_path} as "{name}" (classes {shown}) on {url} '
        "(Ctrl-C stops it)"
    )


def _guarded(app, settings: ServeSettings, verbose: bool):
    """The app behind the request limit (probes exempt), behind the console's request lines."""
    from cnnclf.serve.admission import RequestLimit

    limited = RequestLimit(app, settings.max_concurrent_requests, exempt=PROBES)
    return _RequestLog(limited, probes=verbose)


def _address(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _RequestLog:
    """ASGI middleware: one console line per HTTP request, `POST /predict 200 12.3 ms`."""

    def __init__(self, app, probes: bool):
        self.app = app
        self.probes = probes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (not self.probes and scope["path"] in PROBES):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what uvicorn answers when the app fails before its response

        async def send_noting_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gone = ""
        try:
            await self.app(scope, receive, send_noting_status)
        except ClientDisconnect:
            # The client hung up, or connections.py closed it (too slow, or the server is
            # stopping): no one to answer, and no traceback for uvicorn to log.
            gone = " (client gone)"
        finally:
            milliseconds = (time.perf_counter() - start) * 1000
            log.info(f"{scope['method']} {_printable(scope)} {status} {milliseconds:.1f} ms{gone}")


def _printable(scope) -> str:
    """The request's path as sent (still %-encoded: no newline can forge a console line)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return "".join(c if c.isprintable() else "?" for c in raw.decode("latin-1"))


def app_from_environment():
    """The app for one worker process of `serve(workers=N)`: loads its own model copy."""
    from cnnclf.bundle import load_bundle
    from cnnclf.bundle.exported_models import is_export, load_export
    from cnnclf.serve.app import create_app
    from cnnclf.serve.connections import install_log_filters
    from cnnclf.tf_loader import import_tensorflow

    values = json.loads(os.environ[SETTINGS_VARIABLE])
    model = Path(values.pop("model"))
    url, verbose = values.pop("url"), values.pop("verbose")
    # JSON has no tuples: the settings' tuples (cors_origins, ...) come back as lists.
    values = {key: tuple(v) if isinstance(v, list) else v for key, v in values.items()}
    settings = ServeSettings(**values)
    _console()
    install_log_filters()
    if is_export(model):
        bundle = load_export(model)
    else:
        import_tensorflow()
        bundle = load_bundle(model)
    line = ready_line(model, settings.name, bundle.class_names, url, f" (worker {os.getpid()})")
    return _guarded(create_app(bundle, settings, lambda: log.info(line)), settings, verbose)


def _console() -> None:
    """cnnclf's console lines in a worker process, as the CLI shows them (see cli/group.py)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class _signals_end_cleanly:
    """SIGTERM and SIGINT handlers that do nothing, for uvicorn to restore and re-raise into.

    uvicorn handles both signals itself while it runs (a graceful stop), then restores the
    handlers it found and raises the signal again, so that the default action (die by
    SIGTERM, KeyboardInterrupt) follows a stop that has already completed. Serving ending on
    request is success here: the handlers it finds are these, and the command exits 0.
    """

    def __enter__(self):
        self.saved = {
            sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False
