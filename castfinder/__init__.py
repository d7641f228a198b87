"""castfinder: find movie characters in streaming video.

    import castfinder
    with castfinder.open_index("friends.idx") as idx:
        idx.ingest("video.mp4")
        found = idx.query(photos=["ross1.jpg", "ross2.jpg"])

See castfinder.api. The errors every call raises are importable from here too."""

__version__ = "0.1.0"

# errors only: every layer imports castfinder.core, which runs this file first, so it must stay light
from .core.errors import (CastfinderError, IndexBusyError, IndexDamagedError, IndexUnwritableError, InputError,
                          MissingWeightsError, NameTakenError, NothingIndexedError, NotFoundError, TooLargeError,
                          SourceForbiddenError, TooManyIngestsError)

_API = ("open_index", "Index", "Ingest")

__all__ = [*_API, "CastfinderError", "IndexBusyError", "IndexDamagedError", "IndexUnwritableError", "InputError",
           "MissingWeightsError", "NameTakenError", "NothingIndexedError", "NotFoundError", "TooLargeError",
           "SourceForbiddenError", "TooManyIngestsError"]


def __getattr__(name):
    # the API is imported on first use (PEP 562), not by `import castfinder`
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'castfinder' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
