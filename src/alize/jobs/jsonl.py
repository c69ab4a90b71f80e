"""JSONL as clients upload it: read line by line within size limits, checked per purpose.

Every problem names its line (1-based, as editors count), so a client can fix the file without
guessing. Reading never holds more than one line (at most ``max_line_bytes``) in memory: a line
over the limit is reported and skipped up to its newline, never buffered whole.

Two line shapes are accepted for ``purpose=batch``:

* OpenAI's ``{"custom_id", "method": "POST", "url": "/v1/...", "body": {...}}``;
* Mistral's ``{"custom_id", "body": {...}}`` (the endpoint is named by the job; a missing
  ``custom_id`` becomes the line's 0-based index, as Mistral numbers inline requests).

``purpose=fine-tune`` lines are chat conversations: ``{"messages": [...]}`` with at least one
assistant turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

#: the endpoints a batch line may call
BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/moderations",
    "/v1/fim/completions",
    "/v1/chat/moderations",
)
#: purposes a client may upload, and those only the server writes
UPLOAD_PURPOSES = ("batch", "fine-tune")
OUTPUT_PURPOSES = ("batch_output", "fine-tune-results")
MAX_CUSTOM_ID = 512
#: problems reported in one error (the count of the rest is still given)
MAX_REPORTED = 10
_CHUNK = 1 << 20
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a batch input file."""

    index: int
    line: int
    custom_id: str
    #: OpenAI shape only; Mistral lines take the job's endpoint
    url: str | None
    body: dict[str, Any]


@dataclass
class CheckReport:
    """What reading a whole file found."""

    bytes: int = 0
    lines: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    problem_count: int = 0

    def add(self, problem: LineProblem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def raw_lines(
    source: Readable, max_line_bytes: int, copy_to: BinaryIO | None = None
) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` for each line; ``None`` for a line longer than ``max_line_bytes``.
    A final newline does not start another line. With ``copy_to``, every byte read is written there."""
    number = 0
    pending = bytearray()
    oversized = False
    while True:
        chunk = source.read(_CHUNK)
        if not chunk:
            break
        if copy_to is not None:
            copy_to.write(chunk)
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not oversized:
                if len(pending) + len(piece) > max_line_bytes:
                    oversized, pending = True, bytearray()
                else:
                    pending += piece
            if end < 0:
                break
            number += 1
            yield number, None if oversized else bytes(pending)
            pending, oversized = bytearray(), False
            start = end + 1
    if pending or oversized:
        number += 1
        yield number, None if oversized else bytes(pending)


def _json(raw: bytes) -> tuple[Any, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start + 1})"
    if not text.strip():
        return None, "empty line; every line must hold one JSON object"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "JSON nested too deeply"


def batch_request(value: Any, index: int, line: int) -> tuple[BatchRequest | None, str | None]:
    """A batch line's shape (its body is checked against its endpoint later, by the batch)."""
    if not isinstance(value, dict):
        return None, "a batch line must be a JSON object"
    unknown = sorted(set(value) - {"custom_id", "method", "url", "body"})
    if unknown:
        return None, f"unknown field '{unknown[0]}' (a line has custom_id, method, url and body)"
    body = value.get("body")
    if not isinstance(body, dict):
        return None, "'body' must be a JSON object (the request's body)"
    url = value.get("url")
    custom_id = value.get("custom_id")
    if url is None and "method" not in value:
        custom_id = str(index) if custom_id is None else custom_id  # Mistral's shape
    elif value.get("method") != "POST":
        return None, "'method' must be \"POST\""
    elif url not in BATCH_ENDPOINTS:
        return None, f"'url' must be one of {', '.join(BATCH_ENDPOINTS)}"
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return None, f"'custom_id' must be a non-empty string of at most {MAX_CUSTOM_ID} characters"
    return BatchRequest(index, line, custom_id, url, body), None


def fine_tune_example(value: Any) -> str | None:
    """A chat conversation with at least one assistant turn, or what is wrong with it."""
    if not isinstance(value, dict):
        return "a fine-tuning line must be a JSON object with 'messages'"
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"messages[{i}] needs a 'role' among {', '.join(sorted(_ROLES))}"
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return f"messages[{i}].content must be text"
    if not any(m.get("role") == "assistant" and m.get("content") for m in messages):
        return "the conversation has no assistant turn to learn from"
    return None


def copy_checked(
    source: BinaryIO, dest: BinaryIO, purpose: str, *, max_bytes: int, max_lines: int, max_line_bytes: int
) -> CheckReport:
    """Copy ``source`` to ``dest`` while checking each line for ``purpose``; stops reading as soon
    as the file is over ``max_bytes`` (the report then says so as its first problem)."""
    report = CheckReport()
    seen: dict[str, int] = {}
    counting = _Counting(source, max_bytes)
    for number, raw in raw_lines(counting, max_line_bytes, copy_to=dest):
        report.lines = number
        if raw is None:
            report.add(LineProblem(number, f"longer than the limit of {max_line_bytes} bytes"))
            continue
        value, problem = _json(raw)
        if problem is None:
            problem = _shape_problem(purpose, value, number, seen)
        if problem is not None:
            report.add(LineProblem(number, problem))
    report.bytes = counting.total
    return report


def _shape_problem(purpose: str, value: Any, number: int, seen: dict[str, int]) -> str | None:
    if purpose == "fine-tune":
        return fine_tune_example(value)
    request, problem = batch_request(value, number - 1, number)
    if request is None:
        return problem
    first = seen.setdefault(request.custom_id, number)
    if first != number:
        return f"custom_id '{request.custom_id[:80]}' is repeated (first on line {first})"
    return None


class _Counting:
    """A reader that counts bytes and stops (reads nothing more) past ``limit``."""

    def __init__(self, source: BinaryIO, limit: int) -> None:
        self._source = source
        self._limit = limit
        self.total = 0

    def read(self, size: int) -> bytes:
        if self.total > self._limit:
            return b""
        chunk = self._source.read(size)
        self.total += len(chunk)
        return chunk


def read_batch_requests(path: str, max_line_bytes: int) -> Iterator[BatchRequest | LineProblem]:
    """The requests of a stored batch input file, in order (problems in place of bad lines)."""
    with open(path, "rb") as source:
        index = 0
        for number, raw in raw_lines(source, max_line_bytes):
            if raw is None:
                yield LineProblem(number, f"longer than the limit of {max_line_bytes} bytes")
                continue
            value, problem = _json(raw)
            if problem is not None:
                yield LineProblem(number, problem)
                continue
            request, problem = batch_request(value, index, number)
            if request is None:
                yield LineProblem(number, problem or "invalid line")
                continue
            index += 1
            yield request
