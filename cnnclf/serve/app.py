"""The ASGI app of `cnnclf serve`: a web page and a REST API around one loaded model.

Every image goes through the same path as `cnnclf predict`: `images.decode_image_bytes` (the
decoder, limits and pixel budget of `images.load_image`, on a thread pool, off the event
loop), the micro-batcher (`batcher.py`) for the model call, and `predict.interpret` for the
label, so a served prediction is the CLI's prediction, field for field.

Routes (the OpenAPI page at /docs lists them too):
    GET  /                              the web page
    POST /predict                       multipart image(s) -> [predict --format json objects]
    POST /explain                       one multipart image -> Grad-CAM overlay PNG (bundles)
    POST /v1/models/<name>:predict      TensorFlow Serving REST: {"instances": [{"b64": ...}]}
    GET  /v1/models/<name>              TensorFlow Serving model status, with the model card
    GET  /v1/models/<name>/metadata     the model card: classes, image size, metrics, ...
    GET  /healthz, /readyz              alive; model loaded and warmed up

Errors are 4xx with {"error": "..."}; no request field is ever used as a file path. With a
token, every route but the page, its static files, /healthz, /readyz and the OpenAPI page
needs `Authorization: Bearer <token>`.

Example:
    app = create_app(load_bundle("runs/demo"), ServeSettings(name="demo"))
    # uvicorn.run(app)  — or `cnnclf serve --model runs/demo`
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import html
import io
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnclf.bundle import Bundle
from cnnclf.data.decode import ImageSpec, decode_image_bytes
from cnnclf.errors import ImageError
from cnnclf.inference.predict import interpret
from cnnclf.serve.batcher import MicroBatcher
from cnnclf.serve.uploads import RequestError, read_json, read_uploads

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_WAIT_MS = 5.0
MAX_INSTANCES = 256  # images in one request (multipart files or TF-Serving instances)
DEFAULT_TOP_K = 5  # classes listed in top_k for 3+ class models, unless ?top_k= says

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


@dataclass(frozen=True)
class ServeSettings:
    """What `cnnclf serve` was asked for: the CLI options of the same names, and the
    decoding threads (one per core)."""

    name: str = "model"
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    decode_threads: int = field(default_factory=lambda: os.cpu_count() or 2)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class _Service:
    """The loaded model and what serves it: decoding pool, batcher, readiness."""

    def __init__(self, bundle: Bundle, settings: ServeSettings):
        self.bundle = bundle
        self.settings = settings
        self.spec = bundle.preprocessing.spec
        self.explainable = not _is_export(bundle)
        self.batcher = MicroBatcher(
            bundle.model.predict_on_batch,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
        )
        self.decoders = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode"
        )
        self.ready = False
        self.warm_up_error: str | None = None
        self._warm_up_task: asyncio.Task | None = None
        self.card = model_card(bundle, settings.name)

    async def start(self) -> None:
        await self.batcher.start()
        # Kept: the event loop holds only a weak reference to a task.
        self._warm_up_task = asyncio.create_task(self._warm_up())

    async def _warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.batcher.model_thread, self.batcher.warm_up, self.spec.shape
            )
            self.ready = True
        except Exception as exc:  # the model cannot run: /readyz says why, forever
            self.warm_up_error = f"{type(exc).__name__}: {exc}"

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoders.shutdown(wait=True)

    async def decode(self, data: bytes, name: str):
        """Pixels of one upload, decoded on the pool; 422 naming it when it is no image."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.decoders, decode_image_bytes, data, self.spec, name
            )
        except ImageError as exc:
            raise RequestError(422, f"{exc.path}: {exc.reason}") from None

    async def scores(self, images: list[tuple[bytes, str]]):
        """The model's output row for each (bytes, name), decoded in parallel, batched."""
        self.batcher.expect(len(images))

        async def one(data, name):
            try:
                pixels = await self.decode(data, name)
            except BaseException:
                self.batcher.expect(-1)
                raise
            return await self.batcher.submit(pixels)

        return await asyncio.gather(*(one(data, name) for data, name in images))


