"""Ingest throughput on a dev clip with the offline defaults: the staged pipeline vs a plain
sequential loop (decode → sample → dedup → detect → embed → index, one frame at a time, same
models), measured in one run so the ratio is fair on a noisy machine.

    python benchmarks/bench_ingest.py [--clip friends] [--repeat 1]
    python benchmarks/bench_ingest.py --vs-before [--repeat 2]   # today's default vs the previous one
    python benchmarks/bench_ingest.py --ab dark_look_luma=0.3 --clips PATH ...   # one setting on and off

--vs-before ingests the 360p dev clips with the previous default's settings (no small-face pass,
no flip-averaging, the content-only cut detector) and with today's, interleaved (A B A B ...) in
one process with the same models, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from castfinder.core.config import load_config  # noqa: E402
from castfinder.index.store import IndexStore  # noqa: E402
from castfinder.stream import metrics as M  # noqa: E402
from castfinder.stream.decode import VideoDecoder  # noqa: E402
from castfinder.stream.dedup import ConsecutiveDeduplicator  # noqa: E402
from castfinder.stream.pipeline import IngestJob, Models  # noqa: E402
from castfinder.stream.sampling import ShotSampler  # noqa: E402
from castfinder.stream.shots import FrameInShot, ShotSegmenter  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "dev"


def run_pipeline(src: str, cfg, models) -> dict:
    with tempfile.TemporaryDirectory() as d:
        store = IndexStore(d, writable=True)
        t0 = time.perf_counter()
        result = IngestJob(src, store, cfg, models).run()
        wall = time.perf_counter() - t0
        store.close()
    return {"wall_s": wall, "video_s": result.indexed_until_s, "frames": result.frames, "faces": result.faces,
            "rtf": result.indexed_until_s / wall}


def run_sequential(src: str, cfg, models) -> dict:
    with tempfile.TemporaryDirectory() as d:
        store = IndexStore(d, writable=True)
        t0 = time.perf_counter()
        dec = VideoDecoder(src, cfg.analysis_width)
        vid = store.catalogue.create_video(src, f"bench:{time.time()}", "bench", dec.info, {})
        seg = ShotSegmenter(dec.info.fps, cfg.shot_detector, cfg.shot_threshold, cfg.shot_min_len_s)
        sampler, dedup = ShotSampler(cfg.sample_fps), ConsecutiveDeduplicator(cfg.dedup_similarity, max_gap_s=cfg.dedup_max_gap_s)
        frames = faces_n = 0
        last_t = 0.0

        def process(events):
            nonlocal frames, faces_n
            for ev in events:
                if not isinstance(ev, FrameInShot):
                    continue
                if not (sampler.keep(ev.shot, ev.frame.time_s) and dedup.keep(ev.shot, ev.frame.small, ev.frame.time_s)):
                    continue
                image = ev.frame.image
                faces = models.detector.detect([image])[0]
                frame_vecs = {e.name: e.embed_frames([image])[0] for e in models.frame}
                face_vecs = {e.name: e.embed_faces(image, faces) for e in models.face}
                store.add_records(vid, [(ev.shot, ev.frame.index, ev.frame.time_s, faces, frame_vecs, face_vecs)])
                frames += 1
                faces_n += len(faces)

        for f in dec.frames():
            last_t = f.time_s
            process(seg.push(f))
        process(seg.flush())
        wall = time.perf_counter() - t0
        store.close()
    return {"wall_s": wall, "video_s": last_t, "frames": frames, "faces": faces_n, "rtf": last_t / wall}


def stage_throughput() -> dict:
    out = {}
    for metric in M.STAGE_SECONDS.collect():
        sums = {s.labels["stage"]: s.value for s in metric.samples if s.name.endswith("_sum")}
        counts = {s.labels["stage"]: s.value for s in metric.samples if s.name.endswith("_count")}
    for metric in M.STAGE_BATCH.collect():
        frames = {s.labels["stage"]: s.value for s in metric.samples if s.name.endswith("_sum")}
    for stage, busy in sums.items():
        n = frames.get(stage)
        out[stage] = {"busy_s": round(busy, 2), "batches": int(counts[stage]),
                      "frames_per_busy_s": round(n / busy, 1) if n and busy else None}
    return out


# what the default preset was before the small-face pass, flip-averaging and the new cut detector
BEFORE = {"small_face_px": 0, "face_flip": False, "face_context": False, "dark_look_luma": 0.0, "frame_vector_fps": 5.0, "dedup_max_gap_s": 0.0, "shot_detector": "content", "shot_threshold": 20.0,
          "shot_min_len_s": 0.5}
CLIPS_360P = ["friends", "herapheri", "testvideo"]


def vs_before(config: str, repeat: int, overrides: dict | None = None, ab: dict | None = None,
              clips: list[str] | None = None) -> None:
    """ab: compare the preset without and with these settings instead of the previous default."""
    import dataclasses
    now = load_config(config, {"ingest": overrides} if overrides else None).ingest
    if ab:
        before, now = now, dataclasses.replace(now, **ab)
    else:
        before = dataclasses.replace(now, **{k: v for k, v in BEFORE.items() if hasattr(now, k)})
    models = {"before": Models(before), "now": Models(now)}
    cfgs = {"before": before, "now": now}
    paths = [c if Path(c).is_file() else str(DATA / c / "video.mp4") for c in (clips or CLIPS_360P)]
    run_pipeline(str(DATA / "avenger2" / "video.mp4"), now, models["now"])  # warm-up
    totals = {k: {"video_s": 0.0, "wall_s": 0.0, "faces": 0} for k in cfgs}
    rows = []
    for r in range(repeat):
        for clip in paths:
            for key in (("before", "now") if r % 2 == 0 else ("now", "before")):
                res = run_pipeline(clip, cfgs[key], models[key])
                for k in ("video_s", "wall_s", "faces"):
                    totals[key][k] += res[k]
                rows.append({"run": r, "clip": clip, "preset": key, **{k: round(v, 3) for k, v in res.items()}})
                print(f"run {r} {clip:10s} {key:6s} {res['rtf']:.2f}x real time, {res['faces']} faces", flush=True)
    rtf = {k: t["video_s"] / t["wall_s"] for k, t in totals.items()}
    print(json.dumps({"runs": rows, "totals": totals}, indent=1))
    names = ", ".join(Path(c).parent.name for c in paths)
    what = f"without / with {ab}" if ab else "before / now"
    print(f"\n{what}, clips ({names}), {repeat} run(s) each: before {rtf['before']:.2f}x, "
          f"now {rtf['now']:.2f}x real time; now / before = {rtf['now'] / rtf['before']:.2f} "
          f"(faces {totals['before']['faces']} -> {totals['now']['faces']})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="friends")
    ap.add_argument("--config", default="default")
    ap.add_argument("--vs-before", action="store_true", help="today's default vs the previous default, side by side")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --vs-before: an ingest setting for 'now', e.g. small_face_probe_every=2 (YAML value)")
    ap.add_argument("--ab", action="append", default=[], metavar="KEY=VALUE",
                    help="the preset without and with this ingest setting, interleaved (instead of the previous default)")
    ap.add_argument("--clips", nargs="+", help="with --vs-before / --ab: dev clip names or video paths (default: the 360p dev clips)")
    args = ap.parse_args()
    if args.vs_before or args.ab:
        import yaml
        parse = lambda items: {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in items)}  # noqa: E731
        return vs_before(args.config, args.repeat, parse(args.set), parse(args.ab), args.clips)
    cfg = load_config(args.config).ingest
    src = str(DATA / args.clip / "video.mp4")
    models = Models(cfg)
    run_pipeline(str(DATA / "herapheri" / "video.mp4"), cfg, models)  # warm-up: lazy inits, caches
    pipe = run_pipeline(src, cfg, models)
    stages = stage_throughput()
    seq = run_sequential(src, cfg, models)
    report = {"clip": args.clip, "pipeline": pipe, "sequential": seq,
              "pipeline_vs_sequential": pipe["rtf"] / seq["rtf"], "stages_including_warmup": stages}
    print(json.dumps(report, indent=1))
    print(f"\n{args.clip}: pipeline {pipe['rtf']:.2f}x real time, sequential loop {seq['rtf']:.2f}x; "
          f"ratio {report['pipeline_vs_sequential']:.2f}")


if __name__ == "__main__":
    main()
