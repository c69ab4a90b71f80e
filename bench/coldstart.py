"""Cold start: from a request to an unloaded deployment to its first token, before and after.

One run starts ``alize serve`` twice, on the same machine and settings: once with the code of a
baseline commit (``--before``, extracted with ``git archive`` into bench/.cache) and once with
this checkout's code. Each server declares two deployments that scale to zero after
``--idle`` seconds: ``cold-chat`` (the packaged SmolLM2, llama.cpp) and ``cold-embed`` (MiniLM,
PyTorch). For each, ``--cycles`` times: wait until the idle reaper has unloaded it, then time a
request from sending it to the first content token (chat, streamed) or to the whole answer
(embeddings, one short input), and a second, warm request right after. The server's own
figure for the load (``x-alize-cold-start-ms``) is kept beside the client's, and for this
checkout the worker's breakdown of each llama.cpp start (imports, GGUF traits, llama.cpp
``Server()``) is read from the server log. Cycle 1 starts ``--settle`` seconds (15) after the
server first answers, so start-up work (this checkout's PyTorch prewarm) is over, as on a
server that has been up a while; it is still each deployment's first load in that process.

Usage::

    .venv/bin/python bench/coldstart.py                       # before = BASELINE, 10 cycles
    .venv/bin/python bench/coldstart.py --before none         # this checkout only
    .venv/bin/python bench/coldstart.py --cycles 3 --output /tmp/cold.json   # a quick look

Writes bench/results/coldstart.json (and prints a summary table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import (
    CACHE_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    ManagedServer,
    free_port,
    log,
    machine_info,
    percentile,
)

#: the commit this work started from (issue #25): main before the cold-start changes
BASELINE = "bf3162d"
CHAT, EMBED = "cold-chat", "cold-embed"
_TIMINGS = re.compile(r"worker \d+ listening for \S+ after ([\d.]+) s \((.*)\)")


def source_tree(ref: str) -> Path:
    """``src/`` of ``ref``, extracted once into bench/.cache (the server runs it via PYTHONPATH)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    target = CACHE_DIR / f"coldstart-src-{sha}"
    if not (target / "src" / "alize").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], cwd=REPO_ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def _deployments(idle_s: float) -> str:
    return json.dumps(
        [
            {"name": "smollm2-135m-instruct"},  # the default: pinned, never loaded here
            {"name": CHAT, "model": "smollm2-135m-instruct", "idle_timeout_s": idle_s},
            {"name": EMBED, "model": "all-minilm-l6-v2", "idle_timeout_s": idle_s},
        ]
    )


def _state(client: httpx.Client, name: str) -> dict[str, Any]:
    state: dict[str, Any] = client.get(f"/admin/api/deployments/{name}").json()["state"]
    return state


def _wait_unloaded(client: httpx.Client, name: str, timeout_s: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while _state(client, name)["loaded"]:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{name} was not unloaded within {timeout_s:.0f} s")
        time.sleep(0.05)
    time.sleep(0.3)  # let the worker process finish exiting


def _chat(client: httpx.Client) -> tuple[float, int | None]:
    """Seconds to the first content token, and the server's cold-start header (ms)."""
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    t0 = time.perf_counter()
    first: float | None = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"chat: HTTP {response.status_code}: {response.read()[:300]!r}")
        cold = response.headers.get("x-alize-cold-start-ms")
        for line in response.iter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("chat: no content token received")
    return first, int(cold) if cold else None


def _embed(client: httpx.Client) -> tuple[float, int | None]:
    t0 = time.perf_counter()
    response = client.post("/v1/embeddings", json={"model": EMBED, "input": "The quick brown fox"})
    elapsed = time.perf_counter() - t0
    if response.status_code != 200:
        raise RuntimeError(f"embeddings: HTTP {response.status_code}: {response.text[:300]}")
    cold = response.headers.get("x-alize-cold-start-ms")
    return elapsed, int(cold) if cold else None


def _summary(values: list[float]) -> dict[str, float | None]:
    return {
        "p50_s": percentile(values, 50),
        "max_s": max(values) if values else None,
        "min_s": min(values) if values else None,
    }


def _worker_timings(log_text: str) -> list[dict[str, float]]:
    found = []
    for match in _TIMINGS.finditer(log_text):
        parts = dict(p.split(" ") for p in match.group(2).split(", ") if " " in p)
        found.append({"total_s": float(match.group(1)), **{k: float(v) for k, v in parts.items()}})
    return found


