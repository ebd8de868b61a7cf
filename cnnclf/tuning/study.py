"""The tune worker: join the study, run trials until N are finished in all, then report.

Every process running the same `cnnclf tune` command is one worker of one study; budget.py
says how they share `--trials N`, devices.py which GPU each takes. Each trial is an ordinary
`cnnclf train` run (crash-safe, published as a bundle) into <out>/trials/<number>/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnclf.config import Config, load_config
from cnnclf.errors import CnnclfError, ConfigError, RunStopped
from cnnclf.tuning.budget import is_surplus, next_step
from cnnclf.tuning.devices import assign_gpu
from cnnclf.tuning.pruning import make_pruner, pruning_callback
from cnnclf.tuning.space import overrides, suggest

log = logging.getLogger("cnnclf")

INSTALL = "cnnclf tune needs Optuna: pip install 'cnnclf[tune]'"


@dataclass(frozen=True)
class TuneJob:
    """One worker's command: the same on every worker of a sweep.

    Args:
        config_path: the config whose `tune:` section is the search space.
        overrides: its `--set` overrides, applied before each trial's own.
        n_trials: finished trials (complete or pruned) wanted in all, across every worker.
        out_dir: trial bundles, reports and (by default) the SQLite study file.
        storage: an Optuna RDB URL; None = sqlite:///<out_dir>/study.db.
        study_name: the study every worker joins.
        pruner: median | halving | none.
        device: cpu | gpu | auto, as `cnnclf train --device`.
        verbose: let TensorFlow's and each trial's own logging through.
    """

    config_path: Path
    overrides: tuple[str, ...]
    n_trials: int
    out_dir: Path
    storage: str | None
    study_name: str
    pruner: str = "median"
    device: str = "auto"
    verbose: bool = False

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"


class SurplusTrial(Exception):
    """A trial created while another worker took the last place (see budget.py)."""


def require_optuna() -> None:
    """One line before anything heavy loads, when the extra is not installed."""
    if importlib.util.find_spec("optuna") is None:
        raise CnnclfError(INSTALL)


def tune(job: TuneJob):
    """Runs this worker's share of the sweep and writes the reports.

    Returns:
        A `reports.TuneReport` (the summary rows, the best trial, the files written).
    """
    require_optuna()
    if job.n_trials < 1:
        raise ConfigError(f"--trials: must be at least 1, got {job.n_trials}")
    config = load_config(job.config_path, job.overrides)  # every config error before Optuna
    if config.tune.grace_period <= config.tune.heartbeat_interval:
        raise ConfigError(
            f"tune.grace_period: must be longer than tune.heartbeat_interval "
            f"({config.tune.heartbeat_interval} s), got {config.tune.grace_period}"
        )
    job.out_dir.mkdir(parents=True, exist_ok=True)
    gpu_lock = assign_gpu(job.out_dir, job.device)
    try:
        study = open_study(job, config)
        _work(study, job, config)
        from cnnclf.tuning.reports import write_reports

        return write_reports(study, job, config)
    finally:
        if gpu_lock is not None:
            gpu_lock.close()  # type: ignore[attr-defined]


def open_study(job: TuneJob, config: Config) -> Any:
    """The shared study, created by whichever worker comes first."""
    import optuna

    _quiet_optuna()
    retry_class = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    # Optuna 4.9 renamed the callback and its keyword; older releases have only the old names.
    retry = (
        {"heartbeat_stale_trial_callback": retry_class(max_retry=1)}
        if retry_class is not None
        else {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
    )
    url = job.storage_url
    # SQLite serialises writers: wait for the lock instead of failing at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    maximise = config.tune.metric == "val_accuracy"
    last: Exception | None = None
    for _ in range(5):  # two workers creating the tables or the study at once: one retries
        try:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=config.tune.heartbeat_interval,
                grace_period=config.tune.grace_period,
                **retry,
            )
            study = optuna.create_study(
                storage=storage,
                study_name=job.study_name,
                load_if_exists=True,
                direction="maximize" if maximise else "minimize",
                sampler=optuna.samplers.TPESampler(
                    n_startup_trials=min(10, max(2, job.n_trials // 3)), constant_liar=True
                ),
                pruner=make_pruner(job.pruner, job.n_trials),
            )
            break
        except Exception as exc:  # sqlalchemy's errors name the driver, not the option
            last = exc
            time.sleep(0.5)
    else:
        first = (str(last).strip().splitlines() or [type(last).__name__])[0]
        raise CnnclfError(f"--storage {masked(url)}: cannot open the study: {first}") from None
    wanted = "MAXIMIZE" if maximise else "MINIMIZE"
    if study.direction.name != wanted:
        raise ConfigError(
            f"tune.metric: {config.tune.metric} needs a study that is {wanted.lower()}d, but "
            f"study {job.study_name!r} in {masked(url)} is not; use another --study"
        )
    return study


def masked(url: str) -> str:
    """The storage URL as messages print it: never a password."""
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url.split("@")[-1]


def _quiet_optuna() -> None:
    """Optuna's own per-trial lines duplicate ours; its warnings about surplus trials (failed
    on purpose, see budget.py) would read like errors."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger = logging.getLogger("optuna")
    if not any(isinstance(f, _DropSurplus) for f in logger.filters):
        logger.addFilter(_DropSurplus())
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


