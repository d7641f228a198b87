"""The file an ingest read, and only that file, may be read again for playback, thumbnails and
contact sheets: its identity (device, inode, size, mtime) is recorded when the ingest opens it."""

from __future__ import annotations

import os
import stat

from .core.errors import NotFoundError


def _meta_key(video_id: int) -> str:
    return f"media_file_{video_id}"


def record_media(store, video_id: int, source: str) -> None:
    """Remember which file (device, inode, size, mtime) video `video_id` was read from."""
    try:
        st = os.stat(source)
    except OSError:
        return  # a live source: nothing to remember
    if stat.S_ISREG(st.st_mode):
        store.catalogue.set_meta(_meta_key(video_id), {
            "path": os.path.realpath(source), "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns})


def media_file(store, row) -> int:
    """A read-only descriptor of the file the video was ingested from, or NotFoundError when that file
    is gone or is no longer the same one (replaced, rewritten, or swapped for a symlink or a FIFO).
    Videos indexed before identities were recorded are checked against the fingerprint's size and mtime."""
    gone = NotFoundError(f"video {row['id']}: the file it was indexed from is gone or has been replaced; "
                         "nothing to read")
    ident = store.catalogue.get_meta(_meta_key(row["id"]))
    if ident is None:
        kind, _, rest = (row["fingerprint"] or "").partition(":")
        path, size, mtime = (rest.rsplit(":", 2) + ["", ""])[:3] if kind == "file" else ("", "", "")
        if not path or not size.isdigit() or not mtime.lstrip("-").isdigit():
            raise gone
    else:
        path = ident["path"]
    try:
        # O_NOFOLLOW: a symlink put in its place is refused; O_NONBLOCK: a FIFO cannot hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise gone from None
    st = os.fstat(fd)
    if ident is None:
        same = stat.S_ISREG(st.st_mode) and st.st_size == int(size) and int(st.st_mtime) == int(mtime)
    else:
        same = (stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                == (ident["dev"], ident["ino"], ident["size"], ident["mtime_ns"]))
    if not same:
        os.close(fd)
        raise gone
    return fd
