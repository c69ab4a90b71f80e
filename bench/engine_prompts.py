"""The requests of the engine benchmark: fixed chat prompts, each asking for a long answer, sent
cold (a fresh nonce first, so nothing is cached) or warm (one fixed conversation, so the prompt
cache hits); and the model's end-of-generation tokens, which ``ignore_eos`` / ``logit_bias`` ban."""

from __future__ import annotations

import uuid
from pathlib import Path

from _common import log

# Fixed chat prompts: varied topics, each asking for a long answer so that 128 tokens come out even where
# the end-of-sequence token cannot be suppressed.
SYSTEM_PROMPT = "You are a helpful assistant. Answer thoroughly, in full sentences."
PROMPTS: tuple[str, ...] = (
    "Explain in detail how a refrigerator keeps food cold, step by step, from the compressor to the coils.",
    "Write a long story about a lighthouse keeper who finds a message in a bottle on a stormy night.",
    "Describe the water cycle for a class of ten-year-olds, with examples from everyday life.",
    "Compare trains, planes and cars for a 500 kilometre journey in detail, with pros and cons of each.",
    "Write a step-by-step guide to baking bread at home, from choosing flour to cooling the loaf.",
    "Explain what a computer does when you type a web address and press enter, in as much detail as you can",
    "Describe a walk through a busy market in a small coastal town early on a Saturday morning.",
    "List and explain ten habits that help people learn a new language faster, with one example each.",
)
WARM_PROMPT_INDEX = 0
WARM_NONCE = "5f3c9a0e7b214d86"  # same shape as a cold nonce, so cold and warm prompts are as long

EOG_TEXTS = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>"}


def cold_messages(index: int) -> list[dict[str, str]]:
    """A conversation nobody has seen: a nonce is the very first text, so no prompt prefix is cached."""
    nonce = uuid.uuid4().hex[:16]
    return [
        {"role": "system", "content": f"[session {nonce}] {SYSTEM_PROMPT}"},
        {"role": "user", "content": PROMPTS[index % len(PROMPTS)]},
    ]


def warm_messages() -> list[dict[str, str]]:
    """The one fixed conversation repeated for warm runs."""
    return [
        {"role": "system", "content": f"[session {WARM_NONCE}] {SYSTEM_PROMPT}"},
        {"role": "user", "content": PROMPTS[WARM_PROMPT_INDEX]},
    ]


def eog_token_ids(gguf_path: Path) -> list[int]:
    """End-of-generation token ids of the model (what llama.cpp's ``ignore_eos`` bans)."""
    try:
        import gguf  # type: ignore[import-untyped]

        reader = gguf.GGUFReader(str(gguf_path))
        ids: set[int] = set()
        eos = reader.fields.get("tokenizer.ggml.eos_token_id")
        if eos is not None:
            ids.add(int(eos.parts[eos.data[0]][0]))
        tokens = reader.fields["tokenizer.ggml.tokens"]
        for tok_id, part in enumerate(tokens.data):
            if bytes(tokens.parts[part]).decode(errors="replace") in EOG_TEXTS:
                ids.add(tok_id)
        return sorted(ids)
    except Exception as exc:  # the package is optional; SmolLM2's ids are known
        log(f"could not read EOG ids from the GGUF ({exc}); using SmolLM2's 0 and 2")
        return [0, 2]
