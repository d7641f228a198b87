"""Cast discovery on the labelled dev clips: our clustering (Ducros et al.) vs scikit-learn
average-linkage agglomerative (one global threshold) and DBSCAN (the report's method 2), on the
same face tracks, scored with BCubed P/R/F, purity and clusters vs true characters.

    python benchmarks/cast_eval.py [--out out/cast-eval] [--thresholds 0.35 0.4 0.45 0.5 0.55]

Track labels follow index/cast_eval.py (one face-visible character in the shot, else resolved by
the refs photos, else unlabelled). Thresholds are l2 distances between unit vectors; the
baselines get the same thresholds as cosine distances (l2^2 / 2)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared" / "data" / "dev"
CLIPS = ["friends", "avenger2", "herapheri", "billhyland"]


def ingest(clip: str, directory: Path, cfg, models) -> int:
    from index.store import IndexStore
    from stream.pipeline import IngestJob
    store = IndexStore(directory, writable=True)
    try:
        return IngestJob(str(DEV / clip / "video.mp4"), store, cfg.ingest, models, cast=cfg.cast).run().video_id
    finally:
        store.close()


def ref_vectors(clip: str, models) -> dict[str, np.ndarray]:
    from index.search import photo_vectors
    from models.photo import load_photo
    out = {}
    for d in sorted((DEV / clip / "refs").iterdir()):
        photos = [(str(p), load_photo(p)) for p in sorted(d.iterdir())]
        vecs = [q.vector for q in photo_vectors(photos, models.detector, models.face[0], None) if q.kind == "face"]
        if vecs:
            out[d.name] = np.stack(vecs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "cast-eval"))
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.35, 0.4, 0.45, 0.5, 0.55])
    ap.add_argument("--config", default="default")
    args = ap.parse_args()

    from castfinder.config import load_config
    from index.cast import Cast
    from index.cast_clustering import cluster
    from index.cast_eval import bcubed, label_tracks, sklearn_agglomerative, sklearn_dbscan
    from index.store import IndexStore
    from stream.pipeline import Models

    cfg = load_config(args.config)
    models = Models(cfg.ingest)
    out = Path(args.out)
    rows = []
    for clip in CLIPS:
        directory = out / "indexes" / clip
        vid = ingest(clip, directory, cfg, models)
        store = IndexStore(directory)
        cast = Cast(store, cfg.cast.params(models.face[0].name))
        cast.track_video(vid)
        tr = [dict(r) for r in store.catalogue.conn.execute(
            "SELECT id, shot_idx, start_s, end_s, vec FROM tracks WHERE video_id=? AND vec IS NOT NULL ORDER BY id", (vid,))]
        for t in tr:
            t["vec"] = np.frombuffer(t["vec"], np.float32)
        truth = json.loads((DEV / clip / "truth.json").read_text())
        labels = label_tracks(truth, tr, ref_vectors(clip, models))
        vecs = np.stack([t["vec"] for t in tr]) if tr else np.zeros((0, 128), np.float32)
        n_labelled = sum(l is not None for l in labels)
        print(f"{clip}: {len(tr)} tracks, {n_labelled} labelled, characters {sorted({l for l in labels if l})}", flush=True)
        for th in args.thresholds:
            cos = th * th / 2
            ours = cluster(vecs, [t["shot_idx"] for t in tr], th, cfg.cast.metric).labels
            for method, lab in [("ours (Ducros)", ours), ("sklearn average", sklearn_agglomerative(vecs, cos)),
                                ("DBSCAN", sklearn_dbscan(vecs, cos))]:
                rows.append({"clip": clip, "method": method, "threshold_l2": th, **bcubed(labels, list(lab))})
        # the shipped setting, with its contact sheets
        cast.build(vid, recluster=True)
        from castfinder.contact_sheet import overview_sheet
        overview_sheet(store, cast.clusters(vid), out / f"{clip}-cast.png")
    (out / "cast-eval.json").write_text(json.dumps(rows, indent=1))
    # mean over clips per (method, threshold)
    lines = ["| method | T (l2) | BCubed P | BCubed R | BCubed F | purity | clusters / characters |", "|---|---|---|---|---|---|---|"]
    for method in ("ours (Ducros)", "sklearn average", "DBSCAN"):
        for th in args.thresholds:
            rs = [r for r in rows if r["method"] == method and r["threshold_l2"] == th and r.get("items")]
            if not rs:
                continue
            m = {k: np.mean([r[k] for r in rs]) for k in ("bcubed_p", "bcubed_r", "bcubed_f", "purity")}
            counts = " ".join(f"{r['clusters']}/{r['characters']}" for r in rs)
            lines.append(f"| {method} | {th} | {m['bcubed_p']:.3f} | {m['bcubed_r']:.3f} | {m['bcubed_f']:.3f} | "
                         f"{m['purity']:.3f} | {counts} |")
    table = "\n".join(lines)
    (out / "cast-eval.md").write_text(f"Clips: {', '.join(CLIPS)} (mean over clips; counts per clip in that order)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
