"""Chat-format JSONL training data: parsed strictly, tokenized with the base's own chat template.

One JSON object a line, ``{"messages": [{"role", "content"[, "weight"]}, ...]}``, the format
OpenAI and Mistral both take. The loss falls on assistant turns only (the tokens of the turn
and its end-of-turn marker, so the model learns to stop); an assistant message with
``"weight": 0`` is context, not a target. Every problem is a 400 that names the file and the
line, found before a job is queued, so a bad line never costs a training run.

Tokenization renders the whole conversation once with the template and tokenizes it once with
character offsets; a token is a target when it starts inside an assistant span. The spans come
from rendering growing prefixes of the conversation, which is how the template itself marks
where a reply begins (``add_generation_prompt``) and ends. This matches what llama.cpp does at
serving time (template, then tokenize), which a test checks token for token.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from alize.errors import InvalidRequestError

ROLES = frozenset({"system", "user", "assistant"})
#: the label PyTorch's cross-entropy ignores
IGNORE = -100


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str
    #: 1 = learn this assistant turn, 0 = context only (OpenAI's per-message ``weight``)
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Conversation:
    line: int
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Example:
    """One tokenized conversation; ``labels`` is ``IGNORE`` except on target tokens."""

    line: int
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face fast tokenizer this module uses."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def _bad(what: str, line: int, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{what} line {line}: {message}", param=what, code="invalid_training_file")


def _content(value: object, what: str, line: int, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value
    ):
        return "".join(str(p["text"]) for p in value)
    raise _bad(what, line, f"messages[{index}].content must be a string (or a list of text parts)")


def _turn(raw: object, what: str, line: int, index: int) -> Turn:
    if not isinstance(raw, dict):
        raise _bad(what, line, f"messages[{index}] must be an object with 'role' and 'content'")
    role = raw.get("role")
    if role not in ROLES:
        raise _bad(
            what, line, f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}, not {role!r}"
        )
    if raw.get("tool_calls") or "function_call" in raw:
        raise _bad(what, line, f"messages[{index}]: tool calls are not supported in training data")
    weight = raw.get("weight", 1)
    if weight not in (0, 1) or isinstance(weight, bool):
        raise _bad(what, line, f"messages[{index}].weight must be 0 or 1")
    if role != "assistant" and "weight" in raw:
        raise _bad(what, line, f"messages[{index}].weight is only allowed on assistant messages")
    return Turn(role=str(role), content=_content(raw.get("content"), what, line, index), weight=int(weight))


def parse_chat_jsonl(
    data: bytes, *, what: str = "training_file", max_examples: int = 100_000
) -> list[Conversation]:
    """Every non-blank line as a :class:`Conversation`; the first bad line is a 400 naming it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _bad(what, line, "is not valid UTF-8") from None
    conversations: list[Conversation] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        if len(conversations) >= max_examples:
            raise _bad(what, number, f"more than {max_examples} examples in one file")
        try:
            obj = json.loads(raw_line)
        except json.JSONDecodeError as exc:
            raise _bad(what, number, f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
            raise _bad(what, number, "must be an object with a non-empty 'messages' list")
        turns = tuple(_turn(m, what, number, i) for i, m in enumerate(obj["messages"]))
        if not any(t.role == "assistant" and t.weight == 1 for t in turns):
            raise _bad(what, number, "has no assistant message to learn from")
        if turns[-1].role != "assistant":
            raise _bad(what, number, "must end with an assistant message")
        conversations.append(Conversation(line=number, turns=turns))
    if not conversations:
        raise InvalidRequestError(f"{what} has no examples", param=what, code="invalid_training_file")
    return conversations


def _render(tokenizer: ChatTokenizer, turns: Sequence[Turn], *, generation_prompt: bool) -> str:
    messages = [{"role": t.role, "content": t.content} for t in turns]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


def target_spans(
    tokenizer: ChatTokenizer, conversation: Conversation, what: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its learned assistant turns."""
    turns = conversation.turns
    full = _render(tokenizer, turns, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, turn in enumerate(turns):
        if turn.role != "assistant" or turn.weight == 0:
            continue
        before = _render(tokenizer, turns[:i], generation_prompt=True) if i else ""
        after = _render(tokenizer, turns[: i + 1], generation_prompt=False)
        if not (after.startswith(before) and full.startswith(after)):
            raise _bad(
                what,
                conversation.line,
                "the base model's chat template does not render this conversation turn by turn",
            )
        spans.append((len(before), len(after)))
    return full, spans


def tokenize(tokenizer: ChatTokenizer, conversation: Conversation, *, seq_len: int, what: str) -> Example:
    """Token ids and labels of one conversation; a 400 naming the line if it exceeds ``seq_len``."""
    text, spans = target_spans(tokenizer, conversation, what)
    encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids = [int(i) for i in encoded["input_ids"]]
    offsets = encoded["offset_mapping"]
    if len(ids) > seq_len:
        raise _bad(what, conversation.line, f"is {len(ids)} tokens long, over the limit of {seq_len}")
    labels = [IGNORE] * len(ids)
    for index, (start, end) in enumerate(offsets):
        if end > start and any(a <= start < b for a, b in spans):
            labels[index] = ids[index]
    if all(label == IGNORE for label in labels):
        raise _bad(what, conversation.line, "its assistant messages are empty after tokenization")
    return Example(line=conversation.line, input_ids=tuple(ids), labels=tuple(labels))


def tokenize_all(
    tokenizer: ChatTokenizer, conversations: Sequence[Conversation], *, seq_len: int, what: str
) -> list[Example]:
    return [tokenize(tokenizer, c, seq_len=seq_len, what=what) for c in conversations]


def split_validation(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded hold-out: the same file and seed always give the same split."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = max(1, int(len(examples) * fraction))
    held_set = set(order[:held])
    train = [e for i, e in enumerate(examples) if i not in held_set]
    return train, [e for i, e in enumerate(examples) if i in held_set]
