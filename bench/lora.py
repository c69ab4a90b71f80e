"""Two fine-tuned models on one base: what serving adapters costs, and that each answers as itself.

One ``alize serve`` with the packaged SmolLM2-135M-Instruct (8 slots). Two rank-8 LoRA adapters
(random, far from zero: their answers differ from the base's) are registered as fine-tuned
models and deployed on the base's deployment. Then, side by side in the same run:

* ``base alone, no adapters``: 8 concurrent streams to the base before any adapter is loaded;
* ``base alone, adapters loaded``: the same after publishing (every request now carries the
  adapters' scales, all 0);
* ``interleaved``: 8 concurrent streams, requests going round-robin to the base and the two
  fine-tuned models. llama.cpp batches only sequences with the same adapter set, so mixing
  models costs throughput; this measures how much.

Every request is greedy (``temperature 0``, seeded) with ``max_tokens`` 64 and ``ignore_eos``;
**each answers as itself** is checked by comparing every interleaved answer with that model's
answer when asked alone. Writes ``bench/results/lora.json``. Run: ``python bench/lora.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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

ADMIN_KEY = "bench-admin-key-" + "y" * 16
PROMPT = "Which office renews a driving licence? Answer in one sentence."


def _random_adapter(base: Path, path: Path, seed: int, rank: int = 8) -> Path:
    import torch

    from alize.jobs.finetune.base import read_base_facts
    from alize.jobs.finetune.gguf_lora import write_lora_gguf

    facts = read_base_facts(base)
    head = facts.embedding_length // facts.n_head
    kv = head * facts.n_head_kv
    ffn = facts.feed_forward_length
    shapes = {
        "self_attn.q_proj": (facts.embedding_length, facts.embedding_length),
        "self_attn.k_proj": (kv, facts.embedding_length),
        "self_attn.v_proj": (kv, facts.embedding_length),
        "self_attn.o_proj": (facts.embedding_length, facts.embedding_length),
        "mlp.gate_proj": (ffn, facts.embedding_length),
        "mlp.up_proj": (ffn, facts.embedding_length),
        "mlp.down_proj": (facts.embedding_length, ffn),
    }
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for layer in range(facts.n_layers):
        for module, (out, inp) in shapes.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            state[f"{key}.lora_A.default.weight"] = torch.randn(rank, inp, generator=gen) * 0.02
            state[f"{key}.lora_B.default.weight"] = torch.randn(out, rank, generator=gen) * 0.02
    return write_lora_gguf(state, facts, alpha=2 * rank, path=path)


def _ask(client: httpx.Client, model: str, max_tokens: int) -> tuple[str, int]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "seed": 1,
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    reply = client.post("/v1/chat/completions", json=body)
    reply.raise_for_status()
    data = reply.json()
    return data["choices"][0]["message"]["content"], int(data["usage"]["completion_tokens"])


def _load(
    client: httpx.Client, models: Sequence[str], streams: int, rounds: int, max_tokens: int
) -> dict[str, Any]:
    jobs = [models[i % len(models)] for i in range(streams * rounds)]
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        answers = list(pool.map(lambda m: (m, *_ask(client, m, max_tokens)), jobs))
    wall = time.perf_counter() - started
    tokens = sum(t for _, _, t in answers)
    return {
        "models": list(models),
        "requests": len(jobs),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "answers": answers,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

    work = CACHE_DIR / "lora"
    work.mkdir(parents=True, exist_ok=True)
    base = packaged_gguf()
    adapters = [_random_adapter(base, work / f"adapter-{i}.gguf", seed=i) for i in range(2)]
    ft = [f"ft:{PACKAGED_MODEL_ID}:bench{i}:job_lora{i}" for i in range(2)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(work / f"server-{port}"),
        ALIZE_ADMIN_KEY=ADMIN_KEY,
        ALIZE_ENGINE__PARALLEL=str(args.streams),
        ALIZE_ENGINE__CTX_PER_SLOT="512",
        ALIZE_ENGINE__THREADS="2",
        ALIZE_CHAT__ENABLED="false",
        ALIZE_DEPLOYMENTS=json.dumps([{"name": PACKAGED_MODEL_ID}]),
    )
    machine = machine_info()
    server = ManagedServer(
        "alize", [sys.executable, "-m", "alize.cli.main", "serve"], env, work / "server.log"
    )
    server.start()
    results: dict[str, Any] = {}
    try:
        server.wait_ready(f"{url}/ready", timeout_s=600)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        client = httpx.Client(base_url=url, headers=headers, timeout=600)
        results["base_alone_no_adapters"] = _load(
            client, [PACKAGED_MODEL_ID], args.streams, args.rounds, args.max_tokens
        )
        base_card = client.get(f"/admin/api/models/{PACKAGED_MODEL_ID}").json()
        for model_id, path in zip(ft, adapters, strict=True):
            card = {
                k: base_card[k]
                for k in (
                    "publisher",
                    "license",
                    "open_weights",
                    "tasks",
                    "languages",
                    "context_length",
                    "architecture",
                    "has_chat_template",
                )
            }
            card.update(
                id=model_id,
                display_name=model_id,
                source={"kind": "adapter", "base": PACKAGED_MODEL_ID, "path": str(path)},
            )
            client.post("/admin/api/models", json={"card": card}).raise_for_status()
            client.post(
                "/admin/api/deployments", json={"name": model_id, "model": model_id}
            ).raise_for_status()
        solo = {m: _ask(client, m, args.max_tokens)[0] for m in [PACKAGED_MODEL_ID, *ft]}
        results["base_alone_adapters_loaded"] = _load(
            client, [PACKAGED_MODEL_ID], args.streams, args.rounds, args.max_tokens
        )
        mixed = _load(client, [PACKAGED_MODEL_ID, *ft], args.streams, args.rounds, args.max_tokens)
        results["interleaved"] = mixed
        as_itself = all(text == solo[model] for model, text, _ in mixed["answers"])
    finally:
        server.stop()
    for run in results.values():
        run.pop("answers")
    report = {
        "benchmark": "lora",
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "distinct_solo_answers": len(set(solo.values())),
        "each_answers_as_itself": as_itself,
        "runs": results,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "lora.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
