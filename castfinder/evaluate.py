"""`castfinder eval`: ingest the labelled clips (indexes reused between runs), query every character
that has photos, score with the data README's rule, and report tables, JSON and pictures:
per-character AP/P@k/R@k (ranx), PR curves, the report's ablation table, the query-count survey
and shot-boundary precision/recall. Several presets run side by side (default: default + report)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np

from castfinder.index.evaluation import (average_precision, ceiling_ap, cut_precision_recall, interpolated_pr, map_to_true,
                              ranx_metrics, relevant_shots, true_shot_at, visible_shots)

from .core.config import Config, load_config
from .core.errors import CastfinderError, InputError

KS = (1, 5, 10, 20)
# settings that change what is indexed (the rest only change speed)
INDEX_FIELDS = ("analysis_width", "sample_fps", "shot_detector", "shot_threshold", "shot_min_len_s", "dedup",
                "dedup_similarity", "dedup_max_gap_s", "dbscan_eps", "min_face_px", "min_face_prob", "mtcnn_thresholds",
                "face_embedders", "frame_embedders", "small_face_px", "small_face_probe_every", "face_flip",
                "face_context", "frame_vector_fps", "small_face_full_probes", "face_chip_width")
# ... and these only when set, so that indexes made before they existed keep their keys
INDEX_FIELDS_WHEN_SET = ("dark_look_luma",)


class Clip:
    def __init__(self, directory: Path):
        self.dir = directory
        self.name = directory.name
        self.video = directory / "video.mp4"
        self.truth = json.loads((directory / "truth.json").read_text())
        refs = directory / "refs"
        self.characters = {d.name: sorted(p for p in d.iterdir() if p.is_file())
                           for d in sorted(refs.iterdir()) if d.is_dir()} if refs.is_dir() else {}


def find_clips(data: Path, only: list[str] | None) -> list[Clip]:
    if not data.is_dir():
        raise InputError(f"{data}: no such directory (expected clip folders with video.mp4 and truth.json)")
    clips = [Clip(d) for d in sorted(data.iterdir()) if (d / "truth.json").is_file() and (d / "video.mp4").is_file()]
    if only:
        unknown = set(only) - {c.name for c in clips}
        if unknown:
            raise InputError(f"unknown clip(s): {', '.join(sorted(unknown))} (have: {', '.join(c.name for c in clips)})")
        clips = [c for c in clips if c.name in only]
    if not clips:
        raise InputError(f"{data}: no labelled clips (folders with video.mp4 and truth.json)")
    return clips


class Evaluator:
    def __init__(self, data: Path, out: Path, clips: list[str] | None = None, log=print):
        self.clips = find_clips(Path(data), clips)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._models: dict[str, object] = {}
        self._vectors: dict[tuple, list] = {}
        self._tracks: dict[tuple, object] = {}

    # --- indexes and models ---------------------------------------------------------------------
    def index_dir(self, cfg: Config, clip: Clip) -> Path:
        key = {f: getattr(cfg.ingest, f) for f in INDEX_FIELDS}
        key |= {f: getattr(cfg.ingest, f) for f in INDEX_FIELDS_WHEN_SET if getattr(cfg.ingest, f)}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        return self.out / "indexes" / digest / clip.name

    def models(self, cfg: Config):
        from castfinder.stream.pipeline import Models
        key = json.dumps({f: getattr(cfg.ingest, f) for f in ("face_embedders", "frame_embedders", "mtcnn_thresholds",
                                                               "min_face_prob", "min_face_px", "device", "small_face_px",
                                                               "face_flip", "face_context")}, sort_keys=True)
        if key not in self._models:
            self._models[key] = Models(cfg.ingest)
        return self._models[key]

    def ingest(self, cfg: Config, clip: Clip):
        from castfinder.index.store import IndexStore
        from castfinder.stream.pipeline import IngestJob
        directory = self.index_dir(cfg, clip)
        store = IndexStore(directory, writable=True, kind=cfg.ingest.index_kind)
        t0 = time.monotonic()
        try:
            result = IngestJob(str(clip.video), store, cfg.ingest, self.models(cfg), cast=cfg.cast).run()
        finally:
            store.close()
        if not result.reused:
            self.log(f"  ingested {clip.name}: {result.shots} shots, {result.faces} faces "
                     f"({result.realtime_factor:.2f}x real time, {time.monotonic() - t0:.0f} s)")
        return IndexStore(directory), result.video_id

    # --- querying -------------------------------------------------------------------------------
    def photo_vectors(self, cfg: Config, clip: Clip, character: str, face: str | None, frame: str | None):
        from castfinder.index.search import photo_vectors
        from castfinder.models.photo import load_photo
        key = (clip.name, character, face, frame, cfg.query.use_both, tuple(cfg.ingest.mtcnn_thresholds), cfg.ingest.face_flip,
               cfg.query.lenient_photos)
        if key not in self._vectors:
            m = self.models(cfg)
            fe = next((e for e in m.face if e.name == face), None)
            fr = next((e for e in m.frame if e.name == frame), None)
            photos = [(str(p), load_photo(p)) for p in clip.characters[character]]
            self._vectors[key] = photo_vectors(photos, m.detector, fe, fr, use_both=cfg.query.use_both,
                                               lenient=cfg.query.lenient_photos)
        return self._vectors[key]

    def _track_vectors(self, store, vectors):
        from castfinder.index.track_vectors import TrackVectors
        feature = next((v.feature for v in vectors if v.kind == "face"), None)
        if feature is None:
            return None
        key = (str(store.dir), feature)
        if key not in self._tracks:
            self._tracks[key] = TrackVectors(feature)
        self._tracks[key].sync(store.catalogue)
        return self._tracks[key]

    def ranked(self, store, video_id, clip: Clip, vectors, fusion: str, top_k: int, expand_with=None,
               track_weight: float = 0.0, scene_feature: str | None = None, context_weight: float = 0.0) -> list[int]:
        from castfinder.index.search import search_shots
        if expand_with is not None:
            vectors = expand_with.expand(vectors, video_id)
        hits = search_shots(store, vectors, top_k=top_k, fusion=fusion, video_id=video_id,
                            tracks=self._track_vectors(store, vectors) if track_weight > 0 else None,
                            track_weight=track_weight,
                            scene_feature=scene_feature, context_weight=context_weight)
        return map_to_true(clip.truth, [(h.start_s, h.end_s) for h in hits])

    def run_config(self, cfg: Config, fusion: str | None = None, top_k: int | None = None, face: str | None = "",
                   frame: str | None = "", photos_per_query: int | None = None, seed: int = 0,
                   expand: bool = False, track_weight: float | None = None) -> dict:
        """Rank every character of every clip. photos_per_query: score random subsets of that many
        photos (at most 10 per character) and average their AP (the query-count survey)."""
        fusion, top_k = fusion or cfg.query.fusion, top_k or cfg.query.top_k
        tw = cfg.query.track_weight if track_weight is None else track_weight
        face = cfg.ingest.face_embedders[0] if face == "" and cfg.ingest.face_embedders else (face or None)
        frame = cfg.ingest.frame_embedders[0] if frame == "" and cfg.ingest.frame_embedders else (frame or None)
        scene = (frame or (cfg.ingest.frame_embedders or [None])[0]) if cfg.query.scene_tail else None
        cw = cfg.query.context_weight
        rankings, relevants, aps = {}, {}, {}
        for clip in self.clips:
            if not clip.characters:
                continue
            store, vid = self.ingest(cfg, clip)
            engine = None
            if expand:  # query expansion through the cast: the batch clusters of the finished video
                from .querying import QueryEngine
                engine = QueryEngine(store, cfg)
                engine.cast().current(vid)
            for character in clip.characters:
                q = f"{clip.name}/{character}"
                relevants[q] = relevant_shots(clip.truth, character)
                vectors = self.photo_vectors(cfg, clip, character, face, frame)
                if photos_per_query is None:
                    rankings[q] = self.ranked(store, vid, clip, vectors, fusion, top_k, engine, tw, scene, cw)
                    aps[q] = average_precision(rankings[q], relevants[q])
                    continue
                photos = sorted({v.photo for v in vectors})
                if len(photos) < photos_per_query:
                    continue
                subsets = list(itertools.combinations(photos, photos_per_query))
                random.Random(seed).shuffle(subsets)
                scores = []
                for subset in subsets[:10]:
                    sub = [v for v in vectors if v.photo in subset]
                    scores.append(average_precision(self.ranked(store, vid, clip, sub, fusion, top_k, engine, tw, scene, cw), relevants[q]))
                aps[q] = float(np.mean(scores))
        return {"rankings": rankings, "relevants": relevants, "ap": aps,
                "map": float(np.mean(list(aps.values()))) if aps else 0.0}

    # --- the report pieces ----------------------------------------------------------------------
    def shot_boundaries(self, cfg: Config) -> list[dict]:
        rows = []
        for clip in self.clips:
            store, vid = self.ingest(cfg, clip)
            pred = [s["start_frame"] for s in store.catalogue.shots(vid)][1:]
            true = [s["start_frame"] for s in clip.truth["shots"]][1:]
            p, r = cut_precision_recall(pred, true)
            rows.append({"clip": clip.name, "true_cuts": len(true), "found_cuts": len(pred),
                         "precision": round(p, 3), "recall": round(r, 3)})
        return rows

    def cast_f1(self, cfg: Config, clip: Clip, store, vid) -> dict:
        """Cast F1 of the clip's characters with photos (index/cast_eval.py), on the batch clusters."""
        from castfinder.index.cast_eval import cast_f1, cluster_true_shots

        from .querying import QueryEngine
        clusters = QueryEngine(store, cfg).cast().current(vid)
        spans = {s["idx"]: (s["start_s"], s["end_s"]) for s in store.catalogue.shots(vid)}
        pairs = [(x, k) for k, c in enumerate(clusters) for x in c["shots"] if x in spans]
        shots, labels = [x for x, _ in pairs], [k for _, k in pairs]
        return cast_f1(clip.truth, list(clip.characters), cluster_true_shots(clip.truth, spans, shots, labels))

    def face_shots(self, cfg: Config, clip: Clip) -> set[int]:
        """The clip's true shots in which the index holds at least one face (anyone's)."""
        store, vid = self.ingest(cfg, clip)
        rows = store.catalogue.conn.execute(
            "SELECT f.time_s FROM frames f WHERE f.video_id=? AND EXISTS (SELECT 1 FROM faces fc WHERE fc.frame_id=f.id)",
            (vid,)).fetchall()
        return {t for t in (true_shot_at(clip.truth, r[0]) for r in rows) if t is not None}

    def losses(self, cfg: Config, res: dict) -> dict:
        """Per query, where its AP is lost: the true shots where the character is present, those where
        the face can be seen, those of these where the index found a face (anyone's: an upper bound),
        and two ceilings: the AP had every found shot ranked first (what better ranking alone could
        reach), and had every visible face been found and ranked first (what better detection adds).
        Shots where the character shows only the back of the head stay where the system put them."""
        out = {}
        for clip in self.clips:
            queries = [q for q in res["ap"] if q.split("/")[0] == clip.name]
            if not queries:
                continue
            faces = self.face_shots(cfg, clip)
            for q in queries:
                character = q.split("/", 1)[1]
                relevant, ranked = res["relevants"][q], res["rankings"][q]
                visible = visible_shots(clip.truth, character) & relevant
                found = visible & faces
                out[q] = {"ap": round(res["ap"][q], 4), "present": len(relevant), "visible": len(visible),
                          "face_found": len(found), "ceiling_found": round(ceiling_ap(ranked, relevant, found), 4),
                          "ceiling_visible": round(ceiling_ap(ranked, relevant, visible), 4)}
        return out

    def clip_rows(self, cfg: Config, res: dict, losses: dict | None = None) -> list[dict]:
        """Per clip: MAP (and its ceilings, see losses()), faces found, shots, real-time factor of its
        ingest, cast F1."""
        rows = []
        for clip in self.clips:
            store, vid = self.ingest(cfg, clip)
            row, counts = store.catalogue.video(vid), store.catalogue.counts(vid)
            wall = (row["updated_at"] or 0) - (row["created_at"] or 0)  # also right for an index reused from an earlier run
            aps = [v for q, v in res["ap"].items() if q.split("/")[0] == clip.name]
            mine = [v for q, v in (losses or {}).items() if q.split("/")[0] == clip.name]
            out = {"clip": clip.name, "map": round(float(np.mean(aps)), 4) if aps else None, "queries": len(aps),
                   "map_ceiling_found": round(float(np.mean([v["ceiling_found"] for v in mine])), 4) if mine else None,
                   "map_ceiling_visible": round(float(np.mean([v["ceiling_visible"] for v in mine])), 4) if mine else None,
                   "faces": counts["faces"], "shots": counts["shots"],
                   "realtime_factor": round((row["indexed_until_s"] or 0) / wall, 2) if wall > 0 else None}
            if clip.characters and cfg.cast.enabled:
                cast = self.cast_f1(cfg, clip, store, vid)
                per = {ch: v["f1"] for ch, v in cast["per_character"].items()}
                out |= {"cast_f1": cast["cast_f1"], "clusters": cast["n_clusters"], "cast_f1_per_character": per}
            rows.append(out)
        return rows

    def ablation(self, base: Config) -> list[dict]:
        from castfinder.models.registry import FACE_EMBEDDERS, FRAME_EMBEDDERS
        rows = [("default", {}, {})]
        for name in FACE_EMBEDDERS:
            if name not in base.ingest.face_embedders:
                rows.append((f"face embedder: {name}", {"face_embedders": [name]}, {}))
        rows.append(("face embedder: none (frame features for every photo)", {}, {"face": None}))
        for name in FRAME_EMBEDDERS:
            if name not in base.ingest.frame_embedders:
                rows.append((f"frame embedder: {name}", {"frame_embedders": [name]}, {}))
        for dedup in ("none", "consecutive", "dbscan"):
            if dedup != base.ingest.dedup:
                rows.append((f"dedup: {dedup}", {"dedup": dedup}, {}))
        if base.ingest.dedup == "consecutive" and base.ingest.dedup_max_gap_s > 0:
            rows.append(("dedup: no frame-a-second floor (a still shot may keep one frame)", {"dedup_max_gap_s": 0.0}, {}))
        rows.append(("fusion: none (one photo per query, mean AP)", {}, {"photos_per_query": 1}))
        for fusion in ("max", "frequency", "rrf"):
            if fusion != base.query.fusion:
                rows.append((f"fusion: {fusion}", {}, {"fusion": fusion}))
        # the identity pieces (issue 13), each switched off alone
        rows.append(("small faces: off (no fine pyramid levels)", {"small_face_px": 0}, {}))
        rows.append(("small faces: fine levels on every frame (no probing)", {"small_face_probe_every": 1,
                                                                               "small_face_full_probes": True}, {}))
        rows.append(("small faces: probes with every fine level, once a second (before)",
                     {"small_face_full_probes": True, "small_face_probe_every": 5}, {}))
        rows.append(("flip-averaged face vectors: off", {"face_flip": False}, {}))
        rows.append(("dark second look: off", {"dark_look_luma": 0.0}, {}))
        rows.append(("cut detector: content only, 0.5 s shots (before)",
                     {"shot_detector": "content", "shot_threshold": 20.0, "shot_min_len_s": 0.5}, {}))
        rows.append(("lenient reading of query photos: off", {}, {"query": {"lenient_photos": False}}))
        rows.append(("scene tail: off (faceless shots not ranked)", {}, {"query": {"scene_tail": False}}))
        rows.append(("context re-ranking: off (faces alone)", {}, {"query": {"context_weight": 0.0}}))
        rows.append(("track blending: off (best face only)", {}, {"track_weight": 0.0}))
        rows.append(("track blending: tracks only", {}, {"track_weight": 1.0}))
        rows.append(("query expansion through the cast (--expand)", {}, {"expand": True}))
        rows.append(("query expansion, one photo per query", {}, {"expand": True, "photos_per_query": 1}))
        rows.append((f"top-k: {500 if base.query.top_k != 500 else 5000}", {},
                     {"top_k": 500 if base.query.top_k != 500 else 5000}))
        out = []
        for label, ingest_changes, query_changes in rows:
            cfg = dataclasses.replace(base, ingest=dataclasses.replace(base.ingest, **ingest_changes))
            query_changes = dict(query_changes)
            if "query" in query_changes:
                cfg = dataclasses.replace(cfg, query=dataclasses.replace(cfg.query, **query_changes.pop("query")))
            if ingest_changes and all(getattr(base.ingest, k) == v for k, v in ingest_changes.items()):
                continue  # the preset already has it
            try:
                self.log(f"ablation: {label}")
                res = self.run_config(cfg, **query_changes)
                out.append({"change": label, "map": round(res["map"], 4), "queries": len(res["ap"])})
            except CastfinderError as exc:  # weights not installed: listed as skipped, with the reason
                out.append({"change": label, "map": None, "skipped": str(exc).splitlines()[0]})
        return out

    def survey(self, cfg: Config) -> list[dict]:
        most = max(len(p) for c in self.clips for p in c.characters.values())
        rows = []
        for n in range(1, most + 1):
            res = self.run_config(cfg, photos_per_query=n)
            if res["ap"]:
                rows.append({"photos": n, "map": round(res["map"], 4), "queries": len(res["ap"])})
        return rows


