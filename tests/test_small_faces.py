"""Who is who on hard footage, the detection and photo side: small faces found by the fine pyramid
levels where a probe finds them, tight query crops read by the lenient second look, flip-averaged
face vectors. Real footage from ../shared/data (devhard/wide shrinks every labelled shot to 30-50%)."""

import numpy as np
import pytest

from castfinder.models.photo import largest_face, load_photo, photo_face
from castfinder.stream.decode import VideoDecoder
from castfinder.stream.pipeline import SmallFacePlanner

from conftest import DATA, DEV

WIDE = DATA / "devhard" / "wide" / "video.mp4"


@pytest.fixture(scope="module")
def wide_frames():
    """One frame a second of devhard/wide at the 640-px analysis width."""
    out = []
    dec = VideoDecoder(str(WIDE), 640)
    for f in dec.frames(0.0):
        if f.index % 25 == 0:
            out.append(f.image.copy())
        else:
            f.release()
        if len(out) >= 60:
            break
    dec.close()
    return out


def test_fine_levels_find_faces_the_coarse_pyramid_misses(models, wide_frames):
    det = models.detector
    assert det.small_face_px < det.min_face_px
    coarse = det.detect(wide_frames)
    fine = det.detect(wide_frames, [True] * len(wide_frames))
    n_coarse, n_fine = sum(map(len, coarse)), sum(map(len, fine))
    small = [f for faces in fine for f in faces if f.size < det.min_face_px]
    print(f"devhard/wide, {len(wide_frames)} frames: {n_coarse} faces coarse, {n_fine} with the fine levels,"
          f" {len(small)} under {det.min_face_px} px")
    assert all(f.size >= det.min_face_px for faces in coarse for f in faces)
    assert len(small) >= 10 and min(f.size for f in small) < 18
    assert n_fine >= 2 * n_coarse
    # the fine levels only add: the big faces are found either way
    for c, f in zip(coarse, fine):
        assert len(f) >= len(c)


def test_a_marked_frame_gets_the_fine_levels_alone(models, wide_frames):
    det = models.detector
    fine_all = det.detect(wide_frames[:8], [True] * 8)
    mixed = det.detect(wide_frames[:8], [i % 2 == 0 for i in range(8)])
    for i in range(8):
        want = fine_all[i] if i % 2 == 0 else [f for f in fine_all[i] if f.size >= det.min_face_px]
        assert len(mixed[i]) == len(want), i


def test_a_cheap_probe_tells_the_same_frames_apart(models, wide_frames):
    """A probe without the largest fine level (a third of the fine levels' cost) still finds a face under
    the coarse size wherever all the fine levels do: all a probe has to tell is that a shot shows one."""
    det = models.detector
    full = det.detect(wide_frames, [True] * len(wide_frames))
    probe = det.detect(wide_frames, ["probe"] * len(wide_frames))
    small = [i for i, faces in enumerate(full) if any(f.size < det.min_face_px for f in faces)]
    found = [i for i in small if any(f.size < det.min_face_px for f in probe[i])]
    print(f"{len(small)} frames with small faces, the cheap probe finds them in {len(found)};"
          f" faces {sum(map(len, full))} full, {sum(map(len, probe))} probe")
    assert len(small) >= 10 and len(found) >= 0.9 * len(small)
    assert min(f.size for faces in probe for f in faces) < 16


def test_cheap_probes_then_all_fine_levels(models, wide_frames):
    det = models.detector
    planner = SmallFacePlanner(every_s=0.4, coarse_min_px=det.min_face_px, full_probes=False)
    plan = planner.plan([(0, 0.0), (0, 0.2), (0, 0.4)])
    assert plan == ["probe", False, "probe"]
    small_frame = next(im for im in wide_frames if any(f.size < det.min_face_px
                                                        for f in det.detect([im], ["probe"])[0]))
    planner.seen([0], ["probe"], det.detect([small_frame], ["probe"]))
    assert planner.plan([(0, 0.6), (0, 0.8)]) == [True, True]  # a small face seen: every fine level from now


def test_planner_probes_then_keeps_the_fine_levels_for_a_shot_with_small_faces(models, wide_frames):
    det = models.detector
    planner = SmallFacePlanner(every_s=1.0, coarse_min_px=det.min_face_px)
    # shot 0: the frames with small faces; shot 1: the same frames, but the probe finds nothing
    plan = planner.plan([(0, 0.0)])
    assert plan == [True]  # the first frame of a shot probes
    small_frame = next(im for im in wide_frames if any(f.size < det.min_face_px
                                                        for f in det.detect([im], [True])[0]))
    planner.seen([0], plan, det.detect([small_frame], plan))
    assert planner.plan([(0, t / 5) for t in range(1, 6)]) == [True] * 5  # small faces seen: fine for the rest
    blank = np.zeros_like(small_frame)
    plan = planner.plan([(1, 10.0)])
    planner.seen([1], plan, det.detect([blank], plan))
    # nothing small: a probe a second, timed on the frames' clock, however few frames deduplication kept
    assert plan == [True] and planner.plan([(1, 10.0 + t / 5) for t in range(1, 6)]) == [False] * 4 + [True]
    assert planner.plan([(1, 11.6), (1, 13.4), (1, 13.6), (1, 14.4)]) == [False, True, False, True]


