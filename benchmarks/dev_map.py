"""MAP on the dev clips with the offline defaults (ingest reused when already indexed).

    python benchmarks/dev_map.py [--index-root out/dev-indexes] [--fusion max]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from castfinder.core.config import load_config  # noqa: E402
from castfinder.index.evaluation import average_precision, map_to_true, relevant_shots  # noqa: E402
from castfinder.index.search import photo_vectors, search_shots  # noqa: E402
from castfinder.index.store import IndexStore  # noqa: E402
from castfinder.models.photo import load_photo  # noqa: E402
from castfinder.stream.pipeline import IngestJob, Models  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "dev"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index-root", default=str(ROOT / "out" / "dev-indexes"))
    ap.add_argument("--fusion", default="max")
    ap.add_argument("--both", action="store_true")
    ap.add_argument("--config", default="default")
    args = ap.parse_args()
    cfg = load_config(args.config)
    models = Models(cfg.ingest)
    rows = []
    for clip_dir in sorted(p for p in DEV.iterdir() if (p / "refs").is_dir()):
        truth = json.loads((clip_dir / "truth.json").read_text())
        index_dir = Path(args.index_root) / clip_dir.name
        store = IndexStore(index_dir, writable=True)
        IngestJob(str(clip_dir / "video.mp4"), store, cfg.ingest, models).run()
        for char_dir in sorted((clip_dir / "refs").iterdir()):
            photos = [(str(p), load_photo(p)) for p in sorted(char_dir.iterdir())]
            queries = photo_vectors(photos, models.detector, models.face[0], models.frame[0], use_both=args.both)
            hits = search_shots(store, queries, top_k=cfg.query.top_k, fusion=args.fusion)
            ranked = map_to_true(truth, [(h.start_s, h.end_s) for h in hits])
            ap_ = average_precision(ranked, relevant_shots(truth, char_dir.name))
            kinds = "".join("F" if q.kind == "face" else "f" for q in queries)
            rows.append((clip_dir.name, char_dir.name, ap_, ranked, sorted(relevant_shots(truth, char_dir.name)), kinds))
            print(f"{clip_dir.name:<11} {char_dir.name:<12} AP {ap_:.3f}  ranked {ranked}  relevant "
                  f"{sorted(relevant_shots(truth, char_dir.name))}  queries {kinds}")
        store.close()
    print(f"\nMAP ({args.fusion}) over {len(rows)} characters: {sum(r[2] for r in rows) / len(rows):.3f}")


if __name__ == "__main__":
    main()
