"""A real `castfinder serve` subprocess on 127.0.0.1 for the service, metrics and web-page tests, and a
plain file server (with redirects) for the sources it may be asked to fetch."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import time

import httpx

from conftest import DEV, ROOT, serve_http


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """media_roots: the folders POST /videos may ingest from (the dev clips unless told otherwise)."""

    def __init__(self, index_dir, token: str | None = None, extra: tuple = (), ready_timeout: float = 240,
                 media_roots: tuple = (DEV,)):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.index_dir = index_dir
        roots = [a for r in media_roots for a in ("--media-root", str(r))]
        args = [sys.executable, "-m", "castfinder", "serve", "--index", str(index_dir), "--port", str(self.port),
                *roots, *map(str, extra)]
        if token:
            args += ["--token", token]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=120)
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if self.client.get("/healthz").json()["ready"]:  # 503 too: ready, and saying what is wrong
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("server not ready in time")

    def wait_video(self, video_id: int, timeout: float = 600, until=("done", "stopped", "failed")) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            doc = self.client.get(f"/videos/{video_id}").json()
            if doc["status"] in until and not doc["running"]:
                return doc
            time.sleep(0.3)
        raise TimeoutError(f"video {video_id} still ingesting after {timeout} s")

    def query(self, photos, **fields):
        files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        data = {k: str(v) for k, v in fields.items() if v is not None}
        return self.client.post("/query", files=files, data=data)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.client.get("/healthz").status_code == 200

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.client.close()
        return self.proc.stdout.read() if self.proc.stdout else ""


class Site:
    """A file server on 127.0.0.1 over `directory`, with redirects (path -> Location) and a log of
    every path asked of it."""

    def __init__(self, directory, redirects=None):
        hits = self.hits = []
        redirects = self.redirects = dict(redirects or {})

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(directory), **kw)

            def do_GET(self):
                hits.append(self.path)
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def do_HEAD(self):
                hits.append(self.path)
                super().do_HEAD()

            def log_message(self, *a):
                pass

        self.httpd, self.url = serve_http(Handler)
        self.port = self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
