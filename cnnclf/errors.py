"""Errors a user can act on: the CLI prints them as one line, with no traceback."""

import os


class CnnclfError(Exception):
    """A failure the user can fix; `exit_code` follows click's convention (2 = usage/config)."""

    exit_code = 1


class ConfigError(CnnclfError):
    """A bad config file, config key, or command-line option. Message names the key or file."""

    exit_code = 2


class DataError(CnnclfError):
    """Training/evaluation data that cannot be used as laid out (missing folder, class mismatch)."""

    exit_code = 2


class BundleError(CnnclfError):
    """A model bundle that is missing, incomplete, or not a cnnclf bundle."""

    exit_code = 1


class ImageError(CnnclfError):
    """One image file that cannot be decoded. Carries the path so callers can report and skip it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class RunStopped(CnnclfError):
    """Training ended early with its state kept; `completed_epochs` > 0 means --resume goes on."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        destination: str | os.PathLike[str],
        completed_epochs: int,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.destination = destination
        self.completed_epochs = completed_epochs
        if exit_code is not None:
            self.exit_code = exit_code


class Interrupted(RunStopped):
    """Training stopped by Ctrl-C."""

    exit_code = 130
