"""Observability for real: Debian's Prometheus server scrapes a running `castfinder serve` while it
ingests a dev clip and answers queries; the Grafana dashboard and compose files only use metrics
the code really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import DEV, ROOT, clip
from service_helpers import Server, free_port

DOCKER = ROOT / "docker"


def exported_names(metrics_text: str) -> set[str]:
    """Metric names a scrape offers, with the sample names histograms and counters expand to."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", metrics_text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter":
            names.add(f"{name}_total" if not name.endswith("_total") else name)
    return names


def dashboard_names() -> set[str]:
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "castfinder.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    return set(re.findall(r"castfinder_[a-z_]+", " ".join(exprs)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("obs") / "index")
    yield srv
    srv.stop()


def prom_value(prom: str, query: str) -> float:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": query}, timeout=10).json()
    assert r["status"] == "success", r
    result = r["data"]["result"]
    return sum(float(x["value"][1]) for x in result) if result else float("nan")


def test_prometheus_scrapes_ingest_and_query_metrics(server, tmp_path):
    assert shutil.which("prometheus"), "prometheus is installed by scripts/setup.sh"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "castfinder", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]}]}))
    prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:  # /-/ready is 503 (plain text) while the TSDB starts
            try:
                if httpx.get(f"{url}/-/ready", timeout=5).status_code == 200 and \
                        prom_value(url, 'up{job="castfinder"}') == 1:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if prom.poll() is not None:
                raise AssertionError(f"prometheus exited: {prom.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        assert prom_value(url, 'up{job="castfinder"}') == 1
        before = prom_value(url, "castfinder_frames_decoded_total")   # nan: no video yet
        vid = server.client.post("/videos", json={"source": str(clip("avenger2"))}).json()["id"]
        photos = sorted((DEV / "avenger2" / "refs" / "Tony").iterdir())
        mid = None
        while server.client.get(f"/videos/{vid}").json()["running"]:
            server.query(photos[:2])
            time.sleep(1)
            v = prom_value(url, "castfinder_frames_decoded_total")
            if mid is None and v == v and v > 0:
                mid = v
        for _ in range(3):
            server.query(photos)
        time.sleep(3)  # a few more scrapes
        decoded = prom_value(url, "castfinder_frames_decoded_total")
        assert not before == before or before == 0
        assert mid is not None and decoded > mid > 0                # the counter rose while Prometheus watched
        assert prom_value(url, "castfinder_vectors_indexed_total") > 0
        assert prom_value(url, "castfinder_faces_detected_total") > 0
        assert prom_value(url, "castfinder_shots_closed_total") == 4
        assert prom_value(url, 'castfinder_queries_total{outcome="ok"}') >= 3
        assert prom_value(url, "castfinder_query_seconds_count") >= 3
        p95 = prom_value(url, "histogram_quantile(0.95, sum by (le) (castfinder_query_seconds_bucket))")
        assert 0 < p95 < 10
        assert prom_value(url, f'castfinder_realtime_factor{{video="{vid}"}}') > 0
        assert prom_value(url, "castfinder_freshness_lag_seconds_count") > 0
    finally:
        prom.terminate()
        prom.wait(timeout=30)


def test_dashboard_uses_only_exported_metrics(server):
    names = exported_names(server.client.get("/metrics").text)
    missing = dashboard_names() - names
    assert not missing, f"dashboard queries metrics the code does not export: {missing}"
    # and every family the pipeline exports has a panel
    ours = {n for n in names if n.startswith("castfinder_") and not n.endswith(("_created", "_bucket", "_sum", "_count"))}
    unused = {n for n in ours if not any(d.startswith(n.removesuffix("_total")) for d in dashboard_names())}
    assert unused <= {"castfinder_http_requests", "castfinder_http_requests_total"}, unused


def test_compose_and_provisioning_files_fit_together():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"castfinder", "prometheus", "grafana"}
    app = services["castfinder"]
    mounts = {v.split(":")[1] for v in app["volumes"]}
    assert {"/data/index", "/weights"} <= mounts and {"index", "weights"} <= set(compose["volumes"])
    for dockerfile in ("Dockerfile", "Dockerfile.cpu"):
        text = (DOCKER / dockerfile).read_text()
        assert "castfinder\", \"serve\"" in text and "/data/index" in text and "CASTFINDER_WEIGHTS_DIR=/weights" in text
    assert "nvidia/cuda" in (DOCKER / "Dockerfile").read_text() and "faiss-gpu" in (DOCKER / "Dockerfile").read_text()
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["castfinder:8000"]
    assert "8000:8000" in app["ports"]
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus"
    prov = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/castfinder.yaml").read_text())["providers"][0]
    assert any(v.endswith(":" + prov["options"]["path"] + ":ro") for v in services["grafana"]["volumes"])
    dash = json.loads((DOCKER / "grafana/dashboards/castfinder.json").read_text())
    assert all(p["datasource"]["uid"] == "prometheus" for p in dash["panels"])
    # the promtool of the Debian package checks the Prometheus config
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "config", str(DOCKER / "prometheus.yml")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