def run_eval(data: str, configs: list[str], out: str, clips: list[str] | None = None, ablation: bool = True,
             survey: bool = True, log=print) -> dict:
    from . import plots
    ev = Evaluator(Path(data), Path(out), clips, log)
    report = {"data": str(data), "clips": [c.name for c in ev.clips], "presets": {}}
    for name in configs:
        cfg = load_config(name)
        log(f"preset {cfg.name}: ingesting and querying {len(ev.clips)} clips")
        res = ev.run_config(cfg)
        metrics = ranx_metrics(res["rankings"], res["relevants"], KS)
        for q, ap in res["ap"].items():  # the README rule's AP, checked against ranx's
            metrics["per_query"][q]["ap"] = round(ap, 4)
        losses = ev.losses(cfg, res)
        entry = {"map": round(res["map"], 4), "metrics": metrics, "shots": ev.shot_boundaries(cfg),
                 "clips": ev.clip_rows(cfg, res, losses), "losses": losses,
                 "rankings": res["rankings"], "relevant": {q: sorted(s) for q, s in res["relevants"].items()}}
        curves = {q: interpolated_pr(res["rankings"][q], res["relevants"][q]) for q in res["rankings"]}
        entry["pr_curves"] = plots.pr_curves(curves, ev.out / cfg.name, title=f"preset {cfg.name}")
        report["presets"][cfg.name] = entry
    first = load_config(configs[0])
    if ablation:
        report["ablation"] = ev.ablation(first)
    if survey:
        report["survey"] = ev.survey(first)
        report["survey_plot"] = plots.survey_plot(report["survey"], ev.out / "query_count_survey.png")
    (ev.out / "report.json").write_text(json.dumps(report, indent=1, default=list))
    md = markdown(report)
    (ev.out / "report.md").write_text(md)
    return report