class _DropSurplus(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SurplusTrial" not in record.getMessage()


def _states(study: Any) -> list[tuple[int, str]]:
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


def _work(study: Any, job: TuneJob, config: Config) -> None:
    """Runs trials while the budget has room; waits while others' trials may still fail."""
    import optuna

    poll = max(1.0, min(config.tune.heartbeat_interval, 10))
    told = 0.0
    while True:
        step = next_step(_states(study), job.n_trials)
        if step == "done":
            return
        if step == "run":
            study.optimize(
                lambda trial: _objective(trial, study, job, config),
                n_trials=1,
                catch=(SurplusTrial,),
                gc_after_trial=True,
            )
            continue
        if time.monotonic() - told > 60:
            log.info("waiting for the trials other workers are running")
            told = time.monotonic()
        time.sleep(poll)
        optuna.storages.fail_stale_trials(study)


def _objective(trial: Any, study: Any, job: TuneJob, config: Config) -> float:
    import optuna

    trials = study.get_trials(deepcopy=False)
    if is_surplus([(t.number, t.state.name) for t in trials], trial.number, job.n_trials):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: {job.n_trials} trials are already claimed")
    params = suggest(trial, config)
    sets = overrides(params, config)
    trial.set_user_attr("overrides", sets)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    mine = next((t for t in trials if t.number == trial.number), None)
    retried = mine.system_attrs.get("failed_trial") if mine is not None else None
    log.info(
        "trial %d%s: %s",
        trial.number,
        f" (retrying trial {retried}, whose worker stopped)" if retried is not None else "",
        ", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "the config as it is",
    )
    trial_config = load_config(job.config_path, [*job.overrides, *sets])
    folder = job.out_dir / "trials" / str(trial.number)
    trial.set_user_attr("bundle", str(folder))
    started = time.monotonic()
    try:
        result, callback = _train(trial, trial_config, folder, job)
    except RunStopped as exc:
        if exc.exit_code in (130, 143):
            raise  # interrupted: the trial is marked failed, another one takes its place
        return _failed(trial, exc)
    except ConfigError:
        raise  # every trial would fail the same way: the worker stops and says why
    except CnnclfError as exc:
        return _failed(trial, exc)
    seconds = time.monotonic() - started
    value = result.final_metrics.get(config.tune.metric)
    if callback.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", callback.pruned_at)
        log.info(
            "trial %d: pruned after epoch %d (%.0f s)", trial.number, callback.pruned_at, seconds
        )
        raise optuna.TrialPruned(f"after epoch {callback.pruned_at}")
    if value is None or not math.isfinite(value):
        return _failed(trial, CnnclfError(f"{config.tune.metric} is {value}"))
    log.info("trial %d: %s %.4f (%.0f s)", trial.number, config.tune.metric, value, seconds)
    return float(value)


def _train(trial: Any, config: Config, folder: Path, job: TuneJob) -> tuple[Any, Any]:
    from cnnclf.tf_loader import import_tensorflow
    from cnnclf.training.run import train

    import_tensorflow(job.verbose)  # quietly, before the callback imports Keras
    callback = pruning_callback(trial, config.tune.metric)
    with _trial_logging(job.verbose):
        result = train(
            config,
            out_dir=folder,
            config_path=job.config_path,
            overwrite=True,  # a folder left by a deleted study of the same name
            verbose=job.verbose,
            device=job.device,
            progress=0,
            callbacks=(callback,),
        )
    return result, callback


def _failed(trial: Any, exc: Exception) -> float:
    """A trial whose training failed (NaN loss, out of memory): recorded as pruned, with the
    reason, so it counts toward --trials and the sampler learns to avoid its region."""
    import optuna

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    trial.set_user_attr("error", first)
    log.warning("trial %d: training failed: %s", trial.number, first)
    raise optuna.TrialPruned(first)


@contextlib.contextmanager
def _trial_logging(verbose: bool):
    """A trial's own progress lines (model summary, saved bundle) only with --verbose: with
    many trials they would bury the one line per trial that says how it did."""
    if verbose:
        yield
        return
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
