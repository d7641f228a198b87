"""One query engine for the CLI and the HTTP service: models loaded once, photo vectors cached by
content (a page that re-asks the same photos as ingest grows pays for detection once)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from castfinder.index.search import QueryVector, ShotHit, indexed_until, photo_vectors, search_shots
from castfinder.index.store import IndexStore
from castfinder.models.registry import FACE_EMBEDDERS, FRAME_EMBEDDERS, make_face_embedder, make_frame_embedder

from .core.config import Config
from .core.errors import InputError, NothingIndexedError


def parse_features(spec: str | None, indexed: dict[str, int]) -> tuple[str | None, str | None]:
    """'face=NAME,frame=NAME' (either part optional, NAME may be 'none') → the features to use;
    what is not given defaults to what the index holds."""
    face = next((n for n in indexed if n in FACE_EMBEDDERS), None)
    frame = next((n for n in indexed if n in FRAME_EMBEDDERS), None)
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        kind, _, name = part.partition("=")
        if kind not in ("face", "frame") or not name:
            raise InputError(f"features: expected face=NAME,frame=NAME, got '{part}'")
        if name == "none":
            name = None
        else:
            known = FACE_EMBEDDERS if kind == "face" else FRAME_EMBEDDERS
            if name not in known:
                raise InputError(f"unknown {kind} feature '{name}' (known: {', '.join(known)})")
            if name not in indexed:
                raise InputError(f"feature '{name}' is not in this index (indexed: {', '.join(indexed) or 'none'})")
        if kind == "face":
            face = name
        else:
            frame = name
    if not indexed:
        raise NothingIndexedError("nothing is indexed yet: ingest a video first")
    if face is None and frame is None:
        raise InputError("no feature left to search with (both face and frame set to none)")
    return face, frame


def result_doc(character, video_id, until, fusion, queries: list[QueryVector], hits: list[ShotHit]) -> dict:
    """The documented JSON answer (README: Querying)."""
    return {"character": character, "video": video_id, "indexed_until_s": until, "fusion": fusion,
            "queries": [{"photo": q.photo, "feature": q.feature, "kind": q.kind, "note": q.note} for q in queries],
            "results": [{"video": h.video_id, "shot": h.shot, "start_s": round(h.start_s, 3), "end_s": round(h.end_s, 3),
                         "score": h.score, "best_frame_s": round(h.best_frame_s, 3), "photos": h.photos}
                        for h in hits]}


class QueryEngine:
    def __init__(self, store: IndexStore, config: Config, cache_size: int = 256):
        self.store, self.cfg = store, config
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, list[QueryVector]] = OrderedDict()
        self._cache_size = cache_size

    # --- models ---------------------------------------------------------------------------------
    def _model(self, key: str, make):
        with self._lock:
            if key not in self._models:
                self._models[key] = make()
            return self._models[key]

    @property
    def detector(self):
        from castfinder.models.mtcnn_detector import MTCNNDetector
        ing = self.cfg.ingest
        return self._model("detector", lambda: MTCNNDetector(min_face_px=20, min_prob=ing.min_face_prob, device=ing.device,
                                                               thresholds=tuple(ing.mtcnn_thresholds)))

    def embedder(self, name: str | None):
        if name is None:
            return None
        kw = {"device": self.cfg.ingest.device, "weights_dir": self.cfg.ingest.weights_dir}
        if name in FACE_EMBEDDERS:
            kw["flip"] = self.cfg.ingest.face_flip  # query vectors made as the indexed ones were
        make = make_face_embedder if name in FACE_EMBEDDERS else make_frame_embedder
        return self._model(name, lambda: make(name, **kw))

    def warm_up(self) -> None:
        """Everything a first query would otherwise pay for: model loading and first inference,
        FAISS files read and reconciled, the vector → shot map filled."""
        from castfinder.models.base import Face
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
        self.detector.detect([image])
        face = Face(np.array([40, 40, 120, 120], np.float32),
                    np.array([[65, 70], [95, 70], [80, 85], [68, 100], [92, 100]], np.float32), 0.99)
        for name in self.store.indexed_features():
            emb = self.embedder(name)
            if name in FACE_EMBEDDERS:
                emb.embed_faces(image, [face])
            else:
                emb.embed_frames([image])
            self.store.feature(name)
        self.store.vector_map.sync(self.store.catalogue)

    # --- queries --------------------------------------------------------------------------------
    def vectors(self, photos: list[tuple[str, bytes | object]], face: str | None, frame: str | None,
                use_both: bool) -> list[QueryVector]:
        """photos: (name, RGB image or the file's bytes, content digest or None). Cached by digest, and
        bytes are decoded only on a miss: a page that asks again while ingest runs skips the decode too."""
        out = []
        for name, image, digest in photos:
            key = (digest, face, frame, use_both) if digest else None
            with self._lock:
                cached = self._cache.get(key) if key else None
                if cached is not None:
                    self._cache.move_to_end(key)
            if cached is None:
                if isinstance(image, bytes):
                    from castfinder.models.photo import load_photo
                    image = load_photo(image, name)
                cached = photo_vectors([(name, image)], self.detector, self.embedder(face), self.embedder(frame), use_both,
                                       lenient=self.cfg.query.lenient_photos)
                if key:
                    with self._lock:
                        self._cache[key] = cached
                        while len(self._cache) > self._cache_size:
                            self._cache.popitem(last=False)
            out += [QueryVector(name, q.feature, q.vector, q.kind, q.note) for q in cached]
        return out

    def tracks(self, feature: str | None):
        """The face tracks of `feature`, synced with the catalogue (the tracks of every closed shot)."""
        if feature is None or self.cfg.query.track_weight <= 0:
            return None
        return self.store.track_vectors(feature)

    def cast(self):
        from castfinder.index.cast import Cast, params_from_config
        from castfinder.index.shards import ShardedCast, ShardedStore
        face = next((n for n in self.store.indexed_features() if n in FACE_EMBEDDERS), "dlib-resnet")
        params = params_from_config(self.cfg.cast, face)
        return ShardedCast(self.store, params) if isinstance(self.store, ShardedStore) else Cast(self.store, params)

    def cluster_vectors(self, character: str) -> list[QueryVector]:
        """No photos: the vectors of the cluster named `character` are the query."""
        cast = self.cast()
        cid, _, vecs = cast.named(character)
        return [QueryVector(f"cluster:{cid}", cast.p.feature, v, "face", f"track {i} of cluster {cid} ({character})")
                for i, v in enumerate(vecs)]

    def expand(self, vectors: list[QueryVector], video_id: int | None, per_cluster: int = 50) -> list[QueryVector]:
        """Query expansion through the cast: a face photo inside a cluster's sphere adds that
        cluster's track vectors, weighted by how alike the photo and the cluster are."""
        cast = self.cast()
        extra, used = [], set()
        for q in vectors:
            if q.kind != "face" or q.feature != cast.p.feature:
                continue
            for cid, d in cast.nearest_clusters(q.vector, video_id, self.cfg.cast.expand_margin)[:1]:
                if cid in used:
                    continue
                used.add(cid)
                mean = cast.cluster_vectors(cid)
                weight = float(np.clip(q.vector @ (mean.mean(0) / (np.linalg.norm(mean.mean(0)) or 1)), 0, 1))
                extra += [QueryVector(f"cluster:{cid}", cast.p.feature, v, "face",
                                      f"expanded from {q.photo} (distance {d:.3f})", weight) for v in mean[:per_cluster]]
        return vectors + extra

    def query(self, photos, character: str | None = None, video_id: int | None = None, features: str | None = None,
              use_both: bool | None = None, top_k: int | None = None, fusion: str | None = None,
              limit: int | None = None, expand: bool = False) -> tuple[dict, list[ShotHit]]:
        q = self.cfg.query
        fusion = fusion or q.fusion
        until = indexed_until(self.store, video_id)  # unknown video → NotFound before any work
        face, frame = parse_features(features, self.store.indexed_features())
        if photos:
            vectors = self.vectors(photos, face, frame, q.use_both if use_both is None else use_both)
        elif character:
            vectors = self.cluster_vectors(character)
        else:
            raise InputError("give photos, or the name of a named cast cluster as the character")
        if expand:
            vectors = self.expand(vectors, video_id)
        limit = q.limit if limit is None else limit  # 0: every shot found (long films find thousands)
        hits = search_shots(self.store, vectors, top_k=top_k or q.top_k, fusion=fusion, video_id=video_id,
                            tracks=self.tracks(face), track_weight=q.track_weight,
                            scene_feature=frame if q.scene_tail else None,
                            context_weight=q.context_weight, limit=limit or None)
        return result_doc(character, video_id, until, fusion, vectors, hits), hits


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
