"""Folders the commands and the Python API write to, checked before any work starts, and the lock
file that keeps a second writer out."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import IndexBusyError, InputError


def writable_dir(path: str | Path, option: str) -> Path:
    """An output folder: created if missing, and proven writable now rather than after the work."""
    import tempfile
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".castfinder-write-test-"):
            pass
    except FileExistsError:
        raise InputError(f"{option} {path}: exists and is not a directory") from None
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    return out


def hold_pid_lock(path: str | Path, who: str):
    """Take the exclusive flock on `path` (held while the returned file stays open; the OS drops it
    when the process dies) and write our pid into it. Held elsewhere: IndexBusyError naming `who`
    and the holder's pid, e.g. "DIR: another process (pid 123) is writing this index"."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise IndexBusyError(who.format(pid=holder)) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
