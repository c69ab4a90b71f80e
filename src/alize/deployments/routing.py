"""Which replica takes a sequence: least outstanding requests, health, prefix affinity.

llama.cpp's prompt cache lives in one worker process: a conversation's next turn sent to
another replica recomputes its whole history, while the replica that served the previous turn
finds it in a slot (or in its RAM cache) and only reads the new message. So:

* each request is described by the keys of its prompt's prefixes (:func:`prefix_keys`: a hash
  chain over the chat messages, or over fixed blocks of a raw prompt), longest first;
* after a replica served a request it *holds* those prefixes, and the prefix the next turn will
  start with (the history plus the reply it streamed, :func:`reply_key`);
* :meth:`Router.pick` sends the request to the replica holding its longest known prefix, unless
  that replica is much busier (more than ``affinity_slack`` sequences over the least busy one, or
  all its ``slots`` taken while another replica has one free), else to the replica with the
  fewest sequences in flight (ties: the lowest index, so a lightly loaded deployment keeps one
  replica warm rather than spreading requests thin);
* a replica marked down (its engine reported itself unavailable, or a health check failed) gets
  no traffic until a health check passes again; with every replica down, all are candidates,
  so the engines' own errors (and restarts) reach the client rather than a made-up one.

The router holds no engine and does no I/O: :class:`~alize.deployments.replicas.ReplicaSet`
calls it and runs the health checks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from alize.domain import GenerationRequest, Message

#: a raw prompt's prefixes are keyed every this many characters
PROMPT_BLOCK_CHARS = 512
#: prefixes remembered per deployment (the oldest forgotten first); ~100 bytes each
DEFAULT_PREFIX_CAPACITY = 8192


def _chain(previous: bytes, *parts: str | None) -> bytes:
    digest = hashlib.blake2b(previous, digest_size=16)
    for part in parts:
        digest.update(b"\x1f" if part is None else b"\x1e" + part.encode())
    return digest.digest()


def _message_parts(message: Message) -> tuple[str | None, ...]:
    calls = tuple(f"{c.id}:{c.name}:{c.arguments}" for c in message.tool_calls)
    return (message.role, message.content, message.name, message.tool_call_id, *calls)


def _head(request: GenerationRequest) -> bytes:
    """What a prefix depends on beside the text: the adapter (its KV differs) and the tools
    (the template renders them before the first message)."""
    tools = ",".join(t.name for t in request.tools)
    return _chain(b"", request.adapter, tools)


def _message_chain(request: GenerationRequest) -> list[bytes]:
    keys, key = [], _head(request)
    for message in request.messages:
        key = _chain(key, *_message_parts(message))
        keys.append(key)
    return keys


def prefix_keys(request: GenerationRequest) -> list[bytes]:
    """Keys of the prompt's prefixes, longest first: one per chat message (the history up to and
    including it), or one per :data:`PROMPT_BLOCK_CHARS` of a raw prompt. FIM prompts have none."""
    if request.messages:
        return _message_chain(request)[::-1]
    if request.prompt:
        head, prompt = _head(request), request.prompt
        ends = range(PROMPT_BLOCK_CHARS, len(prompt) + 1, PROMPT_BLOCK_CHARS)
        return [_chain(head, prompt[:end]) for end in ends][::-1]
    return []


def reply_key(request: GenerationRequest, reply: str) -> bytes | None:
    """The key of the history the next turn starts with: the messages, then the assistant's
    reply as the client will send it back (chat only)."""
    if not request.messages:
        return None
    previous = _message_chain(request)[-1]
    return _chain(previous, *_message_parts(Message(role="assistant", content=reply)))


@dataclass(slots=True)
class ReplicaState:
    in_flight: int = 0
    #: sequences this replica has started since the deployment was created
    served: int = 0
    healthy: bool = True
    #: why it was last taken out of routing (for operators)
    last_error: str | None = None


class Router:
    """Routing state of one replica set; see the module docstring for the rule."""

    def __init__(
        self,
        replicas: int,
        *,
        affinity: bool = True,
        affinity_slack: int = 2,
        slots: int | None = None,
        prefix_capacity: int = DEFAULT_PREFIX_CAPACITY,
    ) -> None:
        if replicas < 1:
            raise ValueError("a router needs at least one replica")
        self.replicas = [ReplicaState() for _ in range(replicas)]
        #: off: least outstanding only (bench/routing.py compares the two)
        self.affinity = affinity
        self.affinity_slack = affinity_slack
        #: sequences one replica decodes at once: a full holder loses its affinity to a replica
        #: with a free slot (waiting for a slot costs more than reading the prompt again)
        self.slots = slots
        self._capacity = prefix_capacity
        #: prefix key -> the replica that last computed it (least recently used first)
        self._owners: OrderedDict[bytes, int] = OrderedDict()
        #: requests sent to the replica holding their prefix (for operators and the benchmark)
        self.affinity_hits = 0

    def _candidates(self, exclude: frozenset[int]) -> list[int]:
        indexes = [i for i in range(len(self.replicas)) if i not in exclude]
        healthy = [i for i in indexes if self.replicas[i].healthy]
        return healthy or indexes or list(range(len(self.replicas)))

    def least_busy(self, exclude: frozenset[int] = frozenset()) -> int:
        return min(self._candidates(exclude), key=lambda i: (self.replicas[i].in_flight, i))

    def pick(self, keys: Sequence[bytes] = (), exclude: frozenset[int] = frozenset()) -> int:
        """The replica for a request whose prompt has ``keys`` (longest prefix first), avoiding
        ``exclude`` (replicas that already failed this request) where another is left."""
        candidates = self._candidates(exclude)
        least = min(candidates, key=lambda i: (self.replicas[i].in_flight, i))
        floor = self.replicas[least].in_flight
        for key in keys if self.affinity else ():
            owner = self._owners.get(key)
            if owner is None:
                continue
            busy = self.replicas[owner].in_flight
            full = self.slots is not None and busy >= self.slots > floor
            if owner in candidates and busy - floor <= self.affinity_slack and not full:
                self._owners.move_to_end(key)
                self.affinity_hits += 1
                return owner
            break  # the longest known prefix is held elsewhere, by a busy or dead replica
        return least

    def remember(self, index: int, keys: Sequence[bytes]) -> None:
        """``index`` now holds these prefixes in its cache."""
        for key in keys:
            self._owners[key] = index
            self._owners.move_to_end(key)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)

    def started(self, index: int) -> None:
        state = self.replicas[index]
        state.in_flight += 1
        state.served += 1

    def finished(self, index: int) -> None:
        self.replicas[index].in_flight -= 1

    def mark_down(self, index: int, reason: str) -> None:
        state = self.replicas[index]
        state.healthy, state.last_error = False, reason
        # its cache is gone with its process (or unreachable): forget what it held
        for key in [k for k, owner in self._owners.items() if owner == index]:
            del self._owners[key]

    def mark_up(self, index: int) -> None:
        self.replicas[index].healthy = True
