"""Query latency on a 200k-vector index, the cold first query, and the freshness lag.

1. Index: the friends clip's real dlib face vectors, each repeated with noise into a synthetic
   film of 100k frames x 2 faces = 200k vectors (real write path: catalogue + FAISS).
2. Search + fusion latency for 5 photos (Joey x3, Ross x2; photo face detection excluded), p50/p95
   over repeated runs, for flat / HNSW / IVF indexes and max / frequency / rrf fusion.
3. Cold first query: a fresh process's first ranx fusion (what warm-up saves), and the first query
   a fresh `castfinder serve` answers after it reports ready.
4. Freshness lag (frame decoded → searchable): a file ingested flat out, and a live MPEG-TS stream
   fed at real-time pace through stdin.

    python benchmarks/bench_query.py [--vectors 200000] [--runs 50] [--out out/bench-query.json]
    python benchmarks/bench_query.py --only-freshness     # part 4 alone, also on avenger2
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
DEV = ROOT.parent / "shared" / "data" / "dev"


def build_index(directory: Path, n_vectors: int, real: np.ndarray, seed: int = 0) -> None:
    from castfinder.index.store import IndexStore
    from castfinder.models.base import Face

    rng = np.random.default_rng(seed)
    store = IndexStore(directory, writable=True)
    from castfinder.core.config import load_config
    from castfinder.stream.decode import SourceInfo
    info = SourceInfo("synthetic", False, n_vectors / 2 / 5.0, 25.0, 640, 360, 640, 360)
    vid = store.catalogue.create_video("synthetic", "synthetic", "synthetic film", info, {})
    frames, faces_per_frame, per_shot = n_vectors // 2, 2, 50
    face = Face(np.array([100, 100, 180, 180], np.float32), np.zeros((5, 2), np.float32), 0.99)
    for start in range(0, frames, 2000):
        records = []
        for f in range(start, min(frames, start + 2000)):
            shot = f // per_shot
            if f % per_shot == 0:
                store.catalogue.open_shot(vid, shot, f * 5, f / 5.0)
            base = real[rng.integers(0, len(real), faces_per_frame)]
            vecs = base + rng.normal(0, 0.035, base.shape).astype(np.float32)  # cos ~0.93 to the original
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            records.append((shot, f * 5, f / 5.0, [face] * faces_per_frame, {}, {"dlib-resnet": vecs}))
        store.add_records(vid, records)
    store.catalogue.update_video(vid, status="done", indexed_until_s=frames / 5.0)
    store.close()


def percentiles(samples: list[float]) -> dict:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "max_ms": round(float(a.max()), 2), "runs": len(a)}


def latency(index_dir: Path, queries, runs: int) -> dict:
    from castfinder.index.search import search_shots
    from castfinder.index.store import IndexStore
    from castfinder.index.vector_store import FeatureIndex
    from castfinder.index.fusion import warm_up

    warm_up()
    out = {}
    for kind in ("flat", "hnsw", "ivf"):
        store = IndexStore(index_dir)
        t0 = time.perf_counter()
        fi = FeatureIndex(index_dir / "faiss" / f"bench-{kind}.index", 128, kind, load=False)
        for ids, vecs in store.catalogue.vectors_after("dlib-resnet", -1):
            fi.add(ids, vecs)
        build_s = time.perf_counter() - t0
        store.features["dlib-resnet"] = fi
        exact = None
        for fusion in ("max", "frequency", "rrf"):
            search_shots(store, queries, top_k=5000, fusion=fusion)  # first run fills the vector map
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                hits = search_shots(store, queries, top_k=5000, fusion=fusion, limit=50)
                times.append(time.perf_counter() - t0)
            out[f"{kind}/{fusion}"] = percentiles(times)
            if fusion == "max":
                top = [(h.video_id, h.shot) for h in hits[:20]]
                out[f"{kind}/build_s"] = round(build_s, 1)
                if kind == "flat":
                    exact = top
                    out["flat_top20"] = top
                else:
                    out[f"{kind}/top20_overlap_with_flat"] = len(set(top) & set(out["flat_top20"])) / 20
        print(kind, {k: v for k, v in out.items() if k.startswith(kind)}, flush=True)
    out.pop("flat_top20", None)
    return out


def cold_fusion_subprocess() -> dict:
    code = ("import time,sys; sys.path.insert(0,'.'); t=time.perf_counter(); from index.fusion import fuse; "
            "fuse([{(0,0):1.0,(0,1):0.5},{(0,1):0.9}], 'rrf'); a=time.perf_counter()-t; t=time.perf_counter(); "
            "fuse([{(0,0):1.0,(0,1):0.5},{(0,1):0.9}], 'rrf'); print(a, time.perf_counter()-t)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    first, second = map(float, r.stdout.split())
    return {"first_rrf_fusion_fresh_process_s": round(first, 3), "second_rrf_fusion_s": round(second, 4)}


def cold_query_server(index_dir: Path, photos: list[Path]) -> dict:
    from service_helpers import Server
    t0 = time.perf_counter()
    srv = Server(index_dir)
    ready = time.perf_counter() - t0
    times = []
    try:
        for i in range(3):
            t = time.perf_counter()
            r = srv.query(photos[:5], fusion="rrf")
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    finally:
        srv.stop()
    return {"server_ready_s": round(ready, 1), "first_query_s": round(times[0], 3),
            "next_queries_s": [round(t, 3) for t in times[1:]]}


def freshness_file(clip: Path) -> dict:
    from castfinder.core.config import load_config
    from castfinder.index.store import IndexStore
    from castfinder.stream import metrics as M
    from castfinder.stream.pipeline import IngestJob, Models

    cfg = load_config("default").ingest
    lags = []
    observe = M.FRESHNESS_SECONDS.observe
    M.FRESHNESS_SECONDS.observe = lambda v: lags.append(v)
    try:
        models = Models(cfg)
        for src in (DEV / "herapheri" / "video.mp4", clip):  # the first run warms the models up, like serve does
            lags.clear()
            with tempfile.TemporaryDirectory() as d:
                store = IndexStore(d, writable=True)
                result = IngestJob(str(src), store, cfg, models).run()
                store.close()
    finally:
        M.FRESHNESS_SECONDS.observe = observe
    return {"realtime_factor": round(result.realtime_factor, 2), **lag_stats(lags),
            "frames_per_batch": round(result.frames / len(lags), 2)}


def lag_stats(lags) -> dict:
    a = np.array(lags)
    return {"lag_p50_s": round(float(np.median(a)), 2), "lag_p95_s": round(float(np.percentile(a, 95)), 2),
            "lag_max_s": round(float(a.max()), 2), "batches": len(a)}


def freshness_live(clip: Path) -> dict:
    """The CLI ingesting stdin, fed at real-time pace; lags read back from its /metrics buckets."""
    from test_live import remux_to_ts
    from service_helpers import free_port
    import httpx

    with tempfile.TemporaryDirectory() as d:
        ts = Path(d) / "live.ts"
        remux_to_ts(clip, ts)
        data = ts.read_bytes()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "castfinder", "ingest", "-", "--index", f"{d}/idx",
                                 "--metrics-port", str(port)], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(12)  # model loading: the feed starts when the ingest is ready, like a live camera already running
        chunk = len(data) // 60
        for i in range(0, len(data), chunk):  # ~15 s of video over ~15 s
            proc.stdin.write(data[i:i + chunk])
            proc.stdin.flush()
            time.sleep(0.25)
        time.sleep(5)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    buckets = [(float(le), float(v)) for le, v in
               re.findall(r'castfinder_freshness_lag_seconds_bucket\{le="([0-9.e+]+)"\} ([0-9.e+]+)', text)]
    count = float(re.search(r"castfinder_freshness_lag_seconds_count ([0-9.e+]+)", text).group(1))
    total = float(re.search(r"castfinder_freshness_lag_seconds_sum ([0-9.e+]+)", text).group(1))
    within = {f"share_within_{le:g}s": round(v / count, 3) for le, v in buckets if le in (1.0, 2.0, 3.0)}
    return {"batches": int(count), "lag_mean_s": round(total / count, 2), **within}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench-query.json"))
    ap.add_argument("--only-freshness", action="store_true", help="skip the 200k-vector latency and cold runs")
    args = ap.parse_args()
    if args.only_freshness:
        report = {"freshness_file_flat_out": freshness_file(DEV / "friends" / "video.mp4"),
                  "freshness_file_flat_out_avenger2": freshness_file(DEV / "avenger2" / "video.mp4"),
                  "freshness_live_realtime": freshness_live(DEV / "friends" / "video.mp4")}
        print(json.dumps(report, indent=1))
        return

    from castfinder.core.config import load_config
    from castfinder.index.search import photo_vectors
    from castfinder.index.store import IndexStore
    from castfinder.models.photo import load_photo
    from castfinder.stream.pipeline import IngestJob, Models

    report = {}
    cfg = load_config("default").ingest
    models = Models(cfg)
    work = Path(tempfile.mkdtemp(prefix="bench-query-"))
    store = IndexStore(work / "friends", writable=True)
    IngestJob(str(DEV / "friends" / "video.mp4"), store, cfg, models).run()
    real = np.concatenate([v for _, v in store.catalogue.vectors_after("dlib-resnet", -1)])
    store.close()
    photos = sorted((DEV / "friends" / "refs" / "Joey").iterdir()) + sorted((DEV / "friends" / "refs" / "Ross").iterdir())[:2]
    queries = photo_vectors([(str(p), load_photo(p)) for p in photos], models.detector, models.face[0], None)
    print(f"{len(real)} real face vectors; {len(queries)} query vectors", flush=True)

    t0 = time.perf_counter()
    build_index(work / "big", args.vectors, real)
    report["index"] = {"vectors": args.vectors, "feature": "dlib-resnet (128-d)",
                       "build_s": round(time.perf_counter() - t0, 1)}
    print("built", report["index"], flush=True)
    report["latency_5_photos_top5000"] = latency(work / "big", queries, args.runs)
    report["cold"] = cold_fusion_subprocess()
    report["cold"].update(cold_query_server(work / "big", photos))
    print("cold", report["cold"], flush=True)
    report["freshness_file_flat_out"] = freshness_file(DEV / "friends" / "video.mp4")
    print("freshness file", report["freshness_file_flat_out"], flush=True)
    report["freshness_live_realtime"] = freshness_live(DEV / "friends" / "video.mp4")
    print("freshness live", report["freshness_live_realtime"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
