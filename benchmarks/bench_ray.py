"""Ray ingest scaling: N copies of the dev and devhard clips ingested into a sharded index by 1, 2, 4
and 8 workers (castfinder ingest --ray, one model thread each, each worker pinned to that many cores
unless --no-pin), throughput and scaling efficiency.

    python benchmarks/bench_ray.py --workers 1 2 [--copies 2] [--clips friends,herapheri] [--sets dev,devhard]
    bash benchmarks/ray_scaling.sh            # the 16-core machine: 1, 2, 4, 8 CPU workers

Copies are symlinks in a temporary folder (a source's identity is its path, so each copy is its own
video; no media is copied). Films are handed out longest first. Each worker count runs its own job
on a fresh local Ray instance (--address for a running cluster) into a fresh index.

Throughput = video seconds / wall seconds of the ingest span: from the first film's start to the last
film's end on the workers (Ray and model start-up excluded; the job's whole wall time is shown too).
Efficiency = throughput(n) / (n x throughput(1)). CPU s / video s: the workers' CPU time (all their
threads) per video second; cores busy: their CPU time over the span (how many cores the job kept
busy: n workers need n times one worker's share). The machine's load average (1 min, before/after)
is printed with each row: other work on the cores depresses the numbers."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("CASTFINDER_DATA", ROOT.parent / "shared" / "data"))


def find_clips(sets: list[str], names: list[str] | None) -> list[Path]:
    out = []
    for s in sets:
        for folder in sorted((DATA / s).iterdir()):
            if (folder / "video.mp4").is_file() and (not names or folder.name in names):
                out.append(folder / "video.mp4")
    return out


def duration(path: Path) -> float:
    import av
    with av.open(str(path)) as c:
        return float(c.duration / 1e6)


def copies_of(clips: list[Path], copies: int, folder: Path) -> list[str]:
    """copies x clips as symlinks, longest film first (so the last films of a job are the short ones)."""
    lengths = {c: duration(c) for c in clips}
    links = []
    for k in range(copies):
        for c in clips:
            link = folder / f"copy{k}_{c.parent.parent.name}_{c.parent.name}.mp4"
            link.symlink_to(c)
            links.append((lengths[c], str(link)))
    return [p for _, p in sorted(links, key=lambda t: -t[0])]


def run(sources: list[str], workers: int, args) -> dict:
    from castfinder.core.config import load_config
    from castfinder.ray_ingest import ingest_on_ray
    cfg = load_config(args.config)
    cfg.ingest.device = args.device
    load_before = os.getloadavg()[0]
    # Ray prints its workers' messages on stdout: they go to stderr, the table alone to stdout
    with tempfile.TemporaryDirectory(prefix="cf_bench_ray_") as index, contextlib.redirect_stdout(sys.stderr):
        t0 = time.monotonic()
        doc = ingest_on_ray(sources, index, cfg, address=args.address, workers=workers, threads=args.threads,
                            pin=args.pin,
                            progress_every_s=30.0)
        wall = time.monotonic() - t0
    if doc["failed"]:
        raise SystemExit(f"{len(doc['failed'])} films failed: {doc['failed'][:2]}")
    films = doc["videos"]
    span = max(v["ended_at"] for v in films) - min(v["began_at"] for v in films)
    video = sum(v["indexed_until_s"] for v in films)
    cpu = sum(v["cpu_s"] for v in films)
    return {"workers": workers, "films": len(films), "video_s": round(video, 1), "job_wall_s": round(wall, 1),
            "span_s": round(span, 1), "throughput": round(video / span, 3),
            "cpu_per_video_s": round(cpu / video, 3), "cores_busy": round(cpu / span, 2),
            "workers_up": len(doc["workers"]), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--threads", type=int, default=1, help="model threads per worker (default 1)")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="each worker held to --threads cores (ingest --ray-pin; default on: a worker uses the CPUs "
                         "Ray reserved for it, so N workers on N cores is N times one worker's share)")
    ap.add_argument("--copies", type=int, default=2, help="copies of each clip (default 2)")
    ap.add_argument("--sets", default="dev,devhard", help="clip sets under the data folder (default dev,devhard)")
    ap.add_argument("--clips", help="only these clips (names, comma-separated)")
    ap.add_argument("--address", default="local", help="Ray address (default: a fresh local instance per run)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="worker device (default cpu)")
    ap.add_argument("--config", default="default")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    clips = find_clips(args.sets.split(","), args.clips.split(",") if args.clips else None)
    if not clips:
        raise SystemExit(f"no clips found under {DATA} for sets {args.sets}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cf_bench_links_") as links:
        sources = copies_of(clips, args.copies, Path(links))
        print(f"{len(sources)} films ({len(clips)} clips x {args.copies}), {args.threads} model thread(s) per worker, "
              f"{'each pinned to as many cores' if args.pin else 'unpinned'}, {os.cpu_count()} cores", file=sys.stderr)
        for n in args.workers:
            rows.append(run(sources, n, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = next((r["throughput"] for r in rows if r["workers"] == 1), None)
    print(f"\n{'workers':>7}  {'films':>5}  {'video s':>8}  {'span s':>7}  {'job s':>6}  {'video s/s':>9}  "
          f"{'speed-up':>8}  {'efficiency':>10}  {'cpu s/video s':>13}  {'cores busy':>10}  {'load':>9}")
    for r in rows:
        up = r["throughput"] / base if base else float("nan")
        r["speedup"], r["efficiency"] = round(up, 3), round(up / r["workers"], 3)
        print(f"{r['workers']:>7}  {r['films']:>5}  {r['video_s']:>8.1f}  {r['span_s']:>7.1f}  {r['job_wall_s']:>6.1f}  "
              f"{r['throughput']:>9.2f}  {up:>7.2f}x  {up / r['workers']:>10.2f}  {r['cpu_per_video_s']:>13.2f}  "
              f"{r['cores_busy']:>10.2f}  {r['load_before']:>4.1f}/{r['load_after']:<4.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
