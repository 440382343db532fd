"""Exclusive locks, so that two processes never write one run folder or one split CSV at once.

`hold_folder` takes a run folder for the rest of the process (training, predict, evaluate_safety,
review export): a second process that wants it gets an InputError naming the holder (pid, host,
start time). The lock is on the folder itself (an fd of the directory), so deleting its `.lock`
file (a "stale lock" clean-up) does not let a second run in; `.lock` only records the holder. `locked_file` holds a file's lock for a `with` block and waits for it (review.py
import appending to a split CSV). Both lock a lock file with `fcntl.flock`, which the kernel
releases when the process ends, however it ends (a killed run leaves no stale lock). Where
fcntl does not exist (Windows) they lock nothing and say so once.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
import stat
from pathlib import Path
from typing import IO

from safehil.core.utils import InputError, log

try:
    import fcntl
except ImportError:  # not POSIX: run without locks rather than not at all
    fcntl = None

FOLDER_LOCK = ".lock"  # hidden: a folder holding only it holds no results (run_folders.holds_results)
_held: dict[str, tuple[IO, int]] = {}  # run folders this process holds: real path -> (lock file, directory fd)
_warned = []


def _holder() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}"


def acquire(lock_path: str | Path, wait: bool = False) -> IO | None:
    """Lock `lock_path` (created when missing) exclusively -> the open file that holds the lock, or
    None when another process holds it and `wait` is False. The holder line is written into it."""
    if fcntl is None:
        if not _warned:
            _warned.append(True)
            log("warning: no fcntl on this platform: run folders and split CSVs are not locked")
        return open(os.devnull, "a")
    try:  # O_NOFOLLOW: a symbolic link (to a split CSV, say) is refused, never truncated
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        if os.path.islink(lock_path):
            raise InputError(f"{lock_path}: a lock file that is a symbolic link (to {os.path.realpath(lock_path)}) "
                             "is refused; delete the link (the lock file is created as a plain file)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{lock_path}: the lock file is not a plain file; move it away")
    f = os.fdopen(fd, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(_holder() + "\n")
    f.flush()
    return f


def holder_of(lock_path: str | Path) -> str:
    """The holder line a locked lock file records ('unknown' when it cannot be read)."""
    try:
        return Path(lock_path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def hold_folder(folder: str | Path, flag: str = "--run_name NAME or another --out_dir") -> Path:
    """Create `folder` and hold its lock until this process ends (again in this process: a no-op).
    Held by another process: InputError 'FOLDER: another run writes into it (pid, host, start)'
    with the fix (`flag`)."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        return folder
    for above in (folder, *folder.parents):  # a file where a folder must be: say so before mkdir fails
        if above.exists():
            if not above.is_dir():
                raise InputError(f"{folder}: {above} is a file, not a folder; pass {flag}")
            break
    folder.mkdir(parents=True, exist_ok=True)
    held_dir = lock_directory(folder)
    f = acquire(folder / FOLDER_LOCK) if held_dir is not None else None
    if f is None:
        if held_dir is not None:
            os.close(held_dir)
        holder = holder_of(folder / FOLDER_LOCK)
        holder = holder if holder != "unknown" else f"its {FOLDER_LOCK} file was removed, the folder is still held"
        raise InputError(f"{folder}: another run is writing into it ({holder}); wait until it ends, or pass {flag}")
    _held[key] = (f, held_dir)
    return folder


def lock_directory(folder: Path) -> int | None:
    """Lock the folder itself (flock on an fd of the directory) -> the fd that holds it, or None
    when another process holds it. Unlike a lock file, nothing a person can delete releases it."""
    if fcntl is None:
        return -1
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def release_folder(folder: str | Path) -> None:
    """Give up this process's hold of `folder` (a later run in this process may take it again)."""
    held = _held.pop(os.path.realpath(folder), None)
    if held is not None:
        f, held_dir = held
        f.close()
        if held_dir >= 0:
            os.close(held_dir)


@contextlib.contextmanager
def locked_file(path: str | Path):
    """Hold the exclusive lock of `path` (its lock file `<path>.lock` beside it) for a `with`
    block, waiting while another process holds it. Read the file inside the block, so what is
    checked is what is written."""
    lock_path = Path(f"{path}.lock")
    f = acquire(lock_path, wait=False)
    if f is None:
        log(f"waiting for {holder_of(lock_path)}, which holds {path} ...")
        f = acquire(lock_path, wait=True)
    try:
        yield
    finally:
        f.close()

