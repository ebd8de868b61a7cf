"""The search space: what one trial draws, and how that becomes a config.

A trial's parameters are applied as `--set` overrides on the user's config and the result is
validated like any config, so a trial can never train something `cnnclf train` would refuse,
and `best.yaml` is the same load with the best trial's overrides.
"""

from __future__ import annotations

from typing import Any

from cnnclf.config import Config

# augment_strength s scales these ImageDataGenerator ranges: s = 1 is a strong but common
# augmentation for small photos; flips are left as configured (whether they are valid
# depends on the data, not on the strength).
FULL_STRENGTH = {
    "rotation_range": 30.0,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
    "zoom_range": 0.3,
    "shear_range": 20.0,
}


def suggest(trial: Any, config: Config) -> dict[str, Any]:
    """Draws this trial's parameters from `config.tune` (keys left out are not tuned).

    Args:
        trial: an `optuna.Trial` (or `optuna.trial.FixedTrial` in tests).
        config: the validated config whose `tune` section is the space.

    Returns:
        {parameter name: value}, e.g. {"learning_rate": 0.003, "batch_size": 32}.
    """
    space, params = config.tune, {}
    if space.learning_rate:
        params["learning_rate"] = trial.suggest_float(
            "learning_rate", *space.learning_rate, log=True
        )
    if space.dense_units:
        params["dense_units"] = trial.suggest_categorical("dense_units", space.dense_units)
    if space.dropout and (space.dense_units or config.model.dense_units):
        params["dropout"] = trial.suggest_float("dropout", *space.dropout)
    if space.augment_strength:
        params["augment_strength"] = trial.suggest_float(
            "augment_strength", *space.augment_strength
        )
    if space.batch_size:
        params["batch_size"] = trial.suggest_categorical("batch_size", space.batch_size)
    if space.backbones and config.model.backbone:
        params["backbone"] = trial.suggest_categorical("backbone", space.backbones)
    return params


def overrides(params: dict[str, Any], config: Config) -> list[str]:
    """The `--set` overrides that apply `params` to `config`, in a stable order."""
    sets = []
    if "learning_rate" in params:
        sets.append(f"train.learning_rate={params['learning_rate']!r}")
    if "dense_units" in params:
        layers = max(1, len(config.model.dense_units))
        sets.append(f"model.dense_units={[int(params['dense_units'])] * layers}")
    if "dropout" in params:
        sets.append(f"model.dropout={params['dropout']!r}")
    if "augment_strength" in params:
        strength = float(params["augment_strength"])
        sets += [
            f"augment.{key}={round(top * strength, 6)!r}" for key, top in FULL_STRENGTH.items()
        ]
    if "batch_size" in params:
        sets.append(f"data.batch_size={int(params['batch_size'])}")
    if "backbone" in params:
        sets.append(f"model.backbone.name={params['backbone']}")
    return sets
