"""Many streams in one process on shared detect/embed stages (stream/shared_stages.py): aggregate and
per-stream real-time factor, batch fill, sources per detector call, decode-to-searchable lag (p95 per
stream), peak RSS, and GPU utilisation and memory (NVML) where there is a GPU.

Streams are the dev clips scaled to --height and looped to --seconds, encoded (H.264) on the fly into a
temporary folder (never committed); stream i is clip i mod the number of clips, as its own file and its
own video. Each stream count N runs twice, in one process with the same models: together on the shared
stages, and "alone": the same N streams one after another through the ordinary single-source pipeline
(its own stages), the yardstick. --rounds repeats the whole set interleaved (alone 1, 1, alone 2, 2, ...),
so a busy machine slows both alike.

    python benchmarks/bench_streams.py                         # 1, 2, 4 sources at 360p, 2 rounds
    python benchmarks/bench_streams.py --many                  # and 8, 16
    python benchmarks/bench_streams.py --sources 16 --height 1080 --rounds 1   # the GPU machine
    writes OUT/bench_streams.json and OUT/bench_streams.png (--out, default out/bench_streams)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:  # installed (pip install -e ., or gpu_streams.sh's copy): use that
    import castfinder.stream  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from castfinder.core.config import load_config  # noqa: E402
from castfinder.index.store import IndexStore  # noqa: E402
from castfinder.stream import metrics as M  # noqa: E402
from castfinder.stream.pipeline import Batch, IngestJob, Models  # noqa: E402
from castfinder.stream.shared_stages import SharedStages  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "dev"
CLIPS = ["friends", "avenger2", "herapheri", "billhyland", "testvideo"]


# --- the streams -------------------------------------------------------------------------------------
def make_clip(src: Path, dst: Path, height: int, seconds: float) -> Path:
    """`src` scaled to `height` (even width, same aspect) and looped to `seconds`, as H.264."""
    import av
    with av.open(str(src)) as probe:
        s = probe.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        width = int(round(s.codec_context.width * height / s.codec_context.height / 2)) * 2
    total = int(round(seconds * float(rate)))
    tmp = dst.with_suffix(".part.mp4")
    n = 0
    with av.open(str(tmp), "w") as out:
        enc = out.add_stream("libx264", rate=rate)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.options = {"preset": "veryfast", "crf": "23"}
        while n < total:
            with av.open(str(src)) as inp:
                for frame in inp.decode(video=0):
                    if n >= total:
                        break
                    f = frame.reformat(width=width, height=height, format="yuv420p")
                    f.pts, f.time_base = n, 1 / Fraction(rate)
                    for packet in enc.encode(f):
                        out.mux(packet)
                    n += 1
        for packet in enc.encode():
            out.mux(packet)
    os.replace(tmp, dst)
    return dst


def make_streams(n: int, clips: list[str], height: int, seconds: float, folder: Path, data: Path) -> list[Path]:
    """n stream files: one encode per clip used, then a hard link per further stream (its own path,
    so its own video)."""
    folder.mkdir(parents=True, exist_ok=True)
    used = [clips[i % len(clips)] for i in range(n)]
    encoded = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(len(set(used)), os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(make_clip, data / name / "video.mp4", folder / f"{name}_{height}p_{seconds:g}s.mp4",
                                     height, seconds)
                   for name in dict.fromkeys(used) if not (folder / f"{name}_{height}p_{seconds:g}s.mp4").exists()}
        for name, fut in futures.items():
            fut.result()
    for name in dict.fromkeys(used):
        encoded[name] = folder / f"{name}_{height}p_{seconds:g}s.mp4"
    paths = []
    for i, name in enumerate(used):
        p = folder / f"stream{i:02d}_{name}.mp4"
        if not p.exists():
            os.link(encoded[name], p)
        paths.append(p)
    return paths


# --- measuring ---------------------------------------------------------------------------------------
ROLES = (("cf-source", "decode+shots"), ("cf-shared-detect", "detect"), ("cf-detect", "detect"),
         ("cf-shared-embed", "embed"), ("cf-embed", "embed"), ("cf-writer", "write"))


def _thread_cpu() -> dict[tuple[int, int], float]:
    """CPU seconds of each thread of this process (Linux /proc), by (native thread id, start time): a
    thread id is reused once its thread has ended."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[(int(tid), int(fields[19]))] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return out