def markdown(report: dict) -> str:
    lines = [f"# castfinder eval: {', '.join(report['clips'])}", ""]
    names = list(report["presets"])
    lines += ["## MAP by preset", "", "| preset | MAP | " + " | ".join(f"P@{k}" for k in KS) + " | "
              + " | ".join(f"R@{k}" for k in KS) + " |", "|---" * (2 + 2 * len(KS)) + "|"]
    for n in names:
        o = report["presets"][n]["metrics"]["overall"]
        lines.append(f"| {n} | {report['presets'][n]['map']:.3f} | "
                     + " | ".join(f"{o.get(f'precision@{k}', 0):.3f}" for k in KS) + " | "
                     + " | ".join(f"{o.get(f'recall@{k}', 0):.3f}" for k in KS) + " |")
    for n in names:
        rows = report["presets"][n].get("clips") or []
        if rows:
            lines += ["", f"## Per clip ({n})", "", "MAP ceilings: found faces ranked first / every visible face found "
                      "and ranked first (Where queries lose, below).", "",
                      "| clip | MAP | MAP ceilings | queries | faces | shots | real-time factor | cast F1 | clusters |",
                      "|---|---|---|---|---|---|---|---|---|"]
            f = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))  # noqa: E731
            for r in rows:
                lines.append(f"| {r['clip']} | {f(r['map'])} | {f(r.get('map_ceiling_found'))} / "
                             f"{f(r.get('map_ceiling_visible'))} | {r['queries']} | {r['faces']} | {r['shots']} | "
                             f"{f(r['realtime_factor'], 2)} | {f(r.get('cast_f1'))} | {f(r.get('clusters'))} |")
            cf = [v for r in rows for v in (r.get("cast_f1_per_character") or {}).values()]
            if cf:  # cast F1 over all queried characters, as MAP is over all queries
                lines.append(f"| all | {report['presets'][n]['map']:.3f} | | | | | | {float(np.mean(cf)):.3f} | |")
    lines += ["", "## Per character (AP)", "", "| clip/character | " + " | ".join(names) + " |",
              "|---" * (1 + len(names)) + "|"]
    queries = list(report["presets"][names[0]]["metrics"]["per_query"])
    for q in queries:
        lines.append(f"| {q} | " + " | ".join(f"{report['presets'][n]['metrics']['per_query'].get(q, {}).get('ap', 0):.3f}"
                                               for n in names) + " |")
    losses = report["presets"][names[0]].get("losses") or {}
    if losses:
        lines += ["", f"## Where queries lose ({names[0]})", "",
                  "True shots where the character is present, where the face can be seen, and where the index found "
                  "a face (anyone's); the AP had every found shot ranked first, and had every visible face been found "
                  "and ranked first.", "",
                  "| clip/character | AP | present | face visible | face found | AP, found first | AP, all visible found |",
                  "|---|---|---|---|---|---|---|"]
        for q, v in losses.items():
            lines.append(f"| {q} | {v['ap']:.3f} | {v['present']} | {v['visible']} | {v['face_found']} | "
                         f"{v['ceiling_found']:.3f} | {v['ceiling_visible']:.3f} |")
    lines += ["", "## Shot boundaries (a cut within 2 frames counts)", "", "| clip | " +
              " | ".join(f"{n} P / R" for n in names) + " |", "|---" * (1 + len(names)) + "|"]
    for i, row in enumerate(report["presets"][names[0]]["shots"]):
        lines.append(f"| {row['clip']} | " + " | ".join(
            f"{report['presets'][n]['shots'][i]['precision']:.2f} / {report['presets'][n]['shots'][i]['recall']:.2f}"
            for n in names) + " |")
    if report.get("ablation"):
        lines += ["", f"## Ablation (one change at a time from {names[0]})", "", "| change | MAP |", "|---|---|"]
        for row in report["ablation"]:
            reason = row.get("skipped", "").split(" Online,")[0]  # the how-to-install part is in report.json
            lines.append(f"| {row['change']} | " + (f"{row['map']:.3f}" if row["map"] is not None
                                                    else f"skipped: {reason}") + " |")
    if report.get("survey"):
        lines += ["", "## MAP by number of photos per character (random subsets, seed 0)", "",
                  "| photos | MAP | characters |", "|---|---|---|"]
        for row in report["survey"]:
            lines.append(f"| {row['photos']} | {row['map']:.3f} | {row['queries']} |")
    return "\n".join(lines) + "\n"