def model_card(bundle: Bundle, name: str) -> dict:
    """What the page's header and the metadata route show about the model."""
    preprocessing = bundle.preprocessing
    manifest = bundle.manifest if isinstance(bundle.manifest, dict) else {}
    metrics = manifest.get("final_metrics") or {}
    validation = {
        key[4:]: value
        for key, value in metrics.items()
        if key.startswith("val_") and isinstance(value, (int, float))
    }
    export = _is_export(bundle)
    return {
        "name": name,
        "kind": f"{manifest.get('format')} export" if export else "keras bundle",
        "classes": list(bundle.class_names),
        "class_mode": preprocessing.class_mode,
        "image_size": list(preprocessing.spec.image_size),
        "color_mode": preprocessing.spec.color_mode,
        "interpolation": preprocessing.spec.interpolation,
        "threshold": preprocessing.threshold if preprocessing.class_mode == "binary" else None,
        "validation": validation,
        "trained": manifest.get("created"),
        "epochs": manifest.get("epochs"),
        "architecture": None if export else _architecture(manifest),
        "explain": not export,
        "top_k": None
        if preprocessing.class_mode == "binary"
        else min(DEFAULT_TOP_K, len(bundle.class_names)),
    }


def _architecture(manifest: dict) -> str:
    """ "mobilenet_v3_small (imagenet)", "conv_blocks (from runs/x)" or "conv_blocks"."""
    start = manifest.get("start") if isinstance(manifest.get("start"), dict) else {}
    backbone = start.get("backbone") if isinstance(start.get("backbone"), dict) else None
    source = start.get("init_from") if isinstance(start.get("init_from"), dict) else None
    name = str(backbone.get("name")) if backbone else "conv_blocks"
    if backbone and isinstance(backbone.get("weights"), dict):
        weights = backbone["weights"]
        name += f" ({weights.get('file') or weights.get('kind')})"
    if source:
        name += f", features from {source.get('bundle')}"
    return name


def _is_export(bundle: Bundle) -> bool:
    return isinstance(bundle.manifest, dict) and "source_bundle" in bundle.manifest


def _read_static() -> dict[str, bytes]:
    folder = resources.files("cnnclf.serve") / "static"
    return {name: (folder / name).read_bytes() for name in ("index.html", *STATIC_FILES)}


