"""The per-video face metric (index/face_metric.py) on real footage (the friends clip): the pairs
the video gives itself, what the learned projection does to them, storage, refits, cost."""

import time

import numpy as np
import pytest

from castfinder.index import face_metric
from castfinder.index.cast import Cast, CastParams, forget_shots
from castfinder.index.face_metric import VideoMetric, fit, video_pairs
from castfinder.index.store import IndexStore

from conftest import copy_index

FEATURE = "dlib-resnet"


@pytest.fixture(scope="module")
def pairs(friends_index):
    path, result = friends_index
    store = IndexStore(path)
    yield store, result.video_id, video_pairs(store.catalogue, result.video_id, FEATURE)
    store.close()


def test_must_link_are_faces_of_one_track_and_cannot_link_faces_of_one_frame(pairs):
    store, vid, data = pairs
    c = store.catalogue.conn
    assert len(data.track_ids) >= 12 and all(len(f) == len(ids) for f, ids in zip(data.faces, data.face_ids))
    track_of = {r[0]: r[1] for r in c.execute("SELECT face_id, track_id FROM track_faces")}
    frame_of = {r[0]: r[1] for r in c.execute("SELECT id, frame_id FROM faces")}

    ml = data.must_link_faces()
    assert len(ml) == sum(len(ids) * (len(ids) - 1) // 2 for ids in data.face_ids)
    assert all(track_of[a] == track_of[b] for a, b in ml)          # one track: one person
    assert all(frame_of[a] != frame_of[b] for a, b in ml)          # a track has one face per frame

    cl = data.cannot_link_faces()
    assert len(cl) >= 10                                           # friends: 2-4 people in every shot
    assert all(frame_of[a] == frame_of[b] and track_of[a] != track_of[b] for a, b in cl)
    # every frame with k tracked faces gives all k(k-1)/2 of its pairs, and nothing else
    tracked = [f for ids in data.face_ids for f in ids]
    per_frame: dict[int, int] = {}
    for f in tracked:
        per_frame[frame_of[f]] = per_frame.get(frame_of[f], 0) + 1
    assert len(cl) == sum(k * (k - 1) // 2 for k in per_frame.values())

    # track pairs: every two tracks of one shot, and every two tracks with a face in one frame
    cannot = set(data.cannot)
    n = len(data.track_ids)
    frames = [set(f) for f in data.frame_ids]
    for i in range(n):
        for j in range(i + 1, n):
            expected = data.shots[i] == data.shots[j] or bool(frames[i] & frames[j])
            assert ((i, j) in cannot) == expected
    assert set(data.together()) <= cannot and len(data.together()) >= 5


def _ratio(metric, data, tracks) -> float:
    """Mean distance of must-link face pairs / mean distance of cannot-link track pairs' faces."""
    f = metric.apply if metric is not None else (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))
    ml, cl = [], []
    for i in tracks:
        y = f(data.faces[i])
        if len(y) > 1:
            ml.append(np.sqrt(np.maximum(2 - 2 * y @ y.T, 0))[np.triu_indices(len(y), 1)].mean())
    for a, b in data.cannot:
        if a in tracks and b in tracks:
            cl.append(np.sqrt(np.maximum(2 - 2 * f(data.faces[a]) @ f(data.faces[b]).T, 0)).mean())
    return float(np.mean(ml) / np.mean(cl))


def test_learned_metric_brings_must_link_pairs_closer_than_cannot_link(pairs):
    _, _, data = pairs
    everyone = set(range(len(data.faces)))
    raw = _ratio(None, data, everyone)
    wccn = _ratio(fit(data.faces, data.cannot, "wccn"), data, everyone)
    lda = _ratio(fit(data.faces, data.cannot, "lda"), data, everyone)
    print(f"ML/CL distance ratio: raw {raw:.3f}, wccn {wccn:.3f}, lda {lda:.3f}")  # measured 0.644, 0.515, 0.300
    assert wccn < 0.9 * raw and lda < 0.6 * raw
    # held out, two folds: fitted on the even shots' tracks and pairs, measured on the odd shots' tracks, and
    # the other way round. One fold alone is 2 shots of friends: with a kept frame a second it read 0.623
    # against raw 0.596 (even -> odd) but 0.529 against 0.679 (odd -> even)
    raws, helds = [], []
    for parity in (0, 1):
        train = [i for i in everyone if data.shots[i] % 2 == parity]
        test = everyone - set(train)
        pos = {i: k for k, i in enumerate(train)}
        held = fit([data.faces[i] for i in train], [(pos[a], pos[b]) for a, b in data.cannot if a in pos and b in pos], "lda")
        raws.append(_ratio(None, data, test))
        helds.append(_ratio(held, data, test))
    print(f"held out: raw {np.round(raws, 3)}, lda {np.round(helds, 3)}")          # measured [0.596 0.679], [0.623 0.529]
    assert np.mean(helds) < 0.95 * np.mean(raws)


def test_apply_round_trip_and_too_little_data(pairs):
    _, _, data = pairs
    m = fit(data.faces, data.cannot, "lda")
    y = m.apply(data.faces[0])
    assert y.dtype == np.float32 and np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    assert np.allclose(m.apply(data.faces[0][0]), y[0], atol=1e-6)           # one vector works too
    back = VideoMetric.from_bytes(m.to_bytes())
    assert back.method == "lda" and (back.n_tracks, back.n_faces, back.n_cannot) == (m.n_tracks, m.n_faces, m.n_cannot)
    assert np.array_equal(back.apply(data.faces[1]), m.apply(data.faces[1]))
    # single-face tracks carry no must-link pair: the identity (only normalisation)
    one = fit([f[:1] for f in data.faces], [])
    assert one.method == "identity" and np.allclose(one.apply(data.faces[0]), data.faces[0] / np.linalg.norm(
        data.faces[0], axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError):
        fit(data.faces, [], "pca")


def test_fit_is_cheap_for_a_two_minute_clip():
    """devhard's 2-minute clips hold 20-44 tracks and 75-424 faces; a busy film minute more."""
    rng = np.random.default_rng(0)
    people = rng.normal(size=(20, 128))
    tracks = [people[k % 20] + rng.normal(0, 0.3, (rng.integers(2, 30), 128)) for k in range(120)]
    tracks = [t / np.linalg.norm(t, axis=1, keepdims=True) for t in tracks]
    cannot = [(i, i + 1) for i in range(0, 118, 2)]
    fit(tracks, cannot, "lda")                                       # warm-up (BLAS threads)
    t0 = time.perf_counter()
    fit(tracks, cannot, "wccn")
    fit(tracks, cannot, "lda")
    took = time.perf_counter() - t0
    print(f"{sum(len(t) for t in tracks)} faces, 120 tracks: both fits {took * 1000:.0f} ms")
    assert took < 1.0


def test_fit_video_stores_refits_as_it_grows_and_resume_forgets(friends_index, tmp_path):
    path = copy_index(friends_index[0], tmp_path)
    store = IndexStore(path, writable=True)
    try:
        vid = friends_index[1].video_id
        cast = Cast(store, CastParams(feature=FEATURE, face_metric="wccn"))
        m = cast.refresh_metric(vid, force=True)
        stored = face_metric.load(store.catalogue, vid, FEATURE)
        assert stored is not None and np.array_equal(stored.proj, m.proj) and stored.n_faces == m.n_faces
        row = store.catalogue.conn.execute("SELECT fitted_at FROM face_metrics WHERE video_id=?", (vid,)).fetchone()
        cast.refresh_metric(vid)                                     # nothing new: no refit
        assert store.catalogue.conn.execute("SELECT fitted_at FROM face_metrics WHERE video_id=?", (vid,)).fetchone() == row
        # an ingest resuming at shot 2: its tracks go, and so does the metric fitted on them
        forget_shots(store.catalogue, vid, 2)
        assert face_metric.load(store.catalogue, vid, FEATURE) is None
        again = cast.refresh_metric(vid)
        assert again is not None and again.n_faces < m.n_faces
    finally:
        store.close()
