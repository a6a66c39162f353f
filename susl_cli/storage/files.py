"""The checks and locks around every file susl writes, and the inputs it reads (no h5py).

The writing itself is storage/atomic.py (the one atomic writer), which builds on this module.

- `check_output_path`: the one check of an output, before any work (not `-`, not a folder, a
  device, a FIFO or a symbolic link, not one of this command's inputs, not an existing file
  without `--overwrite`), which also claims the output's advisory lock.
- `claim_output`: an advisory lock (`fcntl.flock`) on `.NAME.lock` beside the output, held for
  the whole command, so two susl processes never write one output; the second is refused with
  a sentence naming the first one's process id. The lock file is removed on release.
- `note_input` / `check_regular_file`: what a command read (so that no output of the same
  command replaces it) and the refusal of FIFOs, devices and other non-regular files, which
  could hang a reader or feed it without end.
- `write_error`: a failed write (disk full, quota, permissions) as one sentence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from susl_cli.errors import OutputError, SuslError
from susl_cli.resources import format_bytes

MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
_STEM_BYTES = 180  # room for the dot, the process id, mkstemp's letters and ".tmp" / ".lock"
_WRITE_ERRNOS = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota"),
    errno.EFBIG: ("file size limit reached", "raise `ulimit -f` or write elsewhere"),
}


# --- names ---------------------------------------------------------------------------------

def companion_stem(path: Path) -> str:
    """The name temporaries and lock files of `path` start with, short enough for NAME_MAX.

    A long name is cut and completed with a hash of the whole name, so two long names that
    share a beginning still get different temporaries.
    """
    name = Path(path).name
    if len(name.encode()) <= _STEM_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    cut = name.encode()[:_STEM_BYTES - 17].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def lock_path(path: Path) -> Path:
    return Path(path).parent / f".{companion_stem(path)}.lock"


# --- inputs --------------------------------------------------------------------------------

class _Scope:
    """What one command has read and which output locks it holds (see `command_scope`)."""

    def __init__(self) -> None:
        self.inputs: dict[tuple[int, int], str] = {}
        self.locks: dict[str, int] = {}


_scopes: list[_Scope] = []


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """One command: inputs it reads are remembered, output locks are held until it ends.

    The CLI runs every command inside one; library callers outside a scope get each lock for
    the duration of each write only.
    """
    scope = _Scope()
    _scopes.append(scope)
    try:
        yield
    finally:
        _scopes.remove(scope)
        for key, fd in scope.locks.items():
            _release(key, fd)


def _forget_scopes_in_child() -> None:
    """A forked worker (experiment runs) is not the command: its parent keeps the locks."""
    for scope in _scopes:
        for fd in scope.locks.values():
            with contextlib.suppress(OSError):
                os.close(fd)
    _scopes.clear()


os.register_at_fork(after_in_child=_forget_scopes_in_child)


def check_regular_file(path: Path, error: type[SuslError], what: str = "file") -> os.stat_result:
    """Refuse anything but a regular file (following symbolic links) before it is opened.

    A FIFO blocks its reader for ever and a device such as /dev/zero never ends; neither has a
    size a reader could check first.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist: check the path") from None
    except OSError as err:
        raise error(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{str(path)!r} is a folder: give a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{str(path)!r} is {_kind_of(info.st_mode)}, not a regular file: copy the "
                    "data into a file and give that")
    return info


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def note_input(path: Path) -> None:
    """Remember that the running command reads `path`: none of its outputs may replace it."""
    if not _scopes:
        return
    with contextlib.suppress(OSError):
        info = os.stat(path)
        _scopes[-1].inputs[(info.st_dev, info.st_ino)] = str(path)


def _input_named(path: Path, inputs: Iterable[Path | None]) -> str | None:
    """The input that `path` is (same file on disk), or None."""
    try:
        target = os.stat(path)
    except OSError:
        return None
    key = (target.st_dev, target.st_ino)
    for scope in _scopes:
        if key in scope.inputs and _still_named(scope.inputs[key], key):
            return scope.inputs[key]
    for source in inputs:
        if source is None:
            continue
        with contextlib.suppress(OSError):
            info = os.stat(source)
            if (info.st_dev, info.st_ino) == key:
                return str(source)
    return None


