"""API keys: issue, list, revoke, rotate, and authenticate requests.

A key looks like ``alz-k3x9q2mw.<43 url-safe chars>``. The part before the dot (``alz-k3x9q2mw``)
is its visible *prefix*: shown in listings and used to find the row. The database keeps only a
per-key random salt and ``HMAC-SHA256(pepper, salt || key)``, where the pepper is a server
secret that is not in the database; the secret has 256 bits of entropy, so a fast keyed hash is
as strong as a slow one and cheap enough to verify on every request. The plaintext is returned
exactly once, by ``create`` / ``rotate``, and is never logged, stored, or put in an error.

Verified keys are cached for a few seconds, keyed by ``SHA-256(pepper || key)`` (never the key
itself); a revoke in this process drops the entry at once, other processes see it within the TTL.

An operator-chosen bootstrap admin key (from the environment) need not follow the ``alz-`` shape:
its row is found through a prefix derived from an HMAC of the key instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from alize.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationFailedError,
)
from alize.gateway.limits import LimitSpec, Subject
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.models import ApiKey, Project
from alize.store.repositories import ApiKeyRepository, ProjectRepository

KEY_PREFIX = "alz-"
SCOPES = frozenset({"inference", "admin"})
BOOTSTRAP_KEY_NAME = "bootstrap-admin"
#: longest credential accepted from a header; anything longer is not a key of ours
MAX_KEY_LENGTH = 256

_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(r"alz-([a-z0-9]{8})\.([A-Za-z0-9_-]{32,200})")
#: RFC 6750 b64token: what a bearer credential may contain
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_LAST_USED_RESOLUTION = timedelta(seconds=60)
UNLIMITED = LimitSpec()


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


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed to people: everything except salt and hash."""

    id: str
    project_id: str
    name: str
    prefix: str
    scopes: frozenset[str]
    allowed_deployments: tuple[str, ...] | None
    limits: LimitSpec
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A newly issued key. ``plaintext`` is shown once; it is kept out of ``repr``."""

    info: KeyInfo
    plaintext: str = field(repr=False)


def _scopes_text(scopes: Iterable[str]) -> str:
    chosen = frozenset(scopes)
    unknown = chosen - SCOPES
    if unknown or not chosen:
        raise ValidationFailedError(f"scopes must be a non-empty subset of {sorted(SCOPES)}", param="scopes")
    return " ".join(sorted(chosen))


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(row.scopes.split()),
        allowed_deployments=tuple(row.allowed_deployments) if row.allowed_deployments is not None else None,
        limits=LimitSpec(row.rpm_limit, row.tpm_limit, row.concurrency_limit),
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


def extract_api_key(headers: Mapping[str, str]) -> str | None:
    """The credential from ``Authorization: Bearer``, ``api-key`` or ``x-api-key`` (in that order).

    Returns ``None`` for anything that cannot be one of our keys (wrong scheme, too long,
    non-ASCII, spaces or control characters): odd input is never an exception.
    """
    found: dict[str, str] = {}
    try:
        for name, value in headers.items():
            lowered = name.lower() if isinstance(name, str) else ""
            if lowered in ("authorization", "api-key", "x-api-key") and isinstance(value, str):
                found.setdefault(lowered, value)
    except (AttributeError, TypeError, UnicodeError):
        return None
    candidates: list[str] = []
    auth = found.get("authorization")
    if auth is not None:
        scheme, _, credential = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(credential.strip())
    candidates.extend(found[h].strip() for h in ("api-key", "x-api-key") if h in found)
    for candidate in candidates:
        if 0 < len(candidate) <= MAX_KEY_LENGTH and candidate.isascii() and _TOKEN_RE.fullmatch(candidate):
            return candidate
    return None


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


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    expires_at: datetime | None
    fresh_until: float


class KeyService:
    """Issues and verifies API keys. Built once in the app's lifespan with the server pepper."""

    def __init__(
        self,
        db: Database,
        *,
        pepper: bytes | str,
        cache_ttl_s: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._pepper = pepper.encode() if isinstance(pepper, str) else bytes(pepper)
        self._cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        self._clock = clock
        self._monotonic = monotonic
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()

    # -- hashing -------------------------------------------------------------------------------

    def _hash(self, salt: str, plaintext: str) -> str:
        return hmac.new(self._pepper, bytes.fromhex(salt) + plaintext.encode(), hashlib.sha256).hexdigest()

    def _cache_key(self, plaintext: str) -> bytes:
        return hashlib.sha256(self._pepper + b"\x00cache\x00" + plaintext.encode()).digest()

    def _lookup_prefix(self, plaintext: str) -> str | None:
        """The stored prefix this plaintext would have, or ``None`` if it cannot be a key."""
        match = _KEY_RE.fullmatch(plaintext)
        if match:
            return f"{KEY_PREFIX}{match.group(1)}"
        if not (16 <= len(plaintext) <= MAX_KEY_LENGTH and _TOKEN_RE.fullmatch(plaintext)):
            return None
        digest = hmac.new(self._pepper, b"lookup\x00" + plaintext.encode(), hashlib.sha256).hexdigest()
        return f"ext-{digest[:16]}"

    def _new_row(
        self, project_id: str, name: str, scopes: str, plaintext: str, prefix: str, now: datetime
    ) -> ApiKey:
        salt = secrets.token_hex(16)
        return ApiKey(
            id=new_id("key"),
            project_id=project_id,
            name=name,
            prefix=prefix,
            salt=salt,
            hash=self._hash(salt, plaintext),
            scopes=scopes,
            created_at=now,
        )

    # -- management ----------------------------------------------------------------------------

    async def _insert(
        self,
        session: AsyncSession,
        project_id: str,
        name: str,
        *,
        scopes: str,
        allowed_deployments: Collection[str] | None,
        limits: LimitSpec,
        expires_at: datetime | None,
        now: datetime,
    ) -> CreatedKey:
        if await ProjectRepository(session).get(project_id) is None:
            raise NotFoundError(f"Project '{project_id}' not found.", param="project_id")
        repo = ApiKeyRepository(session)
        while True:  # 36^8 prefixes: a collision is rare, but possible
            prefix = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(8))
            if await repo.get_by_prefix(prefix) is None:
                break
        plaintext = f"{prefix}.{secrets.token_urlsafe(32)}"
        row = self._new_row(project_id, name, scopes, plaintext, prefix, now)
        row.allowed_deployments = (
            sorted(set(allowed_deployments)) if allowed_deployments is not None else None
        )
        row.rpm_limit, row.tpm_limit, row.concurrency_limit = limits.rpm, limits.tpm, limits.concurrency
        row.expires_at = expires_at
        await repo.add(row)
        return CreatedKey(_info(row), plaintext)

    async def create(
        self,
        project_id: str,
        name: str,
        *,
        scopes: Iterable[str] = ("inference",),
        allowed_deployments: Collection[str] | None = None,
        limits: LimitSpec = UNLIMITED,
        expires_at: datetime | None = None,
    ) -> CreatedKey:
        """Issue a key; the returned ``plaintext`` is the only copy there will ever be."""
        scope_text = _scopes_text(scopes)
        async with self._db.transaction() as session:
            return await self._insert(
                session,
                project_id,
                name,
                scopes=scope_text,
                allowed_deployments=allowed_deployments,
                limits=limits,
                expires_at=expires_at,
                now=self._clock(),
            )

    async def list(self, project_id: str | None = None, *, include_revoked: bool = True) -> list[KeyInfo]:
        async with self._db.transaction() as session:
            rows = await ApiKeyRepository(session).list(project_id, include_revoked=include_revoked)
            return [_info(row) for row in rows]

    async def get(self, key_id: str, *, project_id: str | None = None) -> KeyInfo:
        """A key by id; with ``project_id``, a key of another project is reported as missing."""
        async with self._db.transaction() as session:
            row = await ApiKeyRepository(session).get(key_id)
            if row is None or (project_id is not None and row.project_id != project_id):
                raise NotFoundError(f"API key '{key_id}' not found.")
            return _info(row)

    async def revoke(self, key_id: str, *, project_id: str | None = None) -> KeyInfo:
        """Revoke a key (idempotent). Takes effect at once here, within the cache TTL elsewhere."""
        async with self._db.transaction() as session:
            repo = ApiKeyRepository(session)
            row = await repo.get(key_id)
            if row is None or (project_id is not None and row.project_id != project_id):
                raise NotFoundError(f"API key '{key_id}' not found.")
            if row.revoked_at is None:
                row.revoked_at = self._clock()
                await session.flush()
            info = _info(row)
        self._forget(key_id)
        return info

    async def rotate(self, key_id: str, *, project_id: str | None = None) -> CreatedKey:
        """A new key with the same name, scopes, allow-list and limits; the old one is revoked in
        the same transaction, so there is never a moment with both or neither."""
        now = self._clock()
        async with self._db.transaction() as session:
            old = await ApiKeyRepository(session).get(key_id)
            if old is None or (project_id is not None and old.project_id != project_id):
                raise NotFoundError(f"API key '{key_id}' not found.")
            if old.revoked_at is not None:
                raise ConflictError(f"API key '{key_id}' is revoked and cannot be rotated.")
            created = await self._insert(
                session,
                old.project_id,
                old.name,
                scopes=old.scopes,
                allowed_deployments=old.allowed_deployments,
                limits=LimitSpec(old.rpm_limit, old.tpm_limit, old.concurrency_limit),
                expires_at=old.expires_at,
                now=now,
            )
            old.revoked_at = now
            await session.flush()
        self._forget(key_id)
        return created

    async def ensure_bootstrap_admin_key(self, plaintext: str, *, project_name: str = "default") -> KeyInfo:
        """Make ``plaintext`` (an operator-provided secret) a valid admin key.

        The key belongs to the project ``project_name``, created if missing. Idempotent: if the
        key is already stored nothing changes; an earlier, different bootstrap key is revoked, so
        changing the environment variable rotates the key.
        """
        prefix = self._lookup_prefix(plaintext)
        if prefix is None:
            raise ValueError(
                f"the bootstrap admin key must be 16 to {MAX_KEY_LENGTH} characters of [A-Za-z0-9._~+/-]"
            )
        now = self._clock()
        revoked: list[str] = []
        async with self._db.transaction() as session:
            projects = ProjectRepository(session)
            project = await projects.get_by_name(project_name)
            if project is None:
                project = Project(id=new_id("proj"), name=project_name, currency="USD", created_at=now)
                await projects.add(project)
            repo = ApiKeyRepository(session)
            current = await repo.get_by_prefix(prefix)
            if current is not None and not hmac.compare_digest(
                current.hash, self._hash(current.salt, plaintext)
            ):
                raise ValueError("the bootstrap admin key collides with an existing key's prefix")
            for row in await repo.list(include_revoked=False):
                if row.name == BOOTSTRAP_KEY_NAME and row is not current:
                    row.revoked_at = now
                    revoked.append(row.id)
            if current is None:
                current = self._new_row(
                    project.id, BOOTSTRAP_KEY_NAME, "admin inference", plaintext, prefix, now
                )
                await repo.add(current)
            elif current.revoked_at is not None:
                current.revoked_at = None
            await session.flush()
            info = _info(current)
        for key_id in revoked:
            self._forget(key_id)
        return info

    # -- verification --------------------------------------------------------------------------

    def _forget(self, key_id: str) -> None:
        for cache_key in [k for k, v in self._cache.items() if v.principal.key_id == key_id]:
            del self._cache[cache_key]

    async def authenticate(self, plaintext: str | None) -> Principal:
        """The principal for a presented key, or ``AuthenticationError`` (401, invalid_api_key)."""
        if not plaintext:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or in an "
                "'api-key' header."
            )
        prefix = self._lookup_prefix(plaintext) if len(plaintext) <= MAX_KEY_LENGTH else None
        if prefix is None:
            raise AuthenticationError("Incorrect API key provided.")
        now = self._clock()
        cache_key = self._cache_key(plaintext)
        cached = self._cache.get(cache_key)
        if cached is not None and cached.fresh_until > self._monotonic():
            if cached.expires_at is not None and cached.expires_at <= now:
                raise AuthenticationError("This API key has expired.", code="api_key_expired")
            return cached.principal
        principal, expires_at = await self._verify(prefix, plaintext, now)
        self._cache[cache_key] = _Cached(principal, expires_at, self._monotonic() + self._cache_ttl_s)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _verify(self, prefix: str, plaintext: str, now: datetime) -> tuple[Principal, datetime | None]:
        async with self._db.transaction() as session:
            repo = ApiKeyRepository(session)
            row = await repo.get_by_prefix(prefix)
            # compare even when the row is missing so timing says nothing about which prefixes exist
            expected = row.hash if row is not None else "0" * 64
            actual = self._hash(row.salt if row is not None else "00" * 16, plaintext)
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
            principal = Principal(
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
            return principal, row.expires_at
