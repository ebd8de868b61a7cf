"""Prediction from a bundle: batched, decoded in parallel, one bad file never stops the rest.

Decoding runs in a thread pool with `data.decode.load_image` (the same function training used;
Pillow releases the GIL while decoding), a couple of batches ahead of the model, so the model
and the JPEG decoder work at the same time. A short batch is padded to the next power of two,
so the compiled predict function is traced a few times at most, and one image costs one.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cnnclf.bundle import Bundle
from cnnclf.data.decode import load_image
from cnnclf.errors import ImageError
from cnnclf.inference.tta import Plan


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    probability: float  # of the predicted label
    probabilities: dict[str, float]
    top_k: list[dict] | None = None  # [{"label", "probability"}], most probable first
    # Multi-label models: every class at or over its threshold (possibly none), most probable
    # first, and the thresholds used. `label` is then the most probable class, for code that
    # wants one name; JSON leaves it out, since it may be under its threshold.
    labels: list[str] | None = None
    thresholds: dict[str, float] | None = None

    def to_json(self) -> dict:
        if self.labels is not None:
            return {
                "path": self.path,
                "labels": self.labels,
                "probabilities": self.probabilities,
                "thresholds": self.thresholds,
                **({"top_k": self.top_k} if self.top_k is not None else {}),
            }
        row = {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "probabilities": self.probabilities,
        }
        if self.top_k is not None:
            row["top_k"] = self.top_k
        return row


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


def interpret(
    probs: np.ndarray,
    class_names: list[str],
    threshold: float | None,
    path: str,
    top_k: int | None = None,
) -> Prediction:
    """Turns one model output row into a labelled prediction.

    Binary models have one sigmoid unit: P(class index 1). The label is that class when the
    probability is >= the bundle's threshold, and `probability` is that of the chosen label.
    With `top_k`, the K most probable classes are listed too (ties in class order).
    """
    if len(class_names) == 2 and probs.shape[-1] == 1:
        p1 = float(probs[0])
        values = [1.0 - p1, p1]
        index = 1 if p1 >= (0.5 if threshold is None else threshold) else 0
    else:
        values = [float(v) for v in probs]
        index = int(np.argmax(probs))
    ranked = None
    if top_k is not None:
        order = sorted(range(len(values)), key=lambda i: -values[i])[:top_k]
        ranked = [{"label": class_names[i], "probability": round(values[i], 6)} for i in order]
    return Prediction(
        path,
        class_names[index],
        round(values[index], 6),
        {name: round(v, 6) for name, v in zip(class_names, values)},
        ranked,
    )


def interpret_multi_label(
    probs: np.ndarray,
    class_names: list[str],
    thresholds: tuple[float, ...] | None,
    path: str,
    top_k: int | None = None,
) -> Prediction:
    """One multi-label output row (a sigmoid per class) as a prediction: `labels` are the
    classes at or over their own threshold (0.5 where the bundle has none), most probable
    first; an image may have none."""
    values = [float(v) for v in probs]
    cuts = list(thresholds) if thresholds is not None else [0.5] * len(class_names)
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranked = None
    if top_k is not None:
        ranked = [
            {"label": class_names[i], "probability": round(values[i], 6)} for i in order[:top_k]
        ]
    return Prediction(
        path,
        class_names[order[0]],
        round(values[order[0]], 6),
        {name: round(v, 6) for name, v in zip(class_names, values)},
        ranked,
        labels=[class_names[i] for i in order if values[i] >= cuts[i]],
        thresholds={name: round(t, 6) for name, t in zip(class_names, cuts)},
    )


def predict_paths(
    bundle: Bundle,
    paths: list[str],
    *,
    batch_size: int = 32,
    threshold: float | None = None,
    top_k: int | None = None,
    workers: int | None = None,
    tta: bool = False,
) -> Iterator[Prediction | Failure]:
    """Yields one `Prediction` or `Failure` per path, in input order.

    Args:
        bundle: from `bundle.load_bundle`.
        paths: image files.
        batch_size: images per model call.
        threshold: overrides the bundle's binary decision threshold.
        top_k: also list the K most probable classes in each Prediction.
        workers: decoding threads (default: one per CPU core).
        tta: combine the outputs over each image's views (`tta.Plan`: 2-6 forward passes).
    """
    threshold = bundle.preprocessing.threshold if threshold is None else threshold
    scored = score_paths(bundle, paths, batch_size=batch_size, workers=workers, tta=tta)
    for path, result in scored:
        if isinstance(result, ImageError):
            yield Failure(path, result.reason)
        elif bundle.preprocessing.multi_label:
            cuts = bundle.preprocessing.thresholds
            yield interpret_multi_label(result, bundle.class_names, cuts, path, top_k)
        else:
            yield interpret(result, bundle.class_names, threshold, path, top_k)


def score_paths(
    bundle: Bundle,
    paths: list[str],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    tta: bool = False,
) -> Iterator[tuple[str, np.ndarray | ImageError]]:
    """Yields (path, raw model output row) or (path, ImageError) per path, in input order.

    Streams: only a few batches of decoded images exist at any time, whatever len(paths) is.
    With `tta`, each row is combined over the image's views (`tta.Plan`: their mean, rescaled
    by the bundle's TTA temperature).
    """
    from cnnclf.inference.tta import plan

    combined = plan(bundle) if tta else None
    spec = bundle.preprocessing.spec
    workers = workers or os.cpu_count() or 2
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    def decode(path):
        try:
            return load_image(path, spec)
        except ImageError as exc:
            return exc

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending: deque = deque()
        ahead = 2
        for batch in batches[:ahead]:
            pending.append((batch, [pool.submit(decode, p) for p in batch]))
        next_batch = ahead
        while pending:
            batch, futures = pending.popleft()
            if next_batch < len(batches):
                pending.append(
                    (batches[next_batch], [pool.submit(decode, p) for p in batches[next_batch]])
                )
                next_batch += 1
            results = [f.result() for f in futures]
            good = [r for r in results if not isinstance(r, ImageError)]
            outputs = iter(_run_model(bundle.model, good, batch_size, spec.shape, combined))
            for path, result in zip(batch, results):
                yield path, (result if isinstance(result, ImageError) else next(outputs))
    finally:
        # Ctrl-C, or a caller that stops reading: the batches decoded ahead are dropped, not
        # waited for (a `with` block would finish decoding them first).
        pool.shutdown(wait=True, cancel_futures=True)


def padded_size(n: int, batch_size: int) -> int:
    """The batch `n` images are padded to: the next power of two, at most `batch_size`.

    Padding every batch to `batch_size` kept the predict function to one trace, but made one
    image cost 32 images' compute; powers of two cost at most 2x and log2(batch_size) + 1
    traces.
    """
    return min(batch_size, 1 << max(0, n - 1).bit_length())


def _run_model(
    model, arrays: list[np.ndarray], batch_size: int, shape, tta: Plan | None = None
) -> np.ndarray:
    """The model's outputs for `arrays`; with `tta`, combined over each one's views."""
    if not arrays:
        return np.zeros((0, 1), np.float32)
    x = np.zeros((padded_size(len(arrays), batch_size), *shape), np.float32)
    x[: len(arrays)] = np.stack(arrays)
    if tta is None:
        return np.asarray(model.predict_on_batch(x))[: len(arrays)]
    outputs = [np.asarray(model.predict_on_batch(v)) for v in tta.views(x)]
    return tta.combine(outputs)[: len(arrays)]
