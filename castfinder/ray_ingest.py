"""`castfinder ingest --ray`: an archive ingested across a Ray cluster into one sharded index.

One actor per worker (IngestWorker) loads the models once and ingests sources one after another into
its own shard, INDEX/shards/sNNN/ (an ordinary index folder: FAISS + SQLite catalogue), so INDEX must
be a folder every node reaches at the same path, as must the sources. This process, the driver,
numbers the videos (one numbering for the whole index), hands each source to an idle worker, shows
the whole job's progress on stderr and reports every source. `castfinder query`, `serve` and the
Python API search the shards as one index (castfinder/index/shards.py).

Faults: a worker process killed mid-film is restarted by Ray (max_restarts) on whichever node has
room, and the film's task runs again there (max_task_retries): the video resumes in its shard from
its last closed shot, as a killed `castfinder ingest` does, so every shot is there once. A source
that fails for good (unreadable, or its worker died more often than allowed) is reported; the others
finish, and the exit code is not 0.

Metrics: with --metrics-port P the driver serves the job's totals on P, and worker i serves the
pipeline's metrics (castfinder_*) on P+1+i of its node; the driver prints those addresses and
writes them as a Prometheus file_sd list to INDEX/prometheus_targets.json.

A film is one task: long films are not split at keyframes (a kill costs at most the shot that was
open, and a film's cast is clustered per video as in one process)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sys
import time
from collections import deque
from pathlib import Path

from .core.errors import CastfinderError, InputError

log = logging.getLogger(__name__)

RESTARTS = 3                 # a worker may die this often (each time its film resumes) before the film fails
READY_TIMEOUT_S = float(os.environ.get("CASTFINDER_RAY_READY_TIMEOUT_S", "600"))  # no worker started: give up
PROGRESS_EVERY_S = 5.0
ADDRESS = re.compile(r"auto|local|ray://\S+|[\w.\-\[\]:]*:\d{1,5}")
FORWARDED_ENV = ("CASTFINDER_", "HF_", "TORCH_HOME", "INSIGHTFACE_HOME", "XDG_CACHE_HOME")
INSTALL_HINT = "castfinder ingest --ray needs Ray, which is not installed: pip install 'castfinder[ray]'"


def ray_address(text: str) -> str:
    """The --ray value: auto (the cluster this machine belongs to), local (start one here), HOST:PORT or
    ray://HOST:PORT. Checked while parsing, so a source written where the address goes is one clear line."""
    import argparse
    if not ADDRESS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a Ray address (auto, local, HOST:PORT or ray://HOST:PORT); "
                                         "write `--ray auto` before the sources, or --ray after them")
    if text not in ("auto", "local") and not 1 <= int(text.rsplit(":", 1)[1]) <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}': the port must be 1 to 65535")
    return text


