"""The ASGI app of `cnnclf serve`: a web page and a REST API around one loaded model.

Every image goes through the same path as `cnnclf predict`: `decode.decode_image_bytes` (the
decoder, limits and pixel budget of `decode.load_image`, on a thread pool, off the event
loop), the micro-batcher (`batcher.py`) for the model call (both in `service.py`), and
`predict.interpret` for the label, so a served prediction is the CLI's prediction, field for
field. The routes are here; what they share lives beside them:

settings.py   ServeSettings and the request limits
service.py    the loaded model, its decoding pool, batcher, warm-up and model card
requests.py   /predict's options and TF-Serving instances, checked
errors.py     every error as {"error": ...} with its status; the bearer-token check
heatmap.py    /explain's Grad-CAM overlay PNG
hosts.py      the Host and Origin guard (DNS rebinding, cross-site requests)
budget.py     the bound on request bodies in memory at once (--max-bodies-mb)

Routes (/openapi.json lists them too, and with --docs the pages /docs and /redoc):
    GET  /                              the web page
    POST /predict                       multipart image(s) -> [predict --format json objects]
    POST /explain                       one multipart image -> Grad-CAM overlay PNG (bundles)
    POST /v1/models/<name>:predict      TensorFlow Serving REST: {"instances": [{"b64": ...}]}
    GET  /v1/models/<name>              TensorFlow Serving model status, with the model card
    GET  /v1/models/<name>/metadata     the model card: classes, image size, metrics, ...
    GET  /healthz, /readyz              alive; model loaded and warmed up
    GET, POST /review/...               with --review: the review's gallery, decisions saved

Errors are 4xx with {"error": "..."}; no request field is ever used as a file path. With a
token, every route but the page, its static files, /healthz and /readyz needs
`Authorization: Bearer <token>`, and those four name neither the model nor its classes
(/readyz does with the token); /openapi.json is public only with --docs.

Example:
    app = create_app(load_bundle("runs/demo"), ServeSettings(name="demo"))
    # uvicorn.run(app)  — or `cnnclf serve --model runs/demo`
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cnnclf.bundle import Bundle
from cnnclf.inference.predict import interpret, interpret_multi_label
from cnnclf.serve import memory
from cnnclf.serve.budget import BodyBudget
from cnnclf.serve.errors import add_error_handlers, has_token, token_check
from cnnclf.serve.heatmap import grad_cam_png, header_safe
from cnnclf.serve.hosts import HostOriginGuard, allowed_hosts
from cnnclf.serve.requests import explained_class, instances, prediction_options
from cnnclf.serve.service import Service
from cnnclf.serve.settings import MAX_INSTANCES, ServeSettings
from cnnclf.serve.uploads import RequestError, body_cost, read_json, read_uploads

__all__ = ["ServeSettings", "create_app"]

# A JSON body is held about three times while parsed: the raw body, its text, the base64.
JSON_BODY_COPIES = 3

# name -> media type; the only files the page routes can return (no path from a request).
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            }
        },
    }
}
_INSTANCES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "b64": {
                                        "type": "string",
                                        "description": "a base64-encoded image file",
                                    }
                                },
                            },
                        }
                    },
                },
                "example": {"instances": [{"b64": "iVBORw0KGgo..."}]},
            }
        },
    }
}


class _CorsOutsideReview:
    """--cors-origin for the API, never for /review/: the review's images and paths are for
    the page this server sends (served alone, a review answers no other origin either)."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        from fastapi.middleware.cors import CORSMiddleware

        self.plain, self.cors = app, CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        review = scope["type"] == "http" and scope["path"].startswith("/review")
        await (self.plain if review else self.cors)(scope, receive, send)


