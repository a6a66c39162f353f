"""The one atomic writer: every file susl writes (HDF5, CSV, PNG, Markdown, downloads) goes
through `atomic_output` (or `write_atomic` / `write_text_atomic`, built on it).

Bytes go to `.NAME.PID.XXXXXXXX.tmp` in the target's folder; once the caller's block ends
without an error the file is flushed and fsynced, renamed over the target (`os.replace`), and
the folder is fsynced, so the target is either the old file or the complete new one, also
after a crash or a power cut. On any error or Ctrl-C the temporary is deleted and the target
left as it was; Ctrl-C inside the block is held back until the write is finished or
abandoned. A temporary left behind by a killed process is removed by the next write of the
same name. The checks and locks it applies are storage/files.py's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from susl_cli.storage.files import (
    check_output_path,
    companion_stem,
    held_for_write,
    write_error,
)

# --- Ctrl-C --------------------------------------------------------------------------------

class _Deferral:
    depth = 0
    pending = False
    previous: object = None


def _record_interrupt(signum: int, frame: object) -> None:
    _Deferral.pending = True


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) inside the block; raise KeyboardInterrupt once it ends.

    Code such as the HDF5 library's callbacks may swallow a KeyboardInterrupt raised in the
    middle of them ("Exception ignored in ..."), and a write must not stop half-way. Only the
    main thread can handle signals; elsewhere, and under a handler other than Python's
    default one, the block runs unchanged.
    """
    if _Deferral.depth == 0 and (threading.current_thread() is not threading.main_thread()
                                 or signal.getsignal(signal.SIGINT)
                                 is not signal.default_int_handler):
        yield
        return
    if _Deferral.depth == 0:
        _Deferral.pending = False
        _Deferral.previous = signal.signal(signal.SIGINT, _record_interrupt)
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if _Deferral.depth == 0:
            signal.signal(signal.SIGINT, _Deferral.previous)  # type: ignore[arg-type]
            if _Deferral.pending:
                _Deferral.pending = False
                raise KeyboardInterrupt


def interrupt_pending() -> bool:
    """Whether Ctrl-C arrived inside `interrupts_deferred` (the caller may stop early)."""
    return _Deferral.pending


# --- the one writer ------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_output(path: Path, *, overwrite: bool, inputs: Iterable[Path | None] = (),
                  may_replace_input: bool = False, size_hint: int = 0) -> Iterator[BinaryIO]:
    """Yield a binary file whose content appears at `path` only if the block ends normally.

    An existing file is refused without `overwrite`, and so is any input of the command
    (unless `may_replace_input`: a training run updating its own checkpoint). Interrupted
    (Ctrl-C) or failed (the block raised, or the disk filled up), the target is left as it was
    and no temporary remains; an OSError becomes one OutputError sentence (`size_hint`: the
    size to name in it).
    """
    path = Path(path)
    check_output_path(path, overwrite, inputs, claim=False, may_replace_input=may_replace_input)
    remove_stale_temporaries(path)
    with interrupts_deferred(), held_for_write(path):
        tmp: Path | None = None
        written = 0
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{companion_stem(path)}.{os.getpid()}.",
                                            suffix=".tmp", dir=path.parent)
            tmp = Path(tmp_name)
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                written = fh.tell()
                os.fsync(fh.fileno())  # data on disk before the rename makes it visible
            os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; honour the umask
            if interrupt_pending():
                raise KeyboardInterrupt  # Ctrl-C during the write: keep the old file, if any
            os.replace(tmp, path)
            tmp = None
            _fsync_folder(path.parent)
        except OSError as err:
            raise write_error(path, err, written or size_hint) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None], *,
                 overwrite: bool, inputs: Iterable[Path | None] = (),
                 may_replace_input: bool = False) -> Path:
    """Write `data` (bytes, or a function writing to a binary file) through `atomic_output`."""
    size = len(data) if isinstance(data, bytes) else 0
    with atomic_output(path, overwrite=overwrite, inputs=inputs,
                       may_replace_input=may_replace_input, size_hint=size) as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data)
    return Path(path)


def write_text_atomic(path: Path, text: str, *, overwrite: bool,
                      inputs: Iterable[Path | None] = ()) -> Path:
    """Write `text` as UTF-8 through `atomic_output` (CSV tables, Markdown and JSON reports)."""
    return write_atomic(path, text.encode("utf-8"), overwrite=overwrite, inputs=inputs)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (power loss); not every file system lets a folder be fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete `.NAME.PID.*.tmp` files beside `path` whose writing process no longer exists.

    They are what a write killed with SIGKILL (or a power cut) leaves behind; a temporary of a
    live process, or one whose name carries no process id, is left alone.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(companion_stem(path))}\.(\d+)\.[^.]+\.tmp$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in siblings:
        match = pattern.match(candidate.name)
        if match and not _process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or an odd pid): leave its file alone
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
