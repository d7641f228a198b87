"""An ingest whose source stage or writer fails ends with that error instead of waiting on its
stages (the source never sent its end marker; stages blocked on full queues behind a dead writer)."""

import threading

import pytest

from castfinder.index.store import IndexStore
from castfinder.stream import pipeline
from castfinder.stream.pipeline import IngestJob

from conftest import clip


def run_with_deadline(job, seconds=25):
    """Run the job in a thread; the error it raised, or a failure if it did not end in time."""
    box = {}

    def target():
        try:
            job.run()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the ingest hung"
    return box.get("error")


def test_a_source_stage_that_cannot_start_ends_the_ingest(tmp_path, models, ingest_cfg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("segmenter could not start")

    monkeypatch.setattr(pipeline, "ShotSegmenter", broken)
    store = IndexStore(tmp_path / "idx", writable=True)
    try:
        err = run_with_deadline(IngestJob(str(clip("friends")), store, ingest_cfg, models))
    finally:
        store.close()
    assert err is not None and "segmenter could not start" in str(err)


def test_a_writer_that_fails_frees_the_stages(tmp_path, models, ingest_cfg):
    store = IndexStore(tmp_path / "idx", writable=True)
    calls = {"n": 0}
    real = store.add_records

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError("disk on fire")
        return real(*args, **kwargs)

    store.add_records = failing
    try:
        err = run_with_deadline(IngestJob(str(clip("friends")), store, ingest_cfg, models))
    finally:
        store.close()
    assert err is not None and "disk on fire" in str(err)
    row = store.catalogue.video(1)
    assert row["status"] == "failed"
