"""The Ray engine without a cluster: a cluster that does not answer is a clear error (and
`alize serve --ray` exits 3 with it, before serving anything), the replica count or autoscaling
bounds become Serve's options, and Ray's failures become Alizé's typed errors. The engine on a
real cluster is tests/e2e/test_ray.py."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.e2e.server import free_port
from tests.support.installed import import_or_missing

from alize.cli.serve import EXIT_NO_CLUSTER
from alize.domain import GenerationRequest, SamplingParams
from alize.engines.base import EngineConfig, ReplicaScaling
from alize.engines.ray import RayEngine, RayUnavailableError, connect, scaling_options
from alize.errors import ContextLengthExceededError, EngineError, EngineUnavailableError, QueueFullError

ray = import_or_missing("ray")
exceptions = import_or_missing("ray.exceptions")


def test_a_cluster_that_does_not_answer_is_a_clear_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RayUnavailableError, match=f"no Ray cluster answers at {address}"):
        connect(address, namespace="alize", timeout_s=2)
    with pytest.raises(RayUnavailableError, match="not a Ray address"):
        connect("head-without-port", namespace="alize", timeout_s=2)
    assert not ray.is_initialized()


def test_serve_exits_3_when_the_cluster_is_unreachable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env["ALIZE_DATA_DIR"] = str(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "serve", "--port", "0", "--ray", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_NO_CLUSTER == 3, result.stdout + result.stderr
    assert f"no Ray cluster answers at {address}" in result.stderr
    assert "Alizé on" not in result.stdout  # it never started serving


def test_serve_exits_3_when_the_address_is_not_a_ray_cluster(tmp_path: Path) -> None:
    """Something accepts connections on the port but never speaks Ray's protocol: `ray.init`
    would wait without end; `alize serve` gives up after RAY__CONNECT_TIMEOUT_S."""
    silent = socket.create_server(("0.0.0.0", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(ALIZE_DATA_DIR=str(tmp_path), ALIZE_RAY__CONNECT_TIMEOUT_S="3")
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "alize.cli.main", "serve", "--port", "0", "--ray", address],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        silent.close()
        for connection in accepted:
            connection.close()
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"nothing at {address} answered as a Ray cluster within 3 s" in result.stderr


def test_replicas_or_autoscaling_bounds_become_serve_options() -> None:
    assert scaling_options(ReplicaScaling(replicas=3), parallel=4) == {"num_replicas": 3}
    assert scaling_options(ReplicaScaling(2, 1, 6, None), parallel=4) == {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 6,
            "initial_replicas": 2,
            "target_ongoing_requests": 2.0,
        }
    }
    zero = scaling_options(ReplicaScaling(1, 0, 2, 3.0), parallel=4)["autoscaling_config"]
    assert (zero["min_replicas"], zero["initial_replicas"], zero["target_ongoing_requests"]) == (0, 1, 3.0)


def _engine() -> RayEngine:
    return RayEngine(EngineConfig(kind="ray", model_path=Path("/m.gguf"), options={"application": "chat"}))


def test_rays_failures_become_typed_errors() -> None:
    engine = _engine()
    died = engine._translate(exceptions.ActorDiedError(), started=True)
    assert isinstance(died, EngineUnavailableError) and "died while streaming" in died.message
    before = engine._translate(exceptions.ActorUnavailableError("gone", None), started=False)
    assert isinstance(before, EngineUnavailableError) and "before it took the request" in before.message
    cause = ContextLengthExceededError(prompt_tokens=10, max_tokens=5, context_length=12)
    task = exceptions.RayTaskError("generate", "traceback", cause)
    assert engine._translate(task, started=False) is cause  # the replica's own error, as raised
    other = engine._translate(exceptions.RayTaskError("generate", "tb", KeyError("x")), started=True)
    assert isinstance(other, EngineError) and "KeyError" in other.message
    assert engine._translate(ValueError("not ray's"), started=True) is None


def test_serves_own_failures_become_typed_errors() -> None:
    """Serve raises its own exceptions in the gateway's process (the handle's router), outside
    Ray's tree: each becomes a 503 with its Retry-After, not a 500."""
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    engine = _engine()
    gone = engine._translate(DeploymentUnavailableError(DeploymentID("llamacpp", "chat")), started=False)
    assert (
        isinstance(gone, EngineUnavailableError)
        and "Serve application alize.chat is unavailable" in gone.message
    )
    assert gone.retry_after == 30
    replica = engine._translate(ReplicaUnavailableError("r1"), started=False)
    assert isinstance(replica, EngineUnavailableError) and "went away" in replica.message
    full = engine._translate(
        BackPressureError(num_queued_requests=9, max_queued_requests=8, retry_after_s=3), started=False
    )
    assert isinstance(full, QueueFullError) and full.retry_after == 3
    assert full.status_code == 503


async def test_an_engine_not_deployed_is_unavailable() -> None:
    engine = _engine()
    with pytest.raises(EngineUnavailableError):
        engine.info  # noqa: B018
    request = GenerationRequest("r", SamplingParams(max_tokens=4), prompt="hi")
    with pytest.raises(EngineUnavailableError):
        await engine.count_prompt_tokens(request)
    await engine.stop()  # nothing deployed: nothing to delete
