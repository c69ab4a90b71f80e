"""Prefix affinity, the one rule for every router: which replica holds a prompt's prefix in
its cache, and whether to send the request there.

llama.cpp's prompt cache lives in one worker process: a conversation's next turn sent to
another replica recomputes its whole history, while the replica that served the previous turn
finds it in a slot (or in its RAM cache) and only reads the new message. So:

* each request is described by the keys of its prompt's prefixes (:func:`prefix_keys`: a hash
  chain over the chat messages, or over fixed blocks of a raw prompt), longest first;
* after a replica served a request it *holds* those prefixes, and the prefix the next turn will
  start with (the history plus the reply it streamed, :func:`reply_key`);
* :meth:`PrefixOwners.prefer` names the replica holding the request's longest known prefix,
  unless that replica is much busier (more than ``slack`` sequences over the least busy
  candidate, or all its ``slots`` taken while another candidate has one free): then none, and
  the caller sends the request to the least busy replica.

Two routers apply it: :class:`alize.deployments.routing.Router` (local processes and remote
upstreams, replicas by index) and :class:`alize.engines.ray_router.AffinityRouter` (Ray Serve
replicas, by Serve's replica id). This module imports nothing but the domain, so both can.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from alize.domain import GenerationRequest, Message

#: a raw prompt's prefixes are keyed every this many characters
PROMPT_BLOCK_CHARS = 512
#: prefixes remembered per deployment (the oldest forgotten first); ~100 bytes each
DEFAULT_PREFIX_CAPACITY = 8192

R = TypeVar("R", bound=Hashable)


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


def affinity_slack(parallel: int) -> int:
    """How many more sequences than the least busy replica the holder of a prefix may have and
    still get the request: half its slots (reading a prompt again costs less than waiting)."""
    return max(1, parallel // 2)


class PrefixOwners(Generic[R]):
    """Which replica last computed each prefix (least recently used forgotten first)."""

    def __init__(self, capacity: int = DEFAULT_PREFIX_CAPACITY) -> None:
        self._capacity = capacity
        self._owners: OrderedDict[bytes, R] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def prefer(
        self, keys: Sequence[bytes], load: Mapping[R, int], *, slack: int, slots: int | None
    ) -> R | None:
        """The candidate (a key of ``load``: sequences in flight per candidate replica) holding
        the longest known of ``keys``, unless it is much busier than the least busy candidate;
        ``None``: no candidate holds a known prefix, or its holder is too busy or not a
        candidate (then the least busy replica should take the request)."""
        if not load:
            return None
        floor = min(load.values())
        for key in keys:
            owner = self._owners.get(key)
            if owner is None:
                continue
            busy = load.get(owner)
            if busy is None:
                return None  # held by a replica that is down, gone or excluded
            full = slots is not None and busy >= slots > floor
            if busy - floor > slack or full:
                return None
            self._owners.move_to_end(key)
            return owner
        return None

    def remember(self, owner: R, keys: Sequence[bytes]) -> None:
        """``owner`` now holds these prefixes in its cache."""
        for key in keys:
            self._owners[key] = owner
            self._owners.move_to_end(key)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)

    def forget(self, owner: R) -> None:
        """``owner``'s cache is gone with its process (or unreachable): forget what it held."""
        for key in [k for k, held in self._owners.items() if held == owner]:
            del self._owners[key]
