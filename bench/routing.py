"""Prefix affinity vs least outstanding requests: time to first token of multi-turn chats over
two llama.cpp replicas.

Each of ``--conversations`` concurrent clients holds one conversation: a system message with a
document of its own (``--doc-words`` words, a few hundred tokens to read), then ``--turns``
user turns, each sent with the whole history (the previous replies as the model wrote them),
the next turn sent after a pause (uniform in 0..``--think-s``, seeded per conversation, the same
in both modes), so that the conversations' turns interleave as real users' do. The same load
runs twice on fresh replicas (the packaged SmolLM2, ``--parallel`` slots and ``--threads``
threads each, in the deployment's :class:`~alize.deployments.replicas.ReplicaSet`): once routed by
least outstanding requests only, once with prefix affinity (Alizé's default). A turn after the
first that lands on the replica holding its history only reads the new message; one that lands
elsewhere recomputes the whole prompt. Reported per mode: TTFT (p50, p90, mean) of the first
turns and of the later turns, the prompt tokens llama.cpp served from its cache, and how many
later turns went to the replica that held their history.

With ``--ray ADDRESS`` the replicas are Ray Serve replicas on that cluster (the Ray engine, one
Serve application; ``--threads`` CPUs each), and the two modes are Serve's own router (the less
busy of two at random) and Alizé's affinity router (``engines/ray_router.py``); the replica of
each turn is not seen from here, only its TTFT and the prompt tokens llama.cpp had cached.

    python bench/routing.py            # writes bench/results/routing.json
    python bench/routing.py --ray 127.0.0.1:6379 --out bench/results/routing_ray.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, log, machine_info, packaged_gguf, percentile_or_zero
from alize.deployments.replicas import ReplicaSet
from alize.domain import Delta, GenerationRequest, Message, SamplingParams
from alize.engines.base import EngineConfig, ReplicaScaling
from alize.engines.llamacpp.engine import LlamaCppEngine
from alize.engines.ray import RayEngine

WORDS = tuple(
    [
        "harbour",
        "lighthouse",
        "granite",
        "tide",
        "ferry",
        "island",
        "market",
        "bakery",
        "orchard",
        "vineyard",
        "river",
        "bridge",
        "station",
        "tram",
        "museum",
        "library",
        "garden",
        "fountain",
        "square",
        "cathedral",
        "tower",
        "castle",
        "valley",
        "meadow",
        "forest",
        "cliff",
        "beach",
        "dune",
        "lagoon",
        "marsh",
        "village",
        "town",
        "city",
        "road",
        "lane",
        "alley",
        "courtyard",
        "balcony",
    ]
)
QUESTIONS = (
    "Summarise the text in one sentence.",
    "Which place comes first in the text?",
    "Name two places from the text.",
    "Is a bridge mentioned?",
    "What would you visit first?",
    "Give the text a title.",
)


@dataclass
class Turn:
    conversation: int
    turn: int
    ttft_s: float
    prompt_tokens: int
    cached_tokens: int
    replica: int


class TrackedEngine(LlamaCppEngine):
    """llama.cpp, noting which replica took each request."""

    def __init__(self, config: EngineConfig, index: int, seen: dict[str, int]) -> None:
        super().__init__(config)
        self.index, self.seen = index, seen

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:  # type: ignore[override]
        self.seen[request.request_id] = self.index
        async for delta in super().generate(request):
            yield delta


@dataclass
class Mode:
    name: str
    turns: list[Turn] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    affinity_hits: int = 0
    wall_s: float = 0.0
    #: sequences each Ray replica took (``--ray``)
    placed: dict[str, int] = field(default_factory=dict)


def document(seed: int, words: int) -> str:
    rng = random.Random(seed)
    sentences, current = [], []
    for _ in range(words):
        current.append(rng.choice(WORDS))
        if len(current) >= 12:
            sentences.append(" ".join(current).capitalize() + ".")
            current = []
    return " ".join(sentences)


async def converse(engines: ReplicaSet, index: int, args: argparse.Namespace, mode: Mode, nonce: int) -> None:
    think = random.Random(index)  # the same pauses in both modes
    text = document(nonce + index, args.doc_words)
    history = [Message(role="system", content=f"Answer briefly about this text.\n\n{text}")]
    for turn in range(args.turns):
        history.append(Message(role="user", content=QUESTIONS[turn % len(QUESTIONS)]))
        request = GenerationRequest(
            f"c{index}-t{turn}",
            SamplingParams(max_tokens=args.max_tokens, temperature=0.0, seed=index),
            messages=tuple(history),
        )
        started = time.perf_counter()
        ttft, text, usage = None, [], None
        async for delta in engines.generate(request):
            if ttft is None and (delta.text or delta.usage is not None):
                ttft = time.perf_counter() - started
            text.append(delta.text)
            usage = delta.usage or usage
        assert usage is not None and ttft is not None
        replica = mode.seen.get(request.request_id, -1)  # -1: a Ray replica, not seen from here
        mode.turns.append(Turn(index, turn, ttft, usage.prompt_tokens, usage.cached_tokens, replica))
        history.append(Message(role="assistant", content="".join(text)))
        # users read and type at different speeds: the turns of the conversations interleave
        await asyncio.sleep(think.uniform(0, args.think_s))


async def run_mode(name: str, affinity: bool, args: argparse.Namespace, nonce: int) -> Mode:
    config = EngineConfig(
        kind="llamacpp",
        model_path=packaged_gguf(),
        parallel=args.parallel,
        ctx_per_slot=args.ctx_per_slot,
        threads=args.threads,
        cache_ram_mib=args.cache_ram_mib,
    )
    mode = Mode(name)
    replicas: list[Any] = [TrackedEngine(config, i, mode.seen) for i in range(args.replicas)]
    if args.ray:
        options = {
            "address": args.ray,
            # one application per mode: a process keeps the Serve router it built for an
            # application's handles, so a redeploy under the same name would keep the first mode's
            "application": f"bench-routing-{name.replace('_', '-')}",
            "num_cpus": str(args.threads),
            "affinity": "true" if affinity else "false",
        }
        scaling = ReplicaScaling(replicas=args.replicas)
        replicas = [RayEngine(replace(config, kind="ray", options=options, scaling=scaling))]
    engines = ReplicaSet(
        replicas,
        affinity=affinity,
        affinity_slack=max(1, args.parallel // 2),
        slots=args.parallel,
    )
    await engines.start()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(converse(engines, i, args, mode, nonce) for i in range(args.conversations)))
        mode.wall_s = time.perf_counter() - started
        mode.affinity_hits = engines.router.affinity_hits
        if args.ray:
            mode.placed = engines.placed_replicas()
    finally:
        await engines.stop()
    return mode


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_s": round(percentile_or_zero(values, 50), 4),
        "p90_s": round(percentile_or_zero(values, 90), 4),
        "mean_s": round(sum(values) / len(values), 4) if values else 0.0,
    }


def summarise(mode: Mode) -> dict[str, Any]:
    first = [t for t in mode.turns if t.turn == 0]
    later = [t for t in mode.turns if t.turn > 0]
    previous = {(t.conversation, t.turn): t.replica for t in mode.turns}
    same = sum(1 for t in later if previous[(t.conversation, t.turn - 1)] == t.replica)
    return {
        "ttft_first_turn": _stats([t.ttft_s for t in first]),
        "ttft_later_turns": _stats([t.ttft_s for t in later]),
        "later_turns_on_the_previous_replica": same if not mode.placed else None,
        "sequences_per_ray_replica": mode.placed or None,
        "later_turns": len(later),
        "prompt_tokens_later_turns": sum(t.prompt_tokens for t in later),
        "cached_tokens_later_turns": sum(t.cached_tokens for t in later),
        "affinity_hits": mode.affinity_hits,
        "wall_s": round(mode.wall_s, 2),
        "turns": [t.__dict__ for t in mode.turns],
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2, help="slots per replica")
    parser.add_argument("--threads", type=int, default=1, help="threads per replica")
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--cache-ram-mib", type=int, default=256)
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--doc-words", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--think-s", type=float, default=3.0, help="pause before a next turn: 0 to this")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "routing.json")
    parser.add_argument("--ray", metavar="ADDRESS", help="replicas on this Ray cluster (Ray Serve)")
    args = parser.parse_args()
    machine = machine_info()
    modes = {}
    baseline = "serve_power_of_two" if args.ray else "least_outstanding"
    for nonce, (name, affinity) in enumerate(((baseline, False), ("prefix_affinity", True))):
        log(f"{name}: {args.conversations} conversations x {args.turns} turns on {args.replicas} replicas")
        modes[name] = summarise(asyncio.run(run_mode(name, affinity, args, nonce * 1000)))
        log(f"{name}: later turns TTFT {modes[name]['ttft_later_turns']}")
    base = modes[baseline]["ttft_later_turns"]
    mine = modes["prefix_affinity"]["ttft_later_turns"]
    result = {
        "benchmark": "routing",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": packaged_gguf().name,
        "modes": modes,
        "gain": {
            "later_turns_ttft_p50_speedup": _ratio(base["p50_s"], mine["p50_s"]),
            "later_turns_ttft_mean_speedup": _ratio(base["mean_s"], mine["mean_s"]),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}: {result['gain']}")


if __name__ == "__main__":
    main()
