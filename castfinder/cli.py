"""`castfinder` command line: ingest, videos, shots."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import sys
from pathlib import Path

from .core.config import load_config
from .core.errors import CastfinderError, InputError
from .core.paths import writable_dir
from .cli_common import config_from_args, ingest_line, interrupt_on_signals, print_shots, stop_on_signals
from .timefmt import hms

log = logging.getLogger("castfinder")

MAX_ID = 2**63 - 1      # SQLite integers: a larger id cannot exist (and would overflow the query)


# --- option values, checked while parsing (before any work) -----------------------------------------
def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def int_in(lo: int, hi: int, what: str = ""):
    def parse(text: str) -> int:
        value = _whole(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range (allowed: {lo} to {hi}{what})")
        return value
    parse.__name__ = "whole number"
    return parse


def float_in(gt: float, le: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not (math.isfinite(value) and gt < value <= le):
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: more than {gt:g}, at most {le:g})")
        return value
    parse.__name__ = "number"
    return parse


port = int_in(1, 65535)
video_id = int_in(1, MAX_ID)
cluster_id = int_in(1, MAX_ID)


def existing_dir(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return text


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def url_prefix(text: str) -> str:
    from castfinder.stream.url_policy import parse_url_prefix
    try:
        parse_url_prefix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (like every other castfinder error), exit 2."""

    def error(self, message: str):
        command = self.prog.removeprefix("castfinder").strip()
        self.exit(2, f"castfinder: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def _progress_bar(job):
    from tqdm import tqdm

    total = job.info.duration_s
    bar = tqdm(total=round(total, 1) if total else None, unit="s", unit_scale=False, dynamic_ncols=True,
               desc="ingest", bar_format=("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s video "
                                          "[{elapsed}<{remaining}{postfix}]") if total else None,
               disable=None)

    def update(p: dict) -> None:
        bar.n = round(p["indexed_until_s"], 1)
        bar.set_postfix_str(f"{p['realtime_factor']:.2f}x real time, {p['vectors']} vectors", refresh=False)
        bar.refresh()

    return bar, update


def cmd_ingest(args) -> int:
    if args.ray is not None and args.allow_url_prefix:
        raise InputError("--allow-url-prefix is not supported with --ray yet: ingest URL sources without --ray")
    if args.ray is not None:  # across a Ray cluster, into a sharded index
        from .ray_ingest import cmd_ray_ingest
        return cmd_ray_ingest(args, config_from_args(args))
    from castfinder.stream.metrics import start_metrics_server

    from .api import open_index

    if len(args.source) > 1:
        from .cli_many import cmd_ingest_many
        return cmd_ingest_many(args)
    cfg = config_from_args(args)
    if args.metrics_port:
        start_metrics_server(args.metrics_port, args.metrics_host)
    with open_index(args.index, cfg, writable=True, url_prefixes=args.allow_url_prefix) as idx:
        # source opened (bad input reported before model loading), models loaded, video row made; not running yet
        run = idx.start_ingest(args.source[0], force=args.force, start=False)
        bar, update = _progress_bar(run.job)
        run.job.progress = update
        stop_on_signals(run.job)  # installed before it runs: a signal always stops it cleanly
        summary = run.start().wait()
        bar.close()
    result = run.job.result
    print(json.dumps(summary, indent=1) if args.json else ingest_line(summary))
    if args.show_shots and not args.json:
        with open_index(args.index) as idx:
            print_shots(idx, result.video_id)
    return 0


def cmd_shots(args) -> int:
    from .api import open_index

    with open_index(args.index) as idx:
        print_shots(idx, args.video, args.json)
    return 0


def cmd_videos(args) -> int:
    from .api import open_index

    with open_index(args.index) as idx:
        rows = idx.videos()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['id']:>3}  {r['status']:<9}  {hms(r['indexed_until_s'])} / {hms(r['duration_s'])}  "
              f"{r['shots']:>4} shots  {r['faces']:>5} faces  {r['name']}")
    return 0


