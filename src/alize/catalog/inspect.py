"""Inspect a GGUF file that came from outside, in a sandboxed child process.

:func:`inspect_gguf` / :func:`inspect_gguf_async` run :func:`alize.catalog.gguf.read_gguf_info`
in :mod:`alize.catalog.inspect_worker` under a memory ceiling and a timeout, with a minimal
environment, so a forged or corrupt file can at worst kill that child: the server sees an
:class:`InvalidRequestError` with code ``invalid_model_file`` and carries on.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from alize.catalog.gguf import GGUFInfo
from alize.errors import InvalidRequestError

INVALID_MODEL_FILE = "invalid_model_file"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_LIMIT = 1024 * 1024 * 1024


def _invalid(path: Path, reason: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'{path.name}' is not a usable GGUF model file: {reason}", param="path", code=INVALID_MODEL_FILE
    )


def _precheck(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise _invalid(p, f"no such file: {p}")
    if not p.is_file():
        raise _invalid(p, "it is not a regular file")
    if not os.access(p, os.R_OK):
        raise _invalid(p, "the server cannot read it (permission denied)")
    return p


def _worker_command(path: Path, timeout_s: float, memory_limit: int) -> list[str]:
    return [
        sys.executable,
        "-s",
        "-m",
        "alize.catalog.inspect_worker",
        "--memory-limit",
        str(memory_limit),
        "--cpu-seconds",
        str(max(1, int(timeout_s + 1))),
        str(path),
    ]


def _worker_env() -> dict[str, str]:
    """A minimal environment: the child must import this very ``alize`` (wherever it was imported
    from), and has no business seeing the server's secrets while it reads a hostile file."""
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}


def _result(path: Path, returncode: int, stdout: bytes) -> GGUFInfo:
    try:
        reply = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        reply = None
    if isinstance(reply, dict) and reply.get("ok") is True and isinstance(reply.get("info"), dict):
        return GGUFInfo.from_json(reply["info"])
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        raise _invalid(path, reply["error"])
    if returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
        raise _invalid(path, f"the inspector process was killed ({how}) while reading it")
    raise _invalid(path, f"the inspector process failed (exit status {returncode}) while reading it")


def inspect_gguf(
    path: str | os.PathLike[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
) -> GGUFInfo:
    """Inspect an untrusted GGUF file in a sandboxed child; blocking (run it in a thread from
    async code, or use :func:`inspect_gguf_async`). Raises :class:`InvalidRequestError`."""
    p = _precheck(path)
    try:
        proc = subprocess.run(
            _worker_command(p, timeout_s, memory_limit_bytes),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            env=_worker_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _invalid(p, f"reading its header took longer than {timeout_s:g} s") from None
    return _result(p, proc.returncode, proc.stdout)


async def inspect_gguf_async(
    path: str | os.PathLike[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
) -> GGUFInfo:
    """:func:`inspect_gguf` for the event loop: the child is killed if it overruns or if the
    awaiting task is cancelled."""
    p = _precheck(path)
    proc = await asyncio.create_subprocess_exec(
        *_worker_command(p, timeout_s, memory_limit_bytes),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_worker_env(),
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        raise _invalid(p, f"reading its header took longer than {timeout_s:g} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return _result(p, proc.returncode if proc.returncode is not None else -signal.SIGKILL, stdout)
