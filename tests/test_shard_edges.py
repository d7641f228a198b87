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