def create_app(
    bundle: Bundle,
    settings: ServeSettings | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """The FastAPI app serving `bundle` (from `load_bundle` or `load_export`).

    Args:
        bundle: the loaded model; it is warmed up when the app starts.
        settings: name, token, CORS origins, upload and batching limits.
        on_ready: called on the event loop once the warm-up has run, just before /readyz
            turns ready (`cnnclf serve` prints its ready line there).

    Returns:
        An ASGI app; run it with uvicorn, or use it with FastAPI's TestClient.
    """
    settings = settings or ServeSettings()
    service = Service(bundle, settings, on_ready)

    @asynccontextmanager
    async def lifespan(app):
        memory.keep_large_allocations_apart()
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    # Without --docs FastAPI's pages are off: they load Swagger UI and ReDoc from a CDN, on
    # the origin whose page keeps the token. /openapi.json is served by `_add_docs_routes`.
    app = FastAPI(
        title="cnnclf serve",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        description=_description(bundle, settings),
    )
    app.state.service = service

    if settings.cors_origins:
        app.add_middleware(
            _CorsOutsideReview,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Added last, so outermost: a request for another Host or from another Origin reaches
    # nothing else, CORS included.
    app.add_middleware(
        HostOriginGuard,
        allowed=allowed_hosts(settings.host, tuple(settings.allowed_hosts)),
        cors_origins=tuple(settings.cors_origins),
    )
    add_error_handlers(app)
    api = [Depends(token_check(settings.token))]
    budget = BodyBudget(settings.max_bodies_bytes, on_idle=_return_freed_memory)
    _add_page_routes(app, service)
    _add_docs_routes(app, settings, api)
    _add_prediction_routes(app, service, api, budget)
    _add_tf_serving_routes(app, service, api, budget)
    if settings.review_dir:  # --review: the review's gallery and its decisions (review.py)
        from cnnclf.serve.review import add_review_routes, open_review

        add_review_routes(app, open_review(settings.review_dir), settings, api, budget)
    return app


def _description(bundle: Bundle, settings: ServeSettings) -> str:
    """The OpenAPI description: the model and its classes only when no token guards them."""
    errors = 'Errors are 4xx with `{"error": "..."}`.'
    if settings.token:
        return f"Image classifier. {errors} Every API route needs `Authorization: Bearer <token>`."
    return f"Image classifier `{settings.name}` ({', '.join(bundle.class_names)}). {errors}"


def _return_freed_memory() -> None:
    """After a burst of bodies: glibc's trim on a worker thread, off the event loop."""
    asyncio.get_running_loop().run_in_executor(None, memory.return_freed_memory)


def _read_static() -> dict[str, bytes]:
    folder = resources.files("cnnclf.serve") / "static"
    return {name: (folder / name).read_bytes() for name in ("index.html", *STATIC_FILES)}


def _add_page_routes(app: FastAPI, service: Service) -> None:
    """The web page, its static files, and the liveness and readiness probes (no token)."""
    settings = service.settings
    static = _read_static()
    page = _page(static["index.html"].decode("utf-8"), settings)

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/static/{filename}", include_in_schema=False)
    async def static_file(filename: str):
        if filename not in STATIC_FILES:
            raise RequestError(404, f"no static file {filename!r}")
        return Response(
            static[filename],
            media_type=STATIC_FILES[filename],
            headers={"Cache-Control": "no-cache"},
        )

    @app.get("/healthz", summary="Liveness: the server answers")
    async def healthz():
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: model loaded and one warm-up prediction done",
        description="With a token, the model's name, in_flight and a failed warm-up's error "
        "are shown only to requests that carry it.",
    )
    async def readyz(request: Request):
        details = has_token(request, settings.token)
        if service.ready:
            if not details:
                return {"status": "ready"}
            return {"status": "ready", "model": settings.name, "in_flight": service.in_flight}
        if service.warm_up_error:
            body = {"status": "failed"}
            if details:
                body["error"] = service.warm_up_error
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "warming up"}, status_code=503)


def _page(template: str, settings: ServeSettings) -> str:
    """The page with the notice and the model's name filled in.

    The notice is in the page itself, not only in the card, so it shows before a token is
    asked for. With a token the name is left out: the page gets it from the card, which needs
    the token.
    """
    notice = html.escape(settings.notice or "")
    template = template.replace("{{notice}}", notice)
    template = template.replace("{{notice_hidden}}", "" if notice else " hidden")
    if not settings.token:
        return template.replace("{{name}}", html.escape(settings.name, quote=True))
    return template.replace("cnnclf · {{name}}", "cnnclf").replace("{{name}}", "")


