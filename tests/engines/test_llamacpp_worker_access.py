"""A llama.cpp worker is reachable only from this machine, and only with its own key: it listens
on 127.0.0.1 alone, and its HTTP listener refuses a request without the secret the parent
generated for it (or with another worker's)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import pytest_asyncio
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.engines.llamacpp.process import WorkerHandle, WorkerProcess

pytestmark = pytest.mark.e2e  # a real engine process


def _config(model: Path) -> dict[str, object]:
    return {
        "model_path": str(model),
        "parallel": 1,
        "ctx_per_slot": 256,
        "threads": 1,
        "batch_size": 64,
        "cache_ram_mib": 0,
    }


@pytest_asyncio.fixture
async def workers(tmp_path: Path) -> AsyncIterator[tuple[WorkerHandle, WorkerHandle]]:
    model = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    first = WorkerProcess(_config(model), load_timeout_s=120)
    second = WorkerProcess(_config(model), load_timeout_s=120)
    try:
        yield await first.start(), await second.start()
    finally:
        await first.stop()
        await second.stop()


def _listening(pid: int) -> list[tuple[str, int]]:
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


async def test_the_worker_listens_on_loopback_only(workers: tuple[WorkerHandle, WorkerHandle]) -> None:
    handle = workers[0]
    address = urlsplit(handle.address)
    assert address.hostname == "127.0.0.1"
    sockets = _listening(handle.pid)
    assert sockets == [("127.0.0.1", address.port)], sockets
    # and from any other address of this machine, nothing answers on that port
    others = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family.name == "AF_INET" and not ipaddress.ip_address(a.address).is_loopback
    ]
    async with httpx.AsyncClient(timeout=5) as client:
        for ip in others:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://{ip}:{address.port}/health")


async def test_the_worker_refuses_requests_without_its_own_key(
    workers: tuple[WorkerHandle, WorkerHandle],
) -> None:
    first, second = workers
    assert first.secret != second.secret and len(first.secret) >= 32
    body = {"prompt": "the cat", "max_tokens": 1}
    async with httpx.AsyncClient(base_url=first.address, timeout=60) as client:
        for headers in ({}, {"Authorization": f"Bearer {second.secret}"}, {"Authorization": "Bearer x"}):
            refused = await client.post("/v1/completions", json=body, headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
        served = await client.post(
            "/v1/completions", json=body, headers={"Authorization": f"Bearer {first.secret}"}
        )
        assert served.status_code == 200, served.text
        assert served.json()["usage"]["completion_tokens"] == 1
