"""HTTP(S) sources read by castfinder itself, for FFmpeg, when a list of allowed URL prefixes is in
force. FFmpeg's own HTTP client follows redirects anywhere, and its HLS demuxer opens whatever the
playlist names (another host, port or path, file://); it has no hook to ask first. PyAV's io_open
hands every URL FFmpeg opens (the source, each playlist and its reloads, segments, keys) to
GuardedOpener, which:

- checks the URL against the prefixes (stream/url_policy.py) before any byte is requested;
- follows redirects itself, each target checked the same way: a redirect out is refused, and the
  target is never asked;
- reads a playlist whole (it is small) and checks every URI in it before FFmpeg sees it, so one that
  points outside is refused while FFmpeg is still opening the source, not half-way through;
- refuses anything but http and https (an AES-128 segment, "crypto+http://", would be read by
  FFmpeg's own client behind this hook, so encrypted HLS is refused too).

A refused URL is remembered and handed to FFmpeg as an empty stream (never asked for); the decoder
then refuses the whole source with the policy's one SourceForbiddenError (the service's uniform 403),
even where FFmpeg would only have logged a segment it could not open and gone on. The source itself
failing (HTTP 404, refused connection) raises, for the decoder's usual message; a later URL failing
(a segment, a playlist reload) is logged and read as empty, as FFmpeg's own client goes on past it.
Nothing else raises through PyAV: it keeps one pending exception per thread and prints the others."""

from __future__ import annotations

import http.client
import io
import logging
import re
import socket
import ssl
import threading
import time
from urllib.parse import urljoin, urlsplit

from .url_policy import UrlPolicy

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_PLAYLIST_BYTES = 4 << 20        # a playlist of a long live stream is well under 1 MB
SKIP_FORWARD = 256 << 10            # a short forward seek reads on rather than asking again
REDIRECTS = (301, 302, 303, 307, 308)
AVIO_FLAG_WRITE = 2
_URI_ATTR = re.compile(r'URI="([^"]*)"')


def playlist_uris(text: str, base: str) -> list[str]:
    """Every URI an HLS playlist names (segments, variant playlists, keys, init sections, renditions),
    made absolute against `base` as FFmpeg resolves them."""
    uris = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            uris += _URI_ATTR.findall(line)
        else:
            uris.append(line)
    return [urljoin(base, u) for u in uris]


def _shut(conn) -> None:
    """Shut a connection's socket from another thread: a read blocked on it returns at once."""
    try:
        sock = conn.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Refused(Exception):
    """A URL outside the prefixes (recorded in GuardedOpener.refused)."""


def _safe(url: str) -> str:
    return url[:200].encode("ascii", "backslashreplace").decode()


