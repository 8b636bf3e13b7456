"""(c) The anchor pathway over HTTP against a real server process (gunicorn, one sync
worker, keep-alive client): what a nurse's browser or an integration waits for."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Timer, bench_database_url, summary
from benchmarks.env import BENCH_PASSWORD, make_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie = ""

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        for header, value in resp.getheaders():
            if header.lower() == "set-cookie" and value.startswith("hms_session="):
                self.cookie = value.split(";", 1)[0]
        return resp.status, (json.loads(data) if data else {})


def _wait_ready(port: int, proc, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the HMS server exited during start-up")
        try:
            status, _ = Client(port).call("GET", "/health")
            if status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the HMS server did not answer /health in time")


def run(instances: int = 100, url: str | None = None) -> dict:
    url = url or bench_database_url("http")
    env = make_env(url)
    env.db.dispose()
    port = _free_port()
    server_env = dict(os.environ, HMS_DATABASE_URL=url, HMS_ENV="development", HMS_LOG_LEVEL="WARNING",
                      HMS_SECRET_KEY=env.config.secret_key, HMS_AUDIT_KEY="bench", HMS_REDIS_URL="")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "-w", "1", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                             "hms.wsgi:app"], env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        client = Client(port)
        status, _ = client.call("POST", "/api/v1/auth/login", {"username": "bench_nurse", "password": BENCH_PASSWORD})
        assert status == 200, status
        completion, per_instance = Timer(), []
        for i in range(instances):
            t0 = time.perf_counter()
            status, body = client.call("POST", "/api/v1/pathways/anchor_pathway/instances",
                                       {"data": {"needs_lab": False}})
            assert status == 201, body
            open_tasks = body["open_tasks"]
            while open_tasks:
                with completion.measure():
                    status, body = client.call("POST", f"/api/v1/tasks/{open_tasks[0]['id']}/complete",
                                               {"data": {"needs_lab": i % 2 == 0}})
                assert status == 200, body
                open_tasks = body["instance"]["open_tasks"]
            per_instance.append((time.perf_counter() - t0) * 1000)
        return {"completion": summary(completion.samples), "instance": summary(per_instance)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
