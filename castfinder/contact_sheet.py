"""Contact sheets: a strip of each cluster's best faces, re-decoded from the source video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .thumbnails import grab_frame

TILE = 96


def face_tiles(store, video_id: int, faces: list[dict], tile: int = TILE) -> list[np.ndarray]:
    """RGB crops (square, a little margin) of the given faces; faces whose frame cannot be
    re-read (live or moved source) are skipped."""
    video = store.catalogue.video(video_id)
    tiles = []
    frames: dict[float, np.ndarray | None] = {}
    for f in faces:  # in the caller's order (best first)
        t = f["time_s"]
        if t not in frames:
            frames[t] = grab_frame(video["source"], t, video["width"])
        image = frames[t]
        if image is None:
            continue
        x1, y1, x2, y2 = f["box"]
        side = max(x2 - x1, y2 - y1) * 1.3
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        c, d = int(min(image.shape[1], cx + side / 2)), int(min(image.shape[0], cy + side / 2))
        if c - a < 4 or d - b < 4:
            continue
        tiles.append(cv2.resize(image[b:d, a:c], (tile, tile), interpolation=cv2.INTER_AREA))
    return tiles


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
    """The whole cast in one picture: one row per cluster."""
    rows = []
    for cl in clusters:
        tiles = face_tiles(store, cl["video"], cl["faces"][:per_cluster])
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
