"""One JPEG per result shot: the best matching frame, re-decoded from the source, face boxed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def grab_frame(source: str, time_s: float, width: int) -> np.ndarray | None:
    from stream.decode import VideoDecoder
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


def write_thumbnails(store, hits, out_dir: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for h in hits:
        video = store.catalogue.video(h.video_id)
        image = grab_frame(video["source"], h.best_frame_s, video["width"])
        if image is None:
            continue
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if h.best_face_id is not None:
            face = store.catalogue.conn.execute("SELECT x1, y1, x2, y2 FROM faces WHERE id=?", (h.best_face_id,)).fetchone()
            if face:
                cv2.rectangle(image, (int(face[0]), int(face[1])), (int(face[2]), int(face[3])), (0, 200, 255), 2)
        path = out / f"video{h.video_id}_shot{h.shot:04d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 88])
        written.append(path)
    return written
