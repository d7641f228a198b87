"""Prometheus metrics of the ingest pipeline (castfinder_ prefix, _total counters, _seconds histograms)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES_DECODED = Counter("castfinder_frames_decoded_total", "Frames decoded", ["video"])
FRAMES_SAMPLED = Counter("castfinder_frames_sampled_total", "Frames kept by the per-shot sampler", ["video"])
FRAMES_DROPPED = Counter("castfinder_frames_dropped_duplicate_total", "Sampled frames dropped as near-duplicates", ["video"])
FACES_DETECTED = Counter("castfinder_faces_detected_total", "Faces detected", ["video"])
DARK_LOOKS = Counter("castfinder_dark_second_looks_total", "Dark faceless frames the detector looked at again, equalised",
                     ["video"])
VECTORS_INDEXED = Counter("castfinder_vectors_indexed_total", "Vectors added to the FAISS indexes", ["video", "feature"])
SHOTS_CLOSED = Counter("castfinder_shots_closed_total", "Shots closed", ["video"])
DAMAGED_PACKETS = Counter("castfinder_damaged_packets_total", "Packets skipped as undecodable", ["video"])
INGEST_ERRORS = Counter("castfinder_ingest_errors_total", "Ingests ended by an error", ["kind"])
STAGE_SECONDS = Histogram("castfinder_stage_batch_seconds", "Time of one batch in a stage", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
STAGE_BATCH = Histogram("castfinder_stage_batch_size", "Frames per batch in a stage", ["stage"],
                        buckets=(1, 2, 4, 8, 16, 32, 64))
QUEUE_DEPTH = Gauge("castfinder_queue_depth", "Items waiting between stages", ["queue"])
# several sources sharing one detect and embed stage (stream/shared_stages.py)
SOURCE_QUEUE_DEPTH = Gauge("castfinder_source_queue_depth", "Items a source has waiting for the shared stages", ["video"])
BATCH_FILL = Histogram("castfinder_batch_fill_ratio", "Frames in a shared model call over the most it may hold", ["stage"],
                       buckets=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0))
BATCH_SOURCES = Histogram("castfinder_batch_sources", "Sources whose frames share one detector call",
                          buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
SOURCE_FPS = Gauge("castfinder_source_frames_per_second", "Frames decoded per wall second, per source", ["video"])
REALTIME_FACTOR = Gauge("castfinder_realtime_factor", "Video seconds indexed per wall second", ["video"])
INDEXED_SECONDS = Gauge("castfinder_indexed_until_seconds", "Video time indexed so far", ["video"])
FRESHNESS_SECONDS = Histogram("castfinder_freshness_lag_seconds", "From a frame's decode to its vectors being searchable",
                              buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30))
QUERIES = Counter("castfinder_queries_total", "Queries answered, by outcome (ok, client_error, server_error)", ["outcome"])
QUERY_SECONDS = Histogram("castfinder_query_seconds", "Query latency, photos to fused shots",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
HTTP_REQUESTS = Counter("castfinder_http_requests_total", "HTTP requests by route and status class", ["route", "status"])
INGESTS_RUNNING = Gauge("castfinder_ingests_running", "Ingest jobs running in this process")
GPU_MEMORY = Gauge("castfinder_gpu_memory_bytes", "CUDA memory allocated by this process")
GPU_UTILISATION = Gauge("castfinder_gpu_utilization_ratio", "GPU busy fraction over the last sample (NVML)", ["gpu"])
GPU_MEMORY_USED = Gauge("castfinder_gpu_memory_used_bytes", "GPU memory in use on the device (NVML, all processes)", ["gpu"])

_nvml = None  # None: not tried yet; False: unavailable


def _nvml_handles():
    global _nvml
    if _nvml is None:
        try:
            import pynvml
            pynvml.nvmlInit()
            _nvml = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no driver, no GPU: metrics stay absent
            _nvml = False
    return _nvml or []


def record_gpu() -> None:
    try:
        import torch
        if not torch.cuda.is_available():
            return
        GPU_MEMORY.set(torch.cuda.memory_allocated())
        import pynvml
        for i, handle in enumerate(_nvml_handles()):
            GPU_UTILISATION.labels(str(i)).set(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            GPU_MEMORY_USED.labels(str(i)).set(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # metrics must never break ingest
        pass


def gpu_snapshot() -> list[dict]:
    """Each GPU now, from NVML: utilisation (0-1 over NVML's last sample period) and memory used/total
    in bytes. Empty without pynvml or a GPU (benchmarks report it; the gauges above export it)."""
    out = []
    try:
        import pynvml
        for i, handle in enumerate(_nvml_handles()):
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"gpu": i, "utilization": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                        "memory_used": int(mem.used), "memory_total": int(mem.total)})
    except Exception:  # no driver or no pynvml: nothing to report
        return []
    return out


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    from prometheus_client import start_http_server

    from castfinder.core.errors import InputError
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise InputError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
