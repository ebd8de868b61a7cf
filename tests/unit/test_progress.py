"""`cnnclf.progress`: a bar on a terminal, a line every few seconds in a log."""

from __future__ import annotations

import io
import logging

import pytest

from cnnclf import progress as progress_module
from cnnclf.progress import LINE_EVERY_S, Progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    return clock


@pytest.fixture
def logged(monkeypatch):
    """The lines the cnnclf logger writes, as the CLI's handler would."""
    out = io.StringIO()
    logger = logging.getLogger("cnnclf")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    # setLevel, not the attribute: it also clears the cache isEnabledFor keeps, where an
    # earlier test's INFO line under WARNING would leave INFO disabled.
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield out
    logger.setLevel(previous)


def test_in_a_log_it_says_what_starts_then_a_line_every_few_seconds(clock, logged):
    stream = io.StringIO()
    with Progress("validating 100 images for metrics.json", 100, stream=stream) as progress:
        progress.advance(10)  # at once: no line yet
        clock.now += LINE_EVERY_S
        progress.advance(40)
        clock.now += 1
        progress.advance(10)  # within the next interval: no line
    assert logged.getvalue().splitlines() == [
        "validating 100 images for metrics.json",
        "  50/100 images (50%), 5 s",
    ]
    assert stream.getvalue() == ""  # no bar outside a terminal


def test_work_done_in_a_blink_can_pass_unannounced(clock, logged):
    with Progress("decoding 40 images", 40, announce=False, stream=io.StringIO()) as progress:
        progress.advance(40)
    assert logged.getvalue() == ""


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_its_line_ended(clock, logged):
    terminal = Terminal()
    with Progress("writing the bundle", 4, "steps", stream=terminal) as progress:
        progress.advance(note="model.keras written")  # in a blink: no bar yet
        clock.now += 1
        progress.advance(note="sidecars written")
        progress.advance()
    drawn = terminal.getvalue()
    assert drawn.startswith("\rwriting [") and drawn.endswith("\n")
    assert "2/4 steps (50%), 1 s; sidecars written" in drawn
    assert "3/4 steps (75%)" in drawn and "model.keras" not in drawn
    assert logged.getvalue().splitlines() == ["writing the bundle"]  # no log lines besides
