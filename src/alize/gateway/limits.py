"""Rate limits: requests per minute, tokens per minute and concurrent requests, per key and project.

One ``acquire`` checks every subject (usually the key and its project) and either admits the
request on all of them or on none, atomically. Admission returns a ``Lease``: it holds a
concurrency slot until ``release()`` and charges the *estimated* tokens up front; ``settle()``
later corrects the charge to the actual count, so TPM reflects real usage.

Windows are sliding windows over the last 60 s: requests are an exact log of admission times
(so "60 RPM" never admits a 61st request within any 60 s), tokens are summed in one-second
buckets. Concurrency slots expire after ``lease_ttl_s`` so a crashed worker cannot leak them.

Two backends share these semantics: ``MemoryRateLimiter`` (one process) and
``alize.gateway.limits_redis.RedisRateLimiter`` (exact across processes, via one Lua script).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from alize.errors import RateLimitError

WINDOW_S = 60
DEFAULT_LEASE_TTL_S = 900.0


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Limits of one subject; ``None`` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.concurrency is None


@dataclass(frozen=True, slots=True)
class Subject:
    """What a limit applies to, e.g. ``Subject("key:key_ab12", LimitSpec(rpm=60))``."""

    key: str
    limits: LimitSpec


@dataclass(frozen=True, slots=True)
class SubjectUsage:
    """A subject's window as seen at decision time (before this request is counted)."""

    limits: LimitSpec
    requests: int
    oldest_request_ms: int | None
    tokens: int
    oldest_token_s: int | None
    active: int


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    now_ms: int
    retry_after_ms: int
    reason: str  # "" | "requests" | "tokens" | "too_large" | "concurrency"
    failed_index: int
    usages: tuple[SubjectUsage, ...]


def format_duration(seconds: float) -> str:
    """OpenAI's reset header format (Go durations): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"


def rate_limit_headers(decision: Decision, tokens: int) -> dict[str, str]:
    """``x-ratelimit-*`` headers for the tightest subject of each kind (after admission)."""
    headers: dict[str, str] = {}
    counted = 1 if decision.admitted else 0
    now_s = decision.now_ms / 1000
    req = [u for u in decision.usages if u.limits.rpm is not None]
    if req:
        u = min(req, key=lambda u: (u.limits.rpm or 0) - u.requests)
        assert u.limits.rpm is not None
        oldest = u.oldest_request_ms if u.oldest_request_ms is not None else decision.now_ms
        reset = (oldest + WINDOW_S * 1000 - decision.now_ms) / 1000 if u.requests + counted else 0.0
        headers["x-ratelimit-limit-requests"] = str(u.limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, u.limits.rpm - u.requests - counted))
        headers["x-ratelimit-reset-requests"] = format_duration(reset)
    tok = [u for u in decision.usages if u.limits.tpm is not None]
    if tok:
        u = min(tok, key=lambda u: (u.limits.tpm or 0) - u.tokens)
        assert u.limits.tpm is not None
        used = u.tokens + (tokens if decision.admitted else 0)
        oldest_s = u.oldest_token_s if u.oldest_token_s is not None else int(now_s)
        reset = oldest_s + WINDOW_S - now_s if used else 0.0
        headers["x-ratelimit-limit-tokens"] = str(u.limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, u.limits.tpm - used))
        headers["x-ratelimit-reset-tokens"] = format_duration(reset)
    return headers


def rejection(decision: Decision, tokens: int) -> RateLimitError:
    """The 429 for a refused decision, with ``retry_after`` and the ``x-ratelimit-*`` headers."""
    usage = decision.usages[decision.failed_index]
    retry_s = max(decision.retry_after_ms, 1) / 1000
    limits = usage.limits
    if decision.reason == "requests":
        what = f"requests per minute (RPM): Limit {limits.rpm}, Used {usage.requests}, Requested 1"
    elif decision.reason == "tokens":
        what = f"tokens per minute (TPM): Limit {limits.tpm}, Used {usage.tokens}, Requested {tokens}"
    elif decision.reason == "too_large":
        return RateLimitError(
            f"Request too large for tokens per minute (TPM): Limit {limits.tpm}, Requested {tokens}. "
            "Reduce max_tokens or the input.",
            retry_after=retry_s,
            headers=rate_limit_headers(decision, tokens),
        )
    else:
        what = f"concurrent requests: Limit {limits.concurrency}"
    return RateLimitError(
        f"Rate limit reached for {what}. Please try again in {format_duration(retry_s)}.",
        retry_after=retry_s,
        headers=rate_limit_headers(decision, tokens),
    )


class _LeaseBackend(Protocol):
    async def _settle(self, lease: Lease, delta: int) -> None: ...
    async def _release(self, lease: Lease) -> None: ...


@dataclass(eq=False)
class Lease:
    """An admitted request: release its concurrency slot and settle its tokens when done.

    Both operations are idempotent; ``async with lease:`` releases on exit.
    """

    id: str
    subjects: tuple[Subject, ...]
    reserved_tokens: int
    bucket_s: int
    headers: dict[str, str]
    _backend: _LeaseBackend | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)
    _released: bool = field(default=False, repr=False)

    async def settle(self, actual_tokens: int) -> None:
        """Replace the estimated token charge with the actual count (once)."""
        if self._settled:
            return
        self._settled = True
        delta = actual_tokens - self.reserved_tokens
        if delta and self._backend is not None:
            await self._backend._settle(self, delta)

    async def release(self, actual_tokens: int | None = None) -> None:
        """Free the concurrency slot (once); settles the tokens first when given."""
        if actual_tokens is not None:
            await self.settle(actual_tokens)
        if self._released:
            return
        self._released = True
        if self._backend is not None:
            await self._backend._release(self)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class RateLimiter(Protocol):
    """What the request pipeline needs from a rate limiter."""

    async def acquire(self, subjects: Sequence[Subject], *, tokens: int) -> Lease:
        """Admit one request estimated at ``tokens`` on every subject, or raise ``RateLimitError``."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class _Window:
    requests: deque[tuple[float, str]] = field(default_factory=deque)
    tokens: dict[int, int] = field(default_factory=dict)
    active: dict[str, float] = field(default_factory=dict)