GRPC_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) given by hand answers as a gRPC server does (Ray's GCS and its
    client server speak gRPC), within timeout_s; else InputError. ray.init itself retries an address
    that refuses, drops packets or speaks something else for many minutes."""
    import socket
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    where = f"no Ray cluster at '{address}'"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return  # a TLS cluster answers a handshake first: that it listens is what is checked
            sock.sendall(GRPC_PREFACE)
            head = sock.recv(9)
    except OSError as exc:
        why = f"no answer in {timeout_s:g} s" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise InputError(f"{where} ({why}): start one with `ray start --head`, or use --ray local") from None
    if len(head) < 4 or head[3] != 0x04:  # a gRPC (HTTP/2) server answers with its SETTINGS frame
        raise InputError(f"{where} (something else answers on that port): start one with `ray start --head`, "
                         "or use --ray local")


def shard_name(number: int) -> str:
    return f"s{number:03d}"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


# --- pinning: a worker keeps to the CPUs Ray reserved for it ---------------------------------------------
CORE_SLOTS = Path(os.environ.get("CASTFINDER_CORE_SLOTS", "/tmp/castfinder-core-slots"))


def pin_to_cores(threads: int) -> list[int] | None:
    """Ray reserves `threads` CPUs for a worker (num_cpus) but does not hold its threads to them: the
    pipeline's decode, detect, embed and writer threads spread over every core of the node, so one
    worker on an idle node uses more than its share and N workers scale by less than N. Pin this
    process to `threads` cores of its own: the worker takes the first free slot of its node (an flock
    on a file, released by the OS when the process dies, even by kill -9) and slot k owns cores
    k*threads .. k*threads+threads-1 of those this process may use. Threads started later inherit
    the mask. None when the node has no free slot left (then it runs unpinned)."""
    cores = sorted(os.sched_getaffinity(0))
    slots = max(1, len(cores) // threads)
    CORE_SLOTS.mkdir(parents=True, exist_ok=True)
    for k in range(slots):
        handle = open(CORE_SLOTS / f"slot{k}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        mine = cores[k * threads:(k + 1) * threads]
        os.sched_setaffinity(0, mine)
        _held_slots.append(handle)  # held for the life of the process
        return mine
    return None


_held_slots: list = []


# --- the worker: one per Ray actor --------------------------------------------------------------------
class IngestWorker:
    """Models loaded once; sources ingested one at a time into shards of the index (its own, normally).
    Threaded (max_concurrency=2): progress() answers while ingest() runs."""

    def __init__(self, index: str, home: str, config, threads: int, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", pin: bool = False):
        os.environ["CASTFINDER_TORCH_THREADS"] = str(threads)  # read when the models load (models/device.py)
        self.cores = pin_to_cores(threads) if pin else None
        import ray
        import torch

        from castfinder.stream.pipeline import Models
        torch.set_num_threads(threads)
        self.root, self.home, self.config = Path(index), home, config
        self.models = Models(config.ingest)
        self.stores: dict[str, object] = {}
        self.now: dict | None = None
        self.done = 0
        self.metrics, self.metrics_error = None, None
        if metrics_port:
            from castfinder.stream.metrics import start_metrics_server
            try:
                start_metrics_server(metrics_port, metrics_host)
                self.metrics = f"{metrics_host}:{metrics_port}"
            except CastfinderError as exc:  # a busy port must not cost the worker
                self.metrics_error = str(exc)
        self.node = ray.util.get_node_ip_address()

    def hello(self) -> dict:
        return {"pid": os.getpid(), "node": self.node, "shard": self.home, "metrics": self.metrics, "cores": self.cores,
                "metrics_error": self.metrics_error, "device": str(self.models.detector.device)}

    def progress(self) -> dict | None:
        return dict(self.now) if self.now else None

    def _store(self, shard: str):
        from castfinder.index.store import IndexStore
        if shard not in self.stores:
            self.stores[shard] = IndexStore(self.root / "shards" / shard, writable=True,
                                            kind=self.config.ingest.index_kind)
        return self.stores[shard]

    def ingest(self, source: str, shard: str, video_id: int, force: bool = False) -> dict:
        from castfinder.stream.pipeline import IngestJob, fingerprint

        from .media import record_media
        store = self._store(shard)
        row = store.catalogue.find_video(fingerprint(source))
        if force and row is not None and row["id"] == video_id:
            force = False  # this task's own earlier try, cut off by a dead worker: resume it, do not rebuild it
        cfg = self.config
        job = IngestJob(source, store, cfg.ingest, self.models, force=force, cast=cfg.cast, new_video_id=video_id,
                        progress=lambda p: self.now.update(p) if self.now is not None else None)
        t0, began, cpu0 = time.monotonic(), time.time(), time.process_time()
        self.now = {"source": source, "video_id": video_id, "indexed_until_s": 0.0}
        try:
            job.prepare()
            start_s = job._plan[0] if job._plan else 0.0  # a resumed film: this try's part counts
            self.now["start_s"] = start_s
            record_media(store, job.video_id, source)
            result = job.run()
            self._cast(store, job.video_id, result.status)
        finally:
            self.now = None
            if shard != self.home:  # another worker's shard: leave it free
                self.stores.pop(shard).close()
        self.done += 1
        rec = result.record(source)
        rec.update({"shard": shard, "node": self.node, "pid": os.getpid(), "task_wall_s": round(time.monotonic() - t0, 3),
                    "start_s": start_s, "began_at": began, "ended_at": time.time(),
                    "cpu_s": round(time.process_time() - cpu0, 3)})  # every thread of the worker
        return rec

    def _cast(self, store, video_id: int, status: str) -> None:
        """The video's batch clusters, built here once it is done: readers of a sharded index never write."""
        cfg = self.config.cast
        if not cfg.enabled or not self.models.face or status != "done":
            return
        from castfinder.index.cast import Cast, params_from_config
        try:
            Cast(store, params_from_config(cfg, self.models.face[0].name)).current(video_id)
        except Exception as exc:  # the cast is a by-product: never fail an ingest for it
            log.warning("cast of video %s not built: %s", video_id, exc)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()


