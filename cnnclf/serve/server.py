"""Running the app under uvicorn: binding, workers, and a clean stop on SIGTERM or Ctrl-C.

With one worker the model is loaded here, before the port is bound, so a bad --model is one
line and exit code 1, not a server that answers 503 forever. With `workers` > 1 uvicorn starts
that many processes and each loads its own copy of the model (N times the memory, N model
calls at once); they get their settings through the environment (`SETTINGS_VARIABLE`).

SIGTERM and Ctrl-C make uvicorn stop accepting connections and finish the requests in flight
(the micro-batcher runs its queued batches), then `serve` returns and the command exits 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from cnnclf.errors import CnnclfError
from cnnclf.serve.settings import ServeSettings

SETTINGS_VARIABLE = "CNNCLF_SERVE_SETTINGS"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("cnnclf")


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning printed when the server is reachable from other machines, else None."""
    if host in LOCAL_HOSTS:
        return None
    return f"warning: binding {host}: other machines can reach this server" + (
        "" if token else "; anyone who can reach it can use the model (set --token or CNNCLF_TOKEN)"
    )


def serve(
    bundle_loader,
    model_path: Path,
    settings: ServeSettings,
    *,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serves the model at `model_path` until SIGTERM or Ctrl-C; returns after a clean stop.

    Args:
        bundle_loader: `path -> Bundle` (the CLI's loader: bundle or export, checked).
        model_path: the bundle folder or export.
        settings: see `ServeSettings`.
        host, port: where to listen.
        workers: processes, each with its own copy of the model.
        log_level, access_log: uvicorn's (it says where it listens at "info").
    """
    import uvicorn

    common: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    if workers > 1:
        os.environ[SETTINGS_VARIABLE] = json.dumps(
            {"model": str(Path(model_path).resolve()), **dataclasses.asdict(settings)}
        )
        config = uvicorn.Config(
            "cnnclf.serve.server:app_from_environment", factory=True, workers=workers, **common
        )
    else:
        from cnnclf.serve.app import create_app

        config = uvicorn.Config(create_app(bundle_loader(model_path), settings), **common)
    server = uvicorn.Server(config)
    with _signals_end_cleanly():
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
            if not server.started:  # uvicorn logged why (the port is taken, ...)
                raise CnnclfError(f"could not serve on {host}:{port} (see the message above)")


def app_from_environment():
    """The app for one worker process of `serve(workers=N)`: loads its own model copy."""
    from cnnclf.bundle import load_bundle
    from cnnclf.bundle.exported_models import is_export, load_export
    from cnnclf.serve.app import create_app
    from cnnclf.tf_loader import import_tensorflow

    values = json.loads(os.environ[SETTINGS_VARIABLE])
    model = Path(values.pop("model"))
    values["cors_origins"] = tuple(values["cors_origins"])
    settings = ServeSettings(**values)
    if is_export(model):
        return create_app(load_export(model), settings)
    import_tensorflow()
    return create_app(load_bundle(model), settings)


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
