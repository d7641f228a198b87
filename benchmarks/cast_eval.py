"""Cast discovery on the labelled clips: Ducros's clustering vs FINCH (both with the two-tracks-of-
one-shot constraint), each with and without the video's own face metric (index/face_metric.py),
next to scikit-learn average-linkage and DBSCAN, all on the same face tracks. Scored with cast F1
(issue 13: per queried character, the cluster whose true shots best match the shots where the
character is present; mean over characters) and BCubed P/R/F over the tracks that can be labelled.

    python benchmarks/cast_eval.py [--data ../shared/data/devhard ../shared/data/dev] [--out out/cast-eval]
                                   [--indexes out/base] [--config default] [--sheets]

Indexes: those `castfinder eval --out DIR` built for the same preset are reused when --indexes DIR
is given (nothing is written to them); otherwise each clip is ingested once under OUT/indexes.
Clips without refs/ (nobody to query) are skipped. Track labels follow index/cast_eval.py.
--sheets writes each clip's cast overview (one row per cluster) for every variant under OUT/sheets."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
VARIANTS = [("ducros", "none"), ("ducros", "wccn"), ("ducros", "lda"),
            ("finch", "none"), ("finch", "wccn"), ("finch", "lda")]


def ref_vectors(clip, models) -> dict[str, np.ndarray]:
    from castfinder.index.search import photo_vectors
    from castfinder.models.photo import load_photo
    out = {}
    for name, photos in clip.characters.items():
        qs = photo_vectors([(str(p), load_photo(p)) for p in photos], models.detector, models.face[0], None)
        vecs = [q.vector for q in qs if q.kind == "face"]
        if vecs:
            out[name] = np.stack(vecs)
    return out


def open_index(ev, cfg, clip, indexes: list[Path]):
    """(store, video id): an index `castfinder eval` built (found by its digest folder or by clip
    name under one of --indexes), else ingest the clip."""
    from castfinder.index.store import IndexStore
    for root in indexes:
        digest_dir = root / "indexes" / ev.index_dir(cfg, clip).parent.name / clip.name
        for d in (digest_dir, root / clip.name):
            if (d / "catalogue.sqlite").is_file():
                store = IndexStore(d)
                row = store.catalogue.conn.execute("SELECT id FROM videos ORDER BY id LIMIT 1").fetchone()
                return store, row[0]
    return ev.ingest(cfg, clip)


def evaluate_clip(store, vid, clip, cfg, models, variants, sheets: Path | None = None) -> list[dict]:
    from castfinder.index import face_metric
    from castfinder.index.cast import Cast, params_from_config
    from castfinder.index.cast_eval import (bcubed, cast_f1, cluster_true_shots, label_tracks, sklearn_agglomerative, sklearn_dbscan,
                                 track_true_shots)
    base = Cast.__new__(Cast)  # read-only: no schema writes on a shared index
    base.store, base.cat, base.p = store, store.catalogue, params_from_config(cfg.cast, models.face[0].name)
    rows, vecs = base.tracks(vid)
    truth = clip.truth
    spans = {r["idx"]: (r["start_s"], r["end_s"])
             for r in store.catalogue.conn.execute("SELECT idx, start_s, end_s FROM shots WHERE video_id=?", (vid,))}
    tracks = [dict(r) for r in store.catalogue.conn.execute(
        "SELECT id, shot_idx, start_s, end_s FROM tracks WHERE video_id=? AND vec IS NOT NULL ORDER BY id", (vid,))]
    for t, v in zip(tracks, vecs):
        t["vec"] = v
    shots = [r["shot_idx"] for r in rows]
    labels = label_tracks(truth, tracks, ref_vectors(clip, models))
    ttrue = track_true_shots(truth, spans, shots)
    characters = sorted(clip.characters)
    metrics = {}
    out = []

    def score(name, assignment, seconds):
        lab = [int(x) for x in assignment]
        cf = cast_f1(truth, characters, cluster_true_shots(truth, spans, shots, lab), labels, lab, ttrue)
        out.append({"clip": clip.name, "method": name, "tracks": len(rows), "cast_f1": cf["cast_f1"],
                    "per_character": cf["per_character"], "seconds": round(seconds, 4),
                    **bcubed(labels, lab), "clusters": cf["n_clusters"]})
        return lab

    for method, metric_name in variants:
        p = dataclasses.replace(base.p, method=method, face_metric=metric_name, cluster_in_metric=metric_name != "none")
        cast = Cast.__new__(Cast)
        cast.store, cast.cat, cast.p = store, store.catalogue, p
        t0 = time.perf_counter()
        metric = None
        if metric_name != "none" and len(rows):
            if metric_name not in metrics:
                metrics[metric_name] = face_metric.fit_video(store.catalogue, vid, p.feature, metric_name, save=False)
            metric = metrics[metric_name]
        result = cast.cluster_tracks(vid, rows, vecs, metric=metric) if len(rows) else None
        lab = score(f"{method}+{metric_name}", result.labels if result else [], time.perf_counter() - t0)
        if sheets is not None and len(rows):
            from castfinder.contact_sheet import overview_sheet
            groups = [(k, None, 0.0, [r["id"] for r, l in zip(rows, lab) if l == k]) for k in range(max(lab) + 1)]
            overview_sheet(store, cast.describe(vid, groups), sheets / f"{clip.name}-{method}-{metric_name}.png")
    if len(rows):
        cos = cfg.cast.threshold ** 2 / 2
        t0 = time.perf_counter()
        score("sklearn average", sklearn_agglomerative(vecs, cos), time.perf_counter() - t0)
        t0 = time.perf_counter()
        score("DBSCAN", sklearn_dbscan(vecs, cos), time.perf_counter() - t0)
    return out


def markdown(rows: list[dict], groups: dict[str, list[str]]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    clips = list(dict.fromkeys(r["clip"] for r in rows))
    lines = ["## Cast F1 (clusters / tracks)", "",
             "| method | " + " | ".join(clips) + " | " + " | ".join(f"mean {g}" for g in groups) + " |",
             "|---|" + "---|" * (len(clips) + len(groups))]
    by = {(r["clip"], r["method"]): r for r in rows}
    for m in methods:
        cells = [f"{by[(c, m)]['cast_f1']:.2f} ({by[(c, m)]['clusters']}/{by[(c, m)]['tracks']})" if (c, m) in by else "-"
                 for c in clips]
        means = [np.mean([by[(c, m)]["cast_f1"] for c in g if (c, m) in by]) for g in groups.values()]
        lines.append(f"| {m} | " + " | ".join(cells) + " | " + " | ".join(f"{x:.3f}" for x in means) + " |")
    lines += ["", "## BCubed over labelled tracks (P / R / F), pooled", "", "| method | P | R | F | purity |", "|---|---|---|---|---|"]
    for m in methods:
        rs = [r for r in rows if r["method"] == m and r.get("items")]
        n = sum(r["items"] for r in rs)
        if not n:
            continue
        p = sum(r["bcubed_p"] * r["items"] for r in rs) / n
        rc = sum(r["bcubed_r"] * r["items"] for r in rs) / n
        pu = sum(r["purity"] * r["items"] for r in rs) / n
        lines.append(f"| {m} | {p:.3f} | {rc:.3f} | {2 * p * rc / (p + rc):.3f} | {pu:.3f} |")
    lines += ["", "## Per character: F1, clusters holding the character (touching: a track in a shot where the face "
              "is visible / majority: the character is most of the cluster's labelled tracks)", ""]
    for m in methods:
        lines.append(f"**{m}**: " + "; ".join(
            f"{r['clip']}: " + ", ".join(f"{ch} {v['f1']:.2f} [{v.get('clusters_touching', '-')}/{v.get('clusters_majority', '-')}]"
                                         for ch, v in r["per_character"].items())
            for r in rows if r["method"] == m))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=[str(DATA / "devhard"), str(DATA / "dev")])
    ap.add_argument("--out", default=str(ROOT / "out" / "cast-eval"))
    ap.add_argument("--indexes", nargs="*", default=[],
                    help="`castfinder eval --out` folders (or folders of per-clip indexes) to reuse, read only")
    ap.add_argument("--config", default="default")
    ap.add_argument("--clips", nargs="*", default=None)
    ap.add_argument("--sheets", action="store_true", help="write each clip's cast overview for every variant")
    args = ap.parse_args()

    from castfinder.core.config import load_config
    from castfinder.evaluate import Evaluator

    cfg = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, groups = [], {}
    for data in args.data:
        ev = Evaluator(Path(data), out, None, log=print)
        models = ev.models(cfg)
        for clip in ev.clips:
            if not clip.characters or (args.clips and clip.name not in args.clips):
                continue
            store, vid = open_index(ev, cfg, clip, [Path(p) for p in args.indexes])
            try:
                res = evaluate_clip(store, vid, clip, cfg, models, VARIANTS, out / "sheets" if args.sheets else None)
            finally:
                store.close()
            rows += res
            groups.setdefault(Path(data).name, []).append(clip.name)
            print(clip.name, " ".join(f"{r['method']} {r['cast_f1']:.2f}" for r in res), flush=True)
    (out / "cast-eval.json").write_text(json.dumps(rows, indent=1, default=str))
    text = markdown(rows, groups)
    (out / "cast-eval.md").write_text(f"Preset: {cfg.name}; data: {', '.join(args.data)}\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
