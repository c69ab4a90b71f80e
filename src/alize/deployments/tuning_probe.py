"""Measurements on one llama.cpp worker for the tuner: speed, throughput and perplexity.

The worker is the one deployments run (:class:`alize.engines.llamacpp.process.WorkerProcess`,
started with exactly the settings being tried); the figures are llama.cpp's own timings from its
native ``/completion`` endpoint, so the gateway's HTTP costs are left out of the comparison.

* **decode**: ``decode_tokens`` generated for one sequence (``ignore_eos``, temperature 1, a seed
  per run), ``timings.predicted_per_second``; **prefill**: the shipped text's first
  ``prompt_tokens`` tokens, one token out, ``timings.prompt_per_second``. Median of ``runs``
  after a warm-up run, every run on a fresh prompt (a different leading number), so no prompt
  cache answers.
* **throughput**: ``streams`` sequences at once on ``streams`` slots, generated tokens ÷ wall time.
* **perplexity**: exp of the mean negative log-likelihood of each token of the shipped text given
  the ones before, read from llama.cpp's log-probabilities: for token *i* the worker is asked
  for one token after tokens ``0..i-1`` with a logit bias of +100 on the true token *i*, and
  reports the log-probability of that token under the *unbiased* distribution
  (``post_sampling_probs`` off: the probabilities come from the raw logits, before any sampler).
  The prompt cache makes each step cost one token of prefill.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import httpx

from alize.engines.llamacpp.process import WorkerProcess
from alize.errors import EngineError

#: the text perplexity is measured on (written for Alizé, Apache-2.0), and its name on cards
PERPLEXITY_TEXT_NAME = "alize/deployments/texts/perplexity.txt"
SENTENCE = "The wind turned west over the harbour, and the boats came home before the rain."


def perplexity_text() -> str:
    return files("alize.deployments").joinpath("texts/perplexity.txt").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Speed:
    decode_tokens_per_second: float
    prefill_tokens_per_second: float


class Probe:
    """One running worker, measured over its loopback HTTP listener."""

    def __init__(self, client: httpx.AsyncClient, load_s: float) -> None:
        self._client = client
        self.load_s = load_s

    async def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._client.post("/completion", json=body)
        if response.status_code != 200:
            raise EngineError(f"the worker answered {response.status_code}: {response.text[:200]}")
        result: dict[str, Any] = response.json()
        return result

    async def tokenize(self, text: str) -> list[int]:
        response = await self._client.post("/tokenize", json={"content": text, "add_special": True})
        if response.status_code != 200:
            raise EngineError(f"the worker could not tokenize: {response.text[:200]}")
        return [int(t) for t in response.json()["tokens"]]

    async def speed(self, *, prompt_tokens: int, decode_tokens: int, runs: int) -> Speed:
        text_ids = await self.tokenize(perplexity_text())
        decode: list[float] = []
        prefill: list[float] = []
        for run in range(runs + 1):  # run 0 warms caches and allocators up
            lead = await self.tokenize(f"{run + 1}.")
            prompt = (lead + text_ids)[:prompt_tokens]
            pre = await self.completion({"prompt": prompt, "n_predict": 1, "cache_prompt": False})
            gen = await self.completion(
                {
                    "prompt": f"{run + 1}. {SENTENCE}",
                    "n_predict": decode_tokens,
                    "ignore_eos": True,
                    "temperature": 1.0,
                    "seed": run,
                    "cache_prompt": False,
                }
            )
            if run:
                prefill.append(float(pre["timings"]["prompt_per_second"]))
                decode.append(float(gen["timings"]["predicted_per_second"]))
        return Speed(round(statistics.median(decode), 1), round(statistics.median(prefill), 1))

    async def throughput(self, *, streams: int, decode_tokens: int) -> float:
        """Tokens per second of ``streams`` concurrent sequences (one warm-up round first)."""

        async def one(i: int, seed: int) -> int:
            body = {
                "prompt": f"{i}. {SENTENCE}",
                "n_predict": decode_tokens,
                "ignore_eos": True,
                "temperature": 1.0,
                "seed": seed,
                "cache_prompt": False,
            }
            return int((await self.completion(body))["tokens_predicted"])

        await asyncio.gather(*(one(i, 0) for i in range(streams)))
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i, 1) for i in range(streams))))
        return round(tokens / (time.perf_counter() - started), 1)

    async def perplexity(
        self, text: str, *, max_tokens: int, progress: Callable[[int, int], None] | None = None
    ) -> tuple[float, int]:
        """(perplexity, tokens scored) of ``text``'s first ``max_tokens`` tokens."""
        ids = (await self.tokenize(text))[:max_tokens]
        if len(ids) < 2:
            raise EngineError("the perplexity text is too short for this tokenizer")
        nll = 0.0
        for i in range(1, len(ids)):
            result = await self.completion(
                {
                    "prompt": ids[:i],
                    "n_predict": 1,
                    "n_probs": 1,
                    "temperature": 0,
                    "logit_bias": [[ids[i], 100.0]],
                    "post_sampling_probs": False,
                    "cache_prompt": True,
                }
            )
            entry = (result.get("completion_probabilities") or [{}])[0]
            if int(entry.get("id", -1)) != ids[i]:
                raise EngineError(f"the worker did not score token {i} (got {entry.get('id')})")
            nll -= float(entry["logprob"])
            if progress is not None:
                progress(i, len(ids) - 1)
        return math.exp(nll / (len(ids) - 1)), len(ids) - 1


@asynccontextmanager
async def running(config: dict[str, Any], *, load_timeout_s: float = 300.0) -> AsyncIterator[Probe]:
    """A worker started with ``config`` (:func:`alize.engines.llamacpp.process.worker_config`)."""
    worker = WorkerProcess(config, load_timeout_s=load_timeout_s)
    started = time.perf_counter()
    handle = await worker.start()
    load_s = time.perf_counter() - started
    try:
        async with httpx.AsyncClient(
            base_url=handle.address,
            headers={"Authorization": f"Bearer {handle.secret}"},
            timeout=httpx.Timeout(600.0, connect=10.0),
        ) as client:
            yield Probe(client, load_s)
    finally:
        await worker.stop()
