"""What a gateway adds in front of an upstream: Alizé against LiteLLM's proxy, one run, the same
fake upstream on loopback (bench/gateway_wire.py: a 5-token reply at once), the same machine.

For each system (see bench/gateway_systems.py for how each is configured: a key, a rate limit, a
budget, metering) and for the upstream called directly:

* **latency**: ``--latency-requests`` requests one after another (after ``--warmup``), non-streamed
  and streamed; p50/p99 of the time to the last byte (and to the first body byte). *Added* latency
  is the system's p50 (p99) minus the direct p50 (p99).
* **per-pod TPM** (``--per-pod-tpm``, bench/gateway_pods.py): one TPM limit, two processes of
  each gateway, the tokens admitted in total.
* **throughput**: at each concurrency of ``--levels``, that many closed-loop clients on their own
  keep-alive connections for ``--duration`` s (after 1 s unmeasured); requests/s completed with a
  200. The highest *sustained* requests/s is the best level with no failed request.

The client is raw asyncio (bench/gateway_wire.py) in this process, so it costs little of the two
cores the gateways and the upstream share; every server binds 127.0.0.1.

    .venv/bin/python bench/gateway.py            # -> bench/results/gateway.{json,png}
    .venv/bin/python bench/gateway.py --quick    # a smoke run -> bench/results/gateway-quick.*
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS_DIR,
    ManagedServer,
    free_port,
    log,
    machine_info,
    package_version,
    percentile,
    process_cpu_seconds,
)
from alize.store.testing import postgres_test_url, redis_test_url
from gateway_pods import per_pod_tpm
from gateway_report import plot, summarise
from gateway_systems import (
    LOG_DIR,
    Running,
    ensure_litellm,
    ledger_rows,
    postgres_schema,
    start_alize,
    start_litellm,
)
from gateway_wire import RawClient, chat_request

#: every request is bounded: one that takes longer counts as failed (status 0)
REQUEST_TIMEOUT_S = 30.0


def _cpu_s(target: Running) -> float | None:
    """CPU seconds (user + system) the target's server and its children have used so far: what
    a request costs the machine, which on 2 shared cores is steadier than its latency."""
    proc = target.server.proc
    used = None if proc is None else process_cpu_seconds(proc.pid)
    return None if used is None else sum(used)


def _ms(values: list[float], q: float) -> float | None:
    found = percentile(values, q)
    return None if found is None else round(found * 1000, 3)


async def latency(target: Running, *, stream: bool, n: int, warmup: int) -> dict[str, Any]:
    request = chat_request(
        target.host, target.port, target.path, target.key, stream=stream, model=target.model
    )
    client = RawClient(target.host, target.port)
    totals, firsts, failed = [], [], 0
    cpu_start: float | None = None
    try:
        for i in range(warmup + n):
            if i == warmup:
                cpu_start = _cpu_s(target)
            timing = await asyncio.wait_for(client.send(request), REQUEST_TIMEOUT_S)
            if timing.status != 200:
                failed += 1
                if failed == 1:
                    log(f"{target.name}: HTTP {timing.status}: {timing.body[:300]!r}")
                continue
            if i >= warmup:
                totals.append(timing.total_s)
                firsts.append(timing.first_byte_s)
        cpu_end = _cpu_s(target)
    finally:
        await client.close()
    cpu_ms = None if cpu_start is None or cpu_end is None else round((cpu_end - cpu_start) * 1000 / n, 3)
    return {
        "requests": n,
        "failed": failed,
        "server_cpu_ms_per_request": cpu_ms,
        "p50_ms": _ms(totals, 50),
        "p99_ms": _ms(totals, 99),
        "first_byte_p50_ms": _ms(firsts, 50),
        "first_byte_p99_ms": _ms(firsts, 99),
    }


async def throughput(target: Running, *, stream: bool, clients: int, duration_s: float) -> dict[str, Any]:
    request = chat_request(
        target.host, target.port, target.path, target.key, stream=stream, model=target.model
    )
    loop = asyncio.get_running_loop()
    start = loop.time() + 1.0  # one unmeasured second to open connections and settle
    end = start + duration_s
    ok, failed, sent_total, latencies = 0, 0, 0, []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        nonlocal ok, failed, sent_total
        client = RawClient(target.host, target.port)
        try:
            while loop.time() < end:
                sent = loop.time()
                try:
                    timing = await asyncio.wait_for(client.send(request), REQUEST_TIMEOUT_S)
                    status = timing.status
                except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError, TimeoutError):
                    await client.close()
                    status = 0
                sent_total += 1
                if sent < start:
                    continue
                if status == 200:
                    ok += 1
                    latencies.append(loop.time() - sent)
                else:
                    failed += 1
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = max(loop.time() - start, duration_s)
    return {
        "clients": clients,
        "sent": sent_total,
        "ok": ok,
        "failed": failed,
        "failed_statuses": statuses,
        "requests_per_s": round(ok / elapsed, 1),
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
    }


async def measure(target: Running, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"setup": target.setup, "latency": {}, "throughput": {}}
    sent = 0
    if target.name != "direct":  # the key is checked: a wrong one is refused
        wrong = chat_request(
            target.host, target.port, target.path, "sk-wrong", stream=False, model=target.model
        )
        client = RawClient(target.host, target.port)
        try:
            out["wrong_key_status"] = (await client.send(wrong)).status
        finally:
            await client.close()
        sent += 1
    for stream in (False, True):
        mode = "stream" if stream else "json"
        log(f"{target.name}: latency, {mode}")
        out["latency"][mode] = await latency(
            target, stream=stream, n=args.latency_requests, warmup=args.warmup
        )
        sent += args.latency_requests + args.warmup
    for stream in (False, True):
        mode = "stream" if stream else "json"
        rows = []
        for clients in args.levels:
            cell = await throughput(target, stream=stream, clients=clients, duration_s=args.duration)
            log(f"{target.name}: {mode} x{clients}: {cell['requests_per_s']} req/s, {cell['failed']} failed")
            rows.append(cell)
            sent += cell["sent"]
        out["throughput"][mode] = rows
    out["requests_sent"] = sent
    with contextlib.suppress(Exception):
        out["ledger_rows"] = ledger_rows(target)
    return out


def _stop(target: Running | None) -> None:
    if target is not None:
        target.server.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "gateway",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "levels": args.levels,
            "duration_s": args.duration,
            "latency_requests": args.latency_requests,
            "warmup": args.warmup,
            "request": "chat, 1 user message, max_tokens 16; the upstream answers 5 tokens at once",
        },
        "versions": {"alize": package_version("alize"), "python": sys.version.split()[0]},
        "systems": {},
    }
    upstream_port = free_port()
    upstream = ManagedServer(
        "fake-upstream",
        [sys.executable, str(Path(__file__).with_name("gateway_wire.py")), str(upstream_port)],
        None,
        LOG_DIR / "fake-upstream.log",
    )
    upstream.start()
    try:
        upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models", 30)
        direct = Running("direct", "127.0.0.1", upstream_port, "/v1/chat/completions", "x", "fake", upstream)
        report["systems"]["direct"] = await measure(direct, args)
        for name in args.systems:
            target: Running | None = None
            try:
                with contextlib.ExitStack() as stack:
                    if name == "alize":
                        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alize-bench-")))
                        target = start_alize(name, upstream_port, data, {})
                    elif name == "alize-shared":
                        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alize-bench-")))
                        url = stack.enter_context(postgres_schema(postgres_test_url()))
                        env = {"ALIZE_DATABASE_URL": url, "ALIZE_REDIS_URL": redis_test_url()}
                        target = start_alize(name, upstream_port, data, env)
                    elif name == "litellm":
                        python = ensure_litellm(args.litellm_version)
                        report["versions"]["litellm"] = args.litellm_version
                        target = start_litellm(python, upstream_port)
                    else:
                        raise SystemExit(f"unknown system {name}")
                    report["systems"][name] = await measure(target, args)
                    _stop(target)
                    target = None
            except Exception as exc:  # one system failing still reports the others
                log(f"{name}: failed: {exc}")
                report["systems"][name] = {"error": str(exc)[:2000]}
            finally:
                _stop(target)
        if args.per_pod_tpm:
            report["per_pod_tpm"] = await per_pod_tpm(
                upstream_port, tpm=args.per_pod_tpm, total=60, litellm_version=args.litellm_version
            )
    finally:
        upstream.stop()
    report["summary"] = summarise(report)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default="alize,alize-shared,litellm", help="comma-separated")
    p.add_argument("--levels", default="1,4,16,64", help="concurrent clients for throughput")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per throughput level")
    p.add_argument("--latency-requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--litellm-version", default="1.77.7")
    p.add_argument(
        "--per-pod-tpm",
        type=int,
        default=170,
        help="TPM limit for the two-process test (0 = skip it): two LiteLLM proxies vs two Alizé gateways",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: short levels, few requests")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.systems = [s for s in args.systems.split(",") if s]
    args.levels = [int(x) for x in args.levels.split(",")]
    if args.quick:
        args.levels, args.duration, args.latency_requests, args.warmup = [1, 8], 2.0, 100, 20
    out = args.out or RESULTS_DIR / ("gateway-quick.json" if args.quick else "gateway.json")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    started = time.perf_counter()
    report = runner(run(args))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')}")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
