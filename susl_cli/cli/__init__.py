"""The `susl` command line: parse options, build a config, call one library function, render.

Each group of commands lives in its own module and registers itself on `app`. The modules are
imported when their command is used (common.LAZY_COMMANDS), so start-up stays fast.
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

from susl_cli.cli.common import LAZY_COMMANDS, app  # noqa: E402

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


__all__ = ["LAZY_COMMANDS", "app", "main"]
