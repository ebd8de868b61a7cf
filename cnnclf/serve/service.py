"""The loaded model and what serves it: decoding pool, micro-batcher, warm-up, model card.

Every image takes the path `cnnclf predict` takes: `decode.decode_image_bytes` (the decoder,
limits and pixel budget of `decode.load_image`, on a thread pool, off the event loop), then
the micro-batcher (`batcher.py`) for the model call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cnnclf.bundle import Bundle
from cnnclf.data.decode import decode_image_bytes, is_large_upload
from cnnclf.errors import ImageError
from cnnclf.serve.batcher import MicroBatcher
from cnnclf.serve.settings import DEFAULT_TOP_K, ServeSettings
from cnnclf.serve.uploads import RequestError


class Service:
    """The loaded model and what serves it: decoding pool, batcher, readiness."""

    def __init__(
        self,
        bundle: Bundle,
        settings: ServeSettings,
        on_ready: Callable[[], None] | None = None,
    ):
        self.bundle = bundle
        self.settings = settings
        self.on_ready = on_ready  # called once, when the warm-up has run
        self.spec = bundle.preprocessing.spec
        self.explainable = not is_export(bundle)
        model: Any = bundle.model  # a keras.Model, or an export's runtime
        self.batcher = MicroBatcher(
            model.predict_on_batch,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
        )
        self.decoders = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode"
        )
        # Uploads that take the decode budget's large lane queue here, not on `decoders`.
        self.large_decoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode-large")
        self.ready = False
        # /predict and /explain requests being handled now (reported by /readyz): what a
        # drain waits for, and what a test holding one open can wait on instead of a sleep.
        self.in_flight = 0
        self.warm_up_error: str | None = None
        self._warm_up_task: asyncio.Task | None = None
        self.card = model_card(bundle, settings.name, settings.notice)

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
        except Exception as exc:  # the model cannot run: /readyz says why, forever
            self.warm_up_error = f"{type(exc).__name__}: {exc}"
            return
        if self.on_ready is not None:
            self.on_ready()  # first, so that whoever sees /readyz turn ready finds it done
        self.ready = True

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoders.shutdown(wait=True)
        self.large_decoders.shutdown(wait=True)

    async def decode(self, data: bytes, name: str):
        """Pixels of one upload, decoded on the pool; 422 naming it when it is no image.

        Its header decides the pool first: images large enough to wait for memory in the
        decode budget's large lane wait on two threads of their own, so a flood of them never
        holds every thread of `decoders` and ordinary uploads keep being decoded at once.
        """
        loop = asyncio.get_running_loop()
        try:
            large = await loop.run_in_executor(
                self.decoders, is_large_upload, data, self.spec, name
            )
            return await loop.run_in_executor(
                self.large_decoders if large else self.decoders,
                decode_image_bytes,
                data,
                self.spec,
                name,
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


def model_card(bundle: Bundle, name: str, notice: str = "") -> dict:
    """What the page's header and the metadata route show about the model.

    `notice` (`serve --notice`) travels in the card, not in the page, so that the page and
    any other client show the same line; None when it is blank, and the page shows none.
    """
    preprocessing = bundle.preprocessing
    manifest = bundle.manifest if isinstance(bundle.manifest, dict) else {}
    metrics = manifest.get("final_metrics") or {}
    validation = {
        key[4:]: value
        for key, value in metrics.items()
        if key.startswith("val_") and isinstance(value, (int, float))
    }
    export = is_export(bundle)
    return {
        "name": name,
        "bundle": Path(bundle.path).resolve().name,
        "kind": f"{manifest.get('format')} export" if export else "keras bundle",
        "classes": list(bundle.class_names),
        "class_mode": preprocessing.class_mode,
        "image_size": list(preprocessing.spec.image_size),
        "color_mode": preprocessing.spec.color_mode,
        "interpolation": preprocessing.spec.interpolation,
        "threshold": preprocessing.threshold if preprocessing.class_mode == "binary" else None,
        "thresholds": _thresholds(bundle) if preprocessing.class_mode == "multi_label" else None,
        "validation": validation,
        "validation_images": _image_count(manifest.get("validation_images")),
        "trained": manifest.get("created"),
        "epochs": manifest.get("epochs"),
        "architecture": None if export else _architecture(manifest),
        "explain": not export,
        "notice": notice.strip() or None,
        "top_k": None
        if preprocessing.class_mode != "categorical"
        else min(DEFAULT_TOP_K, len(bundle.class_names)),
    }


def _thresholds(bundle: Bundle) -> dict[str, float]:
    """class -> the threshold a multi-label bundle decides it at (0.5 where it keeps none)."""
    cuts = bundle.preprocessing.thresholds or (0.5,) * len(bundle.class_names)
    return {name: round(float(t), 6) for name, t in zip(bundle.class_names, cuts)}


def _image_count(per_class) -> int | None:
    """The total of bundle.json's class -> images, or None when it is not recorded."""
    if not isinstance(per_class, dict):
        return None
    counts = [n for n in per_class.values() if isinstance(n, int)]
    return sum(counts) if counts else None


def _architecture(manifest: dict) -> str:
    """ "mobilenet_v3_small (imagenet)", "conv_blocks (from runs/x)" or "conv_blocks"."""
    start = manifest.get("start")
    start = start if isinstance(start, dict) else {}
    backbone = start.get("backbone") if isinstance(start.get("backbone"), dict) else None
    source = start.get("init_from") if isinstance(start.get("init_from"), dict) else None
    name = str(backbone.get("name")) if backbone else "conv_blocks"
    if backbone and isinstance(backbone.get("weights"), dict):
        weights = backbone["weights"]
        name += f" ({weights.get('file') or weights.get('kind')})"
    if source:
        name += f", features from {source.get('bundle')}"
    return name


def is_export(bundle: Bundle) -> bool:
    return isinstance(bundle.manifest, dict) and "source_bundle" in bundle.manifest
