"""Which model a command runs: `--model` resolved, its options checked, then loaded.

Everything the user can get wrong is checked from the bundle's sidecar files, before TensorFlow
loads, so such errors answer instantly.
"""

from __future__ import annotations

from pathlib import Path

import click

from cnnclf.cli import _lazy
from cnnclf.cli.group import flags
from cnnclf.errors import ConfigError


def model_or_newest(model_dir):
    """`--model` as given (a URL: the bundle downloaded into the cache, once), or the newest
    complete bundle under ./runs/ (said on stderr)."""
    if model_dir is not None:
        from cnnclf.storage import is_url, local_bundle

        return local_bundle(model_dir, "--model") if is_url(model_dir) else model_dir
    from cnnclf.training.runs import newest_bundle

    model_dir = newest_bundle()
    click.echo(f"using model {model_dir} (newest under runs/)", err=True)
    return model_dir


def load_model(
    model_dir,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    keras_only: str | None = None,
):
    """The bundle at `model_dir`, or the newest under runs/; checked before TensorFlow loads.

    Exports are run by their own runtime (ONNX Runtime, LiteRT), so predicting from one never
    imports TensorFlow where that runtime is installed. `threshold` and `top_k` are refused
    for models they cannot apply to; `keras_only` names what needs a Keras bundle.
    """
    from cnnclf.bundle import read_metadata
    from cnnclf.bundle.exported_models import is_export

    model_dir = model_or_newest(model_dir)
    if is_export(Path(model_dir)):
        if keras_only:
            raise ConfigError(
                f"--model {model_dir}: {keras_only} needs a Keras bundle (the "
                "folder the export was made from), not an export"
            )
        say_loading(f"loading the model {model_dir} ...")
        bundle = _lazy.load_export(Path(model_dir))
        _check_model_options(
            model_dir, bundle.class_names, bundle.preprocessing.class_mode, threshold, top_k
        )
        return with_threshold(bundle, threshold)
    names, preprocessing, _ = read_metadata(Path(model_dir))
    _check_model_options(model_dir, names, preprocessing.class_mode, threshold, top_k)
    say_loading(f"loading TensorFlow and the model {model_dir} ...")
    return with_threshold(_lazy.load_bundle(model_dir, flags()["verbose"]), threshold)


def with_threshold(bundle, threshold: float | None):
    """`bundle`, or for a multi-label one with `--threshold`, a copy deciding every class at it.

    One number for every class, not per class: per-class cuts are what training tunes and
    the bundle keeps; a single override is for trying a stricter or looser cut at once
    everywhere. Binary bundles keep theirs: predict and evaluate apply `threshold` themselves.
    """
    import dataclasses

    if threshold is None or not bundle.preprocessing.multi_label:
        return bundle
    cuts = (threshold,) * len(bundle.class_names)
    return dataclasses.replace(
        bundle, preprocessing=dataclasses.replace(bundle.preprocessing, thresholds=cuts)
    )


def say_loading(what: str) -> None:
    """Says on stderr, when it is a terminal, what the seconds of silence that follow are for.

    Only on a terminal: a log or a script reading stderr gets the lines it got before (an error
    is still its one line).
    """
    import sys

    if sys.stderr.isatty():
        click.echo(what, err=True)


def check_servable(model_dir: Path) -> None:
    """A bundle's or export's sidecars checked without loading it (no TensorFlow)."""
    from cnnclf.bundle import read_metadata
    from cnnclf.bundle.exported_models import is_export

    if is_export(model_dir):
        return  # an export's sidecar is checked by load_export, without TensorFlow too
    read_metadata(model_dir)


def _check_model_options(model_dir, class_names, class_mode, threshold, top_k) -> None:
    """Refuses options that the model at `model_dir` would otherwise silently ignore."""
    if threshold is not None and class_mode == "categorical":
        raise ConfigError(
            f"--threshold {threshold:g}: only binary models have a decision threshold "
            f"(multi-label ones one per class); {model_dir} has {len(class_names)} classes "
            "and predicts the most probable one"
        )
    if top_k is not None and class_mode == "binary":
        raise ConfigError(
            f"--top-k {top_k}: for multi-class models; {model_dir} is binary "
            "(both probabilities are in the JSON and CSV output already)"
        )
    if top_k is not None and top_k > len(class_names):
        raise ConfigError(f"--top-k {top_k}: {model_dir} has only {len(class_names)} classes")
