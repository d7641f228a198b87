"""`castfinder serve`: the HTTP service. Ingests run in background threads; queries answer from
the growing index at any time. Every error a client can cause is a 4xx with a message; a bug in
one request is a 500 for that request only."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from stream import metrics as M

from .config import Config
from .errors import CastfinderError, InputError, NotFoundError, TooLargeError
from .ingest_manager import IngestManager
from .querying import QueryEngine, digest
from .thumbnails import shot_thumbnail

log = logging.getLogger("castfinder.service")

OPEN_PATHS = ("/healthz", "/docs", "/openapi.json", "/redoc")


class VideoRequest(BaseModel):
    source: str = Field(description="file path on the server, or a live URL (rtsp://, http(s)://, udp://)")
    force: bool = Field(False, description="rebuild even if this file is already indexed")


class ClusterName(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="the character's name")


_finished_counts: dict[tuple, dict] = {}


def video_status(store, manager: IngestManager, row, with_shots: bool = False) -> dict:
    job = manager.job(row["id"])
    running = manager.running(row["id"])
    # the page polls every few seconds: a finished video's counts (tens of ms on a long film) are kept
    key = (str(store.dir), row["id"], row["status"], row["indexed_until_s"])
    counts = None if running else _finished_counts.get(key)
    if counts is None:
        counts = store.catalogue.counts(row["id"])
        if not running and row["status"] in ("done", "stopped", "failed"):
            _finished_counts[key] = counts
    until = max(row["indexed_until_s"] or 0.0, job.indexed_until if job and running else 0.0)
    duration = row["duration_s"]
    doc = {"id": row["id"], "name": row["name"], "source": row["source"], "status": row["status"],
           "live": bool(row["is_live"]), "running": running, "duration_s": duration, "indexed_until_s": round(until, 3),
           "progress": round(min(1.0, until / duration), 4) if duration else None,
           "realtime_factor": round(job.realtime_factor, 3) if job else None,
           "shots": counts["shots"], "frames": counts["frames"], "faces": counts["faces"], "vectors": counts["vectors"],
           "frames_decoded": row["frames_decoded"], "frames_sampled": row["frames_sampled"],
           "frames_dropped": row["frames_dropped"], "damaged_spans": json.loads(row["damaged_spans"] or "[]"),
           "error": row["error"], "media": f"/videos/{row['id']}/media" if Path(row["source"]).is_file() else None}
    if with_shots:
        doc["shot_list"] = [{"shot": s["idx"], "start_s": s["start_s"], "end_s": s["end_s"], "frames": s["n_frames"],
                             "faces": s["n_faces"], "closed": bool(s["closed"])} for s in store.catalogue.shots(row["id"])]
    return doc


def create_app(store, config: Config, token: str | None = None, max_upload_mb: float = 10.0, max_photos: int = 20,
               warm_up: bool = True) -> FastAPI:
    manager = IngestManager(store, config)
    engine = QueryEngine(store, config, shared_models=None)
    state = {"ready": False, "warm_error": None, "started": time.time()}
    max_bytes = int(max_upload_mb * 1024 * 1024)
    thumbs_dir = store.dir / "thumbnails"

    def warm() -> None:
        """Load the models and compile ranx before the first user waits for them."""
        try:
            from index.fusion import warm_up as warm_fusion
            if store.writable:
                engine._shared = manager.models
            engine.warm_up()
            warm_fusion()
        except Exception as exc:  # reported by /healthz; requests still try and explain themselves
            state["warm_error"] = str(exc)
            log.warning("warm-up failed: %s", exc)
        state["ready"] = True

    @asynccontextmanager
    async def lifespan(app):
        if warm_up:
            threading.Thread(target=warm, name="cf-warm-up", daemon=True).start()
        else:
            state["ready"] = True
        yield
        manager.shutdown()
        store.close()

    app = FastAPI(title="castfinder", version="0.1",
                  description="Find the shots where a movie character appears, while the film is still being indexed.",
                  lifespan=lifespan)
    app.state.manager, app.state.engine, app.state.store = manager, engine, store

    # --- errors, auth and request metrics -------------------------------------------------------
    @app.exception_handler(CastfinderError)
    async def castfinder_error(request: Request, exc: CastfinderError):
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if token and not (path in OPEN_PATHS or path == "/" or path.startswith("/static/")):
            # images and the video element cannot send headers: they may carry ?access_token=
            if (request.headers.get("authorization", "") != f"Bearer {token}"
                    and request.query_params.get("access_token") != token):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes * max_photos + 65536:
            return JSONResponse({"error": f"request too large ({int(length)} bytes; photos are limited to "
                                          f"{max_upload_mb:g} MB each, {max_photos} per query)"}, status_code=413)
        response = await call_next(request)
        route = request.scope.get("route")
        M.HTTP_REQUESTS.labels(getattr(route, "path", "unmatched"), f"{response.status_code // 100}xx").inc()
        return response

    # --- the web page ---------------------------------------------------------------------------
    from fastapi.staticfiles import StaticFiles
    web = Path(__file__).parent / "web"
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", include_in_schema=False)
    def index_page():
        from fastapi.responses import FileResponse
        return FileResponse(web / "index.html", media_type="text/html")

    # --- health and metrics ---------------------------------------------------------------------
    @app.get("/healthz", summary="liveness and readiness")
    def healthz():
        return {"status": "ok", "ready": state["ready"], "warm_up_error": state["warm_error"],
                "writable": store.writable, "videos": len(store.catalogue.videos()),
                "ingesting": [vid for vid in manager.jobs if manager.running(vid)],
                "uptime_s": round(time.time() - state["started"], 1)}

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        M.record_gpu()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # --- videos ---------------------------------------------------------------------------------
    @app.post("/videos", status_code=202, summary="start ingesting a file or live source")
    def add_video(req: VideoRequest):
        if not req.source.strip():
            raise InputError("source is empty")
        job, started = manager.start(req.source.strip(), force=req.force)
        row = store.catalogue.video(job.video_id)
        doc = video_status(store, manager, row)
        doc["reused"] = not started
        return JSONResponse(doc, status_code=202 if started else 200)

    @app.get("/videos", summary="every video with its ingest status")
    def list_videos():
        return [video_status(store, manager, r) for r in store.catalogue.videos()]

    def _video_row(video_id: int):
        row = store.catalogue.video(video_id)
        if row is None:
            raise NotFoundError(f"no video with id {video_id}")
        return row

    @app.get("/videos/{video_id}", summary="status, progress, real-time factor and shots so far")
    def get_video(video_id: int):
        return video_status(store, manager, _video_row(video_id), with_shots=True)

    @app.delete("/videos/{video_id}", summary="stop an ingest cleanly (purge=true also removes the video)")
    def delete_video(video_id: int, purge: bool = Query(False, description="remove the video and its vectors")):
        _video_row(video_id)
        stopping = manager.stop(video_id)
        if purge:
            if stopping:
                manager._threads[video_id].join(timeout=60)
            store.remove_vectors(store.catalogue.delete_video(video_id))
            store.checkpoint(force=True)
            return {"id": video_id, "status": "deleted"}
        if not stopping:
            return JSONResponse({"id": video_id, "status": _video_row(video_id)["status"],
                                 "message": "not being ingested; nothing to stop"}, status_code=200)
        return JSONResponse({"id": video_id, "status": "stopping"}, status_code=202)

    @app.get("/videos/{video_id}/media", summary="the source file, for playback (HTTP range requests)")
    def video_media(video_id: int):
        from fastapi.responses import FileResponse
        row = _video_row(video_id)
        if not Path(row["source"]).is_file():
            raise NotFoundError(f"video {video_id} is a live source or its file has moved; nothing to play")
        return FileResponse(row["source"], media_type="video/mp4")

    @app.get("/shots/{video_id}/{shot}/thumbnail", summary="JPEG of a shot's frame, matching face boxed",
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(video_id: int, shot: int, frame: int | None = None, face: int | None = None):
        data = shot_thumbnail(store, video_id, shot, frame, face, cache_dir=thumbs_dir)
        if data is None:
            raise NotFoundError(f"video {video_id}: the source cannot be re-read for a thumbnail (live or moved)")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    # --- cast -----------------------------------------------------------------------------------
    def _cast_doc(video_id: int, clusters: list[dict]) -> list[dict]:
        for cl in clusters:
            cl["sheet"] = f"/videos/{video_id}/cast/{cl['cluster']}/sheet.png"
        return clusters

    @app.get("/videos/{video_id}/cast", summary="the characters found without photos (grows during ingest)")
    def get_cast(video_id: int, recluster: bool = False):
        _video_row(video_id)
        clusters = engine.cast().current(video_id, recluster=recluster)
        return {"video": video_id, "clusters": _cast_doc(video_id, clusters),
                "message": None if clusters else "no face tracks in this video yet: the cast is empty"}

    @app.put("/videos/{video_id}/cast/{cluster_id}", summary="name a cluster; then query by that name without photos")
    def name_cluster(video_id: int, cluster_id: int, body: ClusterName):
        _video_row(video_id)
        cast = engine.cast()
        row = store.catalogue.conn.execute("SELECT video_id FROM clusters WHERE id=?", (cluster_id,)).fetchone()
        if row is None or row[0] != video_id:
            raise NotFoundError(f"video {video_id} has no cluster {cluster_id}")
        cast.name(cluster_id, body.name)
        return {"cluster": cluster_id, "video": video_id, "name": body.name.strip()}

    @app.get("/videos/{video_id}/cast/{cluster_id}/sheet.png", summary="contact sheet of a cluster's best faces",
             responses={200: {"content": {"image/png": {}}}})
    def cluster_sheet_png(video_id: int, cluster_id: int):
        from .contact_sheet import cluster_sheet
        cl = next((c for c in engine.cast().clusters(video_id) if c["cluster"] == cluster_id), None)
        if cl is None:
            raise NotFoundError(f"video {video_id} has no cluster {cluster_id}")
        path = cluster_sheet(store, cl, thumbs_dir / f"sheet_v{video_id}_c{cluster_id}_{len(cl['faces'])}_{cl['tracks']}.png")
        if path is None:
            raise NotFoundError(f"video {video_id}: the source cannot be re-read for faces (live or moved)")
        return Response(path.read_bytes(), media_type="image/png")

    # --- query ----------------------------------------------------------------------------------
    @app.post("/query", summary="find the shots where a character appears, from photos")
    def query(photos: list[UploadFile] | None = File(None, description="sample photos of the character "
                                                      "(none: `character` names a cast cluster)"),
              character: str | None = Form(None), video: int | None = Form(None),
              features: str | None = Form(None, description="face=NAME,frame=NAME; NAME may be none"),
              both: bool = Form(False, description="face and frame features for every photo"),
              top_k: int | None = Form(None, ge=1, le=100000), fusion: str | None = Form(None),
              limit: int | None = Form(None, ge=0, le=100000, description="at most this many shots "
                                       "(default: the preset's, 50; 0 = all)"),
              expand: bool = Form(False, description="photos matching a cast cluster pull in its tracks")):
        t0 = time.perf_counter()
        try:
            photos = photos or []
            if len(photos) > max_photos:
                raise InputError(f"too many photos ({len(photos)}; at most {max_photos})")
            decoded = []
            for up in photos:
                data = up.file.read(max_bytes + 1)
                name = up.filename or "upload"
                if len(data) > max_bytes:
                    raise TooLargeError(f"{name}: larger than the {max_upload_mb:g} MB limit")
                if not data:
                    raise InputError(f"{name}: empty file")
                decoded.append((name, data, digest(data)))  # decoded by the engine unless its vectors are cached
            if not store.writable:
                store.refresh()
            doc, hits = engine.query(decoded, character=character, video_id=video, features=features,
                                     use_both=both or None, top_k=top_k, fusion=fusion, limit=limit, expand=expand)
            for r, h in zip(doc["results"], hits):
                r["thumbnail"] = (f"/shots/{h.video_id}/{h.shot}/thumbnail?frame={h.best_frame_id}"
                                  + (f"&face={h.best_face_id}" if h.best_face_id is not None else ""))
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
          max_upload_mb: float = 10.0) -> None:
    import socket

    import uvicorn

    from index.store import IndexStore
    from castfinder.errors import IndexBusyError

    # a busy port is a clear error now, not a traceback from inside uvicorn
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        store = IndexStore(index_dir, writable=True, kind=config.ingest.index_kind)
    except IndexBusyError as exc:
        log.warning("%s; serving searches only", exc)
        store = IndexStore(index_dir)
    app = create_app(store, config, token=token, max_upload_mb=max_upload_mb)
    print(f"castfinder: serving {index_dir} on http://{host}:{port} (API docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