# --- the driver ---------------------------------------------------------------------------------------
def _job_lock(root: Path):
    from .core.paths import hold_pid_lock
    return hold_pid_lock(root / ".ray-job.lock", f"{root}: another ingest job (pid {{pid}}) is writing this index")


def _existing(root: Path) -> tuple[dict, int, int]:
    """What the shards hold already: {fingerprint: (shard name, video id, status)}, the highest video id
    and the highest shard number."""
    from castfinder.index.shards import META, shard_dirs
    from castfinder.index.store import IndexStore
    found, top_video, top_shard = {}, 0, 0
    for folder in shard_dirs(root):
        store = IndexStore(folder)
        try:
            top_shard = max(top_shard, int((store.catalogue.get_meta(META) or {}).get("number", 0)))
            for r in store.catalogue.videos():
                top_video = max(top_video, r["id"])
                fp = r["fingerprint"]
                if fp not in found or found[fp][1] < r["id"]:
                    found[fp] = (folder.name, r["id"], r["status"])
        finally:
            store.catalogue.close()
    return found, top_video, top_shard


class _Progress:
    """The whole job's progress: films done, video seconds, real-time factor over the cluster."""

    def __init__(self, total: int, out, metrics: bool):
        self.total, self.out, self.t0 = total, out, time.monotonic()
        self.done = self.failed = self.reused = 0
        self.video_s = 0.0        # of finished films, this job's part
        self.running: dict = {}   # worker -> its film's progress
        self.workers = 0
        self.gauges = None
        if metrics:
            from prometheus_client import Gauge
            self.gauges = {
                "films": Gauge("castfinder_job_films", "Films of the Ray ingest job, by state", ["state"]),
                "video": Gauge("castfinder_job_video_seconds", "Video seconds indexed by the job so far"),
                "rtf": Gauge("castfinder_job_realtime_factor", "Video seconds per wall second, whole cluster"),
                "workers": Gauge("castfinder_job_workers", "Workers of the job that are up")}

    def video_seconds(self) -> float:
        return self.video_s + sum(max(0.0, p.get("indexed_until_s", 0.0) - p.get("start_s", 0.0))
                                  for p in self.running.values() if p)

    def line(self) -> str:
        wall = time.monotonic() - self.t0
        video = self.video_seconds()
        extra = "".join(f", {n} {w}" for n, w in ((self.failed, "failed"), (self.reused, "reused")) if n)
        return (f"ray: {self.done}/{self.total} films done{extra}, {len(self.running)} running on "
                f"{self.workers} workers; {video:.1f} s of video in {wall:.1f} s: "
                f"{video / wall if wall > 0 else 0:.2f}x real time across the cluster")

    def show(self, quiet: bool = False) -> None:
        if self.gauges:
            g = self.gauges
            g["films"].labels("done").set(self.done)
            g["films"].labels("failed").set(self.failed)
            g["films"].labels("running").set(len(self.running))
            g["films"].labels("queued").set(self.total - self.done - self.failed - self.reused - len(self.running))
            wall = time.monotonic() - self.t0
            g["video"].set(self.video_seconds())
            g["rtf"].set(self.video_seconds() / wall if wall > 0 else 0.0)
            g["workers"].set(self.workers)
        if not quiet:
            print(self.line(), file=self.out, flush=True)


def ingest_on_ray(sources: list[str], index, config, address: str = "auto", workers: int | None = None,
                  threads: int = 1, pin: bool = False, force: bool = False, metrics_port: int | None = None,
                  metrics_host: str = "127.0.0.1", progress_every_s: float = PROGRESS_EVERY_S,
                  report=None, out=sys.stderr) -> dict:
    """Ingest `sources` across the Ray cluster at `address` into the sharded index `index`.
    report(record) hears of each source as it ends. Returns {"videos": [...], "failed": [...],
    "workers": [...], "wall_s", "video_s", "realtime_factor"}; errors of the whole job (no Ray, a
    busy or ordinary index, no cluster) raise CastfinderError. pin: each worker keeps to `threads` cores
    of its node (pin_to_cores)."""
    ray = _import_ray()
    from castfinder.index.shards import create_shard
    from castfinder.stream.pipeline import fingerprint

    from .core.paths import writable_dir

    root = writable_dir(index, "--index")
    if (root / "catalogue.sqlite").exists():
        raise InputError(f"{root} is an ordinary (one-machine) index: give --ray ingests another --index folder")
    (root / "shards").mkdir(exist_ok=True)
    lock = _job_lock(root)
    try:
        return _run(ray, sources, root, config, address, workers, threads, pin, force, metrics_port, metrics_host,
                    progress_every_s, report or (lambda rec: None), out, create_shard, fingerprint)
    finally:
        lock.close()


