"""Text generation with a Hugging Face causal language model on PyTorch (``*ForCausalLM`` folders).

Why a hand-written decode loop rather than ``model.generate`` + ``TextIteratorStreamer``: the loop
owns everything the gateway needs per token — a stop check between two forward passes (so a
client that goes away frees its thread within one token), exact token counts, stop strings cut
from the text without leaking a partial match, per-request seeded sampling (a
``torch.Generator`` each, so concurrent requests never share random state) and logprobs.

Each sequence runs in its own thread of an executor sized to ``max_sequences``; the thread
hands its events to the event loop with ``loop.call_soon_threadsafe`` on an ``asyncio.Queue``.
Closing the async iterator sets the sequence's cancel flag and waits for its thread to leave
the loop (one forward pass at most), so the slot is really free when the close returns.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alize.domain import (
    Delta,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from alize.engines.openai_wire import message_json
from alize.errors import EngineError, UnsupportedFeatureError

#: the replacement character a byte-level tokenizer yields for an incomplete UTF-8 sequence
_PARTIAL = "\ufffd"


class CausalLM:
    """A tokenizer and causal LM loaded from a folder; methods run in worker threads."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        self.model.eval()  # type: ignore[no-untyped-call]  # inference: no dropout
        # the KV cache argument was renamed (``past_key_values`` → ``cache``) in transformers 5.x
        params = inspect.signature(self.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        #: only the last position's logits are needed (saves vocab × prompt work in the prefill)
        self.last_logits_only: dict[str, int] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.context_length = int(config.get("max_position_embeddings") or 2048)
        self.architecture = (config.get("architectures") or [config.get("model_type")])[0]
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        eos: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, list):
                eos.update(i for i in source if isinstance(i, int))
        self.eos_ids = frozenset(eos)

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The token ids the model sees: the chat template applied, or the raw prompt."""
        if request.fim is not None:
            raise UnsupportedFeatureError(
                "fill-in-the-middle is served by the llama.cpp engine (GGUF files with FIM tokens)",
                param="model",
            )
        if request.messages:
            text = self.tokenizer.apply_chat_template(
                [message_json(m) for m in request.messages], tokenize=False, add_generation_prompt=True
            )
            # the template already wrote any BOS it wants: do not add special tokens twice
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(request.prompt or "", add_special_tokens=True)["input_ids"]
        return [int(i) for i in ids]


@dataclass
class _Sequence:
    """One request's decoding state, owned by its worker thread."""

    params: SamplingParams
    prompt: list[int]
    emit: Callable[[Delta | BaseException | None], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
    pending_tokens: int = 0
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)


