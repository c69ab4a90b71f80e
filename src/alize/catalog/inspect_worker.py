"""The sandboxed child that parses one GGUF file: ``python -m alize.catalog.inspect_worker PATH``.

It exists so that a hostile file can hurt only a throw-away process. Before touching the file it
caps its own address space (``RLIMIT_AS``), CPU time, core dumps and file writes; then it prints
exactly one JSON object on stdout, ``{"ok": true, "info": {...}}`` or
``{"ok": false, "error": "why"}``, and exits. The parent (:func:`alize.catalog.inspect.inspect_gguf`)
also enforces a wall-clock timeout and treats any other outcome as a rejected file.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any

EXIT_OK, EXIT_REJECTED, EXIT_BUG = 0, 2, 3


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def apply_limits(memory_limit: int, cpu_seconds: int) -> None:
    """Confine this process before it reads anything untrusted."""
    _limit(resource.RLIMIT_AS, memory_limit)
    _limit(resource.RLIMIT_CPU, cpu_seconds)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_FSIZE, 0)


def _emit(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alize.catalog.inspect_worker")
    parser.add_argument("path")
    parser.add_argument("--memory-limit", type=int, default=1024 * 1024 * 1024)
    parser.add_argument("--cpu-seconds", type=int, default=30)
    args = parser.parse_args(argv)
    apply_limits(args.memory_limit, args.cpu_seconds)

    # Imported after the limits are in place: nothing below runs unconfined.
    from alize.catalog.gguf import read_gguf_info
    from alize.catalog.gguf_reader import GGUFFormatError

    try:
        info = read_gguf_info(args.path)
    except GGUFFormatError as exc:
        _emit({"ok": False, "error": str(exc)})
        return EXIT_REJECTED
    except MemoryError:
        _emit({"ok": False, "error": "reading its header needs more memory than the inspector allows"})
        return EXIT_REJECTED
    except RecursionError:
        _emit({"ok": False, "error": "its header is nested too deeply"})
        return EXIT_REJECTED
    except Exception as exc:  # a reader bug must still produce an answer, not a traceback
        _emit({"ok": False, "error": f"the inspector failed unexpectedly ({type(exc).__name__})"})
        return EXIT_BUG
    _emit({"ok": True, "info": info.to_json()})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
