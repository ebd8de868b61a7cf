"""The range test's pure parts: the rate schedule, smoothing, divergence and the suggestion."""

import itertools
import math

import pytest

from cnnclf.errors import ConfigError
from cnnclf.training.lr_find import DIVERGENCE, diverged, rates, smooth, suggest


def test_rates_grow_geometrically_from_start_to_end():
    tried = rates(5, 1e-4, 1.0)
    assert tried[0] == pytest.approx(1e-4) and tried[-1] == pytest.approx(1.0)
    assert [b / a for a, b in itertools.pairwise(tried)] == pytest.approx([10.0] * 4)


def test_smoothing_is_debiased_so_a_constant_stays_constant():
    assert smooth([2.0] * 10) == pytest.approx([2.0] * 10)
    noisy = smooth([1.0, 3.0] * 50)
    assert abs(noisy[-1] - 2.0) < 0.1  # the average, without the zig-zag


def test_divergence_is_four_times_the_best_or_nan():
    assert not diverged(DIVERGENCE * 1.0, 1.0)
    assert diverged(DIVERGENCE * 1.0 + 1e-9, 1.0)
    assert diverged(math.nan, 1.0)


def _valley(n=100):
    """A loss flat at 1 for small rates, falling fastest at 1e-3, lowest at 1e-1, then rising."""
    tried = rates(n, 1e-7, 10.0)
    losses = []
    for rate in tried:
        x = math.log10(rate)
        losses.append(1.0 - 0.8 / (1 + math.exp(-3 * (x + 3))) + (max(0.0, x + 1)) ** 2)
    return tried, losses


def test_suggestion_is_the_minimum_over_ten_and_the_steepest_is_recorded():
    tried, losses = _valley()
    found = suggest(tried, losses)
    assert 3e-4 < found.steepest < 3e-3  # where the sigmoid falls fastest
    assert 3e-2 < found.minimum < 3e-1
    assert found.rate == pytest.approx(found.minimum / 10)
    assert "minimum / 10" in found.rule


def test_a_loss_that_never_decreases_is_one_clear_error():
    tried = rates(50)
    with pytest.raises(ConfigError, match=r"the loss did not decrease.*set train.learning_rate"):
        suggest(tried, [1.0 + i * 1e-3 for i in range(50)])


def test_nan_from_the_start_is_one_clear_error():
    with pytest.raises(ConfigError, match="NaN"):
        suggest(rates(10), [math.nan] * 10)


def test_valley_is_two_thirds_down_the_longest_fall():
    tried = rates(100, 1e-7, 10.0)
    # flat with step-to-step noise until index 40, a steady fall to index 70, then a climb
    losses = [1.0 + 0.01 * (i % 2) for i in range(40)]
    losses += [1.0 - 0.02 * (i + 1) for i in range(30)]
    losses += [0.4 + 0.05 * (i + 1) for i in range(30)]
    found = suggest(tried, losses)
    # the longest decreasing run is ~index 38..69; valley takes the point half-way along it
    assert tried[50] <= found.valley <= tried[56]
    assert found.valley < found.minimum


@pytest.mark.parametrize(
    "losses",
    [
        [2.0, 1.9, 1.8, math.nan] + [math.nan] * 6,  # NaN at the 4th step
        [2.0, 1.9, 1.8, 1.7, 40.0],  # diverged at the 5th step
        [2.0 - 0.01 * i for i in range(12)] + [math.nan],  # NaN at the 13th of 100
    ],
)
def test_a_minimum_within_the_first_steps_is_one_clear_error(losses):
    # as range_test hands them over: the rates used so far, smoothed losses, 100 planned
    tried = rates(100)[: len(losses)]
    with pytest.raises(ConfigError, match=r"stopped falling within the first 10% of the steps"):
        suggest(tried, smooth(losses), steps=100)


def test_a_loss_still_falling_at_the_last_rate_warns(caplog):
    tried = rates(50)
    found = suggest(tried, [2.0 - 0.01 * i for i in range(50)], steps=50)
    assert found.rate == pytest.approx(tried[-1] / 10)
    assert "still falling at the highest rate tried" in caplog.text
