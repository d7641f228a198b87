"""Faces found on the 640-px analysis picture are embedded from the source's own pixels when the source
is larger: a face 22 px wide at 640 is 66 px in a 1080p film. Real photos (the dev refs, high-resolution
stills) shown small in a 1920x1080 video; each character is then queried with its other photos."""

import dataclasses

import av
import cv2
import numpy as np
import pytest

from castfinder.index.search import photo_vectors, search_shots
from castfinder.index.store import IndexStore
from castfinder.models.photo import largest_face, load_photo
from castfinder.stream.decode import VideoDecoder
from castfinder.stream.pipeline import IngestJob

from conftest import DEV

SHOWN = {"Tony": "avenger2/refs/Tony/3.jpg", "Steve": "avenger2/refs/Steve/1.jpg", "Bill": "billhyland/refs/Bill/1.jpg",
         "Thor": "avenger2/refs/Thor/2.jpg", "Ross": "friends/refs/Ross/3.jpg", "Rachel": "friends/refs/Rachel/2.jpg"}
W, H, FPS, FACE_PX = 1920, 1080, 10, 54  # faces ~18 px at the analysis width


@pytest.fixture(scope="module")
def hd_video(tmp_path_factory, models):
    """One 2-s shot per photo, each on its own blurred-noise backdrop, the photo drifting slowly."""
    path = tmp_path_factory.mktemp("hd") / "hd.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18"}
        for k, rel in enumerate(SHOWN.values()):
            photo = load_photo(DEV / rel)
            face, _ = largest_face(models.detector, photo)
            s = FACE_PX / face.size
            small = cv2.resize(photo, (int(photo.shape[1] * s), int(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
            rng = np.random.default_rng(k)
            backdrop = cv2.resize(rng.integers(0, 255, (9, 16, 3)).astype(np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
            h, w = small.shape[:2]
            for t in range(2 * FPS):
                frame = backdrop.copy()
                x, y = (W - w) // 2 + 2 * t, (H - h) // 2
                frame[y:y + h, x:x + w] = small
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_the_decoder_keeps_a_larger_picture_only_when_the_source_has_one(hd_video):
    dec = VideoDecoder(str(hd_video), 640, chip_width=1920)
    frame = next(dec.frames())
    picture, k = frame.chip_image
    assert frame.image.shape == (360, 640, 3) and picture.shape == (1080, 1920, 3) and k == 3.0
    dec.close()
    dec = VideoDecoder(str(hd_video), 640, chip_width=1280)
    assert dec.chip_size == (1280, 720)
    dec.close()
    small = DEV / "friends" / "video.mp4"  # 640x360: nothing larger to cut from
    dec = VideoDecoder(str(small), 640, chip_width=1920)
    frame = next(dec.frames())
    assert dec.chip_size is None and frame.chip_image[1] == 1.0 and frame.chip_image[0] is frame.image
    dec.close()


def test_faces_of_a_1080p_video_are_embedded_from_its_own_pixels(tmp_path, hd_video, models, ingest_cfg):
    assert ingest_cfg.face_chip_width >= 1920
    scores = {}
    for width in (0, ingest_cfg.face_chip_width):
        store = IndexStore(tmp_path / str(width), writable=True)
        result = IngestJob(str(hd_video), store, dataclasses.replace(ingest_cfg, face_chip_width=width), models).run()
        assert result.shots == len(SHOWN) and result.faces >= len(SHOWN)
        # boxes stay in analysis pixels (thumbnails and contact sheets draw them there)
        widths = [r[0] for r in store.catalogue.conn.execute("SELECT x2 - x1 FROM faces")]
        assert max(widths) < 30
        true, margin = [], []
        for shot, (name, rel) in enumerate(SHOWN.items()):
            others = [p for p in (DEV / rel).parent.iterdir() if p.name != (DEV / rel).name]
            qs = photo_vectors([(str(p), load_photo(p)) for p in others], models.detector, models.face[0], None)
            hits = {h.shot: h.score for h in search_shots(store, qs, top_k=5000, fusion="max", video_id=result.video_id)}
            true.append(hits[shot])
            margin.append(hits[shot] - max(v for s, v in hits.items() if s != shot))
        scores[width] = (np.array(true), np.array(margin))
        store.close()
    (t0, m0), (t1, m1) = scores.values()
    print(f"true-shot score {t0.round(3)} -> {t1.round(3)}; margin over the best other shot {m0.round(3)} -> {m1.round(3)}")
    assert (t1 > t0).sum() >= 5 and t1.mean() > t0.mean() + 0.015
    assert m1.mean() > m0.mean() and (m1 > 0).sum() >= (m0 > 0).sum()
