"""What a request asks for: /predict's options and TensorFlow Serving's instances, checked."""

from __future__ import annotations

import base64
import binascii

from cnnclf.bundle import Bundle
from cnnclf.serve.settings import DEFAULT_TOP_K, MAX_INSTANCES
from cnnclf.serve.uploads import RequestError


def prediction_options(bundle: Bundle, threshold, top_k):
    """(threshold, top_k) for one /predict request, refused where predict would refuse them.

    A multi-label bundle takes one `threshold` for every class, like predict's --threshold;
    its answers list every class's probability, so `top_k` is only there when asked for.
    """
    n = len(bundle.class_names)
    if bundle.preprocessing.multi_label:
        if threshold is not None and not 0 < threshold < 1:
            raise RequestError(
                400, f"threshold: must be between 0 and 1 (exclusive), got {threshold:g}"
            )
        if top_k is not None and not 1 <= top_k <= n:
            raise RequestError(
                400, f"top_k: must be from 1 to {n} (the number of classes), got {top_k}"
            )
        return threshold, top_k
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


def instances(body) -> list[tuple[bytes, str]]:
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


def explained_class(bundle: Bundle, class_name: str | None) -> str | None:
    """/explain's `class`, checked against the model's classes (400 naming them)."""
    if class_name is None or class_name in bundle.class_names:
        return class_name
    shown = class_name if len(class_name) <= 80 else class_name[:80] + "..."
    raise RequestError(
        400, f"class: {shown!r} is not one of this model's classes: {', '.join(bundle.class_names)}"
    )
