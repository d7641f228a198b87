"""The HTTP service, for real: `castfinder serve` on 127.0.0.1, clips ingested through the API while
queries run, every fusion method, 200 concurrent queries during ingest, and every bad input."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from castfinder.index.evaluation import average_precision, map_to_true, relevant_shots
from castfinder.index.fusion import METHODS

from conftest import DEV, clip, run_cli, truth
from service_helpers import Server

TOKEN = "s3cret-token"
LABELLED = ["friends", "avenger2", "herapheri", "billhyland"]


def refs(clip_name, character):
    return sorted((DEV / clip_name / "refs" / character).iterdir())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    media = tmp_path_factory.mktemp("media")   # a second media root, for bad files inside a root
    srv = Server(tmp_path_factory.mktemp("service") / "index", token=TOKEN, media_roots=(DEV, media))
    srv.media = media
    yield srv
    log = srv.stop()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def videos():
    return {}


def jpeg(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG")
    return buf.getvalue()


def test_query_before_anything_is_indexed_is_409(server):
    r = server.query(refs("friends", "Joey")[:1])
    assert r.status_code == 409 and "nothing is indexed" in r.json()["error"]


def test_token_is_required_but_health_is_open(server):
    import httpx
    assert httpx.get(f"{server.url}/videos").status_code == 401
    assert httpx.get(f"{server.url}/videos", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert server.client.get("/openapi.json").json()["paths"].keys() >= {"/videos", "/query", "/healthz", "/metrics"}


def test_results_appear_during_ingest_and_only_grow(server, videos):
    r = server.client.post("/videos", json={"source": str(clip("friends"))})
    assert r.status_code == 202, r.text
    vid = r.json()["id"]
    videos["friends"] = vid
    photos = refs("friends", "Joey")
    seen, partial, until = [], 0, -1.0
    deadline = time.time() + 300
    while time.time() < deadline:
        status = server.client.get(f"/videos/{vid}").json()
        r = server.query(photos, character="Joey", video=vid)
        if r.status_code == 409:  # no vector yet
            continue
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["indexed_until_s"] >= until
        until = doc["indexed_until_s"]
        shots = {h["shot"] for h in doc["results"]}
        if seen:
            assert shots >= seen[-1], (seen[-1], shots)   # results only grow
        seen.append(shots)
        if status["running"] and shots:
            partial += 1
        if not status["running"]:
            break
    assert partial >= 1, "no results were returned while the video was still being ingested"
    final = server.wait_video(vid)
    assert final["status"] == "done" and final["shots"] == 4 and final["progress"] == 1.0
    assert final["realtime_factor"] > 0 and len(final["shot_list"]) == 4
    assert len(seen) >= 3 and seen[0] < seen[-1] or len(seen[0]) < 4


def test_reposting_a_done_file_reuses_it(server, videos):
    r = server.client.post("/videos", json={"source": str(clip("friends"))})
    assert r.status_code == 200 and r.json()["reused"] and r.json()["id"] == videos["friends"]


def test_dev_clips_rank_true_shots_first(server, videos):
    for name in LABELLED[1:]:
        r = server.client.post("/videos", json={"source": str(clip(name))})
        assert r.status_code == 202, r.text
        videos[name] = r.json()["id"]
    for name in LABELLED[1:]:
        assert server.wait_video(videos[name])["status"] == "done"
    aps = {}
    for name in LABELLED:
        t = truth(name)
        for character in sorted(p.name for p in (DEV / name / "refs").iterdir()):
            r = server.query(refs(name, character), character=character, video=videos[name])
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert all(h["video"] == videos[name] for h in results)
            ranked = map_to_true(t, [(h["start_s"], h["end_s"]) for h in results])
            aps[(name, character)] = average_precision(ranked, relevant_shots(t, character))
    print({f"{k[0]}/{k[1]}": round(v, 3) for k, v in aps.items()})
    assert len(aps) == 11
    assert np.mean(list(aps.values())) >= 0.95   # measured 1.000 (see the issue note)
    assert min(aps.values()) >= 0.8


def test_every_fusion_method_answers_and_they_differ(server, videos):
    photos = refs("avenger2", "Tony") + refs("avenger2", "Steve")[:1]   # one wrong photo: fusions disagree
    answers = {}
    for method in METHODS:
        r = server.query(photos, fusion=method, video=videos["avenger2"])
        assert r.status_code == 200, (method, r.text)
        doc = r.json()
        assert doc["fusion"] == method and doc["results"]
        scores = [h["score"] for h in doc["results"]]
        assert scores == sorted(scores, reverse=True)
        answers[method] = [(h["shot"], round(h["score"], 4)) for h in doc["results"]]
    assert answers["max"] != answers["frequency"] != answers["rrf"]
    assert len({tuple(a) for a in answers.values()}) >= 5
    # limit: the preset's 50 by default, 0 = every shot found, n = the first n of the same ranking
    every = server.query(photos, limit=0).json()["results"]
    first = server.query(photos, limit=2).json()["results"]
    assert len(every) > 2 and first == every[:2]
    assert len(server.query(photos).json()["results"]) == min(50, len(every))


def test_thumbnails_and_media(server, videos):
    doc = server.query(refs("friends", "Ross"), video=videos["friends"]).json()
    first = doc["results"][0]
    r = server.client.get(first["thumbnail"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    assert image.shape[1] == 480 and image.std() > 10
    assert server.client.get(f"/shots/{videos['friends']}/0/thumbnail").status_code == 200
    r = server.client.get(f"/videos/{videos['friends']}/media", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100


def test_200_concurrent_queries_during_ingest(server, videos):
    r = server.client.post("/videos", json={"source": str(clip("testvideo"))})
    assert r.status_code == 202, r.text
    vid = r.json()["id"]
    photo_sets = [refs(c, p) for c in ("friends", "avenger2") for p in sorted(x.name for x in (DEV / c / "refs").iterdir())]
    codes, sizes, errors = [], [], []

    def client(i):
        for j in range(10):
            try:
                res = server.query(photo_sets[(i + j) % len(photo_sets)][: 1 + j % 3],
                                   fusion=("max", "rrf", "frequency")[j % 3])
                codes.append(res.status_code)
                sizes.append(len(res.json().get("results", [])))
            except Exception as exc:  # a dropped connection is a failure too
                errors.append(repr(exc))

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(client, range(20)))
    status = server.client.get(f"/videos/{vid}").json()
    assert not errors and codes == [200] * 200, (errors, codes)
    assert min(sizes) > 0
    r = server.client.delete(f"/videos/{vid}")           # stop the ingest cleanly
    assert r.status_code == (202 if status["running"] else 200)
    final = server.wait_video(vid)
    # it ran while 200 queries were answered; a stopped file keeps only its closed shots (the open one is
    # redone on resume), and on 2 busy cores the first cut may not have come yet
    assert final["status"] in ("stopped", "done") and final["frames_decoded"] > 0
    assert final["status"] == "stopped" or final["shots"] >= 1
    metrics = server.client.get("/metrics").text
    assert 'castfinder_queries_total{outcome="ok"}' in metrics and "castfinder_freshness_lag_seconds_count" in metrics


def test_bad_inputs_are_4xx_and_the_server_lives(server, videos, tmp_path):
    c = server.client
    photo = refs("friends", "Joey")[0]
    good = ("photos", (photo.name, photo.read_bytes(), "image/jpeg"))
    noface = jpeg(np.full((200, 200, 3), 127, np.uint8))
    cases = [
        (c.post("/query", files=[("photos", ("a.jpg", b"not an image", "image/jpeg"))]), 400, "not a readable image"),
        (c.post("/query", files=[("photos", ("e.jpg", b"", "image/jpeg"))]), 400, "empty"),
        (c.post("/query", files=[("photos", ("big.jpg", b"\xff" * (11 * 1024 * 1024), "image/jpeg"))]), 413, "limit"),
        (c.post("/query", files=[("photos", ("grey.jpg", noface, "image/jpeg"))], data={"features": "frame=none"}), 400, "no face"),
        (c.post("/query", files=[good], data={"video": "999"}), 404, "no video"),
        (c.post("/query", files=[good], data={"features": "face=nope"}), 400, "unknown face feature"),
        (c.post("/query", files=[good], data={"features": "face=arcface"}), 400, "not in this index"),
        (c.post("/query", files=[good], data={"fusion": "best"}), 400, "unknown fusion"),
        (c.post("/query", data={"character": "x"}), 404, "no cluster is named 'x'"),
        (c.post("/query", data={}), 400, "give photos"),
        (c.get("/videos/999"), 404, "no video"),
        (c.delete("/videos/999"), 404, "no video"),
        (c.get(f"/shots/{videos['friends']}/99/thumbnail"), 404, "no shot"),
        (c.get("/shots/999/0/thumbnail"), 404, "no video"),
        # inside a media root the reason is given; outside, one 403 whatever is there (tests/test_api_security.py)
        (c.post("/videos", json={"source": str(server.media / "missing.mp4")}), 400, "no such file"),
        (c.post("/videos", json={"source": str(server.media)}), 400, "directory"),
        (c.post("/videos", json={"source": str(tmp_path / "missing.mp4")}), 403, "not allowed"),
        (c.post("/videos", json={"source": str(tmp_path)}), 403, "not allowed"),
        (c.post("/videos", json={"source": ""}), 400, "empty"),
        (c.post("/videos", json={}), 422, "source"),
    ]
    (server.media / "notvideo.mp4").write_text("hello " * 1000)
    cases.append((c.post("/videos", json={"source": str(server.media / "notvideo.mp4")}), 400, "not a video"))
    for response, code, words in cases:
        assert response.status_code == code, (response.request.url, response.text)
        if words:
            assert words in response.json()["error"], response.text
    # a photo without a face falls back to frame features when they are indexed
    r = c.post("/query", files=[("photos", ("grey.jpg", noface, "image/jpeg"))])
    assert r.status_code == 200 and r.json()["queries"][0]["kind"] == "frame"
    assert server.alive()


def test_busy_port_is_a_clear_error(server, tmp_path):
    r = run_cli("serve", "--index", tmp_path / "idx", "--port", server.port, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot serve on 127.0.0.1" in r.stderr.strip().splitlines()[-1]


def test_cast_over_http_name_and_query_by_name(server, videos):
    vid = videos["avenger2"]
    r = server.client.get(f"/videos/{vid}/cast")
    assert r.status_code == 200, r.text
    clusters = r.json()["clusters"]
    assert len(clusters) >= 3
    sheet = server.client.get(clusters[0]["sheet"])
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/png"
    # the cluster the Tony photos fall into, named, then searched with no photos
    doc = server.query(refs("avenger2", "Tony"), video=vid, expand="true").json()
    tony = next(int(q["photo"].split(":")[1]) for q in doc["queries"] if q["photo"].startswith("cluster:"))
    r = server.client.put(f"/videos/{vid}/cast/{tony}", json={"name": "Tony Stark"})
    assert r.status_code == 200, r.text
    r = server.client.post("/query", data={"character": "Tony Stark", "video": str(vid)})
    assert r.status_code == 200, r.text
    t = truth("avenger2")
    ranked = map_to_true(t, [(h["start_s"], h["end_s"]) for h in r.json()["results"]])
    assert average_precision(ranked, relevant_shots(t, "Tony")) >= 0.99
    # bad input: a taken name, an unknown cluster, an empty name, no photos and no such name
    other = next(c["cluster"] for c in clusters if c["cluster"] != tony)
    assert server.client.put(f"/videos/{vid}/cast/{other}", json={"name": "Tony Stark"}).status_code == 409
    assert server.client.put(f"/videos/{vid}/cast/99999", json={"name": "X"}).status_code == 404
    assert server.client.put(f"/videos/{vid}/cast/{other}", json={"name": ""}).status_code == 422
    r = server.client.post("/query", data={"character": "Nobody"})
    assert r.status_code == 404 and "no cluster is named" in r.json()["error"]
    assert server.client.get("/videos/999/cast").status_code == 404
