"""The rule that shares --trials N among workers (cnnclf/tuning/budget.py), case by case."""

from cnnclf.tuning.budget import is_surplus, next_step


def test_of_two_trials_racing_for_the_last_place_only_the_lower_trains():
    trials = [(0, "COMPLETE"), (1, "PRUNED"), (2, "COMPLETE"), (3, "RUNNING"), (4, "RUNNING")]
    assert not is_surplus(trials, 3, 4)
    assert is_surplus(trials, 4, 4)


def test_failed_trials_leave_their_place_to_others():
    trials = [(0, "COMPLETE"), (1, "FAIL"), (2, "FAIL"), (3, "RUNNING")]
    assert not is_surplus(trials, 3, 2)
    assert next_step(trials, 2) == "wait"  # for trial 3, which may still fail too
    assert next_step(trials, 3) == "run"


def test_a_queued_retry_is_run_even_when_the_places_are_claimed():
    # Trial 1's worker died: trial 1 failed, trial 3 re-queues its parameters.
    trials = [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"), (3, "WAITING")]
    assert next_step(trials, 3) == "run"
    assert not is_surplus([*trials[:3], (3, "RUNNING")], 3, 3)


def test_a_worker_waits_while_another_workers_trial_may_still_fail():
    trials = [(0, "COMPLETE"), (1, "RUNNING")]
    assert next_step(trials, 2) == "wait"
    assert next_step([(0, "COMPLETE"), (1, "FAIL")], 2) == "run"


def test_done_when_n_are_finished_complete_or_pruned():
    assert next_step([(0, "COMPLETE"), (1, "PRUNED"), (2, "FAIL")], 2) == "done"
    assert next_step([], 1) == "run"