def create_app(bundle: Bundle, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving `bundle` (from `load_bundle` or `load_export`).

    Args:
        bundle: the loaded model; it is warmed up when the app starts.
        settings: name, token, CORS origins, upload and batching limits.

    Returns:
        An ASGI app; run it with uvicorn, or use it with FastAPI's TestClient.
    """
    settings = settings or ServeSettings()
    service = _Service(bundle, settings)
    static = _read_static()
    page = (
        static["index.html"]
        .decode("utf-8")
        .replace("{{name}}", html.escape(settings.name, quote=True))
    )

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="cnnclf serve",
        lifespan=lifespan,
        description=f"Image classifier `{settings.name}` ({', '.join(bundle.class_names)}). "
        'Errors are 4xx with `{"error": "..."}`.'
        + (" Every API route needs `Authorization: Bearer <token>`." if settings.token else ""),
    )
    app.state.service = service

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return JSONResponse(
            {"error": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )

    def authorised(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), settings.token.encode()
        ):
            raise RequestError(
                401,
                "missing or wrong token: send the header "
                "'Authorization: Bearer <token>' (--token / CNNCLF_TOKEN)",
            )

    def known(name: str) -> None:
        if name != settings.name:
            raise RequestError(
                404, f"no model named {name!r}: this server serves {settings.name!r}"
            )

    api = [Depends(authorised)]
    limit = settings.max_upload_bytes

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

    @app.get("/readyz", summary="Readiness: model loaded and one warm-up prediction done")
    async def readyz():
        if service.ready:
            return {"status": "ready", "model": settings.name}
        if service.warm_up_error:
            return JSONResponse(
                {"status": "failed", "error": service.warm_up_error}, status_code=503
            )
        return JSONResponse({"status": "warming up"}, status_code=503)

    @app.post(
        "/predict",
        dependencies=api,
        openapi_extra=_MULTIPART_BODY,
        summary="Classify one or many uploaded images",
        description="Multipart file field(s), any field name. Returns a list of the "
        "objects `cnnclf predict --format json` prints: path (the upload's "
        "file name), label, probability, probabilities, and top_k for "
        "models with 3+ classes. `threshold` (binary models) and `top_k` "
        "(3+ classes) act like predict's options.",
    )
    async def predict(request: Request, threshold: float | None = None, top_k: int | None = None):
        threshold, top_k = _prediction_options(bundle, threshold, top_k)
        uploads = await read_uploads(request, limit, MAX_INSTANCES)
        rows = await service.scores([(u.data, u.filename or "upload") for u in uploads])
        return [
            interpret(row, bundle.class_names, threshold, u.filename or "upload", top_k).to_json()
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
        "the headers X-Label and X-Probability repeat them.",
    )
    async def explain(request: Request):
        if not service.explainable:
            raise RequestError(
                400,
                f"Grad-CAM needs a Keras bundle; this server runs "
                f"{service.card['kind']} {Path(bundle.path).name} "
                "(serve the bundle it was exported from)",
            )
        uploads = await read_uploads(request, limit, 1)
        upload = uploads[0]
        name = upload.filename or "upload"
        pixels = await service.decode(upload.data, name)
        png, label, probability = await asyncio.get_running_loop().run_in_executor(
            service.batcher.model_thread, _grad_cam_png, bundle, pixels, upload.data, name
        )
        return Response(
            png,
            media_type="image/png",
            headers={"X-Label": _header_safe(label), "X-Probability": f"{probability:.6f}"},
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
        body = await read_json(request, limit)
        images = _instances(body)
        rows = await service.scores(images)
        return {"predictions": [[round(float(v), 6) for v in row] for row in rows]}

    return app


def _prediction_options(bundle: Bundle, threshold, top_k):
    """(threshold, top_k) for one /predict request, refused where predict would refuse them."""
    n = len(bundle.class_names)
    if bundle.preprocessing.class_mode == "binary":
        if top_k is not None:
            raise RequestError(
                400,
                "top_k: for multi-class models; this one is binary (both "
                "probabilities are in the answer already)",
            )
        if threshold is not None and not 0 < threshold < 1:
            raise RequestError(
                400, f"threshold: must be between 0 and 1 (exclusive), got {threshold:g}"
            )
        return (bundle.preprocessing.threshold if threshold is None else threshold), None
    if threshold is not None:
        raise RequestError(
            400,
            f"threshold: only binary models have a decision threshold; this one has {n} classes",
        )
    if top_k is not None and not 1 <= top_k <= n:
        raise RequestError(
            400, f"top_k: must be from 1 to {n} (the number of classes), got {top_k}"
        )
    return None, top_k or min(DEFAULT_TOP_K, n)


def _instances(body) -> list[tuple[bytes, str]]:
    """(image bytes, name) per TF-Serving instance; 400 naming the first malformed one."""
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError(
            400,
            'expected a JSON object {"instances": [{"b64": ...}, ...]}'
            " (TensorFlow Serving's row format)",
        )
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, "instances: must be a non-empty list")
    if len(instances) > MAX_INSTANCES:
        raise RequestError(
            413, f"instances: at most {MAX_INSTANCES} per request, got {len(instances)}"
        )
    images = []
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and len(instance) == 1 and "b64" not in instance:
            instance = next(iter(instance.values()))  # a named input: {"image": {"b64": ...}}
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise RequestError(400, f'instances[{i}]: must be {{"b64": "<base64 image file>"}}')
        try:
            data = base64.b64decode(instance["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"instances[{i}].b64: not valid base64") from None
        images.append((data, f"instances[{i}]"))
    return images


def _grad_cam_png(bundle: Bundle, pixels, data: bytes, name: str):
    """(PNG bytes, label, probability): the Grad-CAM overlay `cnnclf explain` draws."""
    from cnnclf.inference.explain import grad_cam_pixels, overlay

    heatmap, prediction, note = grad_cam_pixels(bundle, pixels, name)
    out = io.BytesIO()
    overlay(
        _display_copy(data, name),
        heatmap,
        f"{prediction.label} {prediction.probability:.2f}",
        out,
        note=note,
    )
    return out.getvalue(), prediction.label, prediction.probability


DISPLAY_SIDE = 448  # longest side of the picture under a served heatmap


def _display_copy(data: bytes, name: str) -> io.BytesIO:
    """The upload, upright and at most DISPLAY_SIDE pixels long, as an in-memory PNG.

    Why: `overlay` draws on the original at full size; an upload can be tens of megapixels,
    and this decode goes through `decode_image_bytes`, with its limits and pixel budget.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF says: sides swap upright
            width, height = height, width
    scale = min(1.0, DISPLAY_SIDE / max(width, height))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = decode_image_bytes(data, ImageSpec(size, "rgb", "bilinear"), name)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    out.seek(0)
    return out


def _header_safe(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")