def _still_named(path: str, key: tuple[int, int]) -> bool:
    """Whether the input read from `path` is still there: once the command replaced it (a
    resumed run updating its checkpoint), the file system may give its inode number to a
    new file, such as the command's next output, which is then no input at all."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == key


# --- output checks -------------------------------------------------------------------------

def check_output_path(path: Path, overwrite: bool, inputs: Iterable[Path | None] = (),
                      *, claim: bool = True, may_replace_input: bool = False) -> None:
    """Fail early, before any work, if `path` cannot be written as asked; claim its lock.

    `inputs` are the files the command will read (files it has read already are known): writing
    over one of them (a typo, or `--out` = the mask file with --overwrite) would destroy what
    the output is made from. `may_replace_input`: the output is the command's own file (a
    resumed training run updating the checkpoint it read).
    """
    path = Path(path)
    check_output_name(path)
    source = None if may_replace_input else _input_named(path, inputs)
    if source is not None:
        raise OutputError(f"{str(path)!r} is also an input of this command ({source!r}): "
                          "writing there would destroy it; choose another output file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {str(parent)!r} does not exist: create it first")
    if path.is_symlink():
        raise OutputError(f"output path {str(path)!r} is a symbolic link: writing would replace "
                          "the link, not its target; give the real path")
    if path.is_dir():
        raise OutputError(f"output path {str(path)!r} is a folder: give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"output path {str(path)!r} is {_kind_of(path.stat().st_mode)}: susl "
                          "only replaces regular files; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{str(path)!r} already exists: pass --overwrite to replace it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to folder {str(parent)!r}: check its permissions")
    if claim:
        claim_output(path)


def check_output_name(path: Path) -> None:
    """Refuse `-` (susl writes files, not standard output) and names a file system refuses."""
    if str(path) == "-":
        raise OutputError("'-' (standard output) cannot take this output: give a file name")
    if len(Path(path).name.encode()) > MAX_NAME_BYTES:
        raise OutputError(f"the file name {Path(path).name[:40]!r}... is "
                          f"{len(Path(path).name.encode())} bytes, more than the "
                          f"{MAX_NAME_BYTES} a file system allows: choose a shorter name")


# --- locks ---------------------------------------------------------------------------------

def claim_output(path: Path) -> None:
    """Take the advisory lock of `path` for the running command (a no-op if already held).

    Outside a command scope the lock is only tested (taken and released): a write takes it
    again for its own duration.
    """
    check_output_name(path)
    key = str(lock_path(Path(path).absolute()))
    if any(key in scope.locks for scope in _scopes):
        return
    fd = _acquire(Path(key), Path(path))
    if _scopes:
        _scopes[-1].locks[key] = fd
    else:
        _release(key, fd)


@contextlib.contextmanager
def held_for_write(path: Path) -> Iterator[None]:
    key = str(lock_path(Path(path).absolute()))
    if any(key in scope.locks for scope in _scopes):
        yield
        return
    fd = _acquire(Path(key), Path(path))
    try:
        yield
    finally:
        _release(key, fd)


def _acquire(lock: Path, target: Path) -> int:
    """flock `lock` (created if missing); retry if another process removed it meanwhile."""
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise write_error(target, err, 0) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise write_error(target, err, 0) from None
            raise OutputError(f"{str(target)!r} is being written by another susl process "
                              f"({holder}): wait for it to finish, or choose another output"
                              ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            with contextlib.suppress(OSError):  # the holder's pid is for messages only
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder removed this lock file as we opened it: take the new one
    raise OutputError(f"cannot lock {str(target)!r}: its lock file keeps changing; try again")


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f"pid {pid}"
    return "process id unknown"


def _release(key: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(key)  # while still holding it, so nobody can lock the removed file
    with contextlib.suppress(OSError):
        os.close(fd)


# --- errors --------------------------------------------------------------------------------

def write_error(path: Path, err: OSError, n_bytes: int) -> OutputError:
    """One sentence for a failed write: what happened, that the old file is intact, the fix."""
    state = "left unchanged" if path.exists() else "not created"
    size = f" ({format_bytes(n_bytes)})" if n_bytes else ""
    if err.errno in _WRITE_ERRNOS:
        reason, hint = _WRITE_ERRNOS[err.errno]
        return OutputError(f"{reason} while writing {str(path)!r}{size}; the file was {state}: "
                           f"{hint}, then run the command again")
    return OutputError(f"cannot write {str(path)!r}: {err.strerror or err}; the file was "
                       f"{state}: choose a writable location")