def run_side(label: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix=f"coldstart-{label}-", dir=CACHE_DIR))
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "ALIZE_HOST": "127.0.0.1",
        "ALIZE_PORT": str(port),
        "ALIZE_DATA_DIR": str(data_dir),
        "ALIZE_LOG_LEVEL": "info",
        "ALIZE_LOAD_ON_START": "false",
        "ALIZE_CATALOG__IDLE_CHECK_INTERVAL_S": "0.1",
        "ALIZE_DEPLOYMENTS": _deployments(args.idle),
    }
    for key, value in (("PARALLEL", args.parallel), ("CTX_PER_SLOT", args.ctx_per_slot)):
        if value:
            env[f"ALIZE_ENGINE__{key}"] = str(value)
    if label == "after":
        env.update(item.split("=", 1) for item in args.set)
    cmd = [sys.executable, "-m", "alize.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = ManagedServer(f"alize-{label}", cmd, env, CACHE_DIR / f"coldstart-{label}.log")
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"src": str(src)}
    server.start()
    try:
        server.wait_ready(f"{base}/health", timeout_s=180)
        time.sleep(args.settle)  # start-up work (the PyTorch prewarm) is over, as on a server up a while
        with httpx.Client(base_url=base, timeout=httpx.Timeout(300.0)) as client:
            for name, call in ((CHAT, _chat), (EMBED, _embed)):
                cold, warm, server_ms = [], [], []
                for cycle in range(args.cycles):
                    _wait_unloaded(client, name)
                    seconds, header = call(client)
                    warm_s, _ = call(client)
                    cold.append(seconds)
                    warm.append(warm_s)
                    if header is not None:
                        server_ms.append(header)
                    log(f"{label} {name} cycle {cycle + 1}: cold {seconds:.3f} s, warm {warm_s:.3f} s")
                model = client.get(f"/v1/models/{name}").json()
                result[name] = {
                    "cold_s": [round(v, 4) for v in cold],
                    "warm_s": [round(v, 4) for v in warm],
                    "server_load_ms": server_ms,
                    "cold": _summary(cold),
                    "warm": _summary(warm),
                    "v1_models_cold_start": model.get("cold_start"),
                }
    finally:
        server.stop()
    workers = _worker_timings(server.log_path.read_text(errors="replace"))
    if workers:
        keys = sorted({k for w in workers for k in w})
        result["llamacpp_worker_breakdown_p50_s"] = {
            k: percentile([w[k] for w in workers if k in w], 50) for k in keys
        }
        result["llamacpp_worker_starts"] = workers
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=10, help="unload/load cycles per deployment")
    parser.add_argument("--before", default=BASELINE, help="baseline git ref, or 'none'")
    parser.add_argument("--after", default=None, help="git ref to measure (default: this checkout's src)")
    parser.add_argument("--idle", type=float, default=0.5, help="idle timeout of the deployments (s)")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds between the server answering and cycle 1"
    )
    parser.add_argument("--parallel", type=int, default=None, help="ALIZE_ENGINE__PARALLEL")
    parser.add_argument("--ctx-per-slot", type=int, default=None, help="ALIZE_ENGINE__CTX_PER_SLOT")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra server setting for the 'after' side, e.g. ALIZE_ENGINE__QUICK_START_SLOTS=0",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "coldstart.json")
    args = parser.parse_args()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "coldstart",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "cycles": args.cycles,
        "idle_timeout_s": args.idle,
        "settle_s": args.settle,
        "engine": {
            "parallel": args.parallel or "server default",
            "ctx_per_slot": args.ctx_per_slot or "server default",
        },
        "targets_s": {CHAT: 1.5, EMBED: 2.0},
        "after_settings": args.set,
        "sides": {},
    }
    sides = [] if args.before == "none" else [("before", source_tree(args.before))]
    sides.append(("after", source_tree(args.after) if args.after else REPO_ROOT / "src"))
    for label, src in sides:
        log(f"{label}: {src}")
        report["sides"][label] = run_side(label, src, args)
        if label == "before":
            report["before_ref"] = args.before
    report["after_ref"] = args.after or "working tree"
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'side':8} {'deployment':11} {'cold p50':>9} {'cold max':>9} {'warm p50':>9}")
    for label, side in report["sides"].items():
        for name in (CHAT, EMBED):
            s = side[name]
            print(
                f"{label:8} {name:11} {s['cold']['p50_s']:9.3f} {s['cold']['max_s']:9.3f} "
                f"{s['warm']['p50_s']:9.3f}"
            )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