def cmd_query(args) -> int:
    from .api import open_index

    cfg = config_from_args(args)
    if args.thumbnails:
        writable_dir(args.thumbnails, "--thumbnails")
    with open_index(args.index, cfg) as idx:
        doc = idx.query(args.photos, character=args.character, video=args.video, features=args.features,
                        both=args.both, top_k=args.top_k, fusion=args.fusion, limit=args.limit, expand=args.expand,
                        thumbnails=args.thumbnails)
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    for q in doc["queries"]:
        print(f"  {q['photo']}: {q['kind']} features ({q['feature']}){' - ' + q['note'] if q['note'] and q['note'] != 'face' else ''}",
              file=sys.stderr)
    hits = doc["results"]
    print(f"{args.character or 'query'}: {len(hits)} shots (indexed until {hms(doc['indexed_until_s'])})")
    print(f"{'video':>5} {'shot':>5}  {'start':>12}  {'end':>12}  {'score':>8}  {'best frame':>12}  photos")
    for h in hits:
        print(f"{h['video']:>5} {h['shot']:>5}  {hms(h['start_s'])}  {hms(h['end_s'])}  {h['score']:8.4f}  "
              f"{hms(h['best_frame_s'])}  {', '.join(Path(p).name for p in h['photos'])}")
    return 0


def cmd_serve(args) -> int:
    from .service import serve

    cfg = config_from_args(args)
    token = args.token if args.token is not None else os.environ.get("CASTFINDER_TOKEN")
    if token is not None and not token.strip():
        raise InputError("--token / CASTFINDER_TOKEN is empty: give a token, or leave it out for no authentication")
    serve(args.index, cfg, host=args.host, port=args.port, token=token, max_upload_mb=args.max_upload_mb,
          max_request_mb=args.max_request_mb, max_photos=args.max_photos, media_roots=args.media_root or [],
          url_prefixes=args.allow_url_prefix or [], thumbnail_cache_mb=args.thumbnail_cache_mb,
          max_ingests=args.max_ingests)
    return 0


def cmd_cast(args) -> int:
    from .api import open_index

    if not args.index:
        raise InputError("cast: --index DIR is required")
    cfg = load_config(args.config)
    if args.action != "name" and args.sheets and not args.no_sheets:
        writable_dir(args.sheets, "--sheets")
    with open_index(args.index, cfg) as idx:
        if args.action == "name":
            idx.name_cluster(args.cluster, args.name)
            print(f"cluster {args.cluster} is now '{args.name.strip()}'; find it with: "
                  f"castfinder query --index {args.index} --character \"{args.name.strip()}\"")
            return 0
        docs = idx.cast(args.video, recluster=args.recluster,
                        sheets=False if args.no_sheets else (args.sheets or True))  # default: INDEX/cast/
    if args.json:
        print(json.dumps(docs, indent=1))
        return 0
    for d in docs:
        print(f"video {d['video']}: {d['name']} ({d['status']})")
        if not d["clusters"]:
            print("  no face tracks in this video: the cast is empty")
            continue
        print(f"  {'cluster':>7}  {'name':<16} {'shots':>5}  {'tracks':>6}  {'screen time':>11}  {'first seen':>12}")
        for cl in d["clusters"]:
            print(f"  {cl['cluster']:>7}  {(cl['name'] or '-'):<16} {len(cl['shots']):>5}  {cl['tracks']:>6}  "
                  f"{cl['screen_time_s']:>10.1f}s  {hms(cl['first_s'])}")
        if d["sheet"]:
            print(f"  contact sheets: {Path(d['sheet']).parent}/ (cast.png and one per cluster)")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import run_eval

    for name in args.config or []:
        load_config(name)  # every preset checked before the first clip is ingested
    writable_dir(args.out, "--out")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    report = run_eval(args.data, args.config or ["default", "report"], args.out, clips=args.clips,
                      ablation=not args.no_ablation, survey=not args.no_survey, log=log)
    print((Path(args.out) / "report.md").read_text())
    print(f"report: {Path(args.out) / 'report.md'}, {Path(args.out) / 'report.json'}; PR curves under "
          f"{Path(args.out)}/<preset>/", file=sys.stderr)
    return 0 if report["presets"] else 2


