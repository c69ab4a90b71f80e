"""Start a real ``alize serve`` on a free loopback port, for tests that drive it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The engine worker processes (children of the server)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]


def admin(server: LiveServer, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """A call to the server's admin API (``/admin/api`` + ``path``)."""
    return httpx.request(method, f"{server.url}/admin/api{path}", json=body, timeout=120)


def cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``alize ARGS`` against the server, as an operator would run it."""
    env = {**os.environ, "ALIZE_URL": server.url}
    return subprocess.run(
        [sys.executable, "-m", "alize.cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


@contextmanager
def live_server(
    tmp_dir: Path, env: dict[str, str] | None = None, *, ready_timeout: float = 120.0
) -> Iterator[LiveServer]:
    port = free_port()
    log_path = tmp_dir / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    full_env.update(
        {
            "ALIZE_HOST": "127.0.0.1",
            "ALIZE_PORT": str(port),
            "ALIZE_DATA_DIR": str(tmp_dir / f"data-{port}"),
            "ALIZE_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "alize.cli.main", "serve"],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
            try:
                if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout} s:\n{server.log()[-3000:]}")
            time.sleep(0.25)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