def eval_faces(pairs_dir: str, weights_dir: str | None = None, log=print) -> list[dict]:
    """Verification accuracy at the best threshold and ROC AUC, per installed face embedder."""
    import csv

    from castfinder.index.verification import best_threshold_accuracy, roc_auc
    from castfinder.models.mtcnn_detector import MTCNNDetector
    from castfinder.models.photo import largest_face, load_photo
    from castfinder.models.registry import FACE_EMBEDDERS, make_face_embedder

    d = Path(pairs_dir)
    csv_path = d / "master.csv"
    if not csv_path.is_file():
        raise InputError(f"{d}: no master.csv (pairs with file_x, file_y, Decision)")
    with open(csv_path) as fh:
        pairs = [(r["file_x"], r["file_y"], r["Decision"].strip().lower() == "yes") for r in csv.DictReader(fh)]
    detector = MTCNNDetector()
    faces = {}
    for name in sorted({p for a, b, _ in pairs for p in (a, b)}):
        image = load_photo(d / name)
        face, _ = largest_face(detector, image)
        faces[name] = (image, face)
    rows = []
    for model in FACE_EMBEDDERS:
        try:
            emb = make_face_embedder(model, weights_dir=weights_dir)
        except CastfinderError as exc:
            rows.append({"embedder": model, "skipped": str(exc).splitlines()[0]})
            continue
        vec = {n: emb.embed_faces(img, [f])[0] for n, (img, f) in faces.items() if f is not None}
        usable = [(a, b, s) for a, b, s in pairs if a in vec and b in vec]
        sims = np.array([float(vec[a] @ vec[b]) for a, b, _ in usable])
        same = np.array([s for _, _, s in usable])
        acc, t = best_threshold_accuracy(sims, same)
        rows.append({"embedder": model, "pairs": len(usable), "pairs_without_face": len(pairs) - len(usable),
                     "accuracy": round(acc, 4), "threshold": round(t, 4), "roc_auc": round(roc_auc(sims, same), 4)})
        log(f"{model}: accuracy {acc:.3f} at cosine {t:.3f}, ROC AUC {rows[-1]['roc_auc']:.3f} ({len(usable)} pairs)")
    return rows
