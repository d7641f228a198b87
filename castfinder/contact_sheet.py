"""Contact sheets: a strip of each cluster's best faces, re-decoded from the source video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TILE = 96


SEEK_GAP_S = 10.0  # decode forward across gaps shorter than this; seek across longer ones


def read_frames(source: str, width: int, times) -> dict[float, np.ndarray]:
    """RGB frames (at the analysis width) at the given times, in one pass over the source: times
    are taken in order, decoding forward, and the decoder seeks only across gaps of more than
    SEEK_GAP_S. Each time gets the first frame at or after it (as thumbnails.grab_frame does).
    Opening the video once per face, as before, decoded from the keyframe before every face again
    (friends: ~150 frames a face, 1-2.6 s a sheet), so a cast view of several sheets loaded slowly
    and the last ones showed empty for many seconds. A source that cannot be read gives {}."""
    from castfinder.stream.decode import VideoDecoder
    pending = sorted({float(t) for t in times})
    out: dict[float, np.ndarray] = {}
    if not pending:
        return out
    try:
        dec = VideoDecoder(source, width)
    except Exception:  # live or moved source: no faces to show, not an error
        return out
    try:
        i = 0
        while i < len(pending):
            frames = dec.frames(max(0.0, pending[i] - 0.001))
            ended = True
            try:
                for f in frames:
                    while i < len(pending) and f.time_s >= pending[i] - 0.02:
                        out[pending[i]] = f.image
                        i += 1
                    if i >= len(pending):
                        ended = False
                        break
                    if pending[i] - f.time_s > SEEK_GAP_S:
                        ended = False
                        break  # seek to the next face instead of decoding the gap
            finally:
                frames.close()
            if ended:
                break  # the stream ended before the remaining times
    except Exception:  # a damaged stream: keep the frames read so far
        pass
    finally:
        dec.close()
    return out


def crop_tile(image: np.ndarray, box, tile: int = TILE) -> np.ndarray | None:
    """A square crop around the face (a little margin), clipped to the picture, resized to tile."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        return None
    side = max(x2 - x1, y2 - y1) * 1.3
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(image.shape[1], cx + side / 2)), int(min(image.shape[0], cy + side / 2))
    if c - a < 4 or d - b < 4:
        return None
    return cv2.resize(image[b:d, a:c], (tile, tile), interpolation=cv2.INTER_AREA)


def face_tiles(store, video_id: int, faces: list[dict], tile: int = TILE) -> list[np.ndarray]:
    """RGB crops (square, a little margin) of the given faces, in the caller's order (best first);
    faces whose frame cannot be re-read (live or moved source) are skipped."""
    return tiles_by_video(store, {video_id: faces}, tile)[video_id]


def tiles_by_video(store, faces_by_video: dict[int, list[dict]], tile: int = TILE) -> dict[int, list[np.ndarray]]:
    """face_tiles for several videos' face lists, each video read in one pass."""
    out = {}
    for video_id, faces in faces_by_video.items():
        video = store.catalogue.video(video_id)
        frames = read_frames(video["source"], video["width"], [f["time_s"] for f in faces]) if video else {}
        tiles = []
        for f in faces:
            image = frames.get(float(f["time_s"]))
            crop = crop_tile(image, f["box"], tile) if image is not None else None
            if crop is not None:
                tiles.append(crop)
        out[video_id] = tiles
    return out


def cluster_sheet(store, cluster: dict, path: Path, per_row: int = 6) -> Path | None:
    """One PNG per cluster: its best faces (one per shot first) under a title line."""
    tiles = face_tiles(store, cluster["video"], cluster["faces"])
    if not tiles:
        return None
    rows = (len(tiles) + per_row - 1) // per_row
    head = 28
    sheet = np.full((head + rows * (TILE + 4) + 4, per_row * (TILE + 4) + 4, 3), 255, np.uint8)
    title = (f"#{cluster['cluster']} {cluster['name'] or '(unnamed)'}: {len(cluster['shots'])} shots, "
             f"{cluster['screen_time_s']:.1f} s")
    cv2.putText(sheet, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        y, x = head + r * (TILE + 4) + 4, c * (TILE + 4) + 4
        sheet[y:y + TILE, x:x + TILE] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def overview_sheet(store, clusters: list[dict], path: Path, per_cluster: int = 6) -> Path | None:
    """The whole cast in one picture: one row per cluster (each video read once for all its rows)."""
    faces_by_video: dict[int, list[dict]] = {}
    for cl in clusters:
        faces_by_video.setdefault(cl["video"], []).extend(cl["faces"][:per_cluster])
    frames = {}
    for video_id, faces in faces_by_video.items():
        video = store.catalogue.video(video_id)
        frames[video_id] = read_frames(video["source"], video["width"], [f["time_s"] for f in faces]) if video else {}
    rows = []
    for cl in clusters:
        tiles = []
        for f in cl["faces"][:per_cluster]:
            image = frames[cl["video"]].get(float(f["time_s"]))
            crop = crop_tile(image, f["box"]) if image is not None else None
            if crop is not None:
                tiles.append(crop)
        if not tiles:
            continue
        label = np.full((TILE, 150, 3), 255, np.uint8)
        cv2.putText(label, f"#{cl['cluster']}", (6, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
        cv2.putText(label, (cl["name"] or "(unnamed)")[:16], (6, 50), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
        cv2.putText(label, f"{len(cl['shots'])} shots {cl['screen_time_s']:.0f}s", (6, 76), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (90, 90, 90), 1, cv2.LINE_AA)
        row = np.full((TILE, 150 + per_cluster * (TILE + 4), 3), 255, np.uint8)
        row[:, :150] = label
        for i, t in enumerate(tiles):
            row[:, 150 + i * (TILE + 4):150 + i * (TILE + 4) + TILE] = t
        rows.append(row)
        rows.append(np.full((4, row.shape[1], 3), 255, np.uint8))
    if not rows:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    return path