def cmd_eval_faces(args) -> int:
    from .evaluate import eval_faces

    rows = eval_faces(args.pairs, weights_dir=args.weights_dir, log=lambda m: None)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'embedder':<18} {'pairs':>5}  {'accuracy':>8}  {'threshold':>9}  {'ROC AUC':>7}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['embedder']:<18} skipped: {r['skipped']}")
        else:
            print(f"{r['embedder']:<18} {r['pairs']:>5}  {r['accuracy']:>8.3f}  {r['threshold']:>9.3f}  {r['roc_auc']:>7.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from castfinder.index.fusion import METHODS

    from .ray_ingest import ray_address

    p = _Parser(prog="castfinder", description="Find movie characters in streaming video.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="index a video file or live stream")
    ing.add_argument("source", nargs="+", help="file path, rtsp://, http(s)://, udp://, or - for stdin; several "
                     "(mixed kinds too) are ingested together in one process, sharing the model batches")
    ing.add_argument("--index", required=True, help="index directory (created if missing)")
    ing.add_argument("--config", help="preset name in configs/ or a YAML path (default: default)")
    ing.add_argument("--force", action="store_true", help="rebuild this video even if already indexed")
    ing.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where models run (default: auto)")
    ing.add_argument("--weights-dir", type=existing_dir, help="local weights for hub models (air-gapped sites)")
    ing.add_argument("--metrics-port", type=port, help="serve Prometheus metrics on this port")
    ing.add_argument("--metrics-host", type=nonempty, default="127.0.0.1")
    ing.add_argument("--allow-url-prefix", action="append", type=url_prefix, metavar="URL",
                     help="read URL sources only under this prefix, and nothing they redirect or point to "
                          "outside it (repeat; default: any URL)")
    ing.add_argument("--show-shots", action="store_true", help="print the shot table afterwards")
    ing.add_argument("--json", action="store_true", help="print the summary as JSON")
    ing.add_argument("--ray", nargs="?", const="auto", type=ray_address, metavar="ADDRESS",
                     help="ingest across a Ray cluster into a sharded index: auto (the running cluster), local "
                          "or HOST:PORT (needs pip install 'castfinder[ray]'; README: An archive on a cluster)")
    ing.add_argument("--ray-workers", type=int_in(1, 4096), help="Ray workers (default: a worker per GPU, else per "
                                                                "--ray-threads CPUs of the cluster)")
    ing.add_argument("--ray-threads", type=int_in(1, 256), default=1, help="model threads per Ray worker (default 1)")
    ing.add_argument("--ray-pin", action="store_true",
                     help="hold each Ray worker to --ray-threads cores of its node (Ray reserves them, but does not pin)")
    ing.set_defaults(func=cmd_ingest)

    sh = sub.add_parser("shots", help="list the shots of an indexed video")
    sh.add_argument("--index", required=True)
    sh.add_argument("--video", type=video_id, default=1)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_shots)

    q = sub.add_parser("query", help="find the shots where a character appears, from photos")
    q.add_argument("--index", required=True)
    q.add_argument("--video", type=video_id, help="only this video (default: all)")
    q.add_argument("--character", help="name shown in the output")
    q.add_argument("--photos", nargs="+", help="sample photos of the character (none: --character names a cast cluster)")
    q.add_argument("--expand", action="store_true", help="photos matching a cast cluster pull in its other tracks")
    q.add_argument("--features", help="face=NAME,frame=NAME; NAME may be none (default: the index's own)")
    q.add_argument("--both", action="store_true", help="use face and frame features for every photo")
    q.add_argument("--top-k", type=int_in(1, 100_000), help="hits per photo, 1 to 100000 (default 5000)")
    q.add_argument("--fusion", choices=METHODS, metavar="METHOD", help=" | ".join(METHODS) + " (default max)")
    q.add_argument("--limit", type=int_in(0, 100_000, "; 0 = all"),
                   help="at most this many shots (default: the preset's, 50; 0 = all)")
    q.add_argument("--thumbnails", help="write one JPEG per shot (best frame, face boxed) here")
    q.add_argument("--config", help="preset for model settings")
    q.add_argument("--weights-dir", type=existing_dir, help="local weights for hub models (air-gapped sites)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)

    srv = sub.add_parser("serve", help="HTTP service: ingest, query, thumbnails, metrics (docs at /docs)")
    srv.add_argument("--index", required=True, help="index directory (created if missing)")
    srv.add_argument("--host", type=nonempty, default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=port, default=8000)
    srv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or set CASTFINDER_TOKEN)")
    srv.add_argument("--max-upload-mb", type=float_in(0, 1024), default=10.0, help="largest photo accepted (default 10 MB)")
    srv.add_argument("--max-photos", type=int_in(1, 100), default=20, help="photos per query (default 20)")
    srv.add_argument("--max-request-mb", type=float_in(0, 4096), default=64.0,
                     help="a query's whole upload, counted as it arrives (default 64 MB)")
    srv.add_argument("--max-ingests", type=int_in(1, 64), default=4,
                     help="ingests running at once; POST /videos beyond is 429 (default 4)")
    srv.add_argument("--thumbnail-cache-mb", type=float_in(0, 1 << 20), default=512.0,
                     help="INDEX/thumbnails is pruned, oldest first, beyond this (default 512 MB)")
    srv.add_argument("--media-root", action="append", type=existing_dir, metavar="DIR",
                     help="POST /videos may ingest files under this folder (repeat; default: none, so no file)")
    srv.add_argument("--allow-url-prefix", action="append", type=url_prefix, metavar="URL",
                     help="POST /videos may ingest live URLs starting with this, e.g. rtsp://cams.local/ "
                          "(repeat; default: none, so no URL)")
    srv.add_argument("--config", help="preset name in configs/ or a YAML path (default: default)")
    srv.add_argument("--device", choices=["auto", "cpu", "cuda"])
    srv.add_argument("--weights-dir", type=existing_dir, help="local weights for hub models (air-gapped sites)")
    srv.set_defaults(func=cmd_serve)

    cst = sub.add_parser("cast", help="the characters of a video, found without photos; `cast name` names one",
                         description="castfinder cast --index DIR [--video ID] | castfinder cast name --index DIR CLUSTER NAME")
    cst.add_argument("--index", help="index directory")
    cst.add_argument("--video", type=video_id, help="only this video")
    cst.add_argument("--recluster", action="store_true", help="run the batch clustering again")
    cst.add_argument("--sheets", help="contact sheets go here (default: INDEX/cast/)")
    cst.add_argument("--no-sheets", action="store_true")
    cst.add_argument("--config", help="preset for cast settings")
    cst.add_argument("--json", action="store_true")
    cst.set_defaults(func=cmd_cast, action="list", cluster=None, name=None)
    cst_sub = cst.add_subparsers(dest="action")
    nm = cst_sub.add_parser("name", help="name a cluster (then query --character NAME works without photos)")
    nm.add_argument("--index", required=True)
    nm.add_argument("--config")
    nm.add_argument("cluster", type=cluster_id, help="cluster id (see `castfinder cast`)")
    nm.add_argument("name", type=nonempty, help="the character's name")

    ev = sub.add_parser("eval", help="MAP, P@k, R@k, PR curves, ablation and query-count survey on labelled clips")
    ev.add_argument("--data", required=True, help="folder of clips (video.mp4, truth.json, refs/), e.g. ../shared/data/dev")
    ev.add_argument("--config", action="append", help="preset(s) to compare (repeat; default: default and report)")
    ev.add_argument("--out", default="out/eval", help="report, pictures and reusable indexes go here")
    ev.add_argument("--clips", nargs="+", help="only these clips")
    ev.add_argument("--no-ablation", action="store_true")
    ev.add_argument("--no-survey", action="store_true")
    ev.set_defaults(func=cmd_eval)

    evf = sub.add_parser("eval-faces", help="face verification accuracy and ROC AUC per installed face embedder")
    evf.add_argument("pairs", help="folder with master.csv and the photos, e.g. ../shared/data/faces/deepface")
    evf.add_argument("--weights-dir", type=existing_dir)
    evf.add_argument("--json", action="store_true")
    evf.set_defaults(func=cmd_eval_faces)

    vid = sub.add_parser("videos", help="list indexed videos")
    vid.add_argument("--index", required=True)
    vid.add_argument("--json", action="store_true")
    vid.set_defaults(func=cmd_videos)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("libav").setLevel(logging.ERROR)
    interrupt_on_signals()
    try:
        return args.func(args)
    except CastfinderError as exc:
        print(f"castfinder: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.Error as exc:  # the catalogue failed somewhere below: damaged, read-only, locked
        from castfinder.index.catalogue import storage_error
        err = storage_error(exc, Path(getattr(args, "index", None) or ".") / "catalogue.sqlite")
        print(f"castfinder: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # the reader went away (`castfinder cast | head`): not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141
    except OSError as exc:  # a path or socket the system refused (too long, permissions, disk full): not a bug
        where = str(exc.filename) if exc.filename is not None else ""
        where = (where[:80] + "..." + where[-40:]) if len(where) > 130 else where
        print(f"castfinder: error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("castfinder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
