"""What surrounds a face (stream/face_context.py) and the re-ranking of face hits by it
(index/search.py _rerank_by_context), on the real friends index: every face keeps a descriptor,
one person's faces along a track look alike around the face while two people in one frame do
not, and re-ranking keeps the true shots first, only reorders a film's shots on its own scores,
and leaves an index without
descriptors as it was; on the low-resolution devhard montage (320x180, faces of 10-40 px) it raises
MAP."""

import numpy as np
import pytest

from castfinder.index.evaluation import average_precision, map_to_true, relevant_shots
from castfinder.index.search import photo_vectors, search_shots
from castfinder.index.store import IndexStore
from castfinder.models.photo import load_photo
from castfinder.stream.face_context import DIM, context_descriptor, context_region, from_blob

from conftest import DATA, DEV, copy_index, truth

REFS = DEV / "friends" / "refs"


def refs(character):
    return [(str(p), load_photo(p)) for p in sorted((REFS / character).iterdir())]


def test_descriptor_reads_the_colours_around_a_face():
    image = np.zeros((200, 300, 3), np.uint8)
    image[:, :150] = (200, 30, 30)   # a red shirt on the left
    image[:, 150:] = (30, 30, 200)   # a blue one on the right
    left, right = context_descriptor(image, (60, 40, 90, 70)), context_descriptor(image, (210, 40, 240, 70))
    assert left.shape == (DIM,) and left.dtype == np.float32
    assert abs(float(np.linalg.norm(left)) - 1) < 1e-5
    assert float(left @ left) == pytest.approx(1, abs=1e-5) and float(left @ right) < 0.05
    # the region stays inside the frame, and a face at the very edge still gets a (partial) descriptor
    assert context_region((280, 190, 300, 200), 300, 200) == (260, 185, 300, 200)
    assert np.isfinite(context_descriptor(image, (290, 195, 300, 200))).all()


def test_every_indexed_face_keeps_its_descriptor(friends_index):
    path, _ = friends_index
    store = IndexStore(path)
    rows = store.catalogue.conn.execute("SELECT context FROM faces").fetchall()
    assert len(rows) >= 50
    vecs = [from_blob(r[0]) for r in rows]
    assert all(v is not None and v.shape == (DIM,) for v in vecs)


def test_one_track_looks_alike_two_people_in_a_frame_do_not(friends_index):
    path, _ = friends_index
    c = IndexStore(path).catalogue.conn
    ctx = {r[0]: from_blob(r[1]) for r in c.execute("SELECT id, context FROM faces")}
    same_track = []
    for (track,) in c.execute("SELECT id FROM tracks WHERE n_faces >= 2"):
        ids = [r[0] for r in c.execute("SELECT face_id FROM track_faces WHERE track_id=? ORDER BY face_id", (track,))]
        same_track += [float(ctx[a] @ ctx[b]) for a, b in zip(ids, ids[1:])]
    same_frame = []
    for (frame,) in c.execute("SELECT frame_id FROM faces GROUP BY frame_id HAVING COUNT(*) >= 2"):
        ids = [r[0] for r in c.execute("SELECT id FROM faces WHERE frame_id=?", (frame,))]
        same_frame += [float(ctx[a] @ ctx[b]) for i, a in enumerate(ids) for b in ids[i + 1:]]
    assert len(same_track) >= 20 and len(same_frame) >= 10
    assert np.median(same_track) > np.median(same_frame) + 0.1, (np.median(same_track), np.median(same_frame))


@pytest.mark.parametrize("character", ["Ross", "Phoebe", "Rachel"])
def test_context_reranking_keeps_true_shots_first(friends_index, models, character):
    path, _ = friends_index
    store = IndexStore(path)
    queries = photo_vectors(refs(character), models.detector, models.face[0], None)
    plain = search_shots(store, queries)
    reranked = search_shots(store, queries, context_weight=1.0)
    for hits in (plain, reranked):
        ranked = map_to_true(truth("friends"), [(h.start_s, h.end_s) for h in hits])
        assert average_precision(ranked, relevant_shots(truth("friends"), character)) >= 0.99
    assert {h.shot for h in plain} == {h.shot for h in reranked}
    # one photo: the same shots on the same scores, only their order may change
    one = photo_vectors(refs(character)[:1], models.detector, models.face[0], None)
    a, b = search_shots(store, one), search_shots(store, one, context_weight=1.0)
    assert sorted(h.score for h in a) == pytest.approx(sorted(h.score for h in b), abs=1e-6)
    assert reranked[0].shot == plain[0].shot  # the best hit is the seed: it keeps the top


