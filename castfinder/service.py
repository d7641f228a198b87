"""`castfinder serve`: the HTTP service. Ingests run in background threads; queries answer from
the growing index at any time. Every error a client can cause is a 4xx with a message; a bug in
one request is a 500 for that request only. Every error, whatever its source (ours, routing,
validation), has the one shape {"error": "..."} and never carries Python or C++ internals.

What a client may make the server read is bounded: files only under --media-root folders, URLs only
under --allow-url-prefix prefixes, media served only from the very file the ingest opened; what one
request may cost is bounded too (body bytes counted as they arrive, photos, pixels, cache disk)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from castfinder.stream import metrics as M
from castfinder.stream.url_policy import UrlPolicy

from .core.config import Config
from .core.errors import CastfinderError, IndexBusyError, InputError, SourceForbiddenError, TooLargeError

log = logging.getLogger("castfinder.service")

OPEN_PATHS = ("/healthz", "/docs", "/openapi.json", "/redoc")
MAX_ID = 2**63 - 1                  # SQLite integers: larger ids cannot exist
MAX_PHOTO_PIXELS = 50_000_000       # one query photo (a 50 MP camera); decoded once, then scaled down
MAX_QUERY_PIXELS = 200_000_000      # all photos of one query together
SMALL_BODY = 64 * 1024              # every request but /query carries at most a little JSON

Id = Annotated[int, PathParam(ge=0, le=MAX_ID)]


class VideoRequest(BaseModel):
    source: str = Field(max_length=4096, description="file path under a --media-root of the server, or a live URL "
                                                     "under an --allow-url-prefix (rtsp://, http(s)://, udp://, ...)")
    force: bool = Field(False, description="rebuild even if this file is already indexed")


class ClusterName(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="the character's name")


# --- what a client may make the server read -------------------------------------------------------
class SourcePolicy:
    """Which sources POST /videos may ingest. Files: the real path (symlinks and .. resolved) lies
    under a media root. URLs: the Index's URL policy (castfinder.stream.url_policy, the same that
    checks every URL the source then leads to). Anything else, existing or not, gets the same 403, so
    answers reveal nothing about the disk or the network."""

    def __init__(self, media_roots=(), urls: UrlPolicy | None = None):
        self.roots = [Path(os.path.realpath(r)) for r in media_roots]
        self.urls = urls if urls is not None else UrlPolicy()

    def under_roots(self, path: str | Path) -> bool:
        real = Path(os.path.realpath(path))
        return any(real == r or real.is_relative_to(r) for r in self.roots)

    def check(self, source: str) -> str:
        """The source to open (a file as its real path), or SourceForbiddenError."""
        path_refused = SourceForbiddenError("source not allowed: this server ingests only files under its "
                                            "--media-root folders" + ("" if self.roots else " (none given)")
                                            + ", named by absolute path")
        if "\x00" in source:
            raise path_refused
        if "://" in source:
            return self.urls.check(source)
        # a path: never stdin, never an FFmpeg protocol ("concat:", "file:", "subfile,", ...);
        # opening the absolute real path makes FFmpeg read exactly that file
        if source == "-" or not self.roots or not os.path.isabs(source) or not self.under_roots(source):
            raise path_refused
        return os.path.realpath(source)


# --- cost of one request --------------------------------------------------------------------------
class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body is counted as it arrives (chunked ones too) and refused with
    413 as soon as it passes the limit, before it is parsed or spooled any further. It is also the
    last stop for unexpected errors, which leave as a generic 500."""

    def __init__(self, app, limit_for):
        self.app, self.limit_for = app, limit_for

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        body = json.dumps({"error": f"request too large (more than {limit} bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    body = b'{"error": "bad Content-Length header"}'
                    await send({"type": "http.response.start", "status": 400,
                                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})
                    return
                if int(value) > limit:
                    return await self._refuse(send, limit)
        received, over, started = 0, False, False

        async def counted_receive():
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                return  # whatever the app made of the cut-off body: our 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception as exc:
            if not over:
                # one line in the log (the trace at debug level), a generic 500 to the client: FAISS's
                # C++ messages and Python internals are not for it
                log.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__,
                          str(exc).splitlines()[0][:300] if str(exc) else "")
                log.debug("trace", exc_info=exc)
                if not started:
                    body = b'{"error": "internal error (details in the server log)"}'
                    await send({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                return
        if over and not started:
            await self._refuse(send, limit)


class DiskCache:
    """INDEX/thumbnails: thumbnails and contact sheets are cached there, and it never grows past
    `max_bytes`: beyond it the oldest files go (down to 3/4 of the limit)."""

    def __init__(self, directory: Path, max_bytes: int):
        self.dir, self.max_bytes = Path(directory), max_bytes
        self._lock = threading.Lock()
        self.total = sum(size for _, size, _ in self._files())

    def _files(self):
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return []
        out = []
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((e.path, st.st_size, st.st_mtime))
        return out

    def added(self, path: Path | None, size: int | None = None) -> None:
        if path is None:
            return
        with self._lock:
            try:
                self.total += size if size is not None else Path(path).stat().st_size
            except OSError:
                return
            if self.total <= self.max_bytes:
                return
            files = sorted(self._files(), key=lambda f: f[2])
            self.total = sum(f[1] for f in files)
            for p, size_, _ in files:
                if self.total <= self.max_bytes * 3 // 4:
                    break
                try:
                    os.unlink(p)
                    self.total -= size_
                except OSError:
                    pass


class PixelBudget:
    """Photos being decoded at once, in pixels: concurrent queries share it, so forty clients sending
    big photos together wait their turn instead of decoding gigabytes at the same time."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._cond = threading.Condition()

    def acquire(self, n: int, timeout: float = 30.0) -> int:
        n = min(n, self.capacity)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + n <= self.capacity, timeout=timeout):
                raise ServerBusyError("too many photos are being decoded right now; try again in a moment")
            self.used += n
        return n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class ServerBusyError(CastfinderError):
    http_status = 503


def _photo_pixels(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image header (no decoding); None when it is not an image we know,
    which the decoder then reports in its own words."""
    import io

    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None


# --- JSON documents -------------------------------------------------------------------------------
def video_doc(index, record: dict, with_shots: bool = False) -> dict:
    """A video as the Python API records it (the CLI's `videos --json`), with what a client of this
    server needs besides: the stored error in public words and the link to play the file."""
    doc = dict(record, error=_public_error(record["error"]),
               media=f"/videos/{record['id']}/media" if _playable(index, record) else None)
    if with_shots:
        doc["shot_list"] = index.shots(record["id"])
    return doc


_INTERNALS = ("Error in ", ".cpp", "faiss::", "Traceback", 'File "', "sqlite3.", "0x")


def _public_error(text: str | None) -> str | None:
    """A video's stored error as clients see it: ours are sentences; a library's internals (C++ file
    and line, addresses, Python traces) stay in the server log."""
    if text and any(m in text for m in _INTERNALS):
        return "the ingest failed on an internal error (details in the server log)"
    return text


def _playable(index, record: dict) -> bool:
    if record["live"]:
        return False
    try:
        fd = index.open_media(record["id"])
    except CastfinderError:
        return False
    os.close(fd)
    return True


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "path", "query", "header", "cookie")]
        where = ".".join(loc)
        parts.append(f"{where if where and not where.isdigit() else 'request body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _file_response(fd: int, request: Request, media_type: str) -> Response:
    """Serve an already opened (and checked) file descriptor, with single HTTP ranges for seeking."""
    size = os.fstat(fd).st_size
    start, end, status = 0, size - 1, 200
    header = request.headers.get("range", "")
    if header.startswith("bytes=") and "," not in header:
        a, _, b = header[6:].strip().partition("-")
        try:
            if a:
                start, end = int(a), (int(b) if b else size - 1)
            elif b:
                start, end = max(0, size - int(b)), size - 1
            else:
                raise ValueError
        except ValueError:
            start, end = -1, -1
        end = min(end, size - 1)
        if not 0 <= start <= end:
            os.close(fd)
            return JSONResponse({"error": "requested range not satisfiable"}, status_code=416,
                                headers={"Content-Range": f"bytes */{size}"})
        status = 206
    length = end - start + 1

    def chunks():
        try:
            left, pos = length, start
            while left > 0:
                data = os.pread(fd, min(1 << 20, left), pos)
                if not data:
                    break
                pos += len(data)
                left -= len(data)
                yield data
        finally:
            os.close(fd)

    headers = {"Accept-Ranges": "bytes", "Content-Length": str(length)}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(chunks(), status_code=status, media_type=media_type, headers=headers)


def create_app(index, token: str | None = None, max_upload_mb: float = 10.0, max_photos: int = 20,
               warm_up: bool = True, media_roots=(), max_request_mb: float = 64.0,
               thumbnail_cache_mb: float = 512.0) -> FastAPI:
    """The app over one castfinder.api.Index, which this server owns (it closes it on shutdown): ingest,
    query, cast, naming, videos and shots are the Python API's records, as the CLI's --json prints them.
    URL sources: the Index's url_prefixes (none: no URL)."""
    policy = SourcePolicy(media_roots, index.url_policy)
    state = {"ready": False, "warm_error": None, "started": time.time()}
    max_bytes = int(max_upload_mb * 1024 * 1024)
    max_body = int(max_request_mb * 1024 * 1024)
    thumbs_dir = index.path / "thumbnails"
    cache = DiskCache(thumbs_dir, int(thumbnail_cache_mb * 1024 * 1024))
    decoding = PixelBudget(2 * MAX_QUERY_PIXELS)

    def warm() -> None:
        """Load the models and compile ranx before the first user waits for them."""
        try:
            index.warm_up()
        except CastfinderError as exc:  # reported by /healthz; requests still try and explain themselves
            state["warm_error"] = str(exc)
            log.warning("warm-up failed: %s", exc)
        except Exception as exc:
            state["warm_error"] = "warm-up failed (details in the server log)"
            log.warning("warm-up failed: %s", exc)
        state["ready"] = True

    @asynccontextmanager
    async def lifespan(app):
        if warm_up:
            threading.Thread(target=warm, name="cf-warm-up", daemon=True).start()
        else:
            state["ready"] = True
        yield
        index.close(timeout=10.0)  # a server asked to stop ends in seconds whatever its sources do

    app = FastAPI(title="castfinder", version="0.1",
                  description="Find the shots where a movie character appears, while the film is still being indexed.",
                  lifespan=lifespan)
    app.state.index = index

    # --- errors, auth, request size and metrics -------------------------------------------------
    @app.exception_handler(CastfinderError)
    async def castfinder_error(request: Request, exc: CastfinderError):
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        else:
            message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a backstop: BodyLimit answers these first
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"error": "internal error (details in the server log)"}, status_code=500)

    def authorized(request: Request) -> bool:
        # images and the video element cannot send headers: they may carry ?access_token=
        # (compared in constant time: response timing says nothing about the token)
        import hmac
        given = [request.headers.get("authorization", ""), "Bearer " + request.query_params.get("access_token", "")]
        return not token or any(hmac.compare_digest(g.encode(), f"Bearer {token}".encode()) for g in given)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if token and not (path in OPEN_PATHS or path == "/" or path.startswith("/static/")):
            if not authorized(request):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        route = request.scope.get("route")
        M.HTTP_REQUESTS.labels(getattr(route, "path", "unmatched"), f"{response.status_code // 100}xx").inc()
        return response

    app.add_middleware(BodyLimit, limit_for=lambda scope: max_body if scope["path"] == "/query" else SMALL_BODY)

    def require_writer(what: str) -> None:
        if not index.writable:
            if index.sharded:
                raise IndexBusyError(f"this server only reads the index (a sharded index is written by "
                                     f"`castfinder ingest --ray` jobs only): cannot {what}")
            raise IndexBusyError(f"this server only reads the index (another process writes it): cannot {what}; "
                                 "do it through the process that writes the index")

    # --- the web page ---------------------------------------------------------------------------
    from fastapi.staticfiles import StaticFiles
    web = Path(__file__).parent / "web"
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", include_in_schema=False)
    def index_page():
        from fastapi.responses import FileResponse
        return FileResponse(web / "index.html", media_type="text/html")

    # --- health and metrics ---------------------------------------------------------------------
    @app.get("/healthz", summary="liveness and readiness: 200 when the index can be searched, 503 and why when not")
    def healthz(request: Request):
        problems = index.problems()
        if state["warm_error"]:
            problems.append(state["warm_error"])
        try:
            videos = len(index.videos())
        except Exception:
            videos = None
        doc = {"status": "ok" if not problems else "unavailable", "ready": state["ready"], "problems": problems,
               "warm_up_error": state["warm_error"], "writable": index.writable, "videos": videos,
               "ingesting": index.ingesting(), "uptime_s": round(time.time() - state["started"], 1)}
        if not authorized(request):  # open to load balancers, but the details only for token holders
            doc = {k: doc[k] for k in ("status", "ready")}
        return JSONResponse(doc, status_code=200 if not problems else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        M.record_gpu()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # --- videos ---------------------------------------------------------------------------------
    @app.post("/videos", status_code=202, summary="start ingesting a file (under a --media-root) or a live URL "
                                                  "(under an --allow-url-prefix)")
    def add_video(req: VideoRequest):
        source = req.source.strip()
        if not source:
            raise InputError("source is empty")
        require_writer("ingest")
        # every ingest of the server runs on the Index's shared detect/embed stages: model calls mix
        # the frames of all videos being ingested (issue 15), as `castfinder ingest A B C` does
        run = index.start_ingest(policy.check(source), force=req.force, shared=True)
        doc = video_doc(index, index.video(run.video))
        doc["reused"] = run.reused
        return JSONResponse(doc, status_code=200 if run.reused else 202)

    @app.get("/videos", summary="every video with its ingest status")
    def list_videos():
        return [video_doc(index, v) for v in index.videos()]

    @app.get("/videos/{video_id}", summary="status, progress, real-time factor and shots so far")
    def get_video(video_id: Id):
        return video_doc(index, index.video(video_id), with_shots=True)

    @app.delete("/videos/{video_id}", summary="stop an ingest cleanly (purge=true also removes the video)")
    def delete_video(video_id: Id, purge: bool = Query(False, description="remove the video and its vectors")):
        index.video(video_id)
        if purge:
            require_writer("remove a video")
            return index.remove(video_id)
        if not index.stop(video_id):
            return JSONResponse({"id": video_id, "status": index.video(video_id)["status"],
                                 "message": "not being ingested; nothing to stop"}, status_code=200)
        return JSONResponse({"id": video_id, "status": "stopping"}, status_code=202)

    @app.get("/videos/{video_id}/media", summary="the source file, for playback (HTTP range requests)")
    def video_media(video_id: Id, request: Request):
        return _file_response(index.open_media(video_id), request, "video/mp4")

    @app.get("/shots/{video_id}/{shot}/thumbnail", summary="JPEG of a shot's frame, matching face boxed",
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(video_id: Id, shot: Annotated[int, PathParam(ge=0, le=MAX_ID)],
                  frame: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
                  face: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None):
        data = index.thumbnail(video_id, shot, frame, face, cache_dir=thumbs_dir, on_write=cache.added)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    # --- cast -----------------------------------------------------------------------------------
    def _cast_doc(video_id: int, clusters: list[dict]) -> list[dict]:
        for cl in clusters:
            cl["sheet"] = f"/videos/{video_id}/cast/{cl['cluster']}/sheet.png"
        return clusters

    @app.get("/videos/{video_id}/cast", summary="the characters found without photos (grows during ingest)")
    def get_cast(video_id: Id, recluster: bool = False):
        index.video(video_id)
        if recluster:
            require_writer("recluster")
        clusters = index.cast(video_id, recluster=recluster)[0]["clusters"]
        return {"video": video_id, "clusters": _cast_doc(video_id, clusters),
                "message": None if clusters else "no face tracks in this video yet: the cast is empty"}

    @app.put("/videos/{video_id}/cast/{cluster_id}", summary="name a cluster; then query by that name without photos")
    def name_cluster(video_id: Id, cluster_id: Id, body: ClusterName):
        index.video(video_id)
        if not index.sharded:  # a sharded index's cluster is named in its shard, as `castfinder cast name` does
            require_writer("name a cluster")
        return index.name_cluster(cluster_id, body.name, video=video_id)

    @app.get("/videos/{video_id}/cast/{cluster_id}/sheet.png", summary="contact sheet of a cluster's best faces",
             responses={200: {"content": {"image/png": {}}}})
    def cluster_sheet_png(video_id: Id, cluster_id: Id):
        index.video(video_id)
        cl = index.cluster(cluster_id, video=video_id)
        os.close(index.open_media(video_id))  # a cached sheet too is shown only while the file is the same
        target = thumbs_dir / f"sheet_v{video_id}_c{cluster_id}_{len(cl['faces'])}_{cl['tracks']}.png"
        if target.is_file():  # the same faces make the same sheet
            return Response(target.read_bytes(), media_type="image/png")
        try:
            thumbs_dir.mkdir(parents=True, exist_ok=True)
            path = index.cluster_sheet(cluster_id, target, video=video_id)
        except OSError:  # the cache cannot be written (read-only index): make it in a scratch folder
            import tempfile
            with tempfile.TemporaryDirectory(prefix="castfinder-sheet-") as scratch:
                path = index.cluster_sheet(cluster_id, Path(scratch) / "sheet.png", video=video_id)
                return Response(path.read_bytes(), media_type="image/png")
        data = path.read_bytes()
        cache.added(path, len(data))
        return Response(data, media_type="image/png")

    # --- query ----------------------------------------------------------------------------------
    @app.post("/query", summary="find the shots where a character appears, from photos")
    def query(photos: list[UploadFile] | None = File(None, description="sample photos of the character "
                                                      "(none: `character` names a cast cluster)"),
              character: str | None = Form(None, max_length=200), video: int | None = Form(None, ge=1, le=MAX_ID),
              features: str | None = Form(None, max_length=200, description="face=NAME,frame=NAME; NAME may be none"),
              both: bool = Form(False, description="face and frame features for every photo"),
              top_k: int | None = Form(None, ge=1, le=100000), fusion: str | None = Form(None, max_length=50),
              limit: int | None = Form(None, ge=0, le=100000, description="at most this many shots "
                                       "(default: the preset's, 50; 0 = all)"),
              expand: bool = Form(False, description="photos matching a cast cluster pull in its tracks")):
        from castfinder.index.fusion import METHODS

        t0 = time.perf_counter()
        try:
            photos = photos or []
            if len(photos) > max_photos:
                raise InputError(f"too many photos ({len(photos)}; at most {max_photos})")
            if fusion is not None and fusion not in METHODS:  # before any photo is decoded
                raise InputError(f"unknown fusion '{fusion}' (known: {', '.join(METHODS)})")
            named, pixels = [], 0
            for up in photos:
                data = up.file.read(max_bytes + 1)
                name = (up.filename or "upload")[:200]
                if len(data) > max_bytes:
                    raise TooLargeError(f"{name}: larger than the {max_upload_mb:g} MB limit")
                if not data:
                    raise InputError(f"{name}: empty file")
                size = _photo_pixels(data)
                if size is not None:
                    w, h = size
                    if w * h > MAX_PHOTO_PIXELS:
                        raise TooLargeError(f"{name}: {w}x{h} pixels is over the {MAX_PHOTO_PIXELS // 1_000_000} "
                                            "megapixel limit per photo")
                    pixels += w * h
                    if pixels > MAX_QUERY_PIXELS:
                        raise TooLargeError(f"the photos of one query are over {MAX_QUERY_PIXELS // 1_000_000} "
                                            "megapixels together: send fewer or smaller photos")
                named.append((name, data))  # decoded by the engine unless its vectors are cached
            held = decoding.acquire(pixels) if pixels else 0
            try:
                doc = index.query(named, character=character, video=video, features=features, both=both,
                                  top_k=top_k, fusion=fusion, limit=limit, expand=expand, refs=True)
            finally:
                if held:
                    decoding.release(held)
            for r in doc["results"]:
                frame, face = r.pop("frame_id"), r.pop("face_id")
                r["thumbnail"] = (f"/shots/{r['video']}/{r['shot']}/thumbnail?frame={frame}"
                                  + (f"&face={face}" if face is not None else ""))
            M.QUERIES.labels("ok").inc()
            return doc
        except CastfinderError:
            M.QUERIES.labels("client_error").inc()
            raise
        except Exception:
            M.QUERIES.labels("server_error").inc()
            raise
        finally:
            M.QUERY_SECONDS.observe(time.perf_counter() - t0)

    return app


def serve(index_dir: str, config: Config, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_upload_mb: float = 10.0, max_request_mb: float = 64.0, max_photos: int = 20, media_roots=(),
          url_prefixes=(), thumbnail_cache_mb: float = 512.0, max_ingests: int = 4) -> None:
    import socket

    import uvicorn

    from .api import open_index

    # a busy port is a clear error now, not a traceback from inside uvicorn
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (OSError, UnicodeError) as exc:
        raise InputError(f"cannot serve on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    for root in media_roots:
        if not Path(root).is_dir():
            raise InputError(f"--media-root {root}: no such directory")
    # each ingest is 3 threads and a decoder: clients cannot start unboundedly many
    try:
        index = open_index(index_dir, config, writable=True, max_ingests=max_ingests, url_prefixes=list(url_prefixes))
    except IndexBusyError as exc:
        log.warning("%s; serving searches only", exc)
        index = open_index(index_dir, config, writable=False, max_ingests=max_ingests, url_prefixes=list(url_prefixes))
    app = create_app(index, token=token, max_upload_mb=max_upload_mb, max_photos=max_photos,
                     media_roots=media_roots, max_request_mb=max_request_mb,
                     thumbnail_cache_mb=thumbnail_cache_mb)
    print(f"castfinder: serving {index_dir} on http://{host}:{port} (API docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=15)