def _add_docs_routes(app: FastAPI, settings: ServeSettings, api: list) -> None:
    """/openapi.json (with a token, it needs the token unless --docs), and the /docs and
    /redoc pages, which load their scripts from a CDN (jsdelivr): served as they always were
    without a token; with one, only with --docs, since those scripts run on the origin that
    holds the token."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[] if settings.docs else api)
    async def openapi():
        return JSONResponse(app.openapi())

    if settings.token and not settings.docs:
        return
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="cnnclf serve")

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="cnnclf serve")


def _add_prediction_routes(app: FastAPI, service: Service, api: list, budget: BodyBudget) -> None:
    """/predict (what `cnnclf predict --format json` prints) and /explain (Grad-CAM)."""
    bundle = service.bundle
    limit = service.settings.max_upload_bytes

    @app.post(
        "/predict",
        dependencies=api,
        openapi_extra=_MULTIPART_BODY,
        summary="Classify one or many uploaded images",
        description="Multipart file field(s), any field name. Returns a list of the "
        "objects `cnnclf predict --format json` prints: path (the upload's "
        "file name), label, probability, probabilities, and top_k for "
        "models with 3+ classes; for multi-label models path, labels (every class "
        "at or over its threshold, possibly none), probabilities and thresholds. "
        "`threshold` (binary models; multi-label: one value for every class) and "
        "`top_k` (3+ classes) act like predict's options; `tta=true` averages each "
        "image's outputs over 2-6 fixed views and rescales the average by its own "
        "temperature, as predict's --tta (2-6x the model time).",
    )
    async def predict(
        request: Request,
        threshold: float | None = None,
        top_k: int | None = None,
        tta: bool = False,
    ):
        from cnnclf.serve.tta import tta_scores

        threshold, top_k = prediction_options(bundle, threshold, top_k)
        service.in_flight += 1
        try:
            async with budget.hold(body_cost(request, limit)):
                uploads = await read_uploads(request, limit, MAX_INSTANCES)
                named = [(u.data, u.filename or "upload") for u in uploads]
                rows = await (tta_scores(service, named) if tta else service.scores(named))
        finally:
            service.in_flight -= 1
        return [
            _interpret(bundle, row, threshold, u.filename or "upload", top_k).to_json()
            for u, row in zip(uploads, rows)
        ]

    @app.post(
        "/explain",
        dependencies=api,
        openapi_extra=_MULTIPART_BODY,
        response_class=Response,
        summary="Grad-CAM overlay PNG for one uploaded image",
        description="Keras bundles only (exports have no gradients). The PNG shows "
        "the image and its heatmap side by side, captioned with the label; "
        "the headers X-Label and X-Probability repeat them. `class` names the class "
        "to explain (default: the predicted label). Multi-label models: one overlay "
        "per predicted label, stacked in one PNG (the most probable class when none is "
        "over its threshold); X-Label and X-Probability list them, comma-separated.",
    )
    async def explain(request: Request, class_name: str | None = Query(None, alias="class")):
        if not service.explainable:
            raise RequestError(
                400,
                f"Grad-CAM needs a Keras bundle; this server runs "
                f"{service.card['kind']} {Path(bundle.path).name} "
                "(serve the bundle it was exported from)",
            )
        class_name = explained_class(bundle, class_name)
        async with budget.hold(body_cost(request, limit)):
            uploads = await read_uploads(request, limit, 1)
            upload = uploads[0]
            name = upload.filename or "upload"
            pixels = await service.decode(upload.data, name)
            png, labels, probabilities = await asyncio.get_running_loop().run_in_executor(
                service.batcher.model_thread,
                grad_cam_png,
                bundle,
                pixels,
                upload.data,
                name,
                class_name,
            )
        return Response(
            png,
            media_type="image/png",
            headers={
                "X-Label": header_safe(",".join(labels)),
                "X-Probability": ",".join(f"{p:.6f}" for p in probabilities),
            },
        )


def _interpret(bundle: Bundle, row, threshold: float | None, name: str, top_k: int | None):
    """`predict`'s Prediction for one output row; a multi-label `threshold` applies to every
    class, as predict's --threshold does."""
    if not bundle.preprocessing.multi_label:
        return interpret(row, bundle.class_names, threshold, name, top_k)
    cuts = bundle.preprocessing.thresholds
    if threshold is not None:
        cuts = (threshold,) * len(bundle.class_names)
    return interpret_multi_label(row, bundle.class_names, cuts, name, top_k)


def _add_tf_serving_routes(app: FastAPI, service: Service, api: list, budget: BodyBudget) -> None:
    """TensorFlow Serving's REST routes: model status, metadata, and predict."""
    settings = service.settings
    limit = settings.max_upload_bytes

    def known(name: str) -> None:
        if name != settings.name:
            raise RequestError(
                404, f"no model named {name!r}: this server serves {settings.name!r}"
            )

    @app.get(
        "/v1/models/{name}",
        dependencies=api,
        summary="TensorFlow Serving model status, with the model card",
    )
    async def model_status(name: str):
        known(name)
        state = "AVAILABLE" if service.ready else "LOADING"
        return {
            "model_version_status": [
                {
                    "version": "1",
                    "state": state,
                    "status": {
                        "error_code": "OK" if not service.warm_up_error else "UNKNOWN",
                        "error_message": service.warm_up_error or "",
                    },
                }
            ],
            "model": service.card,
        }

    @app.get("/card", dependencies=api, summary="The model card alone (what the page shows)")
    async def card():
        # The page asks here, not at /v1/models/<name>/metadata: it need not know the name,
        # which a token keeps from anyone who has not got it.
        return service.card

    @app.get(
        "/v1/models/{name}/metadata",
        dependencies=api,
        summary="The model card: classes, image size, colour mode, threshold, metrics",
    )
    async def model_metadata(name: str):
        known(name)
        return {"model_spec": {"name": name, "version": "1"}, "metadata": service.card}

    @app.post(
        "/v1/models/{name}:predict",
        dependencies=api,
        openapi_extra=_INSTANCES_BODY,
        summary="TensorFlow Serving REST predict",
        description='`{"instances": [{"b64": "<base64 image file>"}, ...]}` → '
        '`{"predictions": [[...model outputs...], ...]}`: for a binary '
        "model one number, P(second class); otherwise one per class.",
    )
    async def tf_serving_predict(name: str, request: Request):
        known(name)
        async with budget.hold(JSON_BODY_COPIES * body_cost(request, limit)):
            body = await read_json(request, limit)
            images = await anyio.to_thread.run_sync(instances, body)
            del body  # the base64 text: the decoded images are all that is needed now
            rows = await service.scores(images)
        return {"predictions": [[round(float(v), 6) for v in row] for row in rows]}
