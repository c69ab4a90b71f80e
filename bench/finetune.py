"""The purpose-specific fine-tuning run: route citizens' requests (EN/FR) to five departments.

1. Writes the task's training and held-out files (``citizens.py``; held-out templates and
   fillers never appear in training).
2. Trains a LoRA on SmolLM2-135M-Instruct with ``python -m alize.jobs.finetune.run`` (the
   process a fine-tuning job runs), at ``nice 19`` with 2 threads; ``--kill-at-step N`` kills it
   with SIGKILL after its first checkpoint at or past step N and starts it again, to show the
   run resuming from that checkpoint.
3. Starts ``alize serve``, registers the adapter as ``ft:smollm2-135m-instruct:citizens:<run>``
   and deploys it on the base's llama.cpp deployment (admin API), then asks every held-out
   request of the base and of the fine-tuned model through the official ``openai`` SDK
   (greedy, seeded) and scores the answers: right = exactly ``{"department": "<right one>"}``.

Writes ``bench/results/finetune.json`` (with the machine, its load average and the run's time and
tokens/s) and prints a summary. Run: ``python bench/finetune.py`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from _common import (
    CACHE_DIR,
    PACKAGED_MODEL_ID,
    RESULTS_DIR,
    ManagedServer,
    free_port,
    machine_info,
    packaged_gguf,
)
from citizens import SYSTEM, examples, parse_department, write_jsonl

ADMIN_KEY = "bench-admin-key-" + "x" * 16


def _train(spec_path: Path, kill_at: int | None, log: Path) -> dict[str, Any]:
    """Run the training process (again after a kill), showing progress; returns its events."""
    events: list[dict[str, Any]] = []
    restarts = 0
    started = time.monotonic()
    while True:
        proc = subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-m", "alize.jobs.finetune.run", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            text=True,
        )
        assert proc.stdout is not None
        killed = False
        for line in proc.stdout:
            event = json.loads(line)
            events.append(event)
            if event["type"] == "metrics":
                m = event["data"]
                print(
                    f"\rstep {m['step']}/{m['total_steps']}  loss {m['train_loss']:.3f}  "
                    f"{m['tokens_per_second']:.0f} tok/s  ETA {m['eta_s']:.0f} s   ",
                    end="",
                    flush=True,
                )
            elif event["type"] == "message":
                print(f"\n{event['message']}", flush=True)
            elif (
                event["type"] == "checkpoint"
                and kill_at is not None
                and not restarts
                and event["step"] >= kill_at
            ):
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                print(f"\nkilled the run (SIGKILL) after its checkpoint at step {event['step']}", flush=True)
                break
        proc.wait()
        if killed:
            restarts += 1
            continue
        result = next((e for e in reversed(events) if e["type"] in ("result", "error")), None)
        if result is None or result["type"] == "error":
            raise SystemExit(f"training failed: {result}; log {log}")
        resumed = [e["data"]["resumed_at"] for e in events if e.get("data", {}).get("resumed_at")]
        return {
            "result": result,
            "events": events,
            "restarts": restarts,
            "resumed_at": resumed,
            "wall_s": time.monotonic() - started,
        }


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
    parser.add_argument("--train-examples", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--kill-at-step", type=int, default=None)
    args = parser.parse_args(argv)

    from openai import OpenAI

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from alize.jobs.finetune.hyperparams import Hyperparameters
    from alize.jobs.finetune.run import RunSpec

    run_id = "bench" + uuid.uuid4().hex[:6]
    work = CACHE_DIR / "finetune" / run_id
    work.mkdir(parents=True)
    train_rows, held_out = examples("train", limit=args.train_examples), examples("held_out")
    spec = RunSpec(
        base_gguf=packaged_gguf(),
        training_file=write_jsonl(work / "train.jsonl", train_rows),
        validation_file=None,
        hyperparameters=Hyperparameters(
            n_epochs=args.epochs,
            batch_size=args.batch_size,
            micro_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lora_rank=args.rank,
            lora_alpha=2 * args.rank,
            seq_len=512,
            validation_fraction=0.1,
            seed=7,
        ),
        workdir=work / "run",
        cache_dir=CACHE_DIR / "finetune-bases",
        threads=2,
        name=run_id,
    )
    (work / "spec.json").write_text(json.dumps(spec.to_json()))
    machine = machine_info()
    training = _train(work / "spec.json", args.kill_at_step, work / "train.log")
    result = training["result"]
    final = result["final"] or {}
    print(
        f"\ntrained {result['steps']} steps, {result['trained_tokens']} tokens in {training['wall_s']:.0f} s"
    )

    ft_id = f"ft:{PACKAGED_MODEL_ID}:citizens:{run_id}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(work / "server"),
        ALIZE_ADMIN_KEY=ADMIN_KEY,
        ALIZE_ENGINE__PARALLEL="4",
        ALIZE_ENGINE__CTX_PER_SLOT="1024",
        ALIZE_CHAT__ENABLED="false",
        ALIZE_DEPLOYMENTS=json.dumps([{"name": PACKAGED_MODEL_ID}]),
    )
    server = ManagedServer(
        "alize", [sys.executable, "-m", "alize.cli.main", "serve"], env, work / "server.log"
    )
    server.start()
    try:
        server.wait_ready(f"{url}/ready", timeout_s=600)
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300)
        base_card = admin.get(f"/admin/api/models/{PACKAGED_MODEL_ID}").json()
        card = {k: v for k, v in base_card.items() if k in _CARD_FIELDS}
        card.update(
            id=ft_id,
            display_name="SmolLM2 135M citizens' routing",
            description="bench/finetune.py",
            source={"kind": "adapter", "base": PACKAGED_MODEL_ID, "path": result["adapter"]},
            measured=None,
            tokens_per_second=None,
        )
        added = admin.post("/admin/api/models", json={"card": card})
        added.raise_for_status()
        admin.post("/admin/api/deployments", json={"name": ft_id, "model": ft_id}).raise_for_status()
        client = OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, timeout=300)
        base_score = _score(client, PACKAGED_MODEL_ID, held_out)
        ft_score = _score(client, ft_id, held_out)
    finally:
        server.stop()

    report = {
        "benchmark": "finetune",
        "task": "citizens' requests (en, fr) -> one of 5 departments, JSON answer",
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "base": PACKAGED_MODEL_ID,
        "fine_tuned_model": ft_id,
        "train_examples": len(train_rows),
        "held_out_examples": len(held_out),
        "hyperparameters": spec.hyperparameters.model_dump(),
        "training": {
            "wall_s": round(training["wall_s"], 1),
            "steps": result["steps"],
            "trained_tokens": result["trained_tokens"],
            "tokens_per_second": final.get("tokens_per_second"),
            "final_train_loss": final.get("train_loss"),
            "final_valid_loss": final.get("valid_loss"),
            "restarts_after_kill": training["restarts"],
            "resumed_at_step": training["resumed_at"],
        },
        "held_out_accuracy": {"base": base_score["accuracy"], "fine_tuned": ft_score["accuracy"]},
        "answers": {"base": base_score["answers"][:10], "fine_tuned": ft_score["answers"][:10]},
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "finetune.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("training", "held_out_accuracy")}, indent=2))
    return 0


_CARD_FIELDS = (
    "publisher",
    "license",
    "open_weights",
    "tasks",
    "languages",
    "context_length",
    "architecture",
    "parameter_count",
    "quantization",
    "price_input_per_million",
    "price_output_per_million",
    "currency",
    "has_chat_template",
    "supports_fim",
    "supports_tools",
)

if __name__ == "__main__":
    sys.exit(main())
