"""The Python API (castfinder.open_index): the README's example run as written, its records equal to the
CLI's --json output, ingest that can be searched while it runs, stopped and resumed, and bad input
raising the documented castfinder.core.errors classes."""

import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import castfinder
from castfinder.core.errors import (CastfinderError, IndexBusyError, InputError, NameTakenError, NothingIndexedError,
                               NotFoundError)
from castfinder.index.evaluation import map_to_true, relevant_shots
from castfinder.index.store import IndexStore

from conftest import DATA, DEV, ROOT, clip, copy_index, run_cli, truth

REFS = DEV / "friends" / "refs"
ROSS = sorted((REFS / "Ross").iterdir())[:2]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- api-example -->\s*```python\n(.*?)```\s*<!-- /api-example -->", text, re.S)
    assert found, "README.md has no <!-- api-example --> block"
    return found.group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's snippet run as a user runs it: a fresh process, in a folder beside ../shared."""
    base = tmp_path_factory.mktemp("readme")
    (base / "work").mkdir()
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(DATA)  # "../shared/data/dev/..." in the snippet, wherever DATA is
    r = subprocess.run([sys.executable, "-c", readme_example()], cwd=base / "work", capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return base / "work" / "friends.idx", r.stdout


@pytest.fixture(scope="module")
def reader(example):
    with castfinder.open_index(example[0]) as idx:
        yield idx


def test_readme_example_runs_and_finds_ross_first(example):
    path, out = example
    lines = [line.split() for line in out.strip().splitlines()]
    results, clusters = lines[:3], lines[3:]
    assert len(results) == 3 and all(len(r) == 4 for r in results), out
    ranked = map_to_true(truth("friends"), [(float(r[1]), float(r[2])) for r in results])
    assert ranked[0] in relevant_shots(truth("friends"), "Ross"), (ranked, out)
    assert float(results[0][3]) > 0.9
    assert len(clusters) >= 4 and all(c[1] == "None" for c in clusters), out  # unnamed
    assert (path / "catalogue.sqlite").is_file()


def test_import_is_light():
    r = subprocess.run([sys.executable, "-c", "import sys, castfinder; castfinder.open_index; "
                        "print(sorted(m for m in ('torch', 'faiss', 'av', 'cv2', 'numpy', 'castfinder.index.store') if m in sys.modules))"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_query_equals_cli_json(example, reader):
    path, _ = example
    cli = run_cli("query", "--index", path, "--photos", *ROSS, "--character", "Ross", "--json")
    assert cli.returncode == 0, cli.stderr
    doc = reader.query(photos=ROSS, character="Ross")
    assert json.loads(json.dumps(doc)) == json.loads(cli.stdout)
    assert [q["photo"] for q in doc["queries"]] == [str(p) for p in ROSS]

    # the same photos as bytes, arrays and PIL images: the same shots and scores, named by position
    def ranked(d):
        return [(r["video"], r["shot"], r["score"], r["best_frame_s"]) for r in d["results"]]
    for photos in ([p.read_bytes() for p in ROSS], [np.asarray(Image.open(p).convert("RGB")) for p in ROSS],
                   [Image.open(p) for p in ROSS]):
        other = reader.query(photos=photos, character="Ross")
        assert ranked(other) == ranked(doc)
        assert [q["photo"] for q in other["queries"]] == ["photos[0]", "photos[1]"]
    # one photo on its own is one photo, and options reach the engine as the CLI's do
    one = reader.query(photos=ROSS[0], fusion="rrf", limit=2, top_k=50, video=1)
    cli = run_cli("query", "--index", path, "--photos", ROSS[0], "--fusion", "rrf", "--limit", 2, "--top-k", 50,
                  "--video", 1, "--json")
    assert json.loads(json.dumps(one)) == json.loads(cli.stdout) and len(one["results"]) == 2


def test_videos_shots_cast_and_ingest_equal_cli_json(example, reader, tmp_path):
    path, _ = example
    assert reader.videos() == json.loads(run_cli("videos", "--index", path, "--json").stdout)
    assert reader.shots(1) == json.loads(run_cli("shots", "--index", path, "--video", 1, "--json").stdout)
    video = reader.videos()[0]
    assert (video["id"], video["status"], video["shots"]) == (1, "done", len(reader.shots(1)))

    dst = copy_index(path, tmp_path)
    cli = run_cli("cast", "--index", dst, "--json", "--no-sheets")
    assert cli.returncode == 0, cli.stderr
    with castfinder.open_index(dst) as idx:
        cast = idx.cast()
        assert cast == json.loads(cli.stdout) and cast[0]["clusters"] and cast[0]["sheet"] is None
        assert idx.cast(video=1) == cast
        sheets = idx.cast(sheets=tmp_path / "sheets")
        assert sheets[0]["sheet"] == str(tmp_path / "sheets" / "video1" / "cast.png")
        assert (tmp_path / "sheets" / "video1" / "cast.png").stat().st_size > 5000

    # the very file the example indexed (relative to its folder, through its ../shared link): reused
    source = os.path.abspath(path.parent / video["source"])
    cli = run_cli("ingest", source, "--index", dst, "--json")
    assert cli.returncode == 0, cli.stderr
    with castfinder.open_index(dst) as idx:
        summary = idx.ingest(source)
    assert summary == json.loads(cli.stdout)
    assert summary["reused"] and summary["status"] == "done" and summary["vectors"] == video["vectors"]


def test_naming_and_query_by_name(example, tmp_path):
    dst = copy_index(example[0], tmp_path)
    with castfinder.open_index(dst) as idx:
        first, second = (c["cluster"] for c in idx.cast()[0]["clusters"][:2])
        assert idx.name_cluster(first, " Ross ") == {"cluster": first, "video": 1, "name": "Ross"}
        assert idx.writable  # naming took the writer lock
        with pytest.raises(NameTakenError, match="already used"):
            idx.name_cluster(second, "Ross")
        with pytest.raises(NotFoundError, match="no cluster with id 99999"):
            idx.name_cluster(99999, "Nobody")
        with pytest.raises(InputError):
            idx.name_cluster(second, "  ")
        doc = idx.query(character="Ross")
        assert doc["results"] and all(q["photo"] == f"cluster:{first}" for q in doc["queries"])
        assert [c["name"] for c in idx.cast()[0]["clusters"] if c["cluster"] == first] == ["Ross"]
    cli = run_cli("query", "--index", dst, "--character", "Ross", "--json")
    assert json.loads(cli.stdout) == json.loads(json.dumps(doc))


def test_search_while_ingesting_then_stop_and_resume(example, tmp_path):
    """start_ingest returns at once; the index answers queries while it grows; a clean stop then a
    second ingest ends with the very counts of the README's one-go ingest."""
    with castfinder.open_index(example[0]) as done:
        expected = done.video(1)
    reports, reached, go_on = [], threading.Event(), threading.Event()

    def progress(p):  # holds the ingest (from its own thread) 5 s in, until the query below has run
        reports.append(p)
        if p["indexed_until_s"] >= 5 and not go_on.is_set():
            reached.set()
            go_on.wait(300)

    with castfinder.open_index(tmp_path / "idx") as idx:
        run = idx.start_ingest(clip("friends"), progress=progress)
        assert run.video == 1 and run.duration_s > 14
        try:
            assert reached.wait(300) and run.running
            mid = idx.query(photos=ROSS)
            assert mid["results"] and 5 <= mid["indexed_until_s"] < expected["indexed_until_s"]
            run.stop()
        finally:
            go_on.set()
        first = run.wait(timeout=120)
        assert first["status"] == "stopped" and not run.running and first["indexed_until_s"] < 14
        assert reports[-1]["video_id"] == 1
        second = idx.ingest(clip("friends"))
        assert second["status"] == "done" and not second["reused"]
        got = idx.video(1)
    for key in ("status", "indexed_until_s", "shots", "frames", "faces", "vectors"):
        assert got[key] == expected[key], key
    assert {k: second[k] for k in ("shots", "frames", "faces", "vectors")} == \
        {k: expected[k] for k in ("shots", "frames", "faces", "vectors")}
    IndexStore(tmp_path / "idx", writable=True).close()  # close() released the writer lock


def test_bad_input_raises_the_documented_errors(example, reader, tmp_path):
    path, _ = example
    (tmp_path / "file").write_text("x")
    cases = [
        (lambda: castfinder.open_index(tmp_path / "file"), InputError, "not a directory"),
        (lambda: castfinder.open_index(tmp_path / "none", writable=False), NotFoundError, "no index here"),
        (lambda: castfinder.open_index(tmp_path / "none").videos(), NotFoundError, "no index here"),
        (lambda: castfinder.open_index(path, config="no-such-preset"), InputError, "not found"),
        (lambda: castfinder.open_index(path, device="tpu"), InputError, "device"),
        (lambda: castfinder.open_index(path, writable="yes"), InputError, "writable"),
        (lambda: castfinder.open_index(path, config=42), InputError, "config"),
        (lambda: reader.query(photos=[tmp_path / "missing.jpg"]), InputError, "no such file"),
        (lambda: reader.query(photos=[b""]), InputError, "empty"),
        (lambda: reader.query(photos=[b"not an image"]), InputError, "not a readable image"),
        (lambda: reader.query(photos=[np.zeros((40, 40, 3), np.float32)]), InputError, "uint8"),
        (lambda: reader.query(photos=[np.zeros((40, 40, 2), np.uint8)]), InputError, "shape"),
        (lambda: reader.query(photos=[42]), InputError, "photos[0]"),
        (lambda: reader.query(photos=ROSS, video=99), NotFoundError, "no video with id 99"),
        (lambda: reader.query(photos=ROSS, video=0), InputError, "video"),
        (lambda: reader.query(photos=ROSS, video=True), InputError, "video"),
        (lambda: reader.query(photos=ROSS, top_k=0), InputError, "top_k"),
        (lambda: reader.query(photos=ROSS, limit=-1), InputError, "limit"),
        (lambda: reader.query(photos=ROSS, fusion="bogus"), InputError, "unknown fusion"),
        (lambda: reader.query(photos=ROSS, features="face=bogus"), InputError, "unknown face feature"),
        (lambda: reader.query(photos=ROSS, both="yes"), InputError, "both"),
        (lambda: reader.query(photos=ROSS, thumbnails=tmp_path / "file"), InputError, "thumbnails"),
        (lambda: reader.query(character="Gunther"), NotFoundError, "no cluster is named 'Gunther'"),
        (lambda: reader.query(), InputError, "give photos"),
        (lambda: reader.shots(99), NotFoundError, "no video with id 99"),
        (lambda: reader.video("1"), InputError, "video"),
        (lambda: castfinder.open_index(path, writable=False).cast(video=99), NotFoundError, "no video with id 99"),
        (lambda: castfinder.open_index(path, writable=False).name_cluster(1, "X"), InputError, "writable=False"),
        (lambda: castfinder.open_index(tmp_path / "new").ingest(tmp_path / "missing.mp4"), InputError, "missing.mp4"),
        (lambda: castfinder.open_index(tmp_path / "new").query(photos=ROSS), NothingIndexedError, "ingest a video first"),
    ]
    for call, error, words in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, CastfinderError) and words in str(info.value), (words, info.value)
        assert "\n" not in str(info.value) and "Traceback" not in str(info.value)

    closed = castfinder.open_index(path)
    closed.close()
    with pytest.raises(InputError, match="closed"):
        closed.videos()


def test_reader_works_while_another_process_writes(example, reader, tmp_path):
    dst = copy_index(example[0], tmp_path)
    writer = IndexStore(dst, writable=True)  # as an ingest in another process holds it
    try:
        idx = castfinder.open_index(dst)
        assert idx.query(photos=ROSS[:1])["results"]          # reading works
        clusters = idx.cast()[0]["clusters"]                  # the clusters as the writer left them
        assert clusters and not idx.writable
        for call in (lambda: idx.name_cluster(clusters[0]["cluster"], "Ross"), lambda: idx.cast(recluster=True),
                     lambda: idx.ingest(clip("friends")), lambda: castfinder.open_index(dst, writable=True)):
            with pytest.raises(IndexBusyError, match="another process"):
                call()
        idx.close()
    finally:
        writer.close()


def test_the_service_answers_with_the_api_records(example, tmp_path):
    """`castfinder serve` goes through the same Index code: on one index, its videos, shots, query and
    cast answers are the API's records (plus the links only a server has: media, thumbnail, sheet)."""
    from service_helpers import Server

    dst = copy_index(example[0], tmp_path)
    server = Server(dst, media_roots=())
    try:
        c = server.client
        served_cast = c.get("/videos/1/cast").json()["clusters"]   # the writer builds the cast first
        served_videos = c.get("/videos").json()
        served_video = c.get("/videos/1").json()
        served = server.query(ROSS, character="Ross", limit=0)
        assert served.status_code == 200, served.text
        with castfinder.open_index(dst) as idx:                      # a reader beside the serving writer
            assert not idx.writable
            videos = idx.videos()
            assert [{k: v for k, v in s.items() if k != "media"} for s in served_videos] == videos
            assert served_video["shot_list"] == idx.shots(1) and served_video["shots"] == videos[0]["shots"]
            doc = idx.query(photos=[(p.name, p.read_bytes()) for p in ROSS], character="Ross", limit=0)
            got = served.json()
            assert all(r.pop("thumbnail").startswith("/shots/1/") for r in got["results"])
            assert got == json.loads(json.dumps(doc)) and doc["results"]
            cast = idx.cast(1)[0]["clusters"]
            assert all(cl.pop("sheet") == f"/videos/1/cast/{cl['cluster']}/sheet.png" for cl in served_cast)
            assert served_cast == json.loads(json.dumps(cast)) and cast
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
