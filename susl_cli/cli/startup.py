"""Ctrl-C before a command starts: one line `error: interrupted`, exit 130, no traceback.

From the moment the CLI starts until a command's own code runs, susl imports modules (typer
first, then the command's module with torch, pandas or h5py: seconds on a loaded machine)
and parses the arguments. A KeyboardInterrupt there would print a traceback or, once click
runs, be turned into a silent exit 130 (click catches it outside the command). So a handler
that writes the line and exits is installed first thing, and the command puts Python's
default one back as it starts (`restore_default`), where `handle_errors` turns Ctrl-C into
the same line after cleaning up. Nothing has been read or written before that point.
No imports beyond the standard library: this module runs before everything else.
"""

import os
import signal
import threading


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, b"error: interrupted\n")
    os._exit(130)  # nothing has been read or written yet: there is nothing to clean up


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Until `restore_default`, Ctrl-C exits at once with one line (main thread only, and only
    in place of Python's default handler: an embedding program's own handler is kept)."""
    if _on_main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def restore_default() -> None:
    """Python's Ctrl-C again (KeyboardInterrupt): a command's code runs from here on, or the
    CLI was imported by another program rather than started."""
    if _on_main_thread() and signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
