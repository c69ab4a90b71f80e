"""A real local Ray cluster for the e2e tests: a head and one worker node on 127.0.0.1, one CPU
each, started in their own process groups and stopped by signalling those groups (never
`ray stop`, which would stop every Ray process of the user)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.server import free_port

RAY = [sys.executable, "-m", "ray.scripts.scripts"]
#: seconds a node's `ray start --block` gets to stop on SIGTERM before it is killed
STOP_GRACE_S = 3.0
NODE = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "80000000"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a `ray start --block` and everything it started: its session holds the node's
    processes, and Ray's workers, which take process groups of their own.

    The graceful stop gets a few seconds only: a worker node stops in under one, but a head
    node that ran Serve applications did not stop within 20 s once its worker node was gone
    (every module's teardown waited out the whole 20 s). Its temp dir is removed after, and
    everything left in its session is killed below, so nothing outlives the test either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
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


@contextlib.contextmanager
def local_cluster(logs: Path) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a head node and one worker node, each with one CPU."""
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


def replica_pids(application: str) -> set[int]:
    """The processes of the application's Serve replicas (their title names the application)."""
    out = subprocess.run(["pgrep", "-f", f"ServeReplica:{application}:"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}
