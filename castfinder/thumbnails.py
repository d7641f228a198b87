"""Shot thumbnails: the best matching frame, re-decoded from the source, matching face boxed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .core.errors import NotFoundError


def grab_frame(source: str, time_s: float, width: int) -> np.ndarray | None:
    from castfinder.stream.decode import VideoDecoder
    try:
        dec = VideoDecoder(source, width)
    except Exception:  # live or moved source: no thumbnail, not an error
        return None
    try:
        for f in dec.frames(max(0.0, time_s - 0.001)):
            if f.time_s >= time_s - 0.02:
                return f.image
    finally:
        dec.close()
    return None


def render(store, video_id: int, time_s: float, face_id: int | None) -> np.ndarray | None:
    """BGR image of the frame at time_s with face `face_id` boxed, or None when the source is gone."""
    store = store.for_video(video_id)  # a sharded index: the shard that holds the video
    video = store.catalogue.video(video_id)
    image = grab_frame(video["source"], time_s, video["width"])
    if image is None:
        return None
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if face_id is not None:
        face = store.catalogue.conn.execute("SELECT x1, y1, x2, y2 FROM faces WHERE id=?", (face_id,)).fetchone()
        if face:
            cv2.rectangle(image, (int(face[0]), int(face[1])), (int(face[2]), int(face[3])), (0, 200, 255), 2)
    return image


def write_thumbnails(store, hits, out_dir: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for h in hits:
        image = render(store, h.video_id, h.best_frame_s, h.best_face_id)
        if image is None:
            continue
        path = out / f"video{h.video_id}_shot{h.shot:04d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 88])
        written.append(path)
    return written


def shot_thumbnail(store, video_id: int, shot: int, frame_id: int | None = None, face_id: int | None = None,
                   cache_dir: Path | None = None, width: int = 480, on_write=None) -> bytes | None:
    """JPEG bytes for one shot. Without a frame: the frame of the shot with the largest face
    (its middle frame when it has none). Cached on disk: thumbnails never change. `on_write(path,
    size)` hears of each new cache file (the service keeps the cache within its size limit)."""
    store = store.for_video(video_id)
    cat = store.catalogue
    if cat.video(video_id) is None:
        raise NotFoundError(f"no video with id {video_id}")
    if frame_id is None:
        row = cat.conn.execute(
            "SELECT f.id, f.time_s, fc.id AS face_id FROM frames f LEFT JOIN faces fc ON fc.frame_id=f.id"
            " WHERE f.video_id=? AND f.shot_idx=? ORDER BY (fc.x2-fc.x1)*(fc.y2-fc.y1) DESC NULLS LAST, f.time_s LIMIT 1",
            (video_id, shot)).fetchone()
        if row is None:
            raise NotFoundError(f"video {video_id} has no shot {shot} with indexed frames")
        frame_id, face_id = row["id"], row["face_id"]
    row = cat.conn.execute("SELECT time_s FROM frames WHERE id=? AND video_id=? AND shot_idx=?",
                           (frame_id, video_id, shot)).fetchone()
    if row is None:
        raise NotFoundError(f"frame {frame_id} is not in shot {shot} of video {video_id}")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"v{video_id}_s{shot}_f{frame_id}_{face_id if face_id is not None else 'n'}_{width}.jpg"
        if path.is_file():
            return path.read_bytes()
    image = render(store, video_id, row["time_s"], face_id)
    if image is None:
        return None
    if image.shape[1] > width:
        image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    data = buf.tobytes()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError:  # a read-only index or a full disk: the thumbnail is still answered, just not cached
            return data
        if on_write is not None:
            on_write(path, len(data))
    return data
