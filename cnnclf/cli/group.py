"""The `cnnclf` click group, the options every command takes, and how errors reach the user.

Errors the user can fix become one line on stderr and an exit code (2 usage/config, 1 other,
130 interrupted); `--debug` shows the traceback instead. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from cnnclf import __version__
from cnnclf.errors import CnnclfError

log = logging.getLogger("cnnclf")


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def flags(ctx: click.Context | None = None) -> dict:
    """The run's --debug/--verbose (and `own_shutdown`), shared by the group and its command."""
    return (ctx or click.get_current_context()).find_root().ensure_object(dict)


def common_options(command):
    """--debug/--verbose accepted after the command too (`cnnclf train ... --debug`), and the
    command's errors mapped to one line and an exit code."""

    @click.option("--debug", is_flag=True, default=None, help="Show tracebacks on errors.")
    @click.option(
        "--verbose", is_flag=True, default=None, help="Show TensorFlow's own log messages."
    )
    @click.pass_context
    @functools.wraps(command)
    def wrapper(ctx, *args, debug=None, verbose=None, **kwargs):
        state = flags(ctx)
        state["debug"] = bool(debug or state.get("debug"))
        state["verbose"] = bool(verbose or state.get("verbose"))
        setup_logging(state["verbose"])
        try:
            return ctx.invoke(command, *args, **kwargs)
        except CnnclfError as exc:
            if state["debug"]:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if state["debug"]:
                raise
            # On a terminal the line may hold a bar or the echoed ^C: start a new one.
            click.echo(("\n" if sys.stderr.isatty() else "") + "interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException):
            raise  # click prints usage errors itself, with exit code 2
        except Exception as exc:  # anything unforeseen: still one line unless --debug
            if state["debug"]:
                raise
            click.echo(f"error: {_unforeseen(exc)}", err=True)
            ctx.exit(1)

    return wrapper


def _unforeseen(exc: Exception) -> str:
    """One line for an exception no cnnclf code raised on purpose."""
    from cnnclf.tf_loader import TensorFlowMissing, is_tensorflow_missing

    if is_tensorflow_missing(exc):  # an `import keras` that bypassed import_tensorflow
        return str(TensorFlowMissing())
    first = (str(exc).strip().splitlines() or [""])[0]
    first = first if len(first) <= 300 else first[:300] + "..."
    return f"{type(exc).__name__}: {first} (run with --debug for the traceback)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnclf")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log messages.")
@click.pass_context
def main(ctx, debug, verbose):
    """Train a CNN image classifier on class folders, then predict with it.

    \b
      cnnclf train --config configs/demo.yaml
      cnnclf predict path/to/image.png
    """
    flags(ctx).update(debug=debug, verbose=verbose)


def format_option(help: str, choices: tuple[str, ...] = ("table", "json"), dest: str = "fmt"):
    """`--format`, default table: how a command prints its report, the same way everywhere."""
    return click.option(
        "--format", dest, type=click.Choice(list(choices)), default="table", show_default=True,
        help=help,
    )  # fmt: skip


def set_option(help: str = "Override a config key by dotted path. Repeatable."):
    """`--set KEY=VALUE`, repeatable, into the `overrides` parameter: every command that reads
    a config takes it the same way."""
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=help)
