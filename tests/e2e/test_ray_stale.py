"""Serve applications left behind by a gateway killed outright, on a real local Ray cluster (a
head and a worker node on 127.0.0.1, one CPU each, so two replicas fill it): the application
outlives its gateway and `alize ray apps` lists it; the next gateway with the same deployment
reuses it (the same two replica processes, none beside them); one with a changed replica config
replaces its replicas in place; `alize ray delete` removes it and stops its replicas (a gateway
still serving it answers 503s).

The cluster's processes are started in their own process groups and stopped by signalling
those groups (tests/e2e/ray_cluster.py); every gateway is killed by its process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.ray_cluster import local_cluster, replica_pids
from tests.e2e.server import LiveServer, live_server
from tests.support.installed import import_or_missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

import_or_missing("ray.serve")

APPLICATION = f"alize.{MODEL}"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_cluster(tmp_path_factory.mktemp("ray-logs")) as address:
        yield address


def _env(cluster: str, parallel: int) -> dict[str, str]:
    return {
        "ALIZE_RAY__ADDRESS": cluster,
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": MODEL, "replicas": 2}]),
        "ALIZE_ENGINE__PARALLEL": str(parallel),
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
        "ALIZE_CHAT__ENABLED": "false",
    }


def _ray_cli(cluster: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env["ALIZE_DATA_DIR"] = str(tmp / "cli-data")
    return subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "ray", *args, "--ray", cluster],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _chat(server: LiveServer) -> None:
    r = httpx.post(
        f"{server.v1}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8},
        timeout=120,
    )
    assert r.status_code == 200, r.text


def _assert_unavailable(server: LiveServer) -> None:
    """A plain and a streamed request both get a 503 in the OpenAI error shape, with a
    `Retry-After` and the Serve application's name."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}
    plain = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120)
    streamed = httpx.post(f"{server.v1}/chat/completions", json={**body, "stream": True}, timeout=120)
    for reply in (plain, streamed):
        assert reply.status_code == 503, (reply.status_code, reply.text, server.log()[-3000:])
        assert int(reply.headers["retry-after"]) >= 1
        error = reply.json()["error"]
        assert (error["type"], error["code"]) == ("service_unavailable", "engine_unavailable"), error
        assert APPLICATION in error["message"], error


def _dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def _kill(server: LiveServer) -> None:
    """`kill -9` of the gateway: nothing of it runs its shutdown."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def _wait_pids(check: Callable[[set[int]], bool], what: str, timeout_s: float = 120) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = replica_pids(APPLICATION)
        if check(pids):
            return pids
        assert time.monotonic() < deadline, f"{what}: replica processes {pids}"
        time.sleep(1)


def test_a_killed_gateways_application_is_reused_replaced_listed_and_removed(
    ray_cluster: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with live_server(_dir(tmp_path, "a"), _env(ray_cluster, parallel=2), ready_timeout=300) as first:
        first_ready_s = time.monotonic() - started
        _chat(first)
        pids = _wait_pids(lambda p: len(p) == 2, "two replicas")
        _kill(first)

    # the application outlives its gateway, replicas and all; the operator sees it
    listing = _ray_cli(ray_cluster, tmp_path, "apps")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    (line,) = [row for row in listing.stdout.splitlines() if row.startswith(APPLICATION)]
    assert "RUNNING" in line and "2 running" in line, listing.stdout
    assert replica_pids(APPLICATION) == pids

    # the next gateway reuses it: the same two replica processes, none started beside them
    started = time.monotonic()
    with live_server(_dir(tmp_path, "b"), _env(ray_cluster, parallel=2), ready_timeout=300) as second:
        second_ready_s = time.monotonic() - started
        assert f"already running in namespace alize: {APPLICATION} (RUNNING, 2 replicas)" in second.log()
        _chat(second)
        assert replica_pids(APPLICATION) == pids, (second_ready_s, first_ready_s)
        _kill(second)
    print(f"ready after {first_ready_s:.1f} s (first gateway), {second_ready_s:.1f} s (reusing)")

    # a changed replica config (3 slots per replica): its replicas are replaced, in place
    with live_server(_dir(tmp_path, "c"), _env(ray_cluster, parallel=3), ready_timeout=300) as third:
        _chat(third)
        fresh = _wait_pids(lambda p: len(p) == 2 and not p & pids, "replaced replicas")

        # removed by the operator under the serving gateway: its replicas stop, the cluster's
        # CPUs are free, and the gateway answers 503s naming the application (Serve's own
        # exception reached the client as a 500 `internal_error` before)
        removed = _ray_cli(ray_cluster, tmp_path, "delete", MODEL)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert f"deleted {APPLICATION}" in removed.stdout
        _wait_pids(lambda p: not p, "no replica after delete", timeout_s=60)
        assert not any(pid in replica_pids(APPLICATION) for pid in fresh)
        _assert_unavailable(third)
        _kill(third)
    empty = _ray_cli(ray_cluster, tmp_path, "apps")
    assert empty.returncode == 0 and "no Serve application in namespace alize" in empty.stdout, empty.stdout
    unknown = _ray_cli(ray_cluster, tmp_path, "delete", "nothing-here")
    assert unknown.returncode == 1 and "no such Serve application: alize.nothing-here" in unknown.stderr


def test_a_gateway_that_stops_leaves_the_application_another_gateway_uses(
    ray_cluster: str, tmp_path: Path
) -> None:
    """Two gateways share the application; the first one stopped normally leaves it to the
    second (it deleted it, replicas and all, under the second's feet), and the last one to stop
    deletes it."""
    env = _env(ray_cluster, parallel=2)
    with live_server(_dir(tmp_path, "a"), env, ready_timeout=300) as first:
        _chat(first)
        pids = _wait_pids(lambda p: len(p) == 2, "two replicas")
        with live_server(_dir(tmp_path, "b"), env, ready_timeout=300) as second:
            _chat(second)
            assert replica_pids(APPLICATION) == pids  # the second reuses the first's
            os.killpg(first.process.pid, signal.SIGTERM)  # a normal stop, shutdown and all
            first.process.wait(60)
            _chat(second)
            assert replica_pids(APPLICATION) == pids, first.log()[-2000:]
    # the second stopped normally too (leaving the block): nobody uses the application any more
    _wait_pids(lambda p: not p, "no replica once the last gateway stopped", timeout_s=90)
