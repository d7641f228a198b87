"""Shot-boundary precision/recall on every dev and devhard clip, old settings against new.

Each clip is decoded once through stream/decode.py (VideoDecoder, analysis width 640) and its
small frames are fed to ShotSegmenter only (no models). A found cut counts when it is within
2 frames of a true one (index/evaluation.py's cut_precision_recall, as castfinder eval scores it).
Per-frame cost is the segmenter's own time (push + flush) over the clip's frames, best of
--repeat runs, so decoding and other processes on the machine weigh less on it.

    python benchmarks/shot_eval.py [--data ../shared/data] [--clips supernatural ...] [--repeat 3]
                                   [--new hybrid:20:0.3] [--missed]

A setting is KIND:THRESHOLD:MIN_LEN_S; the old one is the preset before issue 13 (content:20:0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from castfinder.index.evaluation import cut_precision_recall  # noqa: E402
from castfinder.stream.decode import VideoDecoder, VideoFrame  # noqa: E402
from castfinder.stream.shots import ShotClosed, ShotSegmenter  # noqa: E402

OLD = "content:20:0.5"
NEW = "hybrid:20:0.3"


def clips(data: Path, names: list[str] | None) -> list[Path]:
    found = [d for sub in ("dev", "devhard") if (data / sub).is_dir()
             for d in sorted((data / sub).iterdir()) if (d / "truth.json").is_file()]
    return [d for d in found if not names or d.name in names]


def decode(path: Path) -> tuple[list[VideoFrame], float]:
    dec = VideoDecoder(str(path), analysis_width=640)
    frames = []
    try:
        for f in dec.frames():
            f.release()          # only the small frame is needed
            frames.append(f)
    finally:
        dec.close()
    return frames, dec.info.fps


def segment(frames: list[VideoFrame], fps: float, setting: str) -> tuple[list[int], float]:
    kind, threshold, min_len = setting.split(":")
    seg = ShotSegmenter(fps, kind, float(threshold), float(min_len))
    shots = []
    t0 = time.perf_counter()
    for f in frames:
        shots += [e.shot for e in seg.push(f) if isinstance(e, ShotClosed)]
    shots += [e.shot for e in seg.flush() if isinstance(e, ShotClosed)]
    return [s.start_frame for s in shots[1:]], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--clips", nargs="*")
    ap.add_argument("--old", default=OLD)
    ap.add_argument("--new", default=NEW)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--missed", action="store_true", help="list missed and false cuts of the new setting")
    args = ap.parse_args()
    settings = [args.old, args.new]
    print(f"old = {args.old}   new = {args.new}   (KIND:THRESHOLD:MIN_LEN_S; a cut counts within 2 frames)")
    print(f"{'clip':24s} {'true':>5s} | " + " | ".join(f"{s:^28s}" for s in ("old", "new")))
    head = f"{'found':>6s} {'P':>6s} {'R':>6s} {'ms/fr':>6s}"
    print(f"{'':24s} {'cuts':>5s} | " + " | ".join(head for _ in settings))
    spent = {s: 0.0 for s in settings}
    total_frames = 0
    for d in clips(Path(args.data), args.clips):
        truth = json.loads((d / "truth.json").read_text())
        true_cuts = [s["start_frame"] for s in truth["shots"]][1:]
        frames, fps = decode(d / truth.get("video", "video.mp4"))
        total_frames += len(frames)
        cells, found_new = [], []
        for s in settings:
            best = None
            for _ in range(max(1, args.repeat)):
                found, dt = segment(frames, fps, s)
                best = dt if best is None else min(best, dt)
            spent[s] += best
            p, r = cut_precision_recall(found, true_cuts)
            cells.append(f"{len(found):6d} {p:6.3f} {r:6.3f} {best / len(frames) * 1e3:6.3f}")
            found_new = found
        print(f"{d.parent.name + '/' + d.name:24s} {len(true_cuts):5d} | " + " | ".join(cells), flush=True)
        if args.missed:
            missed = [t for t in true_cuts if not any(abs(t - x) <= 2 for x in found_new)]
            false = [x for x in found_new if not any(abs(t - x) <= 2 for t in true_cuts)]
            print(f"{'':24s}   new missed {missed}  false {false}")
    if total_frames:
        print("per-frame cost over all clips: " + ", ".join(
            f"{s} {spent[s] / total_frames * 1e3:.3f} ms" for s in settings))


if __name__ == "__main__":
    main()
