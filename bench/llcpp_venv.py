"""llama-cpp-python[server] in a temporary venv under bench/.cache (never part of Alizé's install),
installed from a cached wheel, built from source once with the machine's own CPU flags."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import CACHE_DIR, log

LLCPP_VENV = CACHE_DIR / "llcpp-venv"
WHEEL_DIR = CACHE_DIR / "wheels"
LOG_DIR = CACHE_DIR / "logs"


def llcpp_version(python: Path) -> str | None:
    if not python.exists():
        return None
    code = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _wheel_build_info() -> dict[str, Any] | None:
    path = WHEEL_DIR / "build-info.json"
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(path.read_text()))
    return None


def ensure_llcpp(args: argparse.Namespace) -> tuple[Path, str, dict[str, Any] | None]:
    """A python with llama-cpp-python[server]: the temporary venv, installed from the cached wheel if any."""
    if args.llcpp_python:
        python = Path(args.llcpp_python)
        version = llcpp_version(python)
        if version is None:
            raise SystemExit(f"{python} cannot import llama_cpp.server")
        return python, version, _wheel_build_info()
    python = LLCPP_VENV / "bin" / "python"
    version = llcpp_version(python)
    if version is not None:
        return python, version, _wheel_build_info()
    if not python.exists():
        log(f"llama-cpp-python: creating venv {LLCPP_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(LLCPP_VENV)], check=True, timeout=600)
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    wheels = sorted(WHEEL_DIR.glob("llama_cpp_python-*.whl"))
    if not wheels:
        env = dict(os.environ, CMAKE_ARGS=args.llcpp_cmake_args)
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count())
        cmd = [str(python), "-m", "pip", "wheel", "--no-deps", "-w", str(WHEEL_DIR), args.llcpp_spec]
        log(f"llama-cpp-python: building a wheel from source (minutes): {shlex.join(cmd)}")
        t0 = time.perf_counter()
        with (LOG_DIR / "llcpp-build.log").open("w") as out:
            subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=3600)
        wheels = sorted(WHEEL_DIR.glob("llama_cpp_python-*.whl"))
        info = {
            "wheel": wheels[-1].name,
            "build_s": round(time.perf_counter() - t0, 1),
            "cmake_args": args.llcpp_cmake_args,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (WHEEL_DIR / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    wheel = wheels[-1]
    log(f"llama-cpp-python: installing {wheel.name}[server] into {LLCPP_VENV}")
    cmd = [str(python), "-m", "pip", "install", "-q", f"{wheel}[server]"]
    subprocess.run(cmd, check=True, timeout=1800)
    version = llcpp_version(python)
    if version is None:
        raise SystemExit("llama-cpp-python installed but llama_cpp.server does not import")
    return python, version, _wheel_build_info()
