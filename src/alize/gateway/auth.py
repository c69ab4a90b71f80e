"""Who is calling and what they may do: the principal a presented API key stands for, and the
authorisation rules every route and the policy pipeline apply to it.

Authentication finds the key's row by its prefix and compares hashes in constant time, even when
no row matches, so timing says nothing about which prefixes exist (:class:`~alize.gateway.keys.
KeyHasher` knows how a key is parsed and hashed; :mod:`alize.gateway.keys` issues them).
Verified keys are cached for a few seconds, keyed by ``SHA-256(pepper || key)`` (never the key
itself); a revoke in this process drops the entry at once (:meth:`Authenticator.forget`), other
processes see it within the TTL. A key used in the second half of its entry's life is verified
again in the background (refresh-ahead), so a key in steady use never waits for the database (a
miss costs a read transaction, 1.5-3 ms on a busy machine, every TTL), and no entry is ever
served older than the TTL: a refresh that finds the key revoked or expired drops the entry, and
one that overlaps a revoke in this process stores nothing. Requests that find no fresh entry for
the same key share one verification (the one in flight, a refresh-ahead's included), so a burst
reads the database once.

Authorisation: ``admin`` implies every scope; an inference call needs the ``inference`` scope and,
when the key has an allow-list, the deployment on it. Which admin keys administer the whole
platform, and which projects a project admin sees, is decided by
:class:`~alize.gateway.tenancy.Tenancy` (it knows the operator's project).

Getting the key out of HTTP headers is the API layer's job (:mod:`alize.api.auth`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from alize.errors import AuthenticationError, PermissionDeniedError
from alize.gateway.keys import MAX_KEY_LENGTH, KeyHasher
from alize.gateway.limits import LimitSpec, Subject
from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.models import ApiKey, Project
from alize.store.repositories import ApiKeyRepository, ProjectRepository

log = logging.getLogger(__name__)

#: how stale a key's ``last_used_at`` may get before a request writes it again
_LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated key, its project, and the limits that apply."""

    project_id: str
    key_id: str
    key_name: str
    scopes: frozenset[str]
    allowed_deployments: frozenset[str] | None
    key_limits: LimitSpec
    project_limits: LimitSpec

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def rate_limit_subjects(self) -> tuple[Subject, ...]:
        """The subjects to pass to ``RateLimiter.acquire``: this key, then its project."""
        return (
            Subject(f"key:{self.key_id}", self.key_limits),
            Subject(f"project:{self.project_id}", self.project_limits),
        )


def require_scope(principal: Principal, scope: str) -> None:
    """``admin`` implies every scope."""
    if scope not in principal.scopes and not principal.is_admin:
        raise PermissionDeniedError(f"This API key lacks the '{scope}' scope.", code="insufficient_scope")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDeniedError("This operation requires an admin API key.", code="admin_required")


def authorize_deployment(principal: Principal, deployment: str) -> None:
    """Inference scope, and the deployment on the key's allow-list when it has one."""
    require_scope(principal, "inference")
    allowed = principal.allowed_deployments
    if allowed is not None and deployment not in allowed:
        raise PermissionDeniedError(
            f"This API key is not allowed to use the deployment '{deployment}'.",
            param="model",
            code="deployment_not_allowed",
        )


#: a verified key: its principal and when it expires
_Verified = tuple[Principal, datetime | None]


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise AuthenticationError("This API key has expired.", code="api_key_expired")


