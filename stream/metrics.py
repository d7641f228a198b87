"""Prometheus metrics of the ingest pipeline (castfinder_ prefix, _total counters, _seconds histograms)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES_DECODED = Counter("castfinder_frames_decoded_total", "Frames decoded", ["video"])
FRAMES_SAMPLED = Counter("castfinder_frames_sampled_total", "Frames kept by the per-shot sampler", ["video"])
FRAMES_DROPPED = Counter("castfinder_frames_dropped_duplicate_total", "Sampled frames dropped as near-duplicates", ["video"])
FACES_DETECTED = Counter("castfinder_faces_detected_total", "Faces detected", ["video"])
VECTORS_INDEXED = Counter("castfinder_vectors_indexed_total", "Vectors added to the FAISS indexes", ["video", "feature"])
SHOTS_CLOSED = Counter("castfinder_shots_closed_total", "Shots closed", ["video"])
DAMAGED_PACKETS = Counter("castfinder_damaged_packets_total", "Packets skipped as undecodable", ["video"])
INGEST_ERRORS = Counter("castfinder_ingest_errors_total", "Ingests ended by an error", ["kind"])
STAGE_SECONDS = Histogram("castfinder_stage_batch_seconds", "Time of one batch in a stage", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
STAGE_BATCH = Histogram("castfinder_stage_batch_size", "Frames per batch in a stage", ["stage"],
                        buckets=(1, 2, 4, 8, 16, 32, 64))
QUEUE_DEPTH = Gauge("castfinder_queue_depth", "Items waiting between stages", ["queue"])
REALTIME_FACTOR = Gauge("castfinder_realtime_factor", "Video seconds indexed per wall second", ["video"])
INDEXED_SECONDS = Gauge("castfinder_indexed_until_seconds", "Video time indexed so far", ["video"])
GPU_MEMORY = Gauge("castfinder_gpu_memory_bytes", "CUDA memory allocated by this process")


def record_gpu() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            GPU_MEMORY.set(torch.cuda.memory_allocated())
    except Exception:  # metrics must never break ingest
        pass


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    from prometheus_client import start_http_server

    from castfinder.errors import InputError
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise InputError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
