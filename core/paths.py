"""Folders the commands and the Python API write to, checked before any work starts."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError


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
