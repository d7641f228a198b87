"""A sharded index: DIR/shards/<name>/ each an ordinary index directory (catalogue.sqlite + faiss/),
written by one ingest worker each (castfinder ingest --ray), searched as one index.

Ids are globally unique without any mapping table:
  - video ids are given by the job that ingests the sources (one numbering over the whole index);
  - every other id (frames, faces, vectors, tracks, clusters) is AUTOINCREMENT from the shard's base,
    number x ID_BASE (10**12), so two shards never hand out the same id and an id names its shard
    (cluster 1000000000007 is the 7th cluster made in shard 1).

Search gives exactly the ranking one index over the same videos gives: a flat FAISS top-k over the
union of the shards is the best k of the shards' own top-k lists (each shard is asked for k), and
everything after FAISS (shot scores, tracks, fusion, the scene tail) sees the same hits. With
hnsw/ivf shards the lists are approximate, as they are in one approximate index."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np

from castfinder.core.errors import IndexBusyError, IndexDamagedError, InputError, NameTakenError, NotFoundError

from .store import IndexStore

log = logging.getLogger(__name__)

SHARDS = "shards"
ID_BASE = 10**12        # rows per table a shard may hold; decimal, so an id reads as shard and row
MAX_SHARD = (2**63 - 1) // ID_BASE - 1   # shards whose ids still fit in an SQLite integer
META = "shard"          # catalogue meta of a shard: {"name", "number", "id_base"}


class ShardedIndexWrite(IndexBusyError):
    """A sharded index opened to write: its shards are written by the Ray job's workers only, so a
    caller that falls back to reading a busy index (the HTTP service) serves searches; the CLI exits 2."""

    exit_code = 2


def is_sharded(path) -> bool:
    """DIR holds shards (and is not itself an ordinary index)."""
    p = Path(path)
    return (p / SHARDS).is_dir() and not (p / "catalogue.sqlite").exists()


def shard_dirs(path) -> list[Path]:
    root = Path(path) / SHARDS
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / "catalogue.sqlite").is_file())


def create_shard(path, name: str, number: int, kind: str = "flat") -> Path:
    """Make DIR/shards/<name>/ an empty index whose ids start at number x ID_BASE. Idempotent."""
    from . import cast, face_metric
    if not 1 <= number <= MAX_SHARD:
        raise InputError(f"shard number {number} is out of range (1 to {MAX_SHARD})")
    folder = Path(path) / SHARDS / name
    store = IndexStore(folder, writable=True, kind=kind)
    try:
        cat = store.catalogue
        have = cat.get_meta(META)
        if have is not None:
            if have.get("number") != number:
                raise IndexDamagedError(f"{folder}: shard number {have.get('number')}, expected {number}")
            return folder
        cast.ensure_schema(cat)
        face_metric.ensure_schema(cat)
        base = number * ID_BASE
        tables = [r[0] for r in cat.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND sql LIKE '%AUTOINCREMENT%'")]
        with cat.conn:  # one transaction: a shard is all seeded or not made
            cat.conn.execute("BEGIN IMMEDIATE")
            for table in tables:
                if table == "videos":  # the job gives video ids
                    continue
                if cat.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:
                    raise IndexDamagedError(f"{folder}: not empty, cannot become shard {number}")
                cat.conn.execute("DELETE FROM sqlite_sequence WHERE name=?", (table,))
                cat.conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, base))
            cat.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (META, json.dumps({"name": name, "number": number, "id_base": base})))
    finally:
        store.close()
    return folder


class ShardedStore:
    """Read-only view of every shard as one IndexStore (the parts search, the query engine, the
    Python API and thumbnails use). Shards that appear later are picked up by refresh()."""

    writable = False

    def __init__(self, directory):
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self.shards: dict[int, IndexStore] = {}      # by shard number
        # each shard's first id, ascending (as its catalogue says), and its shard number: one tuple, swapped whole
        self._base_map: tuple[np.ndarray, list[int]] = (np.zeros(0, np.int64), [])
        self._video_shard: dict[int, int] = {}        # video id -> shard number
        self._tracks: dict[str, ShardedTrackVectors] = {}
        self._scan()
        if not self.shards:
            raise NotFoundError(f"{self.dir}: no index here (shards/ holds no shard yet)")
        self.catalogue = ShardedCatalogue(self)
        self.vector_map = ShardedVectorMap(self)

    # --- shards ---------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Open shards not open yet, and learn which shard holds each video."""
        with self._lock:
            known = {s.dir for s in self.shards.values()}
            for folder in shard_dirs(self.dir):
                if folder in known:
                    continue
                store = IndexStore(folder)
                meta = store.catalogue.get_meta(META)
                if not meta or "number" not in meta:
                    if not store.catalogue.videos():  # a shard a job is making right now: read it next time
                        store.catalogue.close()
                        continue
                    raise IndexDamagedError(f"{folder}: not a shard (no shard number in its catalogue)")
                number = int(meta["number"])
                if number in self.shards:
                    raise IndexDamagedError(f"{folder} and {self.shards[number].dir} are both shard {number}")
                self.shards[number] = store
            bases = sorted((int(s.catalogue.get_meta(META)["id_base"]), n) for n, s in self.shards.items())
            self._base_map = (np.array([b for b, _ in bases], np.int64), [n for _, n in bases])
            videos: dict[int, int] = {}
            for number, store in self.shards.items():
                for (vid,) in store.catalogue.conn.execute("SELECT id FROM videos"):
                    if vid in videos and videos[vid] != number:
                        raise IndexDamagedError(f"video {vid} is in two shards ({self.shards[videos[vid]].dir.name} "
                                                f"and {store.dir.name})")
                    videos[vid] = number
            self._video_shard = videos

    def stores(self) -> list[IndexStore]:
        return [self.shards[n] for n in sorted(self.shards)]

    def for_video(self, video_id: int):
        """The shard holding a video (this view when no shard does: its catalogue answers None)."""
        number = self._video_shard.get(int(video_id))
        if number is None:
            self._scan()  # a video a running job added since
            number = self._video_shard.get(int(video_id))
        return self.shards[number] if number is not None else self

    def shard_numbers(self, ids) -> np.ndarray:
        """The shard each id (frame, face, vector, track, cluster) was made in; -1 for none."""
        ids = np.asarray(ids, np.int64)
        bases, based = self._base_map
        at = np.searchsorted(bases, ids, side="right") - 1
        ok = (ids >= 0) & (at >= 0)
        return np.where(ok, np.asarray(based + [-1], np.int64)[np.where(ok, at, len(based))], -1)

    def for_id(self, row_id: int) -> IndexStore | None:
        return self.shards.get(int(self.shard_numbers([row_id])[0]))

    # --- what IndexStore offers readers -------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.stores()[0].kind

    def indexed_features(self) -> dict[str, int]:
        dims: dict[str, int] = {}
        for store in self.stores():
            for name, dim in store.indexed_features().items():
                if dims.setdefault(name, dim) != dim:
                    raise IndexDamagedError(f"feature '{name}' has dimension {dim} in {store.dir} but {dims[name]} "
                                            f"in another shard")
        return dims

    def feature(self, name: str, dim: int | None = None) -> "ShardedFeature":
        dims = self.indexed_features()
        if name not in dims:
            raise NotFoundError(f"feature '{name}' is not in this index (indexed: {', '.join(dims) or 'none'})")
        return ShardedFeature(self, name, dims[name])

    def open_features(self) -> None:
        for store in self.stores():
            store.open_features()

    def refresh(self) -> None:
        self._scan()
        for store in self.stores():
            store.refresh()

    def track_vectors(self, feature: str) -> "ShardedTrackVectors":
        with self._lock:
            tv = self._tracks.setdefault(feature, ShardedTrackVectors(self, feature))
        for store in self.stores():
            store.track_vectors(feature)  # synced
        return tv

    def checkpoint(self, force: bool = False, every_s: float = 10.0) -> None:
        """Readers save nothing."""

    def close(self) -> None:
        for store in self.stores():
            store.close()
            store.catalogue.close()

    # --- the cast ---------------------------------------------------------------------------------
    def name_cluster(self, cluster_id: int, name: str, params) -> int:
        """Name a cluster in the shard that holds it (taking that shard's writer lock for the moment);
        names are unique over all shards. Returns the cluster's video."""
        from .cast import Cast
        name = name.strip()
        shard = self.for_id(cluster_id)
        row = None if shard is None else Cast(shard, params).cat.conn.execute(
            "SELECT video_id FROM clusters WHERE id=?", (cluster_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no cluster with id {cluster_id} (see `castfinder cast`)")
        for store in self.stores():
            other = Cast(store, params).cat.conn.execute("SELECT id FROM clusters WHERE name=? AND id<>?",
                                                         (name, cluster_id)).fetchone()
            if other is not None:
                raise NameTakenError(f"the name '{name}' is already used by cluster {other[0]}")
        writer = IndexStore(shard.dir, writable=True, kind=shard.kind)  # IndexBusyError while a job writes it
        try:
            Cast(writer, params).name(cluster_id, name)
        finally:
            writer.close()
        return int(row[0])


class ShardedFeature:
    """One feature over every shard: each shard's FAISS index asked for k, the best k kept."""

    def __init__(self, store: ShardedStore, name: str, dim: int):
        self.store, self.name, self.dim = store, name, dim

    def _parts(self):
        return [s.feature(self.name) for s in self.store.stores() if self.name in s.indexed_features()]

    @property
    def ntotal(self) -> int:
        return sum(p.ntotal for p in self._parts())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        parts = self._parts()
        total = sum(p.ntotal for p in parts)
        found = [p.search(queries, k) for p in parts if p.ntotal]
        if not found:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores = np.concatenate([f[0] for f in found], axis=1)
        ids = np.concatenate([f[1] for f in found], axis=1)
        k = min(k, max(1, total))
        order = np.lexsort((ids, -scores), axis=1)[:, :k]  # best first; equal scores by id
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


class ShardedVectorMap:
    """Vector id -> (video, shot) through the map of the shard the id names."""

    def __init__(self, store: ShardedStore):
        self.store = store

    def sync(self, catalogue=None) -> None:
        for s in self.store.stores():
            s.vector_map.sync(s.catalogue)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, np.int64)
        video = np.full(ids.shape, -1, np.int64)
        shot = np.full(ids.shape, -1, np.int64)
        numbers = self.store.shard_numbers(ids)
        for number in np.unique(numbers[numbers >= 0]).tolist():
            shard = self.store.shards.get(number)
            if shard is not None:
                mask = numbers == number
                video[mask], shot[mask] = shard.vector_map.lookup(ids[mask])
        return video, shot


class ShardedTrackVectors:
    """The face tracks of every shard (each shard's TrackVectors, synced by the store)."""

    def __init__(self, store: ShardedStore, feature: str):
        self.store, self.feature = store, feature

    def shot_scores(self, queries: np.ndarray, video_id: int | None = None):
        stores = self.store.stores() if video_id is None else [self.store.for_video(video_id)]
        per = [s.track_vectors(self.feature).shot_scores(queries, video_id) for s in stores if s is not self.store]
        out = []
        for q in range(len(queries)):
            keys = np.concatenate([p[q][0] for p in per]) if per else np.zeros(0, np.int64)
            scores = np.concatenate([p[q][1] for p in per]) if per else np.zeros(0)
            order = np.argsort(keys, kind="stable")  # sorted keys, as one index gives them
            out.append((keys[order], scores[order]))
        return out


class ShardedCatalogue:
    """The catalogue reads search and the API make, answered by the shard(s) concerned."""

    def __init__(self, store: ShardedStore):
        self.store = store
        self.path = store.dir / SHARDS

    @property
    def conn(self):
        raise InputError(f"{self.store.dir} is a sharded index: it has no single catalogue to run SQL on")

    def close(self) -> None:
        for s in self.store.stores():
            s.catalogue.close()

    def videos(self) -> list:
        self.store._scan()  # shards a job added since: a listing shows what a lookup by id finds
        rows = [r for s in self.store.stores() for r in s.catalogue.videos()]
        return sorted(rows, key=lambda r: r["id"])

    def video(self, video_id: int):
        shard = self.store.for_video(video_id)
        return shard.catalogue.video(video_id) if shard is not self.store else None

    def find_video(self, fingerprint: str):
        rows = [r for s in self.store.stores() if (r := s.catalogue.find_video(fingerprint)) is not None]
        return max(rows, key=lambda r: r["id"]) if rows else None

    def shots(self, video_id: int) -> list:
        shard = self.store.for_video(video_id)
        return shard.catalogue.shots(video_id) if shard is not self.store else []

    def counts(self, video_id: int) -> dict:
        shard = self.store.for_video(video_id)
        if shard is self.store:
            return {"shots": 0, "vectors": 0, "frames": 0, "faces": 0}
        return shard.catalogue.counts(video_id)

    def _by_shard(self, ids, method: str) -> dict:
        """A per-id lookup of every shard's catalogue, each asked only for its own ids."""
        out = {}
        by_shard: dict[int, list[int]] = {}
        ids = [int(i) for i in ids if i >= 0]
        for i, number in zip(ids, self.store.shard_numbers(ids).tolist()):
            by_shard.setdefault(number, []).append(i)
        for number, chunk in by_shard.items():
            shard = self.store.shards.get(number)
            if shard is not None:
                out.update(getattr(shard.catalogue, method)(chunk))
        return out

    def vector_rows(self, ids) -> dict:
        return self._by_shard(ids, "vector_rows")

    def face_contexts(self, vector_ids) -> dict:
        return self._by_shard(vector_ids, "face_contexts")

    def shot_spans(self, keys) -> dict:
        out = {}
        by_video: dict[int, list] = {}
        for v, s in keys:
            by_video.setdefault(v, []).append((v, s))
        for v, chunk in by_video.items():
            shard = self.store.for_video(v)
            if shard is not self.store:
                out.update(shard.catalogue.shot_spans(chunk))
        return out

    def shot_frame_vectors(self, feature: str, video_id: int, shot: int):
        shard = self.store.for_video(video_id)
        return shard.catalogue.shot_frame_vectors(feature, video_id, shot) if shard is not self.store else None

    def feature_stats(self, feature: str) -> tuple[int, int]:
        stats = [s.catalogue.feature_stats(feature) for s in self.store.stores()]
        return sum(n for n, _ in stats), max((m for _, m in stats), default=-1)

    def get_meta(self, key: str, default=None):
        """feature_dims: every shard's together; other keys (per video, mostly): the shard that has it."""
        if key == "feature_dims":
            return self.store.indexed_features()
        for s in self.store.stores():
            value = s.catalogue.get_meta(key)
            if value is not None:
                return value
        return default


class ShardedCast:
    """The cast of a sharded index, read-only: each video's clusters live in its shard (built there
    when the video was ingested); cluster ids name their shard."""

    def __init__(self, store: ShardedStore, params):
        self.store, self.p = store, params
        self._casts: dict[Path, object] = {}

    def _cast(self, shard: IndexStore):
        from .cast import Cast
        if shard.dir not in self._casts:
            self._casts[shard.dir] = Cast(shard, self.p)
        return self._casts[shard.dir]

    def _of_video(self, video_id: int):
        shard = self.store.for_video(video_id)
        if shard is self.store:
            raise NotFoundError(f"no video with id {video_id}")
        return self._cast(shard)

    def clusters(self, video_id: int, faces_per_cluster: int = 12) -> list[dict]:
        return self._of_video(video_id).clusters(video_id, faces_per_cluster)

    def current(self, video_id: int, recluster: bool = False) -> list[dict]:
        if recluster:
            raise InputError(f"{self.store.dir} is a sharded index: its clusters are built by the ingest workers; "
                             "recluster is not available here")
        return self.clusters(video_id)

    def cluster_video(self, cluster_id: int) -> int | None:
        """The video of a cluster, or None when there is no such cluster."""
        shard = self.store.for_id(cluster_id)
        if shard is None:
            return None
        row = self._cast(shard).cat.conn.execute("SELECT video_id FROM clusters WHERE id=?", (cluster_id,)).fetchone()
        return None if row is None else int(row[0])

    def named(self, name: str):
        known = []
        for shard in self.store.stores():
            cast = self._cast(shard)
            try:
                return cast.named(name)
            except NotFoundError:
                known += [r[0] for r in cast.cat.conn.execute("SELECT name FROM clusters WHERE name IS NOT NULL")]
        raise NotFoundError(f"no photos given and no cluster is named '{name}'"
                            + (f" (named: {', '.join(sorted(known))})" if known else
                               " (name one with `castfinder cast name`)"))

    def cluster_vectors(self, cluster_id: int) -> np.ndarray:
        shard = self.store.for_id(cluster_id)
        return self._cast(shard).cluster_vectors(cluster_id) if shard else np.zeros((0, 0), np.float32)

    def nearest_clusters(self, vector: np.ndarray, video_id: int | None, margin: float = 1.0):
        shards = self.store.stores() if video_id is None else [self._of_video(video_id).store]
        hits = [h for s in shards for h in self._cast(s).nearest_clusters(vector, video_id, margin)]
        return sorted(hits, key=lambda h: h[1])

    def name(self, cluster_id: int, name: str) -> None:
        self.store.name_cluster(cluster_id, name, self.p)


def open_store(path, writable: bool = False, kind: str = "flat"):
    """The store of an index directory: an IndexStore, or the read-only view of a sharded one."""
    if is_sharded(path):
        if writable:
            raise ShardedIndexWrite(f"{path} is a sharded index (written by `castfinder ingest --ray` workers): it is "
                                    f"searched here, not written; add videos with `castfinder ingest --ray ... --index {path}`")
        return ShardedStore(path)
    return IndexStore(path, writable=writable, kind=kind)
