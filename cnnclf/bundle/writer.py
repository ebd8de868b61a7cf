"""Writing a bundle: each of `format.py`'s files from what a training run produced.

The caller (`training.rundir.RunDir.write_bundle`) gives a fresh folder inside the run's staging
area and publishes it by one rename once this returns, so the order here matters only for what
a kill leaves behind in that folder; `bundle.json` is written last because it marks a bundle
complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnclf.bundle.format import (
    CLASS_INDICES_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    DIGESTED_FILES,
    HISTORY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    Preprocessing,
    file_sha256,
    write_json,
)

if TYPE_CHECKING:
    from cnnclf.bundle.manifest import RunRecord
    from cnnclf.config import Config


@dataclass(frozen=True)
class BundleContents:
    """Everything a bundle holds, as a training run produced it.

    Args:
        model: the Keras model to save (Rescaling inside, no augmentation layers).
        config: the resolved config the model was trained with.
        class_indices: class name -> output index.
        preprocessing: what prediction must repeat.
        history: per-epoch metrics.
        metrics: metrics.json's object: the evaluation on the validation data.
        record: bundle.json.
    """

    model: Any  # a keras.Model; typed loosely so this module never imports Keras
    config: Config
    class_indices: dict[str, int]
    preprocessing: Preprocessing
    history: dict
    metrics: dict
    record: RunRecord


def write_bundle(
    folder: Path, contents: BundleContents, after_model: Callable[[], None] = lambda: None
) -> None:
    """Writes every file of a bundle into the empty folder `folder`, bundle.json last.

    `after_model` runs once the model file is written: the run directory's fault point there
    (the bundle room does not import training's).
    """
    from cnnclf.config import dump_config
    from cnnclf.inference import plots
    from cnnclf.progress import Progress

    # Saving a large model takes a while after the last epoch: say so, step by step.
    with Progress("writing the bundle (model, sidecars, plots, manifest)", 4, "steps") as progress:
        contents.model.save(folder / MODEL_FILE)
        after_model()
        progress.advance(note=f"{MODEL_FILE} written")
        write_json(folder / CLASS_INDICES_FILE, contents.class_indices)
        write_json(folder / PREPROCESSING_FILE, contents.preprocessing.to_json())
        (folder / CONFIG_FILE).write_text(dump_config(contents.config), encoding="utf-8")
        write_json(folder / HISTORY_FILE, contents.history)
        write_json(folder / METRICS_FILE, contents.metrics)
        progress.advance(note="sidecars written")
        plots.training_curves(
            contents.history, folder / CURVES_FILE, contents.record.fine_tune_from
        )
        progress.advance(note=f"{CURVES_FILE} drawn")
        digests = {name: file_sha256(folder / name) for name in DIGESTED_FILES}
        record = contents.record.sealed(int(contents.model.count_params()), digests)
        write_json(folder / MANIFEST_FILE, record.to_json())
        progress.advance(note=f"{MANIFEST_FILE} written")
