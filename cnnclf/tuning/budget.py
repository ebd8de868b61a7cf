"""How `--trials N` is shared by workers that start, finish and die at any time.

The rule, over the study's trials as the storage holds them:

- *finished* = COMPLETE + PRUNED; the sweep is done when N trials are finished, never more.
- *claimed* = finished + RUNNING + WAITING (a retry queued for a dead worker's trial).
- A trial may train only when fewer than N claimed trials have a smaller number. Trial numbers
  are handed out in creation order by the storage, so of two workers that both saw room for one
  more trial, exactly one (the lower number) trains; the other is a *surplus* trial, marked
  FAIL with the user attribute `surplus` and never trained. Hence at most N ever finish.
- FAIL trials do not count: a trial whose worker died (no heartbeat for tune.grace_period) is
  marked FAIL by the next worker that looks and re-queued once with the same parameters
  (Optuna's RetryFailedTrialCallback); an interrupted one (Ctrl-C, SIGTERM) is simply replaced.
  Hence at least N finish as long as one worker keeps running.
- A worker leaves only when N are finished: while other workers' trials still run, it waits
  (and checks their heartbeats), so a trial whose worker dies last is still retried.

Plain data in, plain data out: (number, state name) pairs, so the rule is tested without Optuna.
"""

from __future__ import annotations

from collections.abc import Iterable

FINISHED = ("COMPLETE", "PRUNED")
CLAIMED = (*FINISHED, "RUNNING", "WAITING")


def is_surplus(trials: Iterable[tuple[int, str]], number: int, n_trials: int) -> bool:
    """Whether trial `number` would be one more than `n_trials` (so must not train)."""
    before = sum(1 for other, state in trials if other < number and state in CLAIMED)
    return before >= n_trials


def next_step(trials: Iterable[tuple[int, str]], n_trials: int) -> str:
    """What a worker does next: "run" a trial, "wait" for others' running trials, or "done"."""
    states = [state for _, state in trials]
    if sum(state in FINISHED for state in states) >= n_trials:
        return "done"
    if "WAITING" in states or sum(state in CLAIMED for state in states) < n_trials:
        return "run"
    return "wait"
