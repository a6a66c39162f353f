"""The `susl` command line: parse options, build a config, call one library function, render.

Each group of commands lives in its own module and registers itself on `app`.
"""

import os
import signal
import threading


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C while the CLI imports torch and friends: one line, exit 130, no traceback."""
    os.write(2, b"error: interrupted\n")
    os._exit(130)  # nothing has been read or written yet: there is nothing to clean up


# Installed before the heavy imports below (torch, pandas, h5py take seconds), put back after.
_ON_MAIN_THREAD = threading.current_thread() is threading.main_thread()
_PREVIOUS_SIGINT = signal.getsignal(signal.SIGINT) if _ON_MAIN_THREAD else None
if _ON_MAIN_THREAD and _PREVIOUS_SIGINT is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_starting)

from susl_cli.cli.common import app  # noqa: E402

# Importing the command modules registers their commands on `app`.
# The order of these imports is the order `susl --help` lists the commands: the session's order.
from susl_cli.cli import data_commands, train_command  # noqa: E402,F401  isort: skip
from susl_cli.cli import report_commands, discover_command  # noqa: E402,F401  isort: skip
from susl_cli.cli import generate_commands  # noqa: E402,F401  isort: skip
from susl_cli.cli import experiment_command  # noqa: E402,F401  isort: skip

if _ON_MAIN_THREAD and signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # The command has finished (its outputs complete, its error line printed). Python
        # restores the default SIGINT action while it shuts down, so a late Ctrl-C would kill
        # the process without a word and with another exit status: ignore it instead.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = ["app", "main"]
