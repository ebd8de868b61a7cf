"""The learning-rate range test (Smith 2015; fastai's `lr_find`): `cnnclf lr-find` and
`train.learning_rate: auto` / `train.fine_tune.learning_rate: auto`.

The rate grows exponentially from `START_RATE` to `END_RATE` over at most `steps` training
steps, one batch each, from the phase's starting weights (phase 1: the start weights with the
backbone frozen as in training; fine-tuning: the best weights of phase 1, unfrozen as the phase
says). The loss is smoothed (`smooth`); the test stops early once the smoothed loss exceeds
`DIVERGENCE` times its best, or is NaN. The suggestion (`suggest`) is a tenth of the rate at
the smoothed loss's minimum (fastai's "minimum" rule); the steepest descent and fastai's valley
are recorded beside it. Why that rule: docs/benchmarks/2026-12-04-init-lr-find.md trained at
each rule's rate read off the same curves, 3 seeds on two sets: minimum/10 came closest to the
grid's best, the other two chose rates 2-10x too low for the short runs our users start with.

It never changes what training starts from: phase 1 is tested on a throw-away model built in
memory, fine-tuning on the training model with its weights put back afterwards, and the seeds
are set again after the test. Nothing is written to the run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnclf.errors import ConfigError

if TYPE_CHECKING:
    from cnnclf.model.transfer import Phase
    from cnnclf.training.trainer import Trainer

log = logging.getLogger("cnnclf")

START_RATE = 1e-7
END_RATE = 10.0
# fastai's 100 steps read one noisy curve: over 6 seeds on pullover/coat the suggestions spread
# over 11x (4e-4 to 4.5e-3) and one seed trained 0.057 below the grid's best. 300 steps (38 a
# decade) spread them over 3.6x, and the mean gap to the grid's best over 9 seed-runs on two
# sets went from -0.014 to -0.008, for 2.4x the test's time (1.9 s -> 4.5 s there: it stops at
# divergence, 82-100 and 238-300 steps).
# docs/benchmarks/2026-12-04-init-lr-find.md, "How many steps".
DEFAULT_STEPS = 300
MAX_STEPS = 1000
# fastai's smoothing factor: an exponential moving average over about 1 / (1 - 0.98) = 50 steps
# of noise, debiased so its first values are not pulled towards zero.
BETA = 0.98
# Stop when the smoothed loss exceeds this many times its best (fastai's rule) or is NaN.
DIVERGENCE = 4.0
# The first steps' smoothed loss is too noisy for a slope: skipped when looking for one.
SKIP_START = 0.1
AUTO = "auto"


@dataclass(frozen=True)
class Suggestion:
    rate: float
    steepest: float  # the rate where the smoothed loss falls fastest
    minimum: float  # the rate at the smoothed loss's minimum
    valley: float  # fastai's valley rule (`valley`), recorded beside the others
    rule: str = "the smoothed loss's minimum / 10"


@dataclass(frozen=True)
class Curve:
    """One range test: the rates tried, the raw and smoothed losses, and the suggestion."""

    phase: str
    rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: Suggestion
    stopped: str  # why the test ended: "diverged" or "last step"
    seconds: float

    def record(self) -> dict:
        """What bundle.json and `lr-find --format json` keep of it."""
        return {
            "phase": self.phase,
            "suggested": self.suggestion.rate,
            "steepest": self.suggestion.steepest,
            "minimum": self.suggestion.minimum,
            "valley": self.suggestion.valley,
            "rule": self.suggestion.rule,
            "steps": len(self.rates),
            "range": [self.rates[0], self.rates[-1]],
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
        }


def rates(steps: int, start: float = START_RATE, end: float = END_RATE) -> list[float]:
    """`steps` rates growing geometrically from `start` to `end` (both included)."""
    if steps < 2:
        return [start]
    ratio = (end / start) ** (1 / (steps - 1))
    return [start * ratio**i for i in range(steps)]


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """The debiased exponential moving average of `losses` (Adam's bias correction)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def diverged(smoothed: float, best: float) -> bool:
    return not math.isfinite(smoothed) or smoothed > DIVERGENCE * best


def suggest(tried: list[float], smoothed: list[float], steps: int | None = None) -> Suggestion:
    """The rate to train at, from a range test's rates and smoothed losses.

    A tenth of the rate at the smoothed loss's minimum: the minimum itself is on the edge of
    divergence, a decade below it the loss still falls steadily. The steepest descent (most
    negative slope against log10 of the rate, before the minimum and after the first
    `SKIP_START` of the steps) and the valley are returned for the record and the plot.

    Raises:
        ConfigError: the loss did not decrease (no usable suggestion).
    """
    planned = steps or len(tried)
    finite = [i for i, value in enumerate(smoothed) if math.isfinite(value)]
    if len(finite) < 3:
        raise _degenerate(tried, "the loss was NaN or infinite within its first steps")
    lowest = min(finite, key=lambda i: smoothed[i])
    skipped = int(SKIP_START * planned)
    # A minimum this early (or less than a decade above the first rate, so the suggestion would
    # lie below every rate tried): NaN or divergence came at tiny rates, nothing to suggest.
    if lowest > 0 and (lowest < skipped or tried[lowest] / 10 < tried[0]):
        raise _degenerate(
            tried,
            f"the loss stopped falling within the first {SKIP_START:.0%} of the steps or the "
            f"first decade of rates (lowest at {tried[lowest]:.1e}, then NaN or rising)",
        )
    first = min(skipped, max(0, lowest - 2))
    if smoothed[lowest] >= smoothed[first] * (1 - 1e-3) or lowest - first < 2:
        raise _degenerate(tried, "the loss did not decrease")
    if lowest == len(tried) - 1 and len(tried) == planned:
        log.warning(
            "warning: lr-find: the loss was still falling at the highest rate tried (%.1e); "
            "the suggestion (%.2g) may be too high: check it with a short run",
            tried[lowest],
            tried[lowest] / 10,
        )
    slopes = [
        (smoothed[i + 1] - smoothed[i]) / (math.log10(tried[i + 1]) - math.log10(tried[i]))
        for i in range(first, lowest)
    ]
    steepest = tried[first + min(range(len(slopes)), key=slopes.__getitem__)]
    minimum = tried[lowest]
    return Suggestion(minimum / 10, steepest, minimum, valley(tried, smoothed))


def valley(tried: list[float], smoothed: list[float]) -> float:
    """fastai's default rule since 2.5: two thirds of the way down the longest decreasing
    run of the smoothed loss (longest decreasing subsequence), a point less sensitive than
    a slope to one noisy step."""
    finite = [value if math.isfinite(value) else math.inf for value in smoothed]
    run = [1] * len(finite)
    start = end = 0
    for i in range(1, len(finite)):
        for j in range(i):
            if finite[i] < finite[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
            start = end - run[end]
    third = (end - start) / 3
    return tried[start + int(third) + int(third / 2)]


def _degenerate(tried: list[float], why: str) -> ConfigError:
    return ConfigError(
        f"learning_rate: auto / lr-find: {why} over rates {tried[0]:.1e} to {tried[-1]:.1e}; "
        "check the data (cnnclf check-data) and set train.learning_rate to a number "
        "(0.001 suits Adam from scratch, 1e-4 a backbone)"
    )


def range_test(model, batches, compile_model, phase: str, steps: int) -> Curve:
    """Runs the test on `model` (compiled by `compile_model(model)`, which returns the
    optimizer), one batch of the iterator `batches` a step.

    Raises:
        ConfigError: NaN at the first step, or no decrease.
    """
    started = time.monotonic()
    optimizer = compile_model(model)
    tried = rates(steps)
    used: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    best = math.inf
    stopped = "last step"
    for rate in tried:
        optimizer.learning_rate.assign(rate)
        x, y, *weights = next(batches)
        logs = model.train_on_batch(x, y, sample_weight=weights[0] if weights else None)
        loss = float(logs[0] if isinstance(logs, (list, tuple)) else logs)
        if not losses and not math.isfinite(loss):
            raise _degenerate([rate, rate], "the loss was NaN at the first step")
        used.append(rate)
        losses.append(loss)
        smoothed = smooth(losses)
        if diverged(smoothed[-1], best):
            stopped = "diverged"
            break
        best = min(best, smoothed[-1])
    return Curve(
        phase, used, losses, smoothed, suggest(used, smoothed, steps), stopped,
        time.monotonic() - started,
    )  # fmt: skip


# -- in a training run ---------------------------------------------------------------------------


def needs_finder(phase: Phase) -> bool:
    return phase.learning_rate == AUTO


def resolve_first_phase(trainer: Trainer, steps: int = DEFAULT_STEPS) -> list[dict]:
    """Sets the rate of each auto phase up to the one training starts in (the first, or on
    --resume the one it stopped in), before `Trainer.build`, on a throw-away model from the
    run's start weights; returns the finder's records (also kept as `trainer.lr_find`, for
    bundle.json, and in the checkpoints' training controls). A resumed run takes the rates its
    first epochs used from its checkpoint, rather than finding them again: a test run by
    another cnnclf (another step count) or on another machine need not give the same rate."""
    records: list[dict] = getattr(trainer, "lr_find", None) or []
    trainer.lr_find = records
    progress = trainer.run.progress if trainer.run is not None else None
    current = len((progress or {}).get("controls", {}).get("phase_starts", [0])) - 1
    for index, phase in enumerate(trainer.plan[: current + 1]):
        if not needs_finder(phase):
            continue
        found = _found_before(trainer, phase)
        if found is not None:
            records.append(found)
            trainer.plan[index] = dataclasses.replace(phase, learning_rate=found["suggested"])
            log.info(
                "%s learning_rate: auto -> %.3g (found before the interruption)",
                phase.name, found["suggested"],
            )  # fmt: skip
            continue
        curve = find_phase(trainer, phase, steps)
        records.append(curve.record())
        trainer.plan[index] = dataclasses.replace(phase, learning_rate=curve.suggestion.rate)
        log.info(
            "%s learning_rate: auto -> %.3g (lr-find: %d steps, %.1f s)",
            phase.name, curve.suggestion.rate, len(curve.rates), curve.seconds,
        )  # fmt: skip
    return records


def resolve_phase(trainer: Trainer, phase: Phase, steps: int = DEFAULT_STEPS) -> Phase:
    """`phase` with its rate found when it is auto (a fine-tune phase, at its start, from the
    weights it starts with; they are put back afterwards). `trainer.plan` is updated too."""
    if not needs_finder(phase):
        return phase
    found_before = _found_before(trainer, phase)
    if found_before is not None:
        trainer.lr_find = [*(getattr(trainer, "lr_find", None) or []), found_before]
        remember(trainer)
        found = dataclasses.replace(phase, learning_rate=found_before["suggested"])
        trainer.plan[trainer.plan.index(phase)] = found
        log.info(
            "fine_tune.learning_rate: auto -> %.3g (found before the interruption)",
            found_before["suggested"],
        )
        return found
    from cnnclf.model.transfer import apply_phase

    model = trainer.saved
    snapshot = model.get_weights()
    try:
        with trainer.strategy.scope():
            apply_phase(model, phase)
            curve = range_test(model, _batches(trainer), _compiler(trainer), phase.name, steps)
    finally:
        model.set_weights(snapshot)
        _reseed(trainer)
    records: list[dict] = getattr(trainer, "lr_find", None) or []
    trainer.lr_find = [*records, curve.record()]
    remember(trainer)
    found = dataclasses.replace(phase, learning_rate=curve.suggestion.rate)
    trainer.plan[trainer.plan.index(phase)] = found
    log.info("fine_tune.learning_rate: auto -> %.3g (lr-find)", curve.suggestion.rate)
    return found


def remember(trainer: Trainer) -> None:
    """Keeps the records in the training controls' state, which every checkpoint saves, so a
    resumed run reads its rates back (`_found_before`)."""
    controls = getattr(trainer, "controls", None)
    if controls is not None:
        controls.state["lr_find"] = list(trainer.lr_find or [])


def _found_before(trainer: Trainer, phase: Phase) -> dict | None:
    """The interrupted run's record for `phase`, if its checkpoint holds a usable one."""
    run = getattr(trainer, "run", None)
    progress = (run.progress if run is not None else None) or {}
    saved = (progress.get("controls") or {}).get("lr_find") or []
    from cnnclf.config.checks import learning_rate

    for record in saved if isinstance(saved, list) else []:
        if not isinstance(record, dict) or record.get("phase") != phase.name:
            continue
        try:  # a damaged record finds the rate again, as a checkpoint without one does
            rate = float(learning_rate("lr_find.suggested", record.get("suggested")))
        except (ConfigError, TypeError, ValueError):
            continue
        return {**record, "suggested": rate}
    return None


def find_phase(trainer: Trainer, phase: Phase, steps: int) -> Curve:
    """The range test of `phase` on a throw-away model from the start weights (after
    `Trainer.start_tensorflow`)."""
    from cnnclf.model.build import build_model
    from cnnclf.model.transfer import apply_phase, copy_features

    config, start = trainer.config, trainer.setup.start
    try:
        with trainer.strategy.scope():
            model = build_model(
                config,
                len(trainer.dataset.class_names),
                trainer.spec.channels,
                trainer.placement.precision,
                start.weights.path if start.weights else None,
            )
            if start.init_from:
                copy_features(model, start.init_from)
            apply_phase(model, phase)
            return range_test(model, _batches(trainer), _compiler(trainer), phase.name, steps)
    finally:
        _reseed(trainer)


def _batches(trainer: Trainer):
    """Training batches, endlessly (the test may want more steps than an epoch has)."""
    from cnnclf.training.inputs import make_datasets

    _, train_ds, _ = make_datasets(
        trainer.config, trainer.dataset, trainer.stores, trainer.placement
    )
    weights = trainer.setup.class_weight
    for x, y in _endless(train_ds):
        yield (x, y, _sample_weights(y, weights)) if weights else (x, y)


def _endless(dataset):
    while True:
        yield from dataset


def _sample_weights(y, class_weight: dict[int, float]):
    """Keras' class_weight as per-sample weights (train_on_batch takes either)."""
    import numpy as np

    labels = np.asarray(y)
    index = labels.argmax(axis=-1) if labels.ndim > 1 and labels.shape[-1] > 1 else labels
    index = np.rint(index).astype(int).reshape(-1)
    return np.array([class_weight.get(int(i), 1.0) for i in index], dtype="float32")


def _compiler(trainer: Trainer):
    from cnnclf.model.build import make_optimizer

    def compile_model(model) -> Any:
        optimizer = make_optimizer(
            trainer.config, trainer.placement.precision, 1, learning_rate=START_RATE
        )
        model.compile(optimizer=optimizer, loss=trainer.setup.loss)
        return optimizer

    return compile_model


def _reseed(trainer: Trainer) -> None:
    """The test drew random numbers (shuffling, dropout): training starts as it would have."""
    from cnnclf.tf_loader import seed_everything

    seed_everything(trainer.config.train.seed, trainer.config.train.deterministic)


# -- cnnclf lr-find --------------------------------------------------------------------------------


def lr_find(
    config,
    *,
    steps: int = DEFAULT_STEPS,
    out_dir: str | Path | None = None,
    verbose: bool = False,
    device: str = "auto",
) -> Curve:
    """The range test of `config`'s first phase, as `train.learning_rate: auto` runs it; no run
    directory, no bundle. Writes lr_find.png and lr_find.json into `out_dir` when given."""
    import contextlib

    from cnnclf.data.layout import discover
    from cnnclf.model.build import loss_for
    from cnnclf.model.transfer import prepare
    from cnnclf.training.run import class_weights, resolve_paths
    from cnnclf.training.trainer import Trainer, TrainSetup

    if not 2 <= steps <= MAX_STEPS:
        raise ConfigError(f"--steps: must be an integer in [2, {MAX_STEPS}], got {steps}")
    config = resolve_paths(config)
    dataset = discover(config.data, config.train.seed)
    loss = loss_for(config, len(dataset.class_names))
    setup = TrainSetup(
        config, dataset, loss, class_weights(config, dataset), prepare(config), None,
        verbose, device, 0, time.monotonic(),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        trainer = Trainer(setup, None, stack)  # type: ignore[arg-type]  # no run directory
        trainer.prepare()
        trainer.start_tensorflow()
        curve = find_phase(trainer, trainer.plan[0], steps)
    if out_dir is not None:
        write_outputs(curve, Path(out_dir))
    return curve


def write_outputs(curve: Curve, out_dir: Path) -> list[Path]:
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(curve.record(), rates=curve.rates, losses=curve.losses, smoothed=curve.smoothed)
    (out_dir / "lr_find.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return [out_dir / "lr_find.json", plot(curve, out_dir / "lr_find.png")]


def plot(curve: Curve, path: Path) -> Path:
    """The smoothed loss against the rate (log scale), the suggestion marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot(curve.rates, curve.losses, color="lightgrey", label="loss (each step)")
    ax.plot(curve.rates, curve.smoothed, label="loss (smoothed)")
    rate = curve.suggestion.rate
    ax.axvline(rate, color="red", linestyle="--", label=f"suggested {rate:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = [v for v in curve.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), DIVERGENCE * min(finite)) * 1.1)
    ax.set_title(f"lr-find ({curve.phase} phase): {curve.suggestion.rule}", fontsize=8)
    ax.legend()
    fig.savefig(path)
    return path
