"""Which URLs castfinder may read when a list of allowed URL prefixes is given (`serve` and `ingest`
--allow-url-prefix): the one check, used for the source a client names and for every URL FFmpeg then
opens on its behalf (redirects, playlists, segments; stream/guarded_http.py)."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from castfinder.core.errors import SourceForbiddenError

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")


def parse_url_prefix(prefix: str) -> SplitResult:
    """An allowed URL prefix: scheme://host[:port][/path]. Raises ValueError with what is wrong."""
    parts = urlsplit(prefix.strip())
    if parts.scheme.lower() not in LIVE_SCHEMES:
        raise ValueError(f"'{prefix}': a URL prefix starts with one of {', '.join(s + '://' for s in LIVE_SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"'{prefix}': a URL prefix names a host (scheme://host[:port]/...)")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"'{prefix}': a URL prefix has no user, password, query or fragment")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"'{prefix}': bad port") from None
    return parts


def _control(c: str) -> bool:
    """A control character or a backslash: in no allowed URL, written as it is or %-encoded."""
    return c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F


class UrlPolicy:
    """URLs under a list of prefixes: the same scheme, host and port as a prefix, and a path under its
    path. An empty list allows no URL. Every refusal has the same words, so answers say nothing about
    which hosts or paths exist."""

    def __init__(self, prefixes=()):
        self.prefixes = [parse_url_prefix(p) for p in prefixes]

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None or any(c.isspace() or _control(c) for c in url):
            return False
        # no way out of the prefix's path: "..", "." or their %-encoded forms are refused outright, also
        # where a server would see them: after a backslash (read as "/" by some) or before ";params"
        # ("..;/" is ".." to servlet containers); and no control character or backslash once decoded
        path = unquote(unquote(parts.path))
        if any(_control(c) for c in path) or any(seg.split(";")[0] in (".", "..") for seg in path.split("/")):
            return False
        for p in self.prefixes:
            if (parts.scheme.lower() == p.scheme.lower() and (parts.hostname or "") == (p.hostname or "").lower()
                    and port == p.port):
                base = p.path or "/"
                path = parts.path or "/"
                if base.endswith("/") and path.startswith(base) or path == base or path.startswith(base + "/"):
                    return True
        return False

    def refusal(self) -> SourceForbiddenError:
        return SourceForbiddenError("source not allowed: only URLs under the allowed prefixes (--allow-url-prefix) "
                                    "are read" + ("" if self.prefixes else "; none are given"))

    def check(self, url: str) -> str:
        """`url`, or SourceForbiddenError."""
        if not self.allows(url):
            raise self.refusal()
        return url
