"""What every command shares: the Typer app, error handling and the shared options."""

from __future__ import annotations

import errno
import functools
import importlib
import io
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
import typer.main

# typer >= 0.24 (the lowest version pyproject.toml allows) ships its own copy of click
from typer._click import exceptions as click_errors
from typer.core import TyperCommand, TyperGroup

from susl_cli import __version__
from susl_cli.cli import startup
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

# Each command's module, imported only when the command runs or shows its help, so that
# `susl --version` and `susl --help` start without torch, pandas or scikit-learn (about 5 s on a
# loaded 2-core machine). The summary is the line `susl --help` lists; tests/cli/test_startup.py
# checks it against the command's own help. Order = the order `susl --help` lists them.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "mask": ("data_commands",
             "Hide labels: keep a fraction of the labels of some classes, none of the others."),
    "info": ("data_commands",
             "Describe a susl file: what it is, what it holds and how it was made."),
    "train": ("train_command",
              "Train a model on a masked dataset; Ctrl-C saves, --resume continues."),
    "evaluate": ("report_commands", "Score checkpoints on the test set: cluster accuracy, "
                 "known/novel accuracy, NMI, ARI."),
    "discover": ("discover_command", "Name and count the classes nobody labelled: group the "
                 "extra components of a run."),
    "sample": ("generate_commands", "Draw what each component generates: the mean of "
               "p(x|y,z), rows = shared z draws."),
    "predict": ("generate_commands",
                "Classify new data with the model's q(y|x): one CSV row per input row."),
    "report": ("run_report_command", "Write one page about a run: settings, metrics, "
               "confusion matrix, samples, curves."),
    "experiment": ("experiment_command", "Train, score and tabulate a paper table: mean ± sd "
                   "next to the paper's numbers."),
}
# `susl info` describes every kind of file, so it needs every module's INFO_HANDLERS entry.
_NEEDS_ALL_MODULES = ("info",)


def _without_flag_placeholders(params: list[Any]) -> list[Any]:
    """Flags (--quiet, --json, --help) take no value: show no `<bool>` type in the help."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class SuslCommand(TyperCommand):
    """Every susl command: flags listed without a value placeholder."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_placeholders(super().get_params(ctx))


class OneLineErrorGroup(TyperGroup):
    """Print click's usage errors (bad option value, missing option) as one line, not a box.

    Commands are loaded lazily (LAZY_COMMANDS): listing them for `susl --help` or shell
    completion uses their summaries; running one, or its --help, imports its module.
    """

    _listing = False

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_placeholders(super().get_params(ctx))

    def list_commands(self, ctx: Any) -> list[str]:
        loaded = super().list_commands(ctx)
        return [*LAZY_COMMANDS, *(name for name in loaded if name not in LAZY_COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        if self._listing and cmd_name not in self.commands:
            return TyperCommand(cmd_name, help=LAZY_COMMANDS[cmd_name][1])
        names = LAZY_COMMANDS if cmd_name in _NEEDS_ALL_MODULES else (cmd_name,)
        for name in names:  # cheap when already imported
            importlib.import_module(f"susl_cli.cli.{LAZY_COMMANDS[name][0]}")
        if cmd_name not in self.commands:
            self.commands[cmd_name] = self._build(cmd_name)
        return self.commands[cmd_name]

    @staticmethod
    def _build(cmd_name: str) -> Any:
        """The click command of a registered command (its module is imported)."""
        for info in app.registered_commands:
            name = info.name or typer.main.get_command_name(info.callback.__name__)
            if name == cmd_name:
                return typer.main.get_command_from_info(
                    info, pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode)
        raise LookupError(f"LAZY_COMMANDS names {cmd_name!r}, which no module registers")

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False

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


class SuslTyper(typer.Typer):
    """A Typer app whose commands are SuslCommands unless a command asks for another class."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or SuslCommand, **kwargs)


app = SuslTyper(
    cls=OneLineErrorGroup,
    name="susl",
    help=(
        "Semi-unsupervised learning: train deep generative models that classify the "
        "labelled classes of a dataset and cluster the classes that have no labels at all.\n\n"
        "Typical session: susl mask -> susl train -> susl evaluate / susl sample / susl predict."
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion
    context_settings={"help_option_names": ["-h", "--help"]},
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
            startup.restore_default()  # Ctrl-C raises KeyboardInterrupt again, handled below
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
