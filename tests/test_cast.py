"""Cast discovery on a real clip: face tracks, the incremental cast grown during ingest, the batch
cast through the CLI scored against truth.json, naming, query by name, --expand, and bad input."""

import json

import numpy as np
import pytest

from index.cast import Cast, CastParams
from index.cast_eval import bcubed, label_tracks
from index.evaluation import average_precision, map_to_true, relevant_shots
from index.search import photo_vectors
from index.store import IndexStore
from models.photo import load_photo

from conftest import DEV, copy_index, make_video, run_cli, truth


def ref_vectors(models, clip="friends"):
    out = {}
    for d in sorted((DEV / clip / "refs").iterdir()):
        qs = photo_vectors([(str(p), load_photo(p)) for p in sorted(d.iterdir())], models.detector, models.face[0], None)
        out[d.name] = np.stack([q.vector for q in qs])
    return out


def test_tracks_stay_in_their_shot_and_never_share_a_frame(friends_index):
    path, result = friends_index
    store = IndexStore(path)
    c = store.catalogue.conn
    tracks = c.execute("SELECT * FROM tracks WHERE video_id=?", (result.video_id,)).fetchall()
    assert len(tracks) >= 12
    for t in tracks:
        rows = c.execute("SELECT f.shot_idx, f.id FROM track_faces tf JOIN faces fc ON fc.id=tf.face_id"
                         " JOIN frames f ON f.id=fc.frame_id WHERE tf.track_id=?", (t["id"],)).fetchall()
        assert {r[0] for r in rows} == {t["shot_idx"]}
        assert len({r[1] for r in rows}) == len(rows)          # one face per frame in a track
        assert t["n_faces"] == len(rows) and t["start_s"] <= t["end_s"]


def test_cast_grows_during_ingest(friends_index):
    """The ingest fixture never ran `castfinder cast`: these clusters come from the incremental rule."""
    path, result = friends_index
    store = IndexStore(path)
    n = store.catalogue.conn.execute("SELECT COUNT(*) FROM clusters WHERE video_id=?", (result.video_id,)).fetchone()[0]
    assigned = store.catalogue.conn.execute("SELECT COUNT(*) FROM tracks WHERE cluster_id IS NOT NULL").fetchone()[0]
    usable = store.catalogue.conn.execute("SELECT COUNT(*) FROM tracks WHERE vec IS NOT NULL").fetchone()[0]
    assert 4 <= n <= usable and assigned == usable


def test_cli_cast_scores_name_and_query_by_name(friends_index, models, tmp_path):
    path = copy_index(friends_index[0], tmp_path)
    r = run_cli("cast", "--index", path, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)[0]
    clusters = doc["clusters"]
    assert clusters and doc["sheet"] and (tmp_path / "copy" / "cast" / "video1" / "cast.png").stat().st_size > 5000
    for cl in clusters:
        assert cl["screen_time_s"] > 0 and cl["shots"] and cl["faces"]
    # score against the truth: BCubed over labelled tracks (measured: P 1.000, R 0.773, F 0.872, purity 1.000)
    store = IndexStore(path)
    rows = [dict(r) for r in store.catalogue.conn.execute(
        "SELECT id, start_s, end_s, vec, cluster_id FROM tracks WHERE vec IS NOT NULL ORDER BY id")]
    for t in rows:
        t["vec"] = np.frombuffer(t["vec"], np.float32)
    labels = label_tracks(truth("friends"), rows, ref_vectors(models))
    score = bcubed(labels, [t["cluster_id"] for t in rows])
    print(score)
    assert score["items"] >= 8 and score["purity"] >= 0.99 and score["bcubed_f"] >= 0.8

    # name the cluster holding most of Ross's tracks, then query with no photos
    ross = max({t["cluster_id"] for t, l in zip(rows, labels) if l == "Ross"},
               key=lambda c: sum(1 for t, l in zip(rows, labels) if l == "Ross" and t["cluster_id"] == c))
    assert run_cli("cast", "name", "--index", path, ross, "Ross").returncode == 0
    r = run_cli("query", "--index", path, "--character", "Ross", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ranked = map_to_true(truth("friends"), [(h["start_s"], h["end_s"]) for h in doc["results"]])
    ap = average_precision(ranked, relevant_shots(truth("friends"), "Ross"))
    print("query by cluster name, AP", ap)
    assert ap >= 0.99 and all(q["photo"].startswith("cluster:") for q in doc["queries"])

    # the name survives a re-clustering
    assert run_cli("cast", "--index", path, "--recluster", "--no-sheets").returncode == 0
    assert IndexStore(path).catalogue.conn.execute("SELECT COUNT(*) FROM clusters WHERE name='Ross'").fetchone()[0] == 1

    # bad input: unknown cluster, a name already used, an unknown name in a query
    other = IndexStore(path).catalogue.conn.execute("SELECT id FROM clusters WHERE name IS NULL").fetchone()[0]
    r = run_cli("cast", "name", "--index", path, 9999, "Nobody")
    assert r.returncode == 2 and "no cluster with id 9999" in r.stderr
    r = run_cli("cast", "name", "--index", path, other, "Ross")
    assert r.returncode == 2 and "already used" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("query", "--index", path, "--character", "Gunther")
    assert r.returncode == 2 and "no cluster is named 'Gunther'" in r.stderr


def test_expand_adds_cluster_tracks(friends_index, tmp_path):
    path = copy_index(friends_index[0], tmp_path)
    photos = sorted((DEV / "friends" / "refs" / "Joey").iterdir())[:1]
    plain = json.loads(run_cli("query", "--index", path, "--photos", *photos, "--json").stdout)
    r = run_cli("query", "--index", path, "--photos", *photos, "--json", "--expand")
    assert r.returncode == 0, r.stderr
    expanded = json.loads(r.stdout)
    assert len(expanded["queries"]) > len(plain["queries"])
    assert any(q["photo"].startswith("cluster:") for q in expanded["queries"])


def test_video_without_faces_has_an_empty_cast(tmp_path):
    video = make_video(tmp_path / "noise.mp4", seconds=3)
    assert run_cli("ingest", video, "--index", tmp_path / "idx").returncode == 0
    r = run_cli("cast", "--index", tmp_path / "idx")
    assert r.returncode == 0 and "the cast is empty" in r.stdout