class Sampler:
    """Every 0.1 s while a run goes: RSS (peak), NVML utilisation / memory, and each thread's CPU time,
    so the run's CPU can be told by role (decode and shot cutting, detect, embed, write, native threads
    of FFmpeg/BLAS) — the profile that says where a slower run spends its time."""

    def __init__(self):
        self.peak_rss = 0
        self.gpu_util: list[float] = []
        self.gpu_mem_peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._base = _thread_cpu()
        self._last: dict[tuple, float] = {}
        self._role: dict[tuple, str] = {}
        self._cpu0 = time.process_time()
        self.cpu_s = 0.0

    def _sample_threads(self):
        names = {t.native_id: t.name for t in threading.enumerate()}
        for key, cpu in _thread_cpu().items():
            self._last[key] = cpu
            name = names.get(key[0])
            if key not in self._role and name is not None:  # a new thread may show here before Python names it
                self._role[key] = next((role for prefix, role in ROLES if name.startswith(prefix)), "other")

    def cpu_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, cpu in self._last.items():
            role = self._role.get(key, "native")
            out[role] = round(out.get(role, 0.0) + cpu - self._base.get(key, 0.0), 2)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def _loop(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            self._sample_threads()
            try:
                with open("/proc/self/statm") as f:
                    self.peak_rss = max(self.peak_rss, int(f.read().split()[1]) * page)
            except OSError:
                pass
            for g in M.gpu_snapshot():
                self.gpu_util.append(g["utilization"])
                self.gpu_mem_peak = max(self.gpu_mem_peak, g["memory_used"])
            self._stop.wait(0.1)  # a thread's CPU after its last sample is lost: keep that short

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._sample_threads()
        self.cpu_s = time.process_time() - self._cpu0


def _watch_lag(job: IngestJob, lags: list) -> None:
    """Record decode → searchable (committed and in FAISS) for each of the job's batches, as the
    freshness metric does, but per stream."""
    write = job._write_item

    def write_item(item):
        write(item)
        if isinstance(item, Batch) and item.records:
            lags.append(time.monotonic() - item.decoded_at)
    job._write_item = write_item


def run_alone(paths: list[Path], cfg, models, index_dir: Path) -> dict:
    """The yardstick: the same streams ingested one after another, each by the ordinary single-source
    pipeline (its own stages). Aggregate = all their video over all their wall time."""
    parts = [run_once([p], cfg, models, False, index_dir / f"s{i}") for i, p in enumerate(paths)]
    wall = sum(r["wall_s"] for r in parts)
    video = sum(r["video_s"] for r in parts)
    streams = [r["streams"][0] for r in parts]
    return {**parts[0], "sources": len(paths), "wall_s": round(wall, 2), "video_s": round(video, 2),
            "aggregate_rtf": round(video / wall, 3), "min_stream_rtf": min(s["rtf"] for s in streams),
            "mean_stream_rtf": round(statistics.mean(s["rtf"] for s in streams), 3),
            "lag_p95_s": max(r["lag_p95_s"] for r in parts), "peak_rss_mb": max(r["peak_rss_mb"] for r in parts),
            "cpu_s": round(sum(r["cpu_s"] for r in parts), 1),
            "cpu_per_video_s": round(sum(r["cpu_s"] for r in parts) / max(1e-9, video), 3),
            "cores_busy": round(sum(r["cpu_s"] for r in parts) / wall, 2),
            "cpu_by_role": {k: round(sum(r["cpu_by_role"].get(k, 0.0) for r in parts), 2)
                            for k in {k for r in parts for k in r["cpu_by_role"]}},
            "errors": sum(r["errors"] for r in parts), "streams": streams}


def _trim_heap() -> None:
    """Give freed heap back to the system before a run, so its peak RSS is its own: glibc keeps what
    earlier runs' threads freed (no Python object outlives a run; malloc_trim returns it)."""
    try:
        import ctypes
        import gc
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def run_once(paths: list[Path], cfg, models, shared: bool, index_dir: Path) -> dict:
    _trim_heap()
    store = IndexStore(index_dir, writable=True, kind=cfg.ingest.index_kind)
    jobs = [IngestJob(str(p), store, cfg.ingest, models, cast=cfg.cast) for p in paths]
    lags = [[] for _ in jobs]
    for job, lag in zip(jobs, lags):
        _watch_lag(job, lag)
    stages = SharedStages(models, cfg.ingest) if shared else None
    finished, results, errors = {}, {}, {}

    def run(i, job):
        try:
            results[i] = job.run(stages=stages)
        except BaseException as exc:  # noqa: BLE001 - reported in the table
            errors[i] = f"{type(exc).__name__}: {exc}"
        finished[i] = time.monotonic()

    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        torch = None
    threads = [threading.Thread(target=run, args=(i, job), name=f"cf-writer-{i}", daemon=True)
               for i, job in enumerate(jobs)]
    with Sampler() as sampler:
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = max(finished.values()) - t0
    if stages is not None:
        stages.close()
    store.close()
    streams = []
    for i, p in enumerate(paths):
        r = results.get(i)
        video_s = r.indexed_until_s if r else 0.0
        lag = lags[i]
        streams.append({"stream": p.name, "video_s": round(video_s, 2), "wall_s": round(finished[i] - t0, 2),
                        "rtf": round(video_s / (finished[i] - t0), 3), "frames": r.frames if r else 0,
                        "faces": r.faces if r else 0, "lag_p95_s": round(float(np.percentile(lag, 95)), 3) if lag else None,
                        "error": errors.get(i)})
    torch_peak = torch.cuda.max_memory_allocated() if torch is not None and torch.cuda.is_available() else None
    return {"sources": len(paths), "shared": shared, "wall_s": round(wall, 2),
            "video_s": round(sum(s["video_s"] for s in streams), 2),
            "aggregate_rtf": round(sum(s["video_s"] for s in streams) / wall, 3),
            "min_stream_rtf": min(s["rtf"] for s in streams), "mean_stream_rtf": round(statistics.mean(s["rtf"] for s in streams), 3),
            "batch_fill": round(stages.batch_fill, 3) if stages else None,
            "max_batch": stages.max_frames if stages else None,
            "sources_per_call": round(stages.sources_per_call / stages.calls, 2) if stages and stages.calls else None,
            "lag_p95_s": max((s["lag_p95_s"] or 0) for s in streams),
            "peak_rss_mb": round(sampler.peak_rss / 2**20), "gpu_util_mean": round(statistics.mean(sampler.gpu_util), 3)
            if sampler.gpu_util else None, "gpu_mem_peak_mb": round(sampler.gpu_mem_peak / 2**20) if sampler.gpu_mem_peak else None,
            "torch_mem_peak_mb": round(torch_peak / 2**20) if torch_peak else None,
            "cpu_s": round(sampler.cpu_s, 1),
            "cpu_per_video_s": round(sampler.cpu_s / max(1e-9, sum(s["video_s"] for s in streams)), 3),
            "cores_busy": round(sampler.cpu_s / wall, 2), "cpu_by_role": sampler.cpu_by_role(),
            "errors": len(errors), "streams": streams}


# --- output ------------------------------------------------------------------------------------------
def table(runs: list[dict]) -> str:
    head = (f"{'sources':>8} {'round':>5} {'wall s':>7} {'video s':>8} {'aggr RTF':>8} {'min RTF':>7} {'mean RTF':>8} "
            f"{'fill':>5} {'src/call':>8} {'lag p95':>7} {'CPU/vid s':>9} {'cores':>5} {'RSS MB':>7} {'GPU util':>8} "
            f"{'GPU MB':>7} {'err':>3}")
    lines = [head, "-" * len(head)]
    for r in runs:
        name = f"{r['sources']}{'' if r['shared'] else ' alone'}"  # alone: one after another
        f = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        lines.append(f"{name:>8} {r['round']:>5} {r['wall_s']:>7.1f} {r['video_s']:>8.1f} {r['aggregate_rtf']:>8.2f} "
                     f"{r['min_stream_rtf']:>7.2f} {r['mean_stream_rtf']:>8.2f} {f(r['batch_fill'], '.2f'):>5} "
                     f"{f(r['sources_per_call'], '.2f'):>8} {f(r['lag_p95_s'], '.2f'):>7} {r['cpu_per_video_s']:>9.3f} "
                     f"{r['cores_busy']:>5.2f} {r['peak_rss_mb']:>7} "
                     f"{f(r['gpu_util_mean'], '.0%'):>8} {f(r['gpu_mem_peak_mb'], 'd'):>7} {r['errors']:>3}")
    return "\n".join(lines)


def summary(runs: list[dict]) -> list[str]:
    """Each stream count together against the same streams alone, one after another, in the same round:
    by wall time (what a user sees; on a shared machine, noisy) and by CPU time per video second (what
    the work costs, much less sensitive to the other load)."""
    out = []
    for r in runs:
        base = [b for b in runs if b["round"] == r["round"] and b["sources"] == r["sources"] and not b["shared"]]
        if r["shared"] and base:
            b = base[0]
            out.append(f"round {r['round']}: {r['sources']} together {r['aggregate_rtf']:.2f}x real time = "
                       f"{r['aggregate_rtf'] / b['aggregate_rtf']:.2f} x the same streams alone one after another "
                       f"({b['aggregate_rtf']:.2f}x); CPU per video s {r['cpu_per_video_s']:.3f} vs {b['cpu_per_video_s']:.3f} "
                       f"({b['cpu_per_video_s'] / r['cpu_per_video_s']:.2f}x the work rate)")
    return out


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shared = [r for r in runs if r["shared"]]
    alone = [r for r in runs if not r["shared"]]
    ns = sorted({r["sources"] for r in shared})
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), dpi=100)
    ax = axes[0]
    ax.scatter([r["sources"] for r in shared], [r["aggregate_rtf"] for r in shared], color="#1f6feb", alpha=0.5, s=18)
    ax.plot(ns, [statistics.mean(r["aggregate_rtf"] for r in shared if r["sources"] == n) for n in ns], "-o",
            color="#1f6feb", label="aggregate (shared stages)")
    ax.plot(ns, [statistics.mean(r["min_stream_rtf"] for r in shared if r["sources"] == n) for n in ns], "-s",
            color="#d1242f", label="slowest stream")
    if alone:
        na = sorted({r["sources"] for r in alone})
        ax.plot(na, [statistics.mean(r["aggregate_rtf"] for r in alone if r["sources"] == n) for n in na], "--o",
                color="grey", label="the same streams alone, one after another")
    ax.axhline(1.0, color="black", lw=0.8, ls=":", label="real time")
    ax.set(xlabel="sources", ylabel="video s per wall s", title="throughput", xscale="log", xticks=ns)
    ax.minorticks_off()
    ax.set_xticklabels([str(n) for n in ns])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(ns, [statistics.mean(r["batch_fill"] for r in shared if r["sources"] == n) for n in ns], "-o",
            label="batch fill (frames / max)")
    ax2 = ax.twinx()
    ax2.plot(ns, [statistics.mean(r["sources_per_call"] or 0 for r in shared if r["sources"] == n) for n in ns], "-s",
             color="#8250df", label="sources per detect call")
    ax.set(xlabel="sources", ylabel="batch fill", ylim=(0, 1.05), title="shared model calls", xscale="log", xticks=ns)
    ax.minorticks_off()
    ax.set_xticklabels([str(n) for n in ns])
    ax2.set_ylabel("sources per call")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(ns, [statistics.mean(r["peak_rss_mb"] for r in shared if r["sources"] == n) for n in ns], "-o", label="peak RSS MB")
    lag = [statistics.mean(r["lag_p95_s"] for r in shared if r["sources"] == n) for n in ns]
    ax3 = ax.twinx()
    ax3.plot(ns, lag, "-s", color="#bf8700", label="decode→searchable p95 s (worst stream)")
    gpu = [r for r in shared if r["gpu_mem_peak_mb"]]
    if gpu:
        ax.plot(ns, [statistics.mean(r["gpu_mem_peak_mb"] or 0 for r in shared if r["sources"] == n) for n in ns], "-^",
                label="GPU memory MB (NVML)")
    ax.set(xlabel="sources", ylabel="MB", title="memory and lag", xscale="log", xticks=ns)
    ax.minorticks_off()
    ax.set_xticklabels([str(n) for n in ns])
    ax3.set_ylabel("s")
    ax.legend(loc="upper left", fontsize=8)
    ax3.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[3]  # the work itself: CPU per video second hardly depends on what else loads the machine
    ax.plot(ns, [statistics.mean(r["cpu_per_video_s"] for r in shared if r["sources"] == n) for n in ns], "-o",
            color="#1f6feb", label="together (shared stages)")
    if alone:
        ax.plot(na, [statistics.mean(r["cpu_per_video_s"] for r in alone if r["sources"] == n) for n in na], "--o",
                color="grey", label="alone, one after another")
    ax.set(xlabel="sources", ylabel="CPU s per video s", title="work per video second", xscale="log", xticks=ns,
           ylim=(0, None))
    ax.minorticks_off()
    ax.set_xticklabels([str(n) for n in ns])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=int, nargs="+", default=[1, 2, 4], help="stream counts (default 1 2 4)")
    ap.add_argument("--many", action="store_true", help="add 8 and 16 streams")
    ap.add_argument("--height", type=int, default=360, help="stream height (default 360; 1080 on a GPU machine)")
    ap.add_argument("--seconds", type=float, default=30.0, help="video seconds per stream (clips looped; default 30)")
    ap.add_argument("--clips", nargs="+", default=CLIPS)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--config", default="default")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=2, help="repeat the whole set, interleaved (default 2)")
    ap.add_argument("--alone", choices=["each", "one", "none"], default="each",
                    help="yardstick: each stream count also run alone, one stream after another (each, default), "
                         "only one stream alone per round (one), or none")
    ap.add_argument("--media", type=Path, help="keep the made streams here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench_streams")
    args = ap.parse_args()
    counts = sorted(set(args.sources + ([8, 16] if args.many else [])))
    overrides = {"ingest": {"device": args.device}} if args.device else None
    cfg = load_config(args.config, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    media = args.media or Path(tempfile.mkdtemp(prefix="castfinder-streams-"))
    try:
        t = time.monotonic()
        paths = make_streams(max(counts), args.clips, args.height, args.seconds, media, args.data)
        print(f"{max(counts)} streams of {args.seconds:g} s at {args.height}p made in {time.monotonic() - t:.0f} s "
              f"({media})", file=sys.stderr, flush=True)
        models = Models(cfg.ingest)
        device = models.detector.device.type
        with tempfile.TemporaryDirectory(prefix="castfinder-bench-index-") as d:  # warm-up (first calls are slow)
            run_once(paths[:1], cfg, models, True, Path(d))
        plan = []
        for n in counts:  # interleaved: alone, together, alone, together ...
            if args.alone == "each" or (args.alone == "one" and n == counts[0]):
                plan.append((n if args.alone == "each" else 1, False))
            plan.append((n, True))
        runs = []
        for rnd in range(1, args.rounds + 1):
            for n, shared in plan:
                with tempfile.TemporaryDirectory(prefix="castfinder-bench-index-") as d:
                    r = (run_once(paths[:n], cfg, models, True, Path(d)) if shared
                         else run_alone(paths[:n], cfg, models, Path(d)))
                r["round"] = rnd
                runs.append(r)
                print(f"round {rnd}: {n} {'shared' if shared else 'alone'}: aggregate {r['aggregate_rtf']:.2f}x, "
                      f"slowest stream {r['min_stream_rtf']:.2f}x, wall {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.media is None:
            shutil.rmtree(media, ignore_errors=True)
    title = (f"castfinder bench_streams: {args.height}p, {args.seconds:g} s per stream, preset {cfg.name}, "
             f"{device}, {os.cpu_count()} cores")
    doc = {"title": title, "device": device, "cpu_count": os.cpu_count(), "height": args.height,
           "seconds": args.seconds, "config": cfg.name, "runs": runs, "summary": summary(runs)}
    (args.out / "bench_streams.json").write_text(json.dumps(doc, indent=1))
    plot(runs, args.out / "bench_streams.png", title)
    print(title)
    print(table(runs))
    for line in doc["summary"]:
        print(line)
    print(f"wrote {args.out / 'bench_streams.json'} and {args.out / 'bench_streams.png'}")
    return 1 if any(r["errors"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
