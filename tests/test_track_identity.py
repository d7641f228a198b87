"""Identity per track and the scene tail, on the real friends index: track vectors are the
quality-weighted mean of a track's best faces, search blends a shot's best face with its best
track, and shots no face hit reaches follow the face hits, ranked by whole-frame likeness."""

import numpy as np
import pytest

from castfinder.index.evaluation import average_precision, map_to_true, relevant_shots
from castfinder.index.search import photo_vectors, search_shots
from castfinder.index.store import IndexStore
from castfinder.index.track_vectors import TrackVectors
from castfinder.models.photo import load_photo

from conftest import DEV, truth

REFS = DEV / "friends" / "refs"


def refs(character):
    return [(str(p), load_photo(p)) for p in sorted((REFS / character).iterdir())]


def test_track_vectors_are_the_quality_weighted_mean_of_their_faces(friends_index):
    path, _ = friends_index
    store = IndexStore(path)
    tv = TrackVectors("dlib-resnet")
    tv.sync(store.catalogue)
    n = store.catalogue.conn.execute("SELECT COUNT(*) FROM tracks WHERE vec IS NOT NULL").fetchone()[0]
    assert len(tv.ids) == n >= 4
    assert set(tv.shot.tolist()) <= {s["idx"] for s in store.catalogue.shots(1)}
    from castfinder.core.config import load_config
    best_q = load_config("default").cast.best_q
    for tid, vec in zip(tv.ids[:5], tv.vecs[:5]):
        rows = store.catalogue.conn.execute(
            "SELECT tf.quality, v.vec FROM track_faces tf JOIN vectors v ON v.face_id=tf.face_id"
            " AND v.feature='dlib-resnet' WHERE tf.track_id=? ORDER BY tf.quality DESC", (int(tid),)).fetchall()
        q = np.array([max(r[0], 1e-3) for r in rows[:best_q]])
        faces = np.stack([np.frombuffer(r[1], np.float32) for r in rows[:best_q]])
        want = (faces * q[:, None]).sum(0)
        assert np.allclose(vec, want / np.linalg.norm(want), atol=1e-5)
    tv.sync(store.catalogue)  # nothing new: no reload
    assert len(tv.ids) == n


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_track_blend_keeps_true_shots_first(friends_index, models, weight):
    path, _ = friends_index
    store = IndexStore(path)
    tv = TrackVectors("dlib-resnet")
    tv.sync(store.catalogue)
    for character in ("Ross", "Phoebe"):
        queries = photo_vectors(refs(character), models.detector, models.face[0], None)
        hits = search_shots(store, queries, tracks=tv, track_weight=weight)
        ranked = map_to_true(truth("friends"), [(h.start_s, h.end_s) for h in hits])
        assert average_precision(ranked, relevant_shots(truth("friends"), character)) >= 0.99, (character, weight)
    # the blend changes the scores (tracks are not the best single face)
    q = photo_vectors(refs("Ross"), models.detector, models.face[0], None)
    a = {(h.shot): h.score for h in search_shots(store, q, tracks=tv, track_weight=0.0)}
    b = {(h.shot): h.score for h in search_shots(store, q, tracks=tv, track_weight=1.0)}
    assert any(abs(a[k] - b[k]) > 1e-4 for k in a)


def test_scene_tail_follows_every_face_hit(friends_index, models):
    path, _ = friends_index
    store = IndexStore(path)
    queries = photo_vectors(refs("Ross")[:1], models.detector, models.face[0], None)
    # a top-k of 3 face hits reaches fewer shots than the clip has: the tail brings the others
    plain = search_shots(store, queries, top_k=3)
    tailed = search_shots(store, queries, top_k=3, scene_feature="effnet-lite0")
    n_shots = len(store.catalogue.shots(1))
    assert len(plain) < n_shots
    assert [h.shot for h in tailed[:len(plain)]] == [h.shot for h in plain]  # face hits untouched, first
    tail = tailed[len(plain):]
    assert tail and all(h.photos == ["scene of the best shot"] for h in tail)
    assert max(h.score for h in tail) < min(h.score for h in plain)
    assert [h.score for h in tail] == sorted((h.score for h in tail), reverse=True)
    # a frame-only query has no face hits to follow: no tail
    frame_q = photo_vectors(refs("Ross")[:1], models.detector, None, models.frame[0])
    assert len(search_shots(store, frame_q, top_k=3, scene_feature="effnet-lite0")) == \
        len(search_shots(store, frame_q, top_k=3))