def tight_crops(detector, shrink=0.12):
    """Crops cut inside the face box of every dev reference photo (a user's tight screenshot crop)."""
    for path in sorted(DEV.glob("*/refs/*/*")):
        image = load_photo(path)
        face, _ = largest_face(detector, image)
        if face is None or face.size < 60:
            continue
        x1, y1, x2, y2 = face.box
        w, h = x2 - x1, y2 - y1
        crop = image[max(0, int(y1 + shrink * h)):int(y2 - shrink * h), max(0, int(x1 + shrink * w)):int(x2 - shrink * w)]
        yield path, image, face, np.ascontiguousarray(crop)


def test_tight_crops_are_read_leniently(models):
    det, emb = models.detector, models.face[0]
    plain = lenient = total = 0
    sims = []
    for path, image, face, crop in tight_crops(det):
        total += 1
        plain += largest_face(det, crop)[0] is not None
        view, found, _, note = photo_face(det, crop)
        if found is not None:
            lenient += 1
            whole = emb.embed_faces(image, [face])[0]
            sims.append(float(emb.embed_faces(view, [found])[0] @ whole))
    print(f"{total} tight crops: face found in {plain} by the usual pass, {lenient} with the lenient look;"
          f" cosine to the uncropped photo's face: median {np.median(sims):.3f}")
    assert total >= 30
    assert lenient >= 0.9 * total and lenient >= plain + 0.2 * total
    assert np.median(sims) > 0.9  # the vector describes the same face


def test_query_says_how_each_photo_was_read(models):
    from castfinder.index.search import photo_vectors
    det = models.detector
    path, image, face, crop = next(tight_crops(det, shrink=0.2))
    out = photo_vectors([("whole", image), ("crop", crop)], det, models.face[0], models.frame[0])
    notes = {q.photo: (q.kind, q.note) for q in out}
    assert notes["whole"][0] == "face"
    assert notes["crop"][0] == "face" and "lenient" in notes["crop"][1]


def test_flip_averaged_vectors_do_not_care_which_way_a_face_looks(models, wide_frames):
    from castfinder.models.dlib_resnet import DlibResnetEmbedder
    flip = next(e for e in models.face if e.name == "dlib-resnet")
    assert flip.flip
    plain = DlibResnetEmbedder(device="cpu", flip=False)
    image = next(im for im in wide_frames if models.detector.detect([im])[0])
    faces = models.detector.detect([image])[0]
    chips = flip.chips(image, faces)
    mirrored = [np.ascontiguousarray(c[:, ::-1]) for c in chips]
    a, b = flip.embed_chips(chips), flip.embed_chips(mirrored)
    assert np.allclose(a, b, atol=1e-4)  # a face and its mirror image get one vector
    p, q = plain.embed_chips(chips), plain.embed_chips(mirrored)
    assert float(np.min(np.sum(p * q, 1))) < 0.999  # without flipping they differ


def test_a_still_wide_shot_keeps_a_frame_a_second(models, ingest_cfg):
    """devhard/wide's last shot: 20 s of an interview shrunk onto a blurred backdrop. The 32x18 thumbnail
    deduplication compares barely changes, so without the one-frame-a-second floor it kept a single frame
    of the shot (one chance for its ~35-px faces); with it, they get a look every second."""
    from castfinder.stream.dedup import ConsecutiveDeduplicator
    from castfinder.stream.sampling import ShotSampler

    assert ingest_cfg.dedup_max_gap_s == 1.0
    kept = {0.0: [], 1.0: []}
    dedups = {gap: ConsecutiveDeduplicator(ingest_cfg.dedup_similarity, max_gap_s=gap) for gap in kept}
    sampler = ShotSampler(ingest_cfg.sample_fps)
    dec = VideoDecoder(str(WIDE), 640)
    for f in dec.frames(99.2):  # the shot runs 99.0-119.0 s
        if sampler.keep(0, f.time_s):
            for gap, d in dedups.items():
                if d.keep(0, f.small, f.time_s):
                    kept[gap].append(f.image.copy())
        f.release()
    dec.close()
    print({gap: len(frames) for gap, frames in kept.items()})
    assert len(kept[0.0]) <= 3 and len(kept[1.0]) >= 19
    det = models.detector
    with_faces = [faces for faces in det.detect(kept[1.0], [True] * len(kept[1.0])) if faces]
    print(f"{len(with_faces)} of {len(kept[1.0])} kept frames show a face")
    assert len(with_faces) >= 15
