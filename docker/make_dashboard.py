"""Writes docker/grafana/dashboards/castfinder.json (run after changing a panel here)."""

import json
from pathlib import Path

PANELS = [
    # (title, unit, [(expr, legend)], width)
    ("Ingest real-time factor per video", "x", [("castfinder_realtime_factor", "video {{video}}")], 12),
    ("Video indexed so far", "s", [("castfinder_indexed_until_seconds", "video {{video}}")], 12),
    ("Throughput per stage (frames/s)", "fps", [
        ("sum(rate(castfinder_frames_decoded_total[1m]))", "decoded"),
        ("sum(rate(castfinder_frames_sampled_total[1m]))", "sampled"),
        ("sum(rate(castfinder_stage_batch_size_sum{stage=\"detect\"}[1m]))", "detected"),
        ("sum(rate(castfinder_stage_batch_size_sum{stage=\"embed\"}[1m]))", "embedded")], 12),
    ("Stage batch latency p95", "s", [
        ("histogram_quantile(0.95, sum by (le, stage) (rate(castfinder_stage_batch_seconds_bucket[5m])))", "{{stage}}")], 12),
    ("Queue depth between stages", "short", [("castfinder_queue_depth", "{{queue}}")], 8),
    ("Dedup ratio (dropped / sampled)", "percentunit", [
        ("sum(rate(castfinder_frames_dropped_duplicate_total[5m])) / sum(rate(castfinder_frames_sampled_total[5m]))",
         "dropped")], 8),
    ("Faces per second", "short", [("sum by (video) (rate(castfinder_faces_detected_total[1m]))", "video {{video}}"),
                                   ("sum by (video) (rate(castfinder_dark_second_looks_total[1m]))",
                                    "dark frames looked at again, video {{video}}")], 8),
    ("Vectors indexed per second", "short", [("sum(rate(castfinder_vectors_indexed_total[1m]))", "vectors")], 8),
    ("Freshness lag p95 (decoded → searchable)", "s", [
        ("histogram_quantile(0.95, sum by (le) (rate(castfinder_freshness_lag_seconds_bucket[5m])))", "p95")], 8),
    ("Shots closed per minute", "short", [("sum by (video) (rate(castfinder_shots_closed_total[5m])) * 60", "video {{video}}")], 8),
    # several sources in one process sharing the detect and embed stages (castfinder ingest A B C ...)
    ("Frames decoded per second, per source", "fps", [
        ("sum by (video) (rate(castfinder_frames_decoded_total[1m]))", "video {{video}}"),
        ("castfinder_source_frames_per_second", "video {{video}} (since start)")], 12),
    ("Shared model calls: batch fill and sources per call", "short", [
        ("sum by (stage) (rate(castfinder_batch_fill_ratio_sum[1m])) / sum by (stage) (rate(castfinder_batch_fill_ratio_count[1m]))",
         "fill {{stage}}"),
        ("sum(rate(castfinder_batch_sources_sum[1m])) / sum(rate(castfinder_batch_sources_count[1m]))", "sources per detect call")], 12),
    ("Queue depth per source (waiting for the shared stages)", "short", [("castfinder_source_queue_depth", "video {{video}}")], 8),
    ("GPU utilisation", "percentunit", [("castfinder_gpu_utilization_ratio", "gpu {{gpu}}")], 8),
    ("GPU memory", "bytes", [("castfinder_gpu_memory_used_bytes", "device {{gpu}}"),
                             ("castfinder_gpu_memory_bytes", "castfinder (torch)")], 8),
    ("Ingests running / errors", "short", [("castfinder_ingests_running", "running"),
                                           ("sum by (kind) (increase(castfinder_ingest_errors_total[1h]))", "errors {{kind}}"),
                                           ("sum(increase(castfinder_damaged_packets_total[1h]))", "damaged packets")], 8),
    ("Query latency percentiles", "s", [
        (f"histogram_quantile({q}, sum by (le) (rate(castfinder_query_seconds_bucket[5m])))", f"p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)], 12),
    ("Queries per second by outcome", "reqps", [("sum by (outcome) (rate(castfinder_queries_total[5m]))", "{{outcome}}")], 12),
]


def main():
    panels, x, y = [], 0, 0
    for i, (title, unit, targets, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "gridPos": {"x": x, "y": y, "w": width, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(65 + j), "expr": e, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "prometheus"}} for j, (e, legend) in enumerate(targets)],
        })
        x += width
    dash = {"uid": "castfinder", "title": "castfinder", "schemaVersion": 39, "version": 1, "refresh": "5s",
            "time": {"from": "now-30m", "to": "now"}, "tags": ["castfinder"], "panels": panels, "templating": {"list": []}}
    out = Path(__file__).parent / "grafana" / "dashboards" / "castfinder.json"
    out.write_text(json.dumps(dash, indent=1) + "\n")
    print(f"wrote {out} ({len(panels)} panels)")


if __name__ == "__main__":
    main()
