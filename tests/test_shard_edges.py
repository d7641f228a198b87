"""A sharded index read while its shards change: shards made as the Ray workers make them
(create_shard, then a real ingest into each), read through castfinder.open_index."""

from __future__ import annotations

import castfinder
from castfinder.index.shards import create_shard
from castfinder.index.store import IndexStore
from castfinder.stream.pipeline import IngestJob

from conftest import make_video


def _shard(root, number, clip, models, ingest_cfg):
    store = IndexStore(create_shard(root, f"s{number:03d}", number), writable=True)
    try:
        assert IngestJob(str(clip), store, ingest_cfg, models, new_video_id=number).run().status == "done"
    finally:
        store.close()


def test_a_shard_added_while_the_index_is_open_is_listed(tmp_path, models, ingest_cfg):
    """videos() listed only the shards open at the last query: a server showed 2 videos while
    GET /videos/3 answered (and then the list had 3)."""
    root = tmp_path / "archive"
    _shard(root, 1, make_video(tmp_path / "a.mp4", seconds=1.0, seed=1), models, ingest_cfg)
    with castfinder.open_index(root) as idx:
        assert [v["id"] for v in idx.videos()] == [1]
        _shard(root, 2, make_video(tmp_path / "b.mp4", seconds=1.0, seed=2), models, ingest_cfg)
        videos = idx.videos()
        assert [v["id"] for v in videos] == [1, 2], videos
        assert videos[1]["status"] == "done" and videos[1]["shots"] >= 1, videos[1]


def test_a_server_on_a_sharded_index_names_clusters_as_the_cli_does(tmp_path, models, ingest_cfg):
    """serve on an archive: searches, and naming a character (written in the shard that holds the
    cluster, as `castfinder cast name` does); ingest stays with the Ray jobs (409)."""
    from conftest import clip
    from service_helpers import Server

    root = tmp_path / "archive"
    _shard(root, 1, clip("friends"), models, ingest_cfg)
    _shard(root, 2, make_video(tmp_path / "b.mp4", seconds=1.0, seed=2), models, ingest_cfg)
    srv = Server(root)
    try:
        clusters = srv.client.get("/videos/1/cast").json()["clusters"]
        assert clusters, "friends has a cast"
        cid = clusters[0]["cluster"]
        assert srv.client.put(f"/videos/2/cast/{cid}", json={"name": "Ross"}).status_code == 404  # not video 2's
        r = srv.client.put(f"/videos/1/cast/{cid}", json={"name": "Ross"})
        assert r.status_code == 200 and r.json()["name"] == "Ross", r.text
        r = srv.client.post("/videos", json={"source": str(clip("herapheri"))})
        assert r.status_code == 409 and "sharded" in r.json()["error"], r.text
    finally:
        log = srv.stop()
    assert "Traceback" not in log, log
    with castfinder.open_index(root) as idx:
        clusters = idx.cast(video=1)[0]["clusters"]
        assert [c["name"] for c in clusters if c["cluster"] == cid] == ["Ross"]