def _plan(sources, root, force, fingerprint):
    """Each source → a task (source, shard or None, video id, force), a reuse, or a failure."""
    found, top_video, top_shard = _existing(root)
    tasks, reused, failed, seen = [], [], [], set()
    for text in sources:
        if text == "-":
            failed.append({"source": text, "error": "stdin cannot be sent to a cluster", "exit_code": 2})
            continue
        path = text if "://" in text else os.path.abspath(text)
        if "://" not in text and not os.path.isfile(path):
            failed.append({"source": text, "error": f"no such file (every worker must reach it at {path})",
                           "exit_code": 2})
            continue
        fp = fingerprint(path)
        if fp in seen:
            continue  # listed twice: ingested once
        seen.add(fp)
        have = found.get(fp)
        if have is not None and have[2] == "done" and not force:
            reused.append({"source": text, "shard": have[0], "video": have[1]})
        elif have is not None:  # resumed, or rebuilt by --force, in the shard that holds it
            top_video += force
            tasks.append({"source": path, "shard": have[0], "video": top_video if force else have[1], "force": force})
        else:
            top_video += 1
            tasks.append({"source": path, "shard": None, "video": top_video, "force": False})
    return tasks, reused, failed, top_shard


def _run(ray, sources, root, config, address, workers, threads, pin, force, metrics_port, metrics_host,
         progress_every_s, report, out, create_shard, fingerprint) -> dict:
    tasks, reused, failed, _ = _plan(sources, root, force, fingerprint)
    for r in reused:
        report({"status": "reused", **r})
    prog = _Progress(len(tasks) + len(reused) + len(failed), out, metrics=bool(metrics_port))
    prog.failed, prog.reused = len(failed), len(reused)
    for f in failed:
        report({"status": "failed", **f})
    result = {"videos": [], "failed": list(failed), "reused": reused, "workers": []}
    if not tasks:
        result.update(wall_s=0.0, video_s=0.0, realtime_factor=0.0)
        return result
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    if address not in ("auto", "local"):
        check_ray_address(address)
    try:
        if address == "local":
            ray.init(include_dashboard=False, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
        else:
            ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
    except ConnectionError as exc:
        if _auth_refused(exc):  # Ray sends its token to an address given by hand only when told to
            raise InputError(f"the Ray cluster at '{address}' wants token authentication: set RAY_AUTH_MODE=token "
                             f"(with its token in ~/.ray/auth_token or RAY_AUTH_TOKEN), or use --ray auto on one of "
                             f"its nodes") from None
        raise InputError(f"no Ray cluster at '{address}' ({str(exc).splitlines()[0][:160]}): start one with "
                         f"`ray start --head`, or use --ray local") from None
    try:
        return _drive(ray, tasks, root, config, workers, threads, metrics_port, metrics_host, progress_every_s,
                      report, prog, result, create_shard, pin)
    finally:
        ray.shutdown()


def _drive(ray, tasks, root, config, workers, threads, metrics_port, metrics_host, progress_every_s, report, prog,
           result, create_shard, pin: bool = False) -> dict:
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    res = ray.cluster_resources()
    gpus = 0.0 if config.ingest.device == "cpu" else float(res.get("GPU", 0))
    if workers is None:  # what the cluster offers: a worker per GPU, else per `threads` CPUs
        workers = int(gpus) if gpus >= 1 else max(1, int(res.get("CPU", 1) // threads))
    workers = max(1, min(workers, len(tasks)))
    gpu_each = min(1.0, gpus / workers) if gpus else 0.0
    if metrics_port:
        from castfinder.stream.metrics import start_metrics_server
        start_metrics_server(metrics_port, metrics_host)
    homes = [shard_name(i + 1) for i in range(workers)]
    for i, name in enumerate(homes):
        create_shard(root, name, i + 1, config.ingest.index_kind)
    Worker = ray.remote(IngestWorker).options(
        num_cpus=threads, num_gpus=gpu_each, max_restarts=RESTARTS, max_task_retries=RESTARTS, max_concurrency=2)
    actors = [Worker.remote(str(root), homes[i], config, threads, metrics_port + 1 + i if metrics_port else None,
                            metrics_host, pin) for i in range(workers)]
    print(f"ray: {len(tasks)} films to ingest on {workers} workers ({threads} model threads each"
          f"{f', {gpu_each:g} GPU each' if gpu_each else ''}) into {root}/shards/", file=prog.out, flush=True)

    # sources already in a shard go to the worker whose shard it is (shards past the workers': spread)
    owner = {name: i for i, name in enumerate(homes)}
    sticky: dict[int, deque] = {i: deque() for i in range(workers)}
    shared = deque()
    for t in tasks:
        if t["shard"] is None:
            shared.append(t)
        else:
            number = int(t["shard"].lstrip("s") or 0)
            sticky[owner.get(t["shard"], (number - 1) % workers)].append(t)

    hello = {a.hello.remote(): i for i, a in enumerate(actors)}
    ready: set[int] = set()
    dead: dict[int, str] = {}
    busy: dict = {}          # task ref -> (worker, task)
    working: dict[int, object] = {}
    t_start = time.monotonic()
    next_show = t_start + progress_every_s

    def finish(task, rec=None, error=None, code=1):
        if error is None:
            result["videos"].append(rec)
            prog.done += 1
            prog.video_s += max(0.0, rec["indexed_until_s"] - (rec.get("start_s") or 0.0))
            report({**rec})
        else:
            f = {"source": task["source"], "video": task["video"], "error": error, "exit_code": code}
            result["failed"].append(f)
            prog.failed += 1
            report({"status": "failed", **f})

    while busy or any(sticky.values()) or shared:
        # hand work to idle workers that are up
        for i in sorted(ready - set(working) - set(dead)):
            queue = sticky[i] if sticky[i] else shared
            if not queue:
                continue
            task = queue.popleft()
            ref = actors[i].ingest.remote(task["source"], task["shard"] or homes[i], task["video"], task["force"])
            busy[ref] = (i, task)
            working[i] = ref
            prog.running[i] = {}
        # a dead worker's own queue cannot be served; with no worker left, nothing can
        for i in list(dead):
            while sticky[i]:
                finish(sticky[i].popleft(), error=f"its shard's worker is gone ({dead[i]}); run the job again to resume it")
        if len(dead) == workers:
            while shared:
                finish(shared.popleft(), error=f"no worker left ({next(iter(dead.values()))})")
        if not hello and not busy and not ready - set(dead):
            break
        if hello and time.monotonic() - t_start > READY_TIMEOUT_S:  # never placed: the cluster is too small
            for ref in list(hello):
                dead[hello.pop(ref)] = (f"not started within {READY_TIMEOUT_S:g} s: the cluster has no room for a "
                                        f"worker with {threads} CPUs{f' and {gpu_each:g} GPU' if gpu_each else ''}")
            continue
        done, _ = ray.wait(list(hello) + list(busy), num_returns=1, timeout=0.5)
        for ref in done:
            if ref in hello:
                i = hello.pop(ref)
                try:
                    info = ray.get(ref)
                    ready.add(i)
                    prog.workers = len(ready - set(dead))
                    result["workers"].append(info)
                    where = f"metrics on {_target(info, metrics_host)}" if info["metrics"] else \
                        (info["metrics_error"] or "no metrics")
                    if metrics_port:  # scraped while the job runs
                        _write_targets(root, metrics_port, metrics_host, result["workers"])
                    cores = f", cores {','.join(map(str, info['cores']))}" if info.get("cores") else ""
                    print(f"ray: worker {i + 1} up on {info['node']} (pid {info['pid']}, {info['device']}{cores}, shard "
                          f"{info['shard']}, {where})", file=prog.out, flush=True)
                except (RayActorError, RayTaskError) as exc:
                    dead[i] = _reason(exc)
                    print(f"ray: worker {i + 1} did not start: {dead[i]}", file=prog.out, flush=True)
                continue
            i, task = busy.pop(ref)
            working.pop(i, None)
            prog.running.pop(i, None)
            try:
                finish(task, rec=ray.get(ref))
            except RayActorError as exc:  # died more often than Ray restarts it
                dead[i] = _reason(exc)
                prog.workers = len(ready - set(dead))
                finish(task, error=f"its worker died {RESTARTS + 1} times ({dead[i]}); run the job again to resume it")
            except RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
                finish(task, error=str(cause) if isinstance(cause, CastfinderError) else _reason(exc),
                       code=cause.exit_code if isinstance(cause, CastfinderError) else 1)
        if working and time.monotonic() >= next_show:
            refs = {i: actors[i].progress.remote() for i in working}
            try:
                got = ray.get(list(refs.values()), timeout=2.0)
                for i, p in zip(refs, got):
                    if i in prog.running and p:
                        prog.running[i] = p
            except (GetTimeoutError, RayActorError, RayTaskError):
                pass  # a worker restarting: its film shows again next time
            prog.show()
            next_show = time.monotonic() + progress_every_s
    for a in actors:
        try:
            ray.get(a.close.remote(), timeout=10)
        except Exception:  # a dead worker holds nothing
            pass
        ray.kill(a)
    wall = time.monotonic() - prog.t0
    result.update(wall_s=round(wall, 3), video_s=round(prog.video_s, 3),
                  realtime_factor=round(prog.video_s / wall, 3) if wall > 0 else 0.0)
    prog.running.clear()
    prog.show(quiet=True)  # the final numbers, for the gauges
    return result


def _auth_refused(exc: BaseException) -> bool:
    while exc is not None:
        if type(exc).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


def _target(worker: dict, host: str) -> str:
    """Where Prometheus reaches a worker's metrics: its node's address when they listen on every interface."""
    port = worker["metrics"].rsplit(":", 1)[1]
    return f"{worker['node'] if host in ('0.0.0.0', '::') else host}:{port}"


def _write_targets(root: Path, port: int, host: str, workers: list[dict]) -> None:
    """Prometheus file_sd targets: the driver and every worker that came up (node:port)."""
    targets = [f"{host}:{port}"] + [_target(w, host) for w in workers if w.get("metrics")]
    (root / "prometheus_targets.json").write_text(json.dumps([{"targets": targets, "labels": {"job": "castfinder"}}],
                                                             indent=1))


# --- the command --------------------------------------------------------------------------------------
def cmd_ray_ingest(args, config) -> int:
    """castfinder ingest --ray [ADDRESS] SOURCE ... --index DIR: one line per source, a summary; exit 0
    when every source is indexed, else the worst failure's code (2: bad input)."""
    import contextlib
    sources = args.source if isinstance(args.source, list) else [args.source]
    _import_ray()  # before any work: without Ray, one line on how to get it
    stdout = sys.stdout

    def report(rec):
        if args.json:
            return
        if rec["status"] == "failed":  # a worker's error names the file already
            said = rec["error"] if rec["error"].startswith(rec["source"]) else f"{rec['source']}: {rec['error']}"
            print(f"castfinder: error: {said}", file=sys.stderr, flush=True)
        elif rec["status"] == "reused":
            print(f"video {rec['video']} already indexed in shard {rec['shard']}: {rec['source']} (--force rebuilds)",
                  file=stdout, flush=True)
        else:
            print(f"video {rec['video']}: {rec['status']}, {rec['indexed_until_s']:.1f} s indexed in {rec['wall_s']:.1f} s "
                  f"({rec['realtime_factor']:.2f}x real time); {rec['shots']} shots, {rec['frames']} frames, "
                  f"{rec['faces']} faces, {rec['vectors']} vectors [shard {rec['shard']} on {rec['node']}]: "
                  f"{rec['source']}", file=stdout, flush=True)

    # Ray prints its workers' and raylets' messages on the driver's stdout: they go to stderr, and
    # stdout carries the results alone (--json stays parseable)
    with contextlib.redirect_stdout(sys.stderr):
        doc = ingest_on_ray(sources, args.index, config, address=args.ray, workers=args.ray_workers,
                            threads=args.ray_threads, pin=args.ray_pin, force=args.force, metrics_port=args.metrics_port,
                            metrics_host=args.metrics_host, report=report)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        n_ok = len(doc["videos"]) + len(doc["reused"])
        ran = (f"; {doc['video_s']:.1f} s of video in {doc['wall_s']:.1f} s: {doc['realtime_factor']:.2f}x real time "
               f"on {len(doc['workers'])} workers" if doc["workers"] else "")
        print(f"{n_ok} of {n_ok + len(doc['failed'])} sources indexed ({len(doc['reused'])} already were){ran}; "
              f"search with: castfinder query --index {args.index} --photos ...")
    return max((f.get("exit_code", 1) for f in doc["failed"]), default=0)