def test_an_index_without_descriptors_ranks_as_before(friends_index, models, tmp_path):
    """Faces indexed before descriptors existed count as average: the ranking is the faces' own."""
    path = copy_index(friends_index[0], tmp_path)
    store = IndexStore(path, writable=True)
    store.catalogue.conn.execute("UPDATE faces SET context=NULL")
    queries = photo_vectors(refs("Ross"), models.detector, models.face[0], None)
    plain = [(h.shot, h.score) for h in search_shots(store, queries)]
    assert [(h.shot, h.score) for h in search_shots(store, queries, context_weight=1.0)] == plain
    store.close()


@pytest.fixture(scope="module")
def lowres_index(tmp_path_factory, models, ingest_cfg):
    """devhard/lowres (2 min, 320x180) ingested with the defaults: ~20 s."""
    from castfinder.stream.pipeline import IngestJob
    path = tmp_path_factory.mktemp("lowres_index")
    store = IndexStore(path, writable=True)
    IngestJob(str(DATA / "devhard" / "lowres" / "video.mp4"), store, ingest_cfg, models).run()
    store.close()
    return path


def test_context_raises_map_where_faces_are_small(lowres_index, models):
    """11 characters, 34 shots; faces alone confuse people at this size (offline: MAP 0.907), their
    surroundings tell them apart (0.985)."""
    import json
    root = DATA / "devhard" / "lowres"
    clip_truth = json.loads((root / "truth.json").read_text())
    store = IndexStore(lowres_index)
    aps = {0.0: [], 1.0: []}
    for folder in sorted(p for p in (root / "refs").iterdir() if p.is_dir()):
        photos = [(str(p), load_photo(p)) for p in sorted(folder.iterdir())]
        queries = photo_vectors(photos, models.detector, models.face[0], None)
        for weight in aps:
            hits = search_shots(store, queries, context_weight=weight)
            ranked = map_to_true(clip_truth, [(h.start_s, h.end_s) for h in hits])
            aps[weight].append(average_precision(ranked, relevant_shots(clip_truth, folder.name)))
    plain, context = float(np.mean(aps[0.0])), float(np.mean(aps[1.0]))
    assert len(aps[0.0]) == 11
    assert context >= plain + 0.03 and context >= 0.9, (plain, context)


def test_reranking_never_lifts_one_video_above_another(friends_index, models, ingest_cfg, tmp_path):
    """In an index of several films a query's seed in a film without the character is a stranger: the
    re-ranking reorders each film's shots on that film's own scores, so what each film offers (its
    shot scores, per photo) stays the same and only the order inside it changes."""
    from castfinder.stream.pipeline import IngestJob
    from conftest import clip
    path = copy_index(friends_index[0], tmp_path)
    store = IndexStore(path, writable=True)
    IngestJob(str(clip("herapheri")), store, ingest_cfg, models).run()
    for photo in refs("Ross")[:2]:
        queries = photo_vectors([photo], models.detector, models.face[0], None)
        plain = search_shots(store, queries)
        reranked = search_shots(store, queries, context_weight=1.0)
        assert {h.video_id for h in plain} == {1, 2}
        for video in (1, 2):
            a = sorted((h.score for h in plain if h.video_id == video), reverse=True)
            b = sorted((h.score for h in reranked if h.video_id == video), reverse=True)
            assert a == pytest.approx(b, abs=1e-6)
        ranked = map_to_true(truth("friends"), [(h.start_s, h.end_s) for h in reranked if h.video_id == 1])
        assert average_precision(ranked, relevant_shots(truth("friends"), "Ross")) >= 0.99
    store.close()