class MemoryRateLimiter:
    """In-process backend: exact within one process (each check-and-consume runs without an
    ``await``, so it is atomic on the event loop). Use Redis when several workers share limits."""

    def __init__(
        self, *, lease_ttl_s: float = DEFAULT_LEASE_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        self._lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def _usage(self, window: _Window, limits: LimitSpec, now: float) -> SubjectUsage:
        while window.requests and window.requests[0][0] <= now - WINDOW_S:
            window.requests.popleft()
        second = int(now)
        for bucket in [b for b in window.tokens if b <= second - WINDOW_S]:
            del window.tokens[bucket]
        for lease_id in [k for k, expiry in window.active.items() if expiry <= now]:
            del window.active[lease_id]
        return SubjectUsage(
            limits=limits,
            requests=len(window.requests),
            oldest_request_ms=int(window.requests[0][0] * 1000) if window.requests else None,
            tokens=sum(window.tokens.values()),
            oldest_token_s=min(window.tokens) if window.tokens else None,
            active=len(window.active),
        )

    def _decide(self, subjects: Sequence[Subject], tokens: int, now: float) -> Decision:
        now_ms = int(now * 1000)
        usages: list[SubjectUsage] = []
        retry_ms, reason, failed = 0, "", -1
        for index, subject in enumerate(subjects):
            window = self._windows.setdefault(subject.key, _Window())
            usage = self._usage(window, subject.limits, now)
            usages.append(usage)
            limits, wait, why = subject.limits, 0, ""
            if limits.rpm is not None and usage.requests >= limits.rpm:
                oldest = usage.oldest_request_ms if usage.oldest_request_ms is not None else now_ms
                wait, why = oldest + WINDOW_S * 1000 - now_ms, "requests"
            if limits.tpm is not None:
                if tokens > limits.tpm:
                    wait, why = max(wait, WINDOW_S * 1000), "too_large"
                elif usage.tokens + tokens > limits.tpm:
                    freed, token_wait = 0, WINDOW_S * 1000
                    for bucket in sorted(window.tokens):
                        freed += window.tokens[bucket]
                        if usage.tokens - freed + tokens <= limits.tpm:
                            token_wait = (bucket + WINDOW_S) * 1000 - now_ms
                            break
                    wait, why = max(wait, token_wait), "tokens"
            if limits.concurrency is not None and usage.active >= limits.concurrency:
                wait, why = max(wait, 1000), "concurrency"
            if why and (failed < 0 or wait > retry_ms):
                retry_ms, reason, failed = wait, why, index
        return Decision(failed < 0, now_ms, retry_ms, reason, max(failed, 0), tuple(usages))

    async def acquire(self, subjects: Sequence[Subject], *, tokens: int) -> Lease:
        limited = tuple(s for s in subjects if not s.limits.unlimited)
        now = self._clock()
        decision = self._decide(limited, tokens, now)
        if not decision.admitted:
            raise rejection(decision, tokens)
        lease = Lease(
            id=secrets.token_hex(8),
            subjects=limited,
            reserved_tokens=tokens,
            bucket_s=int(now),
            headers=rate_limit_headers(decision, tokens),
            _backend=self,
        )
        for subject in limited:
            window = self._windows[subject.key]
            if subject.limits.rpm is not None:
                window.requests.append((now, lease.id))
            if subject.limits.tpm is not None:
                window.tokens[lease.bucket_s] = window.tokens.get(lease.bucket_s, 0) + tokens
            if subject.limits.concurrency is not None:
                window.active[lease.id] = now + self._lease_ttl_s
        return lease

    async def _settle(self, lease: Lease, delta: int) -> None:
        for subject in lease.subjects:
            window = self._windows.get(subject.key)
            if window is not None and subject.limits.tpm is not None and lease.bucket_s in window.tokens:
                window.tokens[lease.bucket_s] = max(0, window.tokens[lease.bucket_s] + delta)

    async def _release(self, lease: Lease) -> None:
        for subject in lease.subjects:
            window = self._windows.get(subject.key)
            if window is not None:
                window.active.pop(lease.id, None)
                if not (window.requests or window.tokens or window.active):
                    del self._windows[subject.key]

    async def aclose(self) -> None:
        self._windows.clear()
