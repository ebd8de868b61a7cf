"""What a model is: its layers and parameters, what each conv block sees, and how it trained.

`summarize_bundle` describes a trained bundle, `summarize_config` the model a config would
build. The per-block geometry (feature-map size and receptive field) is plain arithmetic on the
config, so `conv_block_geometry` needs no TensorFlow; the layer table and parameter counts come
from the Keras model itself, so they can never disagree with what training builds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnclf.config import Config, ConvBlock, load_config
from cnnclf.inference.metrics import small_validation_warning

# A config does not say how many classes its data has; the model is built for the smallest
# case, 2 classes (one sigmoid unit), and the output says so.
ASSUMED_CLASSES = 2


def conv_block_geometry(
    image_size, conv_blocks: Sequence[Mapping[str, Any] | ConvBlock], padding: str
) -> list[dict]:
    """Feature-map size and receptive field after each conv block, in plain Python.

    Each block is Conv2D (stride 1, `padding`) + ReLU + MaxPooling2D (`pool_size`, stride
    `pool_size`, floor). The receptive field is the side, in input pixels, of the square one
    feature-map cell sees; `jump` is the input distance between two neighbouring cells. A
    k x k convolution adds (k - 1) * jump to the receptive field; a p x p pooling adds
    (p - 1) * jump, then multiplies jump by p. Padding changes the sizes, not the field.

    Args:
        image_size: [height, width] of the model input.
        conv_blocks: `model.conv_blocks` as validated ({filters, kernel_size, pool_size}).
        padding: "valid" (each side shrinks by kernel_size - 1) or "same".

    Returns:
        One dict per block: block (from 1), filters, kernel_size, pool_size, conv_output
        ([h, w] after the convolution), conv_receptive_field, output ([h, w] after pooling),
        receptive_field and jump (both after pooling).

    Example:
        conv_block_geometry([16, 16], [{"filters": 4, "kernel_size": 3, "pool_size": 2}],
                            "valid")[0]["output"]  # [7, 7]
    """
    height, width = image_size
    field, jump = 1, 1
    blocks = []
    for i, block in enumerate(conv_blocks, start=1):
        k, p = block["kernel_size"], block["pool_size"]
        if padding == "valid":
            height, width = height - k + 1, width - k + 1
        field += (k - 1) * jump
        conv_output, conv_field = [height, width], field
        height, width = height // p, width // p
        field += (p - 1) * jump
        jump *= p
        blocks.append(
            {
                "block": i,
                "filters": block["filters"],
                "kernel_size": k,
                "pool_size": p,
                "conv_output": conv_output,
                "conv_receptive_field": conv_field,
                "output": [height, width],
                "receptive_field": field,
                "jump": jump,
            }
        )
    return blocks


def summarize_config(config: Config) -> dict:
    """The model `config` builds, for `ASSUMED_CLASSES` classes (needs TensorFlow).

    Returns:
        The dict `format_summary` reads: source "config", input_size, classes, the Keras
        facts (layers, parameter counts, layer_table), blocks and a `note` on the class count.
    """
    from cnnclf.model.build import build_model

    height, width = config.data.image_size
    channels = _channels(config.data.color_mode)
    model = build_model(config, ASSUMED_CLASSES, channels)
    facts = _model_facts(model)
    head_inputs = _output_layer_inputs(model)
    return {
        "source": "config",
        "path": None,
        "input_size": [height, width, channels],
        "color_mode": config.data.color_mode,
        "classes": ASSUMED_CLASSES,
        "class_names": None,
        "classes_assumed": True,
        "note": (
            f"a config does not say how many classes the data has: built for "
            f"{ASSUMED_CLASSES} (1 sigmoid output unit); N >= 3 classes get N softmax "
            f"units, (N - 1) x {head_inputs + 1} more parameters"
        ),
        **facts,
        "padding": config.model.padding,
        "blocks": None
        if config.model.backbone
        else conv_block_geometry(
            config.data.image_size, config.model.conv_blocks, config.model.padding
        ),
        "backbone": config.model.backbone.to_dict() if config.model.backbone else None,
        "metrics": None,
    }


def summarize_bundle(bundle) -> dict:
    """A loaded bundle's model, conv-block geometry (from its config.yaml) and training facts.

    Args:
        bundle: a `cnnclf.bundle.Bundle` (from `load_bundle`).

    Returns:
        As `summarize_config`, with source "bundle", the class names, and `metrics`: the
        manifest's final_metrics, best_epoch, epochs, train_images, validation_images and
        validation_source. `blocks` is None, with a `note`, when config.yaml is missing or no
        longer valid.
    """
    from cnnclf.bundle import CONFIG_FILE

    spec = bundle.preprocessing.spec
    manifest = bundle.manifest
    blocks, padding, note = None, None, None
    try:
        config = load_config(Path(bundle.path) / CONFIG_FILE)
        padding = config.model.padding
        if not config.model.backbone:  # a backbone has no conv_blocks to describe
            blocks = conv_block_geometry(list(spec.image_size), config.model.conv_blocks, padding)
    except Exception as exc:  # a missing or outdated config.yaml: the rest is still worth seeing
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        note = f"no per-block sizes: {CONFIG_FILE} cannot be read ({first})"
    return {
        "source": "bundle",
        "path": str(bundle.path),
        "input_size": [*spec.image_size, _channels(spec.color_mode)],
        "color_mode": spec.color_mode,
        "classes": len(bundle.class_names),
        "class_names": list(bundle.class_names),
        "classes_assumed": False,
        "note": note,
        **_model_facts(bundle.model),
        "padding": padding,
        "blocks": blocks,
        "backbone": (
            (manifest.get("start") or {}).get("backbone")
            if isinstance(manifest.get("start"), dict)
            else None
        ),
        "metrics": {
            key: manifest.get(key)
            for key in (
                "final_metrics",
                "best_epoch",
                "epochs",
                "train_images",
                "validation_images",
                "validation_source",
                "image_counts",
            )
        },
    }


def format_summary(summary: dict, fmt: str = "table") -> str:
    """The summary as text ("table": Keras' layer table and the facts) or "json"."""
    if fmt == "json":
        return json.dumps({k: v for k, v in summary.items() if k != "layer_table"}, indent=2)
    height, width, channels = summary["input_size"]
    lines = [
        f"model: {summary['path'] or 'built from the config'}",
        f"input: {height} x {width} x {channels} ({summary['color_mode']})",
    ]
    if summary["classes_assumed"]:
        lines.append(f"classes: {summary['classes']} (assumed)")
    else:
        lines.append(f"classes: {summary['classes']} ({', '.join(summary['class_names'])})")
    if summary["note"]:
        lines.append(f"note: {summary['note']}")
    lines += [
        "",
        summary["layer_table"].rstrip(),
        "",
        f"parameters: {summary['total_params']:,} total, "
        f"{summary['trainable_params']:,} trainable, "
        f"{summary['non_trainable_params']:,} non-trainable",
    ]
    backbone = summary.get("backbone")
    if isinstance(backbone, dict):
        weights = backbone.get("weights")
        source = (
            (weights.get("file") or weights.get("kind")) if isinstance(weights, dict) else weights
        )
        lines += ["", f"backbone: {backbone.get('name')} (weights: {source})"]
    if summary["blocks"]:
        lines += [
            "",
            f"conv blocks (padding {summary['padding']}; rf: receptive field in input "
            "pixels, jump: input pixels between neighbouring cells):",
        ]
        rows = [("block", "filters", "kernel", "pool", "conv out", "conv rf", "out", "rf", "jump")]
        rows += [
            (
                str(b["block"]),
                str(b["filters"]),
                str(b["kernel_size"]),
                str(b["pool_size"]),
                _size(b["conv_output"]),
                str(b["conv_receptive_field"]),
                _size(b["output"]),
                str(b["receptive_field"]),
                str(b["jump"]),
            )
            for b in summary["blocks"]
        ]
        lines += _columns(rows)
    if summary["metrics"]:
        lines += _training_lines(summary["metrics"])
    return "\n".join(lines)


def _training_lines(metrics: dict) -> list[str]:
    """How it trained: epochs, the saved weights' figures (validation first) and image counts."""
    lines: list[str] = []
    final = metrics["final_metrics"] or {}
    shown = ", ".join(
        f"{k} {v:.4f}"
        # The validation figures first: they say how good the model is.
        for k, v in sorted(final.items(), key=lambda item: not item[0].startswith("val_"))
        if k != "learning_rate" and isinstance(v, (int, float))
    )
    best = metrics["best_epoch"]
    lines += [
        "",
        f"trained {metrics['epochs']} epoch(s); weights of "
        f"{'epoch ' + str(best) + ' (best)' if best else 'the last epoch'}: "
        f"{shown or 'no metrics recorded'}",
    ]
    images = metrics.get("image_counts") or {}  # multi-label: per class counts overlap
    for name, key in (("training", "train_images"), ("validation", "validation_images")):
        counts = metrics[key] or {}
        total = images.get("train" if key == "train_images" else "validation")
        where = (
            f" from {metrics['validation_source']}"
            if key == "validation_images" and metrics["validation_source"]
            else ""
        )
        lines.append(
            f"{name} images: {total if total is not None else sum(counts.values())}{where} ("
            + ", ".join(f"{n} {c}" for c, n in counts.items())
            + ")"
        )
    if warning := small_validation_warning(
        metrics["validation_images"] or {}, metrics["validation_source"]
    ):
        lines.append(warning)
    return lines


def _channels(color_mode: str) -> int:
    return 3 if color_mode == "rgb" else 1


def _model_facts(model) -> dict:
    """Layers, parameter counts and Keras' own summary table for a built Keras model."""
    import numpy as np

    captured = []
    # Keras renders through a rich console 80 columns wide when captured: a longer line_length
    # would cut the Param # column off.
    model.summary(line_length=80, print_fn=lambda text, **_: captured.append(text))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = int(model.count_params())
    layers = [
        {
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": list(layer.output.shape)[1:],
            "params": int(layer.count_params()),
        }
        for layer in model.layers
    ]
    return {
        "layers": layers,
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "layer_table": "\n".join(captured),
    }


def _output_layer_inputs(model) -> int:
    """How many values reach the output Dense layer (its weights per unit, less the bias)."""
    return int(model.layers[-1].input.shape[-1])


def _size(size: list[int]) -> str:
    return f"{size[0]} x {size[1]}"


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
