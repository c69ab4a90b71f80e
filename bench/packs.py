"""The model packs on this machine: pull, speed, memory and a four-language check, beside SmolLM2.

One live ``alize serve`` (its own data dir). For each pack: ``POST /admin/api/packs/NAME/pull``
timed until the job ends (download from the index configured, hash checks, assembly, sandboxed
inspection, registration, deployment with the pack's settings), then on its deployment:

* TTFT and decode speed of one streamed chat turn (median of 3, after a warm-up turn);
* aggregate tokens/s of 4 concurrent streams (the pack deploys 4 slots);
* resident memory of the engine worker (the admin API reads it from /proc);
* 12 prompts (French, German, Spanish, Italian x capital city, arithmetic, colours), each sent
  as the assistant sends it (the system prompt of ``alize.chat.prompting`` with its
  answer-in-language instruction), temperature 0: the share answered in the prompt's language
  (lingua, as the assistant detects it) and the share whose answer is right (keywords).

SmolLM2, the embedded default, runs the same measurements as the reference.

Usage (slow on 2 cores: run it niced; about 10 minutes with a local mirror):
  nice -n 19 .venv/bin/python bench/packs.py [--index-url URL] [--packs a,b] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai

from _common import REPO_ROOT, ManagedServer, free_port, machine_info, percentile_or_zero
from alize.chat.language import LanguageGuesser
from alize.chat.prompting import system_prompt

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "smollm2-135m-instruct"
PACKS = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")
SPEED_PROMPT = "Explain in three sentences why the sky is blue."
MAX_TOKENS = 96

COLOURS = {
    "fr": ("rouge", "bleu", "vert", "jaune", "noir", "blanc", "orange", "violet", "rose"),
    "de": ("rot", "blau", "grün", "gelb", "schwarz", "weiß", "weiss", "orange", "lila"),
    "es": ("rojo", "azul", "verde", "amarillo", "negro", "blanco", "naranja", "morado"),
    "it": ("rosso", "blu", "verde", "giallo", "nero", "bianco", "arancione", "viola"),
}
#: (language, prompt, keywords of a right answer, how many must appear)
PROMPTS: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    ("fr", "Quelle est la capitale de l'Italie ? Réponds en une phrase.", ("rome",), 1),
    ("fr", "Combien font 7 fois 8 ? Donne le résultat.", ("56",), 1),
    ("fr", "Cite trois couleurs.", COLOURS["fr"], 2),
    ("de", "Was ist die Hauptstadt von Spanien? Antworte in einem Satz.", ("madrid",), 1),
    ("de", "Wie viel ist 7 mal 8? Nenne das Ergebnis.", ("56",), 1),
    ("de", "Nenne drei Farben.", COLOURS["de"], 2),
    ("es", "¿Cuál es la capital de Alemania? Responde en una frase.", ("berlín", "berlin"), 1),
    ("es", "¿Cuánto es 7 por 8? Da el resultado.", ("56",), 1),
    ("es", "Nombra tres colores.", COLOURS["es"], 2),
    ("it", "Qual è la capitale della Francia? Rispondi con una frase.", ("parigi",), 1),
    ("it", "Quanto fa 7 per 8? Dai il risultato.", ("56",), 1),
    ("it", "Elenca tre colori.", COLOURS["it"], 2),
)


def _turn(client: openai.OpenAI, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    start = time.perf_counter()
    first: float | None = None
    text, tokens = "", 0
    stream = client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    ttft = (first or end) - start
    decode = (tokens - 1) / (end - first) if first and tokens > 1 and end > first else None
    return {"ttft_s": ttft, "decode_tps": decode, "tokens": tokens, "wall_s": end - start, "text": text}


def _speed(client: openai.OpenAI, model: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": SPEED_PROMPT}]
    _turn(client, model, messages)  # warm-up: loads the model
    runs = [_turn(client, model, messages) for _ in range(3)]
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        four = list(pool.map(lambda _: _turn(client, model, messages), range(4)))
    wall = time.perf_counter() - start
    return {
        "ttft_s_median": percentile_or_zero([r["ttft_s"] for r in runs], 50),
        "decode_tps_1_stream": percentile_or_zero([r["decode_tps"] or 0 for r in runs], 50),
        "tokens_per_s_4_streams": sum(r["tokens"] for r in four) / wall,
        "ttft_s_4_streams_median": percentile_or_zero([r["ttft_s"] for r in four], 50),
    }


def _quality(client: openai.OpenAI, model: str, guesser: LanguageGuesser) -> dict[str, Any]:
    rows = []
    for language, prompt, keywords, need in PROMPTS:
        messages = [
            {"role": "system", "content": system_prompt("", language, [])},
            {"role": "user", "content": prompt},
        ]
        reply = _turn(client, model, messages)["text"]
        said = guesser.detect_sync(reply)
        lowered = reply.lower()
        right = sum(1 for k in keywords if k in lowered) >= need
        rows.append(
            {"language": language, "prompt": prompt, "reply": reply, "detected": said, "right": right}
        )
    per_language = {
        lang: {
            "in_language": sum(r["detected"] == lang for r in rows if r["language"] == lang),
            "right": sum(r["right"] for r in rows if r["language"] == lang),
            "prompts": sum(r["language"] == lang for r in rows),
        }
        for lang in ("fr", "de", "es", "it")
    }
    return {
        "answer_in_language_rate": sum(r["detected"] == r["language"] for r in rows) / len(rows),
        "task_accuracy": sum(r["right"] for r in rows) / len(rows),
        "per_language": per_language,
        "replies": rows,
    }


def _admin(http: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    response = http.request(method, f"/admin/api{path}", json=body)
    response.raise_for_status()
    return response.json()


def _pull(http: httpx.Client, name: str) -> dict[str, Any]:
    start = time.perf_counter()
    _admin(http, "POST", f"/packs/{name}/pull", {})
    phases: dict[str, float] = {}
    while True:
        job = _admin(http, "GET", f"/packs/{name}")["job"]
        phases.setdefault(job["state"], time.perf_counter() - start)
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.5)
    if job["state"] == "failed":
        raise RuntimeError(f"pulling {name} failed: {job['error']}")
    return {"pull_s": time.perf_counter() - start, "phase_started_at_s": phases}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index-url", help="index to pull from (default: pip's configuration)")
    parser.add_argument("--packs", default=",".join(PACKS))
    parser.add_argument("--output", type=Path, default=RESULTS / "packs.json")
    args = parser.parse_args()
    machine = machine_info()
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="alize-bench-packs-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")},
        "ALIZE_PORT": str(port),
        "ALIZE_DATA_DIR": str(data),
        "ALIZE_ENGINE__PARALLEL": "4",
        "ALIZE_ENGINE__CTX_PER_SLOT": "4096",
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": REFERENCE}]),
        "ALIZE_CHAT__ENABLED": "false",
    }
    if args.index_url:
        env["ALIZE_CATALOG__PACK_INDEX_URL"] = args.index_url
    server = ManagedServer("alize", [str(REPO_ROOT / ".venv/bin/alize"), "serve"], env, data / "server.log")
    server.start()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"machine": machine, "index_url": args.index_url or "pip configuration"}
    try:
        server.wait_ready(url + "/ready", 300)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=900)
        guesser = LanguageGuesser()
        models: dict[str, Any] = {}
        with httpx.Client(base_url=url, timeout=60) as http:
            for name in [REFERENCE, *args.packs.split(",")]:
                entry: dict[str, Any] = {}
                if name != REFERENCE:
                    entry.update(_pull(http, name))
                    entry["size_bytes"] = _admin(http, "GET", f"/models/{name}")["size_bytes"]
                    print(f"{name}: pulled in {entry['pull_s']:.1f} s", flush=True)
                entry.update(_speed(client, name))
                state = _admin(http, "GET", f"/deployments/{name}")["state"]
                entry["memory_held_bytes"] = state["memory_held_bytes"]
                entry.update(_quality(client, name, guesser))
                print(
                    name, {k: v for k, v in entry.items() if k not in ("replies", "per_language")}, flush=True
                )
                models[name] = entry
                if name != REFERENCE:  # free the memory before the next model
                    _admin(http, "PATCH", f"/deployments/{name}", {"idle_timeout_s": 1})
                    time.sleep(3)
        results["models"] = models
    finally:
        server.stop()
        results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
