"""SmolLM2 on a real local Ray cluster (a head and a worker node on 127.0.0.1, one CPU each),
2 Serve replicas of Alizé's llama.cpp worker behind `alize serve --ray`: both take traffic; a
replica killed under load ends the streams it carried with an error event (never a silent
[DONE]); new requests succeed on the other; the ledger holds exactly one row per request; and
Serve starts a new replica in place of the dead one.

The cluster's processes are started by this test in their own process groups and stopped by
signalling those groups (never `ray stop`, which would stop every Ray process of the user)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, free_port, live_server
from tests.support.installed import import_or_missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

import_or_missing("ray.serve")

RAY = [sys.executable, "-m", "ray.scripts.scripts"]
NODE = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "80000000"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a `ray start --block` and everything it started: its session holds the node's
    processes, and Ray's workers, which take process groups of their own."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    members = subprocess.run(["ps", "-o", "pid=", "-s", str(process.pid)], capture_output=True, text=True)
    for pid in (int(p) for p in members.stdout.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_started(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"Ray did not start: {log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a head node and one worker node, each with one CPU."""
    logs = tmp_path_factory.mktemp("ray-logs")
    # a short temp dir: Ray's socket paths must fit in 107 bytes
    temp = tempfile.mkdtemp(prefix="alz-ray-", dir="/tmp")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = [*NODE, "--temp-dir", temp, "--disable-usage-stats", "--block"]
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*RAY, "start", *args, *common],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        _wait_started(process, log)

    try:
        start("head", "--head", "--port", str(port), "--include-dashboard", "false")
        start("worker", "--address", f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        for process in reversed(started):
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "ALIZE_RAY__ADDRESS": ray_cluster,
        "ALIZE_RAY__HEALTH_CHECK_PERIOD_S": "2",
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": MODEL, "replicas": 2}]),
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
        "ALIZE_CHAT__ENABLED": "false",
    }
    with live_server(tmp_path_factory.mktemp("ray-gateway"), env, ready_timeout=300) as server:
        yield server


def _served(server: LiveServer) -> dict[str, int]:
    r = httpx.get(f"{server.url}/admin/api/deployments", timeout=30)
    assert r.status_code == 200, r.text
    (deployment,) = [d for d in r.json()["data"] if d["name"] == MODEL]
    served: dict[str, int] = deployment["state"]["served_per_ray_replica"]
    return served


def _chat(server: LiveServer, text: str, max_tokens: int) -> dict[str, Any]:
    r = httpx.post(
        f"{server.v1}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens},
        timeout=120,
    )
    return {"status": r.status_code, "id": r.headers.get("x-request-id"), "body": r.json()}


class Stream(threading.Thread):
    """One streamed reply, read to its end: its chunks, and how it ended."""

    def __init__(self, server: LiveServer, text: str) -> None:
        super().__init__(daemon=True)
        self.server, self.text = server, text
        self.tokens = 0
        self.ending: str | None = None  # "done", "error" or "silent"
        self.error: dict[str, Any] | None = None
        self.request_id: str | None = None
        self.started = threading.Event()

    def run(self) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": self.text}],
            "max_tokens": 300,
            "stream": True,
        }
        with httpx.stream("POST", f"{self.server.v1}/chat/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            self.request_id = r.headers.get("x-request-id")
            self.ending = "silent"
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    self.ending = "done"
                    break
                event = json.loads(payload)
                if "error" in event:
                    self.ending, self.error = "error", event["error"]
                    break
                self.tokens += 1
                if self.tokens >= 3:
                    self.started.set()
        self.started.set()


def _replica_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", f"ServeReplica:{MODEL}"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _ledger_rows(server: LiveServer, request_ids: list[str]) -> int:
    r = httpx.get(f"{server.url}/admin/api/usage", params={"group_by": "deployment"}, timeout=30)
    assert r.status_code == 200, r.text
    for rid in request_ids:
        row = httpx.get(f"{server.url}/admin/api/usage/requests/{rid}", timeout=30)
        assert row.status_code == 200, (rid, row.text)
    return sum(int(g["requests"]) for g in r.json()["data"] if g["group"] == MODEL)


def test_two_ray_replicas_serve_survive_a_kill_and_are_restored(gateway: LiveServer) -> None:
    request_ids: list[str] = []
    # both replicas take traffic: 4 concurrent replies on 2 replicas of 2 slots each
    warm = [Stream(gateway, f"Say hello number {i}.") for i in range(4)]
    for s in warm:
        s.start()
    for s in warm:
        s.join(120)
    assert [s.ending for s in warm] == ["done"] * 4
    request_ids += [s.request_id for s in warm if s.request_id]
    served = _served(gateway)
    assert len(served) == 2 and all(n >= 1 for n in served.values()), served
    pids = _replica_pids()
    assert {int(name.rsplit(":", 1)[1]) for name in served} == pids

    # under load, kill one replica's process
    story = "Write a long story about a lighthouse keeper and a storm, at least five hundred words"
    load = [Stream(gateway, f"{story} ({i}).") for i in range(4)]
    for s in load:
        s.start()
    for s in load:
        assert s.started.wait(120)
    # Serve picks the replica of each request (power of two choices), so the 4 need not split
    # 2 and 2: the victim is the replica that took the most of them (min(pids) was once idle,
    # and every stream ended with [DONE]); the other keeps what it took
    loaded = _served(gateway)
    carried = {int(n.rsplit(":", 1)[1]): loaded.get(n, 0) - served.get(n, 0) for n in loaded}
    victim = max(carried, key=lambda pid: carried[pid])
    survivor_pid = next(pid for pid in pids if pid != victim)
    assert carried[victim] >= 1, carried
    os.kill(victim, signal.SIGKILL)
    for s in load:
        s.join(120)
    request_ids += [s.request_id for s in load if s.request_id]
    endings = [s.ending for s in load]
    assert "silent" not in endings and None not in endings, endings
    assert endings.count("error") >= 1, (endings, carried)
    if carried.get(survivor_pid, 0) >= 1:
        assert endings.count("done") >= 1, (endings, carried)
    for s in load:
        if s.error is not None:
            assert s.error["code"] == "engine_unavailable" and "died" in s.error["message"], s.error

    # new requests succeed, on the replica left
    after = [_chat(gateway, f"Name a colour, please ({i}).", 8) for i in range(3)]
    assert [a["status"] for a in after] == [200] * 3, after
    request_ids += [a["id"] for a in after if a["id"]]
    assert all(c["body"]["choices"][0]["message"]["content"] for c in after)
    survivor = f":{survivor_pid}"
    now = _served(gateway)
    gained = {n: now.get(n, 0) - served.get(n, 0) for n in now}
    assert sum(v for n, v in gained.items() if n.endswith(survivor)) >= 1, gained

    # exactly one ledger row per request
    assert len(request_ids) == 4 + 4 + 3 == len(set(request_ids))
    assert _ledger_rows(gateway, request_ids) == len(request_ids)

    # Serve replaces the dead replica
    deadline = time.monotonic() + 120
    while True:
        fresh = _replica_pids()
        if len(fresh) == 2 and victim not in fresh:
            break
        assert time.monotonic() < deadline, f"no replacement replica: {fresh}"
        time.sleep(1)
    assert survivor_pid in fresh
