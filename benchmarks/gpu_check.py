"""The CUDA paths, checked against CPU on the same inputs. Run it on a machine with a GPU:

1. MTCNN (our batched cascade): faces per frame and boxes on CUDA vs CPU.
2. dlib-resnet in torch: face vectors on CUDA vs CPU.
3. effnet-lite0: frame vectors on CUDA vs CPU.
4. A whole ingest of each clip with `device: auto` (CUDA, batch 16) and with `device: cpu` on the same
   machine: real-time factor, and the same shots, kept frames and faces.
5. The GPU gauges (torch memory, NVML utilisation and memory) after the CUDA ingest.

    python benchmarks/gpu_check.py [--data ../shared/data/dev] [--clips friends avenger2] [--out out/gpu-check.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from castfinder.core.config import load_config  # noqa: E402
from castfinder.index.store import IndexStore  # noqa: E402
from castfinder.models.mtcnn_detector import MTCNNDetector  # noqa: E402
from castfinder.models.registry import make_face_embedder, make_frame_embedder  # noqa: E402
from castfinder.stream import metrics as M  # noqa: E402
from castfinder.stream.decode import VideoDecoder  # noqa: E402
from castfinder.stream.pipeline import IngestJob, Models  # noqa: E402


def sample_frames(path: Path, n: int = 24) -> list[np.ndarray]:
    dec = VideoDecoder(str(path), 640)
    frames = []
    for i, f in enumerate(dec.frames()):
        if i % 12 == 0:
            frames.append(f.image.copy())
        f.release()
        if len(frames) == n:
            break
    dec.close()
    return frames


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def compare_models(frames: list[np.ndarray]) -> dict:
    cfg = load_config("default").ingest
    out = {}
    det = {d: MTCNNDetector(device=d, thresholds=tuple(cfg.mtcnn_thresholds)) for d in ("cpu", "cuda")}
    faces = {d: det[d].detect(frames) for d in det}
    matched, box_diff = 0, []
    for a, b in zip(faces["cpu"], faces["cuda"]):  # pair each CPU face with the CUDA face it overlaps most
        for fa in a:
            best = max(b, key=lambda fb: iou(fa.box, fb.box), default=None)
            if best is not None and iou(fa.box, best.box) >= 0.5:
                matched += 1
                box_diff.append(float(np.abs(np.array(fa.box) - np.array(best.box)).max()))
    # the CUDA pyramid is resized with torch's "area" mode (as facenet-pytorch does), the CPU one with
    # OpenCV's INTER_AREA: P-Net sees slightly different pixels, so a borderline face may differ
    out["mtcnn"] = {"frames": len(frames), "faces_cpu": sum(map(len, faces["cpu"])),
                    "faces_cuda": sum(map(len, faces["cuda"])), "cpu_faces_found_on_cuda": matched,
                    "median_box_diff_px": round(float(np.median(box_diff)), 3) if box_diff else None,
                    "max_box_diff_px": round(max(box_diff), 3) if box_diff else None}
    pairs = list(zip(frames, faces["cpu"]))  # the same faces for both devices
    vec = {d: make_face_embedder("dlib-resnet", device=d).embed_batch(pairs) for d in ("cpu", "cuda")}
    a, b = np.concatenate(vec["cpu"]), np.concatenate(vec["cuda"])
    out["dlib-resnet"] = {"faces": len(a), "max_abs_diff": float(np.abs(a - b).max()),
                          "min_cosine": float((a * b).sum(1).min())}
    vec = {d: make_frame_embedder("effnet-lite0", device=d).embed_frames(frames) for d in ("cpu", "cuda")}
    a, b = vec["cpu"], vec["cuda"]
    out["effnet-lite0"] = {"frames": len(a), "max_abs_diff": float(np.abs(a - b).max()),
                           "min_cosine": float((a * b).sum(1).min())}
    return out


def ingest(path: Path, device: str) -> dict:
    cfg = dataclasses.replace(load_config("default").ingest, device=device)
    models = Models(cfg)
    for _ in range(2):  # the first run pays for lazy inits and CUDA kernel selection
        with tempfile.TemporaryDirectory() as d:
            store = IndexStore(d, writable=True)
            job = IngestJob(str(path), store, cfg, models)
            t0 = time.perf_counter()
            r = job.run()
            wall = time.perf_counter() - t0
            frames = [tuple(x) for x in store.catalogue.conn.execute(
                "SELECT shot_idx, frame_idx FROM frames ORDER BY frame_idx")]
            store.close()
    gauges = gpu_gauges() if models.detector.device.type == "cuda" else None
    return {"gpu_gauges": gauges, "device": models.detector.device.type, "batch_size": job.batch_size, "queue_size": job.queue_size,
            "realtime_factor": round(r.indexed_until_s / wall, 2), "shots": r.shots, "frames": r.frames,
            "faces": r.faces, "vectors": r.vectors, "_frames": frames}


def gpu_gauges() -> dict:
    M.record_gpu()
    out = {}
    for metric in (M.GPU_MEMORY, M.GPU_UTILISATION, M.GPU_MEMORY_USED):
        for fam in metric.collect():
            for s in fam.samples:
                out[s.name + (f"{{gpu={s.labels['gpu']}}}" if "gpu" in s.labels else "")] = s.value
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev"))
    ap.add_argument("--clips", nargs="+", default=["friends", "avenger2"])
    ap.add_argument("--out", default=str(ROOT / "out" / "gpu-check.json"))
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here")
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    clips = [Path(args.data) / c / "video.mp4" for c in args.clips]
    report["models_cuda_vs_cpu"] = compare_models(sample_frames(clips[0]))
    print(json.dumps(report, indent=1), flush=True)
    for clip in clips:
        runs = {d: ingest(clip, d) for d in ("auto", "cpu")}
        same_frames = runs["auto"].pop("_frames") == runs["cpu"].pop("_frames")
        report[f"ingest_{clip.parent.name}"] = {**runs, "same_shots_and_frames": same_frames,
                                                "cuda_vs_cpu_speed": round(runs["auto"]["realtime_factor"]
                                                                           / runs["cpu"]["realtime_factor"], 2)}
        print(clip.parent.name, json.dumps(report[f"ingest_{clip.parent.name}"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