class GuardedOpener:
    """PyAV's io_open callable: every URL FFmpeg opens passes the policy first (see the module)."""

    def __init__(self, policy: UrlPolicy, timeout_s: float = 10.0):
        self.policy, self.timeout_s = policy, timeout_s
        self.refused: list[str] = []     # URLs refused: the decoder reports them as the source's refusal
        self.opened = 0
        self._open: list[HttpSource] = []
        self._lock = threading.Lock()
        self._reading: set = set()       # connections of playlists being read (abort() shuts them too)
        self._aborted = False
        self.interrupted = False         # Ctrl-C came while FFmpeg was opening a URL: the decoder re-raises it

    def __call__(self, url: str, flags: int, options: dict):
        first, self.opened = self.opened == 0, self.opened + 1
        try:
            if flags & AVIO_FLAG_WRITE:
                raise PermissionError("castfinder reads sources; it does not write to URLs")
            return self.open(url)
        except Refused:
            return io.BytesIO(b"")
        except KeyboardInterrupt:  # PyAV would print and drop it: stop, and let the decoder raise it
            self.interrupted = True
            self.abort()
            return io.BytesIO(b"")
        except OSError as exc:
            if first:
                raise
            if not self._aborted:
                log.warning("%s: %s", _safe(url), exc)
            return io.BytesIO(b"")

    def refuse(self, url: str) -> "Refused":
        self.refused.append(url)
        log.warning("refused to read %s: outside the allowed URL prefixes", _safe(url))
        return Refused(url)

    def open(self, url: str):
        """A file-like for `url`: a playlist as checked bytes, anything else streamed (seekable when
        the server gives its length)."""
        conn, resp = self.get(url)
        head = resp.read1(4096) if resp.status != 204 else b""
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U"):
            data = self._read_playlist(conn, resp, head)
            for uri in playlist_uris(data.decode("utf-8", "replace"), url):
                if not self.policy.allows(uri):
                    raise self.refuse(uri)
            return io.BytesIO(data)
        source = HttpSource(self, url, conn, resp, head)
        with self._lock:
            self._open = [s for s in self._open if not s.closed] + [source]
        return source

    def _read_playlist(self, conn, resp, head: bytes) -> bytes:
        """A playlist whole, within timeout_s in all: a server that sends one line every few seconds
        and never ends (each read within the socket timeout) cannot hold the opener, and stop() shuts it."""
        deadline = time.monotonic() + self.timeout_s
        chunks, size = [head], len(head)
        with self._lock:
            self._reading.add(conn)
        try:
            while True:
                left = deadline - time.monotonic()
                if self._aborted:
                    raise OSError("stopped")
                if left <= 0:
                    raise OSError(f"playlist not read whole in {self.timeout_s:g} s")
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                try:
                    chunk = resp.read1(1 << 16)
                except TimeoutError:
                    raise OSError(f"playlist not read whole in {self.timeout_s:g} s") from None
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_PLAYLIST_BYTES:
                    raise OSError(f"playlist larger than {MAX_PLAYLIST_BYTES >> 20} MB")
        finally:
            with self._lock:
                self._reading.discard(conn)
            conn.close()

    def get(self, url: str, offset: int = 0):
        """(connection, response) for a GET of `url` from byte `offset`, redirects followed while they
        stay allowed. OSError for HTTP errors and network failures."""
        for _ in range(MAX_REDIRECTS + 1):
            if self._aborted:
                raise OSError("stopped")
            if not self.policy.allows(url):
                raise self.refuse(url)
            parts = urlsplit(url)
            if parts.scheme.lower() not in ("http", "https"):
                raise OSError(f"{parts.scheme}: only http and https are read through the URL guard")
            if parts.scheme.lower() == "https":
                conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout_s,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
            headers = {"User-Agent": "castfinder", "Accept": "*/*"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise OSError(f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else exc) from None
            if resp.status in REDIRECTS:
                location = resp.getheader("Location")
                conn.close()
                if not location:
                    raise OSError(f"HTTP {resp.status} without a Location")
                url = urljoin(url, location.strip())
                continue
            if resp.status >= 400:
                conn.close()
                raise OSError(f"HTTP error {resp.status} {resp.reason}".strip())
            return conn, resp
        raise OSError(f"more than {MAX_REDIRECTS} redirects")

    def abort(self) -> None:
        """Stop: every connection is shut, so a read blocked on a silent server returns at once."""
        self._aborted = True
        with self._lock:
            sources = list(self._open)
            reading = list(self._reading)
        for s in sources:
            s.shut()
        for conn in reading:
            _shut(conn)


class HttpSource:
    """One HTTP response as the file PyAV reads: read, and seek by Range requests (or by reading on,
    or again from the start when the server ignores ranges)."""

    def __init__(self, opener: GuardedOpener, url: str, conn, resp, head: bytes = b""):
        self._opener, self.url = opener, url
        self._conn, self._resp, self._head = conn, resp, head
        length = resp.getheader("Content-Length")
        self.size = int(length) if resp.status == 200 and length and length.isdigit() else None
        self.pos = 0
        self.closed = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.size is not None

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
        else:
            try:
                data = self._resp.read1(n if n > 0 else 1 << 16)
            except (OSError, ValueError, http.client.HTTPException):
                if self._opener._aborted or self.closed:
                    return b""  # stopped: the end of the stream, not damage
                raise
        self.pos += len(data)
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            data = self.read(min(n, 1 << 16))
            if not data:
                raise OSError("seek past the end of the stream")
            n -= len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.pos + offset if whence == 1 else (self.size or 0) + offset
        if target < 0:
            raise OSError("seek before the start")
        if 0 <= target - self.pos <= SKIP_FORWARD:
            self._skip(target - self.pos)
            return self.pos
        self._close_connection()
        self._conn, self._resp = self._opener.get(self.url, offset=target)  # redirects checked again
        self._head = b""
        if self._resp.status == 206:
            self.pos = target
        else:  # the server ignores ranges: from the start, read on to the target
            self.pos = 0
            self._skip(target)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def shut(self) -> None:
        _shut(self._conn)

    def _close_connection(self) -> None:
        try:
            self._resp.close()
            self._conn.close()
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self._close_connection()
