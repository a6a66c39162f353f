"""The `susl` command line: parse options, build a config, call one library function, render.

Each group of commands lives in its own module and registers itself on `app`. The modules are
imported when their command is used (common.LAZY_COMMANDS), so start-up stays fast.
"""

import signal
import threading

from susl_cli.cli import startup

# Installed before the heavy imports below (typer and friends take a second), put back after:
# a program that imports the CLI keeps Python's usual Ctrl-C outside `main`.
startup.install()

from susl_cli.cli.common import LAZY_COMMANDS, app  # noqa: E402

startup.restore_default()


def main() -> None:
    """Console-script entry point."""
    # Commands are imported lazily (torch and friends, seconds) and arguments parsed before the
    # command's code runs; a Ctrl-C in between is one line and exit 130 (see startup.py).
    startup.install()
    try:
        app()
    finally:
        # The command has finished (its outputs complete, its error line printed). Python
        # restores the default SIGINT action while it shuts down, so a late Ctrl-C would kill
        # the process without a word and with another exit status: ignore it instead.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = ["LAZY_COMMANDS", "app", "main"]
