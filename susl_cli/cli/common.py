"""What every command shares: the Typer app, error handling and the shared options."""

from __future__ import annotations

import errno
import functools
import io
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover  older typer uses click itself
    from click import exceptions as click_errors

from susl_cli import __version__
from susl_cli.errors import SuslError
from susl_cli.storage.files import command_scope


class ClosedStdout(io.TextIOBase):
    """Stands in for a closed standard output, so a result cannot be lost without an error.

    Python sets `sys.stdout` to None when file descriptor 1 is closed, and click then drops
    everything printed: `susl info X --json >&-` would exit 0 with its output lost.
    """

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed: the result cannot be printed "
                      "(redirect it to a file instead of closing it)")


class OneLineErrorGroup(TyperGroup):
    """Print click's usage errors (bad option value, missing option) as one line, not a box."""

    def main(self, args: Any = None, prog_name: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        if sys.stdout is None:  # started with stdout closed (`>&-`): printing must fail loudly
            sys.stdout = ClosedStdout()
        _errors_reported.clear()
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as err:
            err.show()  # bare `susl`: show the help, as users expect
            sys.exit(0)
        except click_errors.ClickException as err:
            ctx = getattr(err, "ctx", None)
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            message = " ".join(err.format_message().split()).rstrip(".")
            sys.stderr.write(f"error: {message}{where}\n")
            sys.exit(err.exit_code)
        except typer.Abort as err:
            if isinstance(err.__context__, KeyboardInterrupt):  # Ctrl-C outside a command
                sys.stderr.write("error: interrupted\n")
                sys.exit(130)
            sys.stderr.write("error: aborted\n")
            sys.exit(1)
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            sys.exit(130)
        if result == 130 and not _errors_reported:
            # Typer turns a KeyboardInterrupt outside the command (while click parses, or just
            # after the command returned) into a silent exit 130: say what happened
            sys.stderr.write("error: interrupted\n")
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineErrorGroup,
    name="susl",
    help=(
        "Semi-unsupervised learning: train deep generative models that classify the "
        "labelled classes of a dataset and cluster the classes that have no labels at all.\n\n"
        "Typical session: susl mask -> susl train -> susl evaluate / susl sample / susl predict."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

F = TypeVar("F", bound=Callable[..., Any])


_errors_reported: list[str] = []  # the error line of the running command, once written


def fail(message: str, code: int = 2) -> typer.Exit:
    """Write one line to stderr and return the Exit to raise."""
    line = f"error: {' '.join(str(message).split())}\n"
    sys.stderr.write(line)
    sys.stderr.flush()
    _errors_reported.append(line)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn domain errors (and the OS errors a user can cause) into one line and an exit code.

    Unexpected exceptions still become one line; SUSL_DEBUG=1 shows the traceback for bug reports.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with command_scope():  # inputs it reads, output locks it holds until it ends
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except SuslError as err:
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except MemoryError:
            raise fail(
                "out of memory: use a smaller model, batch size or dataset slice", 3
            ) from None
        except RuntimeError as err:
            if not _is_allocation_failure(err):
                raise _internal_error(err) from None
            raise fail("out of memory (the allocator refused a request): use a smaller model, "
                       "batch size or dataset slice", 3) from None
        except OSError as err:
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            raise fail(f"{err.strerror or err}{where}", 3) from None
        except Exception as err:  # noqa: BLE001  last line of defence: no tracebacks for users
            raise _internal_error(err) from None

    return wrapper  # type: ignore[return-value]


# torch reports a refused allocation as a RuntimeError (CUDA: its OutOfMemoryError subclass).
_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "outofmemory")


def _is_allocation_failure(err: RuntimeError) -> bool:
    text = f"{type(err).__name__} {str(err)[:500]}".lower()
    return any(marker in text for marker in _ALLOCATION_FAILURES)


def _internal_error(err: Exception) -> typer.Exit:
    if os.environ.get("SUSL_DEBUG"):
        raise err
    return fail(
        f"internal error: {type(err).__name__}: {' '.join(str(err).split())[:300]} "
        "(this is a bug in susl; rerun with SUSL_DEBUG=1 and report the traceback)",
        70,
    )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"susl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Semi-unsupervised learning with deep generative models."""


# Shared options, defined once so every command spells and documents them the same way.
SEED_MAX = 2**32 - 1  # seeds are 32-bit, so every generator (numpy, torch) accepts them
SEED_OPTION = typer.Option(0, "--seed", min=0, max=SEED_MAX,
                           help="Random seed (recorded in every output file).")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON to stdout.")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace OUT if it exists.")
DEVICE_OPTION = typer.Option(
    "auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."
)
DATA_DIR_OPTION = typer.Option(
    None,
    "--data-dir",
    help="Folder holding dataset files (default: $SUSL_DATA_DIR, then the user cache).",
)
