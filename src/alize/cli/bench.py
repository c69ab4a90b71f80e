"""``alize bench``: load an OpenAI-compatible endpoint and report TTFT, TPOT, ITL, throughput and
goodput (the generator is :mod:`alize.cli.loadgen`). Works against Alizé or any other server,
so the two can be compared on the same prompts: see bench/serving.py and docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _machine() -> dict[str, Any]:
    from alize.deployments.benchmark import cpu_model  # lazily: the CLI starts without deployments

    cpu = cpu_model()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg": [round(x, 2) for x in load] if load else None}


def plot(results: list[dict[str, Any]], path: Path, title: str) -> bool:
    """TTFT and TPOT distributions (CDFs) as a PNG; ``False`` when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "ttft_s", "TTFT (ms)"), (axes[1], "tpot_s", "TPOT (ms)")):
        values = sorted(r[key] * 1000 for r in results if r.get(key) is not None)
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))])
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


GOODPUT = typer.Option([], help="An SLO, e.g. --goodput ttft:500 --goodput tpot:50 (milliseconds).")
JSON_OUT = typer.Option(None, "--json", help="Write the report (and each request) here.")
PLOT_OUT = typer.Option(None, "--plot", help="Write TTFT/TPOT distributions as a PNG.")


def bench(
    base_url: str = typer.Option(
        "http://127.0.0.1:8000/v1", "--base-url", envvar="ALIZE_BENCH_URL", help="The endpoint's /v1 root."
    ),
    model: str = typer.Option("smollm2-135m-instruct", help="The `model` to request."),
    api_key: str | None = typer.Option(
        None, envvar="ALIZE_API_KEY", help="Bearer key (env ALIZE_API_KEY); none for open servers."
    ),
    concurrency: int | None = typer.Option(None, min=1, help="Closed-loop clients (or the cap on a rate)."),
    request_rate: float | None = typer.Option(None, min=0.001, help="Poisson arrivals, requests per second."),
    num_prompts: int = typer.Option(32, min=1, help="Requests to send."),
    dataset: str = typer.Option("builtin", help="builtin, random, or a JSONL file of prompt/messages lines."),
    input_len: int | None = typer.Option(None, min=1, help="Words per prompt for the random dataset."),
    output_len: int = typer.Option(128, min=1, help="max_tokens of each request."),
    temperature: float = typer.Option(0.0, min=0, help="Sampling temperature."),
    ignore_eos: bool = typer.Option(False, help="Send ignore_eos (llama.cpp's server and vLLM honour it)."),
    goodput: list[str] = GOODPUT,
    seed: int = typer.Option(0, help="Seeds the arrivals and the random dataset."),
    label: str = typer.Option("", help="Names this run in the JSON and the plot."),
    json_out: Path | None = JSON_OUT,
    plot_out: Path | None = PLOT_OUT,
) -> None:
    """Load-test an OpenAI-compatible endpoint: TTFT, TPOT, ITL, throughput and goodput."""
    from alize.cli.loadgen import load_prompts, parse_goodput, per_request, run_load, summarize

    if concurrency is None and request_rate is None:
        concurrency = 1
    try:
        slos = parse_goodput(goodput)
        prompts = load_prompts(dataset, num_prompts, output_len=output_len, input_len=input_len, seed=seed)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    extra: dict[str, Any] = {"temperature": temperature}
    if ignore_eos:
        extra["ignore_eos"] = True
    machine = _machine()
    duration, results = asyncio.run(
        run_load(
            base_url,
            model,
            prompts,
            api_key=api_key,
            concurrency=concurrency,
            request_rate=request_rate,
            seed=seed,
            extra=extra,
            progress=_progress,
        )
    )
    report = summarize(duration, results, slos)
    config: dict[str, Any] = {
        "label": label or base_url,
        "base_url": base_url,
        "model": model,
        "concurrency": concurrency,
        "request_rate": request_rate,
        "num_prompts": num_prompts,
        "dataset": dataset,
        "input_len": input_len,
        "output_len": output_len,
        "temperature": temperature,
        "ignore_eos": ignore_eos,
        "seed": seed,
    }
    requests = per_request(results)
    record: dict[str, Any] = {
        "config": config,
        "machine": machine,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["alize", "bench", *sys.argv[2:]]) if len(sys.argv) > 1 else "alize bench",
        "report": report,
        "requests": requests,
    }
    typer.echo(json.dumps({"config": config, "report": report}, indent=2))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(record, indent=2) + "\n")
    if plot_out is not None and not plot(requests, plot_out, str(config["label"])):
        typer.echo("matplotlib is not installed: no plot (pip install 'alize[bench]')", err=True)
    if report["completed"] == 0:
        raise typer.Exit(1)
