"""What a training run reports: `TrainResult`, and the facts it puts in bundle.json's record
(`bundle.manifest.RunRecord`): final metrics, phases, skipped files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cnnclf.bundle.manifest import RunRecord
from cnnclf.training.validation import threshold_record

if TYPE_CHECKING:
    from cnnclf.training.trainer import Trainer


@dataclass(frozen=True)
class TrainResult:
    bundle_dir: Path | None
    history: dict
    skipped: dict
    seconds: float
    final_metrics: dict  # of the saved weights' epoch (the best one under keep_best)
    train_images: dict = field(default_factory=dict)  # class -> images trained on
    validation_images: dict = field(default_factory=dict)  # class -> images validated on
    # Multi-label: images per set ({"train": n, "validation": n}); the per-class counts above
    # count an image with two labels twice. None: single-label, where they add up.
    image_counts: dict | None = None


def image_counts(trainer: Trainer) -> dict[str, int] | None:
    """Images per set of a multi-label run (None for single-label: the class counts add up)."""
    if not trainer.multi_label:
        return None
    return {name: trainer.stores[name].used_images() for name in ("train", "validation")}


def final_metrics(history: dict, best_epoch: int | None) -> dict:
    """The metrics of the epoch whose weights are saved: the best one when kept, else the last."""
    index = (best_epoch - 1) if best_epoch else -1
    return {k: v[index] for k, v in history.items() if k not in ("epoch", "epoch_seconds") and v}


def skipped_files(skipped: dict) -> list[dict]:
    return [{"path": p, "reason": r} for p, r in sorted(skipped.items())]


def phases_record(plan, starts: list, history: dict, saved) -> list[dict] | None:
    """bundle.json's `phases`: which epochs each phase ran, at what rate, training what
    (the layers that trained: `unfreeze: 500` on a 52-layer backbone trained 52).

    `saved` is the model the bundle holds, not the one `fit` trained: that can be a wrapper
    (augmentation in the step, XLA per replica) whose layers are not the model's.
    """
    from cnnclf.model.transfer import weighted_layers

    if len(plan) == 1 and not plan[0].frozen:
        return None
    counted = any(p.unfreeze not in (None, "all") for p in plan)
    candidates = weighted_layers(saved) if counted else []
    done = len(history.get("epoch", []))
    record = []
    for i, (phase, first) in enumerate(zip(plan, starts)):
        last = starts[i + 1] if i + 1 < len(starts) else min(first + phase.epochs, done)
        record.append(
            {
                "name": phase.name,
                "epochs": [first + 1, last] if last > first else [],
                "learning_rate": phase.learning_rate,
                "trains": _what_trains(phase, candidates),
            }
        )
    return record


def _what_trains(phase, candidates: list) -> str:
    from cnnclf.model.transfer import layers_to_unfreeze

    if phase.frozen:
        return "the head"
    if phase.name == "train":
        return "everything"
    if phase.unfreeze == "all":
        return f"head and {phase.unfreeze} feature layers"
    return f"head and the top {len(layers_to_unfreeze(candidates, phase))} feature layers"


def run_record(trainer: Trainer, history: dict, final: dict, seconds: float) -> RunRecord:
    """bundle.json for a run the Trainer has fitted and validated."""
    config, dataset, placement = trainer.config, trainer.dataset, trainer.placement
    config_path = trainer.setup.config_path
    return RunRecord.now(
        config_file=str(Path(config_path).resolve()) if config_path else None,
        class_names=dataset.class_names,
        train_images=trainer.used["train"],
        validation_images=trainer.used["validation"],
        validation_source=dataset.validation_source,
        epochs=len(history.get("epoch", [])),
        best_epoch=trainer.best_epoch,
        stopped_early=trainer.controls.state["stopped_early"],
        resumed_after_epoch=(trainer.previous or {}).get("completed_epochs") or None,
        # Multi-label: the per-class positive weights the loss used (validation.positive_weights).
        class_weight=(
            dict(enumerate(trainer.positive_weights))
            if trainer.positive_weights is not None
            else trainer.class_weight
        ),
        phases=phases_record(
            trainer.plan, trainer.controls.state.get("phase_starts", [0]), history, trainer.saved
        ),
        start=trainer.setup.start.to_json(config),
        placement={
            "devices": placement.devices,
            "strategy": placement.strategy,
            "replicas": placement.replicas,
            "precision": placement.precision,
            "jit_compile": trainer.jit_compile,
        },
        final_metrics=final,
        threshold=threshold_record(config, dataset, trainer.threshold),
        skipped_files=skipped_files(trainer.skipped.reasons),
        train_seconds=round(seconds, 2),
        run_id=trainer.run.run_id,
        labels_from=dataset.labels_from or None,
        image_counts=image_counts(trainer),
        lr_find=trainer.lr_find or None,
    )