def _log_refresh_failure(task: asyncio.Task[_Verified]) -> None:
    """A refresh-ahead nobody awaits: a failed key has been dropped from the cache (the next
    request verifies, and is refused); an unreachable database leaves the entry to age out."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, AuthenticationError):
        log.warning("refreshing a cached API key failed", exc_info=error)


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    expires_at: datetime | None
    fresh_until: float


class Authenticator:
    """Turns a presented key into its :class:`Principal`. One per app, sharing the key service's
    hasher (the same pepper)."""

    def __init__(
        self,
        db: Database,
        hasher: KeyHasher,
        *,
        cache_ttl_s: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        self._clock = clock
        self._monotonic = monotonic
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        #: verifications in flight (a request's or a refresh-ahead), one per cache key
        #: (and the revoke epoch it began in)
        self._verifying: dict[bytes, tuple[asyncio.Task[_Verified], int]] = {}
        #: bumped by every forget(), so a refresh that overlapped one stores nothing
        self._epoch = 0

    def forget(self, key_id: str) -> None:
        """Drop a revoked key from the cache, so it stops working in this process at once."""
        self._epoch += 1
        for cache_key in [k for k, v in self._cache.items() if v.principal.key_id == key_id]:
            del self._cache[cache_key]

    async def refreshed(self) -> None:
        """Wait for the background verifications in flight (tests, shutdown)."""
        while self._verifying:
            await asyncio.wait([task for task, _ in self._verifying.values()])

    async def authenticate(self, plaintext: str | None) -> Principal:
        """The principal for a presented key, or ``AuthenticationError`` (401, invalid_api_key)."""
        if not plaintext:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or in an "
                "'api-key' header."
            )
        prefix = self._hasher.lookup_prefix(plaintext) if len(plaintext) <= MAX_KEY_LENGTH else None
        if prefix is None:
            raise AuthenticationError("Incorrect API key provided.")
        now = self._clock()
        cache_key = self._hasher.cache_key(plaintext)
        cached = self._cache.get(cache_key)
        left = cached.fresh_until - self._monotonic() if cached is not None else 0.0
        if cached is not None and left > 0:
            _check_expiry(cached.expires_at, now)
            if left < self._cache_ttl_s / 2 and cache_key not in self._verifying:
                self._verification(cache_key, prefix, plaintext).add_done_callback(_log_refresh_failure)
            return cached.principal
        # shielded: a caller that leaves (its client went away) must not cancel the others' wait
        principal, expires_at = await asyncio.shield(self._verification(cache_key, prefix, plaintext))
        _check_expiry(expires_at, now)  # it may have been read a moment before this call
        return principal

    def _verification(self, cache_key: bytes, prefix: str, plaintext: str) -> asyncio.Task[_Verified]:
        """The key's verification in flight, or a new one: a burst of requests on a key whose
        entry has expired (a client's next batch, more than a TTL after its last) reads the
        database once, where each request read it before. Measured (ad-hoc): 16 streams sent at
        once spent 12-32 ms p50, up to 77 ms, in 16 read transactions queued on the database
        behind the previous batch's ledger writes, before their prompts reached the engine."""
        flight = self._verifying.get(cache_key)
        # one begun before a revoke in this process may have read the row before it: not joined
        if flight is not None and flight[1] == self._epoch:
            return flight[0]
        task = asyncio.ensure_future(self._verify_and_store(cache_key, prefix, plaintext, self._epoch))
        self._verifying[cache_key] = (task, self._epoch)
        return task

    async def _verify_and_store(self, cache_key: bytes, prefix: str, plaintext: str, epoch: int) -> _Verified:
        """Verify a key and cache the outcome: stored when it passes (unless this process revoked
        a key while it ran: it may have read the row before), the entry dropped when it no
        longer does."""
        try:
            verified = await self._verify(prefix, plaintext, self._clock())
        except AuthenticationError:
            self._cache.pop(cache_key, None)
            raise
        finally:
            if self._verifying.get(cache_key, (None, 0))[0] is asyncio.current_task():
                del self._verifying[cache_key]
        if epoch == self._epoch:
            self._store(cache_key, *verified)
        return verified

    def _store(self, cache_key: bytes, principal: Principal, expires_at: datetime | None) -> None:
        self._cache[cache_key] = _Cached(principal, expires_at, self._monotonic() + self._cache_ttl_s)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _verify(self, prefix: str, plaintext: str, now: datetime) -> _Verified:
        async with self._db.transaction() as session:
            repo = ApiKeyRepository(session)
            row = await repo.get_by_prefix(prefix)
            # compare even when the row is missing so timing says nothing about which prefixes exist
            expected = row.hash if row is not None else "0" * 64
            actual = self._hasher.hash(row.salt if row is not None else "00" * 16, plaintext)
            if row is None or not hmac.compare_digest(expected, actual):
                raise AuthenticationError("Incorrect API key provided.")
            if row.revoked_at is not None:
                raise AuthenticationError("This API key has been revoked.", code="api_key_revoked")
            if row.expires_at is not None and row.expires_at <= now:
                raise AuthenticationError("This API key has expired.", code="api_key_expired")
            project = await ProjectRepository(session).get(row.project_id)
            if project is None:
                raise AuthenticationError("Incorrect API key provided.")
            if row.last_used_at is None or now - row.last_used_at >= _LAST_USED_RESOLUTION:
                await repo.touch(row.id, now)
            return _principal(row, project), row.expires_at

    async def principal_for_key(self, key_id: str) -> Principal:
        """The principal of a key by id, checked as at authentication (revoked or expired: 401):
        a batch runs each line as the key that created it, so a key revoked mid-batch stops it."""
        now = self._clock()
        async with self._db.transaction() as session:
            row = await ApiKeyRepository(session).get(key_id)
            if row is None or row.revoked_at is not None:
                raise AuthenticationError(
                    "The API key that created this job has been revoked.", code="api_key_revoked"
                )
            if row.expires_at is not None and row.expires_at <= now:
                raise AuthenticationError(
                    "The API key that created this job has expired.", code="api_key_expired"
                )
            project = await ProjectRepository(session).get(row.project_id)
            if project is None:
                raise AuthenticationError("The project of this job no longer exists.")
            return _principal(row, project)


def _principal(row: ApiKey, project: Project) -> Principal:
    return Principal(
        project_id=row.project_id,
        key_id=row.id,
        key_name=row.name,
        scopes=frozenset(row.scopes.split()),
        allowed_deployments=(
            frozenset(row.allowed_deployments) if row.allowed_deployments is not None else None
        ),
        key_limits=LimitSpec(row.rpm_limit, row.tpm_limit, row.concurrency_limit),
        project_limits=LimitSpec(project.rpm_limit, project.tpm_limit, project.concurrency_limit),
    )
