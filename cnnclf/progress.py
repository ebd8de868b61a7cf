"""Progress of a long step that is not an epoch (decoding, the final validation, the bundle), on
stderr: a bar redrawn in place on a terminal, a line every few seconds in a log.

Keras draws the epochs' bars; the minutes before the first epoch and after the last one would
otherwise print nothing, and a run that prints nothing for a minute looks hung. Plain Python: no
TensorFlow, no click.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO

log = logging.getLogger("cnnclf")

# In a log (stderr not a terminal): at most one progress line this often, so a ten-minute pass
# writes about a hundred lines, not one per batch.
LINE_EVERY_S = 5.0
# On a terminal: no bar for work done faster than this (a flicker, not information).
BAR_AFTER_S = 0.5
_BAR_WIDTH = 30


class Progress:
    """Counts done units of one step and shows it.

    Args:
        label: what is being done, as a line starts it ("validating 400 images for metrics.json").
        total: the units the step has (images, batches' images, files).
        unit: what a unit is, in the plural ("images", "steps").
        announce: log `label` when the step starts (False for work usually done in a blink; the
            bar or the periodic lines still appear once it takes a while).
        stream: where the bar goes; default sys.stderr. A bar only when it is a terminal.

    Example:
        with Progress("validating 400 images for metrics.json", 400, "images") as progress:
            for batch in batches:
                ...
                progress.advance(len(batch))
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "images",
        *,
        announce: bool = True,
        stream: IO[str] | None = None,
    ):
        self.label, self.total, self.unit = label, max(0, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        self.bar = _is_terminal(self.stream) and log.isEnabledFor(logging.INFO)
        self.done = 0
        self.note = ""
        self.started = self.last_line = time.monotonic()
        self.drawn = False
        if announce:
            log.info("%s", label)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def advance(self, units: int = 1, note: str = "") -> None:
        """Counts `units` more done; `note` names what comes next (a bundle step's name)."""
        self.done = min(self.total, self.done + units) if self.total else self.done + units
        self.note = note
        now = time.monotonic()
        if self.bar:
            if now - self.started >= BAR_AFTER_S:
                self._draw(now)
        elif now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            log.info("  %s", self._status(now))

    def close(self) -> None:
        """Ends the bar's line (a terminal) so the next message starts on its own."""
        if self.drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def _status(self, now: float) -> str:
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        note = f"; {self.note}" if self.note else ""
        return f"{self.done}/{self.total} {self.unit}{share}, {now - self.started:.0f} s{note}"

    def _draw(self, now: float) -> None:
        filled = _BAR_WIDTH * self.done // self.total if self.total else _BAR_WIDTH
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        name = self.label.split(" ", 1)[0]  # "validating", "decoding", "writing"
        self.stream.write(f"\r{name} [{bar}] {self._status(now)}\033[K")
        self.stream.flush()
        self.drawn = True


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False
