"""The purpose-specific fine-tuning run: route citizens' requests (EN/FR) to five departments.

Everything goes through the platform's own API, as a customer would use it:

1. Writes the task's training and held-out files (``citizens.py``; held-out templates and
   fillers never appear in training).
2. Starts ``alize serve`` (its embedded job worker trains with ``--threads`` threads), scores
   the base model on every held-out request through the official ``openai`` SDK (greedy, seeded;
   right = exactly ``{"department": "<right one>"}``).
3. Uploads the training file (``files.create(purpose="fine-tune")``) and creates a job
   (``fine_tuning.jobs.create``) on SmolLM2-135M-Instruct, following its events with a progress
   line (step, loss, tokens/s, ETA). ``--kill-at-step N`` kills the server with SIGKILL once the
   job has a checkpoint at or past step N and starts it again: the job resumes from it.
4. When the job has succeeded, asks the same held-out requests of ``job.fine_tuned_model``
   (``ft:smollm2-135m-instruct:citizens:<job>``), served as a LoRA adapter on the base's llama.cpp
   worker.

Writes ``bench/results/finetune.json`` (the machine, its load average, the job's time from
creation to success and its tokens/s, the final losses and both accuracies) and prints a summary.
Run: ``python bench/finetune.py`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import CACHE_DIR, PACKAGED_MODEL_ID, RESULTS_DIR, ManagedServer, free_port, machine_info
from citizens import SYSTEM, examples, parse_department, write_jsonl

ADMIN_KEY = "bench-admin-key-" + "x" * 16
TERMINAL = {"succeeded", "failed", "cancelled"}


def _server(port: int, data_dir: Path, threads: int) -> ManagedServer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(data_dir),
        ALIZE_ADMIN_KEY=ADMIN_KEY,
        ALIZE_ENGINE__PARALLEL="4",
        ALIZE_ENGINE__CTX_PER_SLOT="1024",
        ALIZE_CHAT__ENABLED="false",
        ALIZE_FINE_TUNING__THREADS=str(threads),
        ALIZE_JOBS__POLL_S="0.5",
        ALIZE_DEPLOYMENTS=json.dumps([{"name": PACKAGED_MODEL_ID}]),
    )
    return ManagedServer(
        "alize", [sys.executable, "-m", "alize.cli.main", "serve"], env, data_dir / "server.log"
    )


def _follow(client: Any, job_id: str, kill_at: int | None, restart: Any) -> tuple[Any, list[Any], int]:
    """Poll the job until it ends, printing its newest metrics; SIGKILL the server once at
    ``kill_at``. Returns the final job, its events (oldest first) and the number of restarts."""
    restarts = 0
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        events = client.fine_tuning.jobs.list_events(job_id, limit=1).data
        if events and events[0].type == "metrics" and events[0].data:
            m = events[0].data
            print(
                f"\r{job.status}  step {m['step']}/{m['total_steps']}  loss {m['train_loss']:.3f}  "
                f"{m['tokens_per_second']:.0f} tok/s  ETA {m['eta_s']:.0f} s   ",
                end="",
                flush=True,
            )
        if job.status in TERMINAL:
            print(flush=True)
            every = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
            return job, list(reversed(every)), restarts
        if kill_at is not None and not restarts:
            checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
            if checkpoints and checkpoints[0].step_number >= kill_at:
                print(f"\nSIGKILL to the server after the checkpoint at step {checkpoints[0].step_number}")
                client = restart()
                restarts += 1
        time.sleep(2.0)


def _ask(client: Any, model: str, request: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": request}],
        temperature=0,
        seed=1,
        max_tokens=24,
    )
    return str(reply.choices[0].message.content or "")


def _score(client: Any, model: str, held_out: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    right, answers = 0, []
    for request, department, language in held_out:
        text = _ask(client, model, request)
        ok = parse_department(text) == department
        right += ok
        answers.append(
            {"request": request, "language": language, "expected": department, "answer": text, "ok": ok}
        )
    return {"accuracy": right / len(held_out), "right": right, "total": len(held_out), "answers": answers}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=480)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=2, help="training threads (ALIZE_FINE_TUNING__THREADS)"
    )
    parser.add_argument("--kill-at-step", type=int, default=None)
    args = parser.parse_args(argv)

    from openai import OpenAI

    work = CACHE_DIR / "finetune" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    train_rows, held_out = examples("train", limit=args.train_examples), examples("held_out")
    train_file = write_jsonl(work / "train.jsonl", train_rows)
    hyperparameters = {
        "n_epochs": args.epochs,
        "batch_size": args.batch_size,
        "micro_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "lora_rank": args.rank,
        "lora_alpha": 2 * args.rank,
        "seq_len": 512,
        "validation_fraction": 0.1,
    }
    machine = machine_info()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers = [_server(port, work / "server", args.threads)]

    def connect() -> Any:
        servers[-1].start()
        servers[-1].wait_ready(f"{url}/ready", timeout_s=600)
        return OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, timeout=300, max_retries=0)

    def restart() -> Any:
        proc = servers[-1].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)  # the server alone: its training child must follow
        proc.wait()
        servers.append(_server(port, work / "server", args.threads))
        return connect()

    try:
        client = connect()
        base_score = _score(client, PACKAGED_MODEL_ID, held_out)
        print(f"base model: {base_score['right']}/{base_score['total']} right")
        with train_file.open("rb") as fh:
            file_id = client.files.create(file=("citizens-train.jsonl", fh), purpose="fine-tune").id
        created = time.monotonic()
        job = client.fine_tuning.jobs.create(
            model=PACKAGED_MODEL_ID,
            training_file=file_id,
            suffix="citizens",
            seed=7,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        )
        job, events, restarts = _follow(client, job.id, args.kill_at_step, restart)
        client = OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, timeout=300, max_retries=0)
        wall = time.monotonic() - created
        if job.status != "succeeded":
            raise SystemExit(f"job {job.id} ended {job.status}: {job.error}; log {servers[-1].log_path}")
        ft_score = _score(client, job.fine_tuned_model, held_out)
    finally:
        for server in servers:
            server.stop()

    metrics = [e.data for e in events if e.type == "metrics" and e.data]
    final = metrics[-1] if metrics else {}
    resumed = [e.data["resumed_at"] for e in events if e.data and e.data.get("resumed_at")]
    report = {
        "benchmark": "finetune",
        "command": "python bench/finetune.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "task": "citizens' requests (en, fr) -> one of 5 departments, JSON answer",
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "base": PACKAGED_MODEL_ID,
        "job": job.id,
        "fine_tuned_model": job.fine_tuned_model,
        "train_examples": len(train_rows),
        "held_out_examples": len(held_out),
        "hyperparameters": hyperparameters,
        "training": {
            "threads": args.threads,
            "wall_s_created_to_succeeded": round(wall, 1),
            "steps": final.get("step"),
            "trained_tokens": job.trained_tokens,
            "tokens_per_second": final.get("tokens_per_second"),
            "final_train_loss": final.get("train_loss"),
            "final_valid_loss": final.get("valid_loss"),
            "final_valid_token_accuracy": final.get("valid_mean_token_accuracy"),
            "restarts_after_kill": restarts,
            "resumed_at_step": resumed,
        },
        "held_out_accuracy": {"base": base_score["accuracy"], "fine_tuned": ft_score["accuracy"]},
        "per_language": {
            name: {
                lang: sum(a["ok"] for a in score["answers"] if a["language"] == lang)
                / max(1, sum(1 for a in score["answers"] if a["language"] == lang))
                for lang in ("en", "fr")
            }
            for name, score in (("base", base_score), ("fine_tuned", ft_score))
        },
        "answers": {"base": base_score["answers"], "fine_tuned": ft_score["answers"]},
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "finetune.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("training", "held_out_accuracy", "per_language")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
