"""Faces in the dark: a probe frame darker than ingest.dark_look_luma where the detector found no face
gets a second look at a contrast-equalised copy (CLAHE), and the faces it finds are embedded from the
frame's own pixels. Real footage: devhard/strangerthings, a night-lit trailer (Hopper under a cap in a
vehicle, 58.6-60.1 s; Eleven and Hopper walking in red and blue light, 34.4-35.7 s)."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from castfinder.stream.decode import VideoDecoder, VideoFrame
from castfinder.stream.dark_frames import equalised, mean_luma
from castfinder.stream.pipeline import Batch, SmallFacePlanner, detect_together, embed_together

from conftest import DATA, clip

STRANGER = DATA / "devhard" / "strangerthings" / "video.mp4"


def frames_between(path, start_s: float, end_s: float, fps: float = 5.0) -> list[tuple[float, np.ndarray]]:
    out, next_t = [], start_s
    dec = VideoDecoder(str(path), 640)
    for f in dec.frames(start_s):
        if f.time_s >= end_s:
            f.release()
            break
        if f.time_s >= next_t:
            out.append((f.time_s, f.image.copy()))
            next_t += 1 / fps
        f.release()
    dec.close()
    return out


@pytest.fixture(scope="module")
def vehicle():
    return frames_between(STRANGER, 58.7, 60.1)


@pytest.fixture(scope="module")
def walking():
    return frames_between(STRANGER, 34.4, 35.7)


def test_an_equalised_look_finds_faces_the_dark_frame_hides(models, vehicle, walking):
    det = models.detector
    for name, shot in (("vehicle", vehicle), ("walking", walking)):
        images = [im for _, im in shot]
        assert all(mean_luma(im) < 0.3 for im in images), name       # the scenes are dark (luma 0.05-0.15)
        plain = det.detect(images, [True] * len(images))
        looked = det.detect([equalised(im) for im in images], [True] * len(images))
        print(name, [len(f) for f in plain], [len(f) for f in looked])
        assert not any(plain), name                                      # measured: no face in any frame
        assert sum(bool(f) for f in looked) >= {"vehicle": 1, "walking": 3}[name], name   # measured 1 and 5 of 7
    hopper = max((f for found in det.detect([equalised(im) for _, im in vehicle], [True] * len(vehicle)) for f in found),
                 key=lambda f: f.size)
    assert hopper.size >= 100                                            # his face under the cap, ~150 px


def _job(ingest_cfg, luma: float):
    cfg = replace(ingest_cfg, dark_look_luma=luma)
    return SimpleNamespace(cfg=cfg, label="test",
                           _small_faces=SmallFacePlanner(0.4, cfg.min_face_px, full_probes=cfg.small_face_full_probes))


class Counting:
    """The detector, remembering how many images each call was given."""
    def __init__(self, det):
        self.det, self.calls = det, []

    def detect(self, images, fine=None, **kw):
        self.calls.append(len(images))
        return self.det.detect(images, fine, **kw)


def test_only_dark_faceless_probes_get_the_second_look(models, ingest_cfg, vehicle):
    friends = frames_between(clip("friends"), 3.0, 3.3)[:1]               # dark-ish too (luma ~0.25) but faces found
    items = [(0, VideoFrame(i, t, None, rgb=im)) for i, (t, im) in enumerate(vehicle)]
    items += [(1, VideoFrame(100, t, None, rgb=im)) for t, im in friends]
    from castfinder.stream import metrics as M

    found = {}
    for luma in (0.0, 0.3):
        looks = M.DARK_LOOKS.labels("test")._value.get()
        det = Counting(models.detector)
        batch = Batch(items=list(items))
        detect_together(det, [(_job(ingest_cfg, luma), batch)])
        found[luma] = batch.faces
        probes = sum(bool(f) for f in batch.fine)
        print(luma, det.calls, [len(f) for f in batch.faces], "probes", probes)
        looked = M.DARK_LOOKS.labels("test")._value.get() - looks
        if luma == 0.0:
            assert det.calls == [len(items)] and looked == 0
        else:  # one more call, for the vehicle's probe frames only (the friends frame had its faces)
            assert det.calls == [len(items), sum(bool(f) for f in batch.fine[:len(vehicle)])] == [len(items), looked]
    assert not any(found[0.0][:len(vehicle)]) and any(found[0.3][:len(vehicle)])
    assert found[0.0][-1] and len(found[0.3][-1]) == len(found[0.0][-1])

    # the chips are cut from the frame's own pixels, not from the equalised copy
    batch = Batch(items=list(items))
    detect_together(models.detector, [(_job(ingest_cfg, 0.3), batch)])
    k = next(i for i, f in enumerate(batch.faces) if f)
    image, face = items[k][1].image.copy(), batch.faces[k][0]
    embedder = models.face[0]
    own = embedder.embed_faces(image, [face])[0]
    lit = embedder.embed_faces(equalised(image), [face])[0]
    embed_together(models, [batch])
    vec = np.asarray(batch.records[k][5][embedder.name][0], np.float32)
    print("stored vs own pixels", float(vec @ own), "vs equalised", float(vec @ lit))
    assert float(vec @ own) > 0.9999 and float(vec @ lit) < 0.999   # measured 1.000 and 0.991