def _check(params: SamplingParams) -> None:
    if params.json_schema is not None:
        raise UnsupportedFeatureError(
            "schema-constrained output (response_format json_schema, tool_choice 'required' or a "
            "named tool) needs the llama.cpp engine; the PyTorch engine generates free text",
            param="response_format",
        )


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that may be the start of a stop string (not sent yet)."""
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    return hold


class Decoder:
    """The decode loop of :class:`CausalLM` (see the module docstring)."""

    def __init__(self, lm: CausalLM) -> None:
        self.lm = lm

    def run(self, seq: _Sequence) -> None:
        try:
            self._loop(seq)
        except BaseException as exc:  # handed to the consumer, raised there as an engine error
            seq.emit(exc)
        finally:
            seq.emit(None)

    def _loop(self, seq: _Sequence) -> None:
        torch, lm, p = self.lm.torch, self.lm, seq.params
        generator = torch.Generator().manual_seed(
            p.seed if p.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        )
        counts: dict[int, int] = {}
        past: Any = None
        inputs = torch.tensor([seq.prompt], dtype=torch.long)
        finish, stopped = FinishReason.LENGTH, False
        room = lm.context_length - len(seq.prompt)
        limit = p.max_tokens if p.max_tokens is not None else room
        with torch.inference_mode():
            while len(seq.generated) < limit:
                if seq.cancelled.is_set():
                    return
                out = lm.model(
                    input_ids=inputs, use_cache=True, **{lm.cache_arg: past}, **lm.last_logits_only
                )
                past = getattr(out, lm.cache_arg, None)
                logits = out.logits[0, -1, :].float()
                token, logprob = self._sample(logits, p, counts, generator)
                counts[token] = counts.get(token, 0) + 1
                seq.generated.append(token)
                seq.pending_tokens += 1
                if token in lm.eos_ids and not p.ignore_eos:
                    finish = FinishReason.STOP
                    break
                if logprob is not None:
                    seq.pending_logprobs.append(logprob)
                if self._flush(seq):
                    finish, stopped = FinishReason.STOP, True  # a stop string ended the reply
                    break
                inputs = torch.tensor([[token]], dtype=torch.long)
        # what was held back (a possible stop string, an incomplete character) is output after all
        rest = "" if stopped else self._text(seq)[seq.sent_chars :]
        seq.emit(
            Delta(
                text=rest,
                tokens=seq.pending_tokens,
                logprobs=tuple(seq.pending_logprobs),
                finish_reason=finish,
                usage=Usage(prompt_tokens=len(seq.prompt), completion_tokens=len(seq.generated)),
            )
        )

    def _text(self, seq: _Sequence) -> str:
        ids = [i for i in seq.generated if i not in self.lm.eos_ids]
        return str(self.lm.tokenizer.decode(ids, skip_special_tokens=True))

    def _flush(self, seq: _Sequence) -> bool:
        """Send the text decoded so far, minus what may still become a stop string or a
        multi-byte character; returns True when a stop string was found (the reply ends there)."""
        text = self._text(seq)
        stops = seq.params.stop
        hits = [i for i in (text.find(s, seq.sent_chars) for s in stops) if i >= 0]
        if hits:
            end = min(hits)
        else:
            end = len(text) - _held_back(text, stops)
            while end > seq.sent_chars and text[end - 1] == _PARTIAL:
                end -= 1
        if end > seq.sent_chars:
            logprobs = tuple(seq.pending_logprobs)
            seq.emit(Delta(text=text[seq.sent_chars : end], tokens=seq.pending_tokens, logprobs=logprobs))
            seq.sent_chars = end
            seq.pending_tokens = 0
            seq.pending_logprobs = []
        return bool(hits)

    def _sample(
        self, logits: Any, p: SamplingParams, counts: dict[int, int], generator: Any
    ) -> tuple[int, TokenLogprob | None]:
        torch = self.lm.torch
        if counts and (p.presence_penalty or p.frequency_penalty):
            ids = torch.tensor(list(counts), dtype=torch.long)
            seen = torch.tensor(list(counts.values()), dtype=logits.dtype)
            logits[ids] -= p.presence_penalty + p.frequency_penalty * seen
        if p.temperature <= 0:
            token = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < p.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
            token = int(torch.multinomial(probs, 1, generator=generator))
        return token, self._logprob(logits, token, p) if p.logprobs else None

    def _logprob(self, logits: Any, token: int, p: SamplingParams) -> TokenLogprob:
        torch, tok = self.lm.torch, self.lm.tokenizer
        logprobs = torch.log_softmax(logits, dim=-1)

        def entry(i: int) -> tuple[str, float, tuple[int, ...]]:
            piece = str(tok.decode([i]))
            value = float(logprobs[i])
            return piece, value if math.isfinite(value) else -9999.0, tuple(piece.encode())

        piece, value, raw = entry(token)
        tops: tuple[TopLogprob, ...] = ()
        if p.top_logprobs:
            best = torch.topk(logprobs, p.top_logprobs).indices.tolist()
            tops = tuple(TopLogprob(*entry(int(i))) for i in best)
        return TokenLogprob(token=piece, logprob=value, bytes=raw, top_logprobs=tops)


async def stream(
    decoder: Decoder, executor: ThreadPoolExecutor, request: GenerationRequest, prompt: list[int]
) -> AsyncGenerator[Delta, None]:
    """Run one sequence in ``executor`` and yield its deltas; closing this stops it."""
    _check(request.params)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()

    def emit(item: Delta | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed (shutdown): nobody is listening any more
            seq.cancelled.set()

    seq = _Sequence(params=request.params, prompt=prompt, emit=emit)
    job = executor.submit(decoder.run, seq)
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                if isinstance(item, UnsupportedFeatureError):
                    raise item
                raise EngineError(f"the PyTorch engine failed: {type(item).__name__}: {item}") from item
            yield item
    finally:
        seq.cancelled.set()
        if not job.cancel():  # still queued: dropped; running: it leaves within one forward pass
            await asyncio.shield(asyncio.wrap_future(job))
