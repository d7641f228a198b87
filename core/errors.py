"""Errors a user can act on. The CLI prints them as one line; the HTTP service maps them to 4xx."""


class CastfinderError(Exception):
    """Base for errors caused by input or environment, never by a bug."""

    exit_code = 2
    http_status = 400


class InputError(CastfinderError):
    """The source, photo or argument cannot be used (missing, corrupt, wrong kind)."""


class NotFoundError(CastfinderError):
    """An id (video, shot, cluster, feature) that the index does not know."""

    http_status = 404


class MissingWeightsError(CastfinderError):
    """A model's weights are not installed; the message says how to provide them."""

    exit_code = 3
    http_status = 422


class IndexBusyError(CastfinderError):
    """Another process is writing this index directory."""

    exit_code = 4
    http_status = 409


class NothingIndexedError(CastfinderError):
    """A query arrived before any vector was indexed."""

    http_status = 409


class TooLargeError(CastfinderError):
    """An upload over the size limit."""

    http_status = 413


class NameTakenError(CastfinderError):
    """A cluster name already given to another cluster."""

    http_status = 409


class IndexDamagedError(CastfinderError):
    """The catalogue of an index directory cannot be read (truncated, overwritten); FAISS files
    are only checkpoints and are rebuilt instead of raising this."""

    http_status = 500


class IndexUnwritableError(CastfinderError):
    """The index directory (or a file in it) cannot be written: permissions, read-only mount, full disk."""

    http_status = 503


class TooManyIngestsError(CastfinderError):
    """Every ingest slot is taken (an Index opened with max_ingests, the service's --max-ingests)."""

    exit_code = 4
    http_status = 429


class SourceForbiddenError(CastfinderError):
    """A source castfinder is not allowed to read (outside the media roots or the allowed URL prefixes,
    or a URL that leads outside them). The same words whether or not it exists."""

    http_status = 403
