"""API keys: their format, how they are stored, and issuing them (create, list, revoke, rotate).

A key looks like ``alz-k3x9q2mw.<43 url-safe chars>``. The part before the dot (``alz-k3x9q2mw``)
is its visible *prefix*: shown in listings and used to find the row. The database keeps only a
per-key random salt and ``HMAC-SHA256(pepper, salt || key)``, where the pepper is a server
secret that is not in the database; the secret has 256 bits of entropy, so a fast keyed hash is
as strong as a slow one and cheap enough to verify on every request. The plaintext is returned
exactly once, by ``create`` / ``rotate``, and is never logged, stored, or put in an error.

An operator-chosen bootstrap admin key (from the environment) need not follow the ``alz-`` shape:
its row is found through a prefix derived from an HMAC of the key instead.

Checking a presented key against these rows is authentication, in :mod:`alize.gateway.auth`;
both sides share :class:`KeyHasher`, the one place that knows how a key is parsed and hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from alize.errors import ConflictError, NotFoundError, ValidationFailedError
from alize.gateway.limits import LimitSpec
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
UNLIMITED = LimitSpec()


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


def is_credential(text: str) -> bool:
    """Whether ``text`` has the shape of a credential we could have issued: 1 to
    :data:`MAX_KEY_LENGTH` ASCII characters of an RFC 6750 bearer token."""
    return 0 < len(text) <= MAX_KEY_LENGTH and text.isascii() and _TOKEN_RE.fullmatch(text) is not None


class KeyHasher:
    """How a key is found and checked: its lookup prefix and its keyed hash, under the pepper."""

    def __init__(self, pepper: bytes | str) -> None:
        self._pepper = pepper.encode() if isinstance(pepper, str) else bytes(pepper)

    def hash(self, salt: str, plaintext: str) -> str:
        return hmac.new(self._pepper, bytes.fromhex(salt) + plaintext.encode(), hashlib.sha256).hexdigest()

    def cache_key(self, plaintext: str) -> bytes:
        """What a cache of verified keys is keyed by (never the key itself)."""
        return hashlib.sha256(self._pepper + b"\x00cache\x00" + plaintext.encode()).digest()

    def lookup_prefix(self, plaintext: str) -> str | None:
        """The stored prefix this plaintext would have, or ``None`` if it cannot be a key."""
        match = _KEY_RE.fullmatch(plaintext)
        if match:
            return f"{KEY_PREFIX}{match.group(1)}"
        if not (len(plaintext) >= 16 and is_credential(plaintext)):
            return None
        digest = hmac.new(self._pepper, b"lookup\x00" + plaintext.encode(), hashlib.sha256).hexdigest()
        return f"ext-{digest[:16]}"


class KeyService:
    """Issues and manages API keys. Built once in the app's lifespan with the server's hasher;
    ``on_revoke`` is told each key id that stops working, so a cache of verified keys in this
    process (the authenticator's) drops it at once."""

    def __init__(
        self,
        db: Database,
        hasher: KeyHasher,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_revoke: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self._on_revoke = on_revoke

    def _forget(self, key_id: str) -> None:
        if self._on_revoke is not None:
            self._on_revoke(key_id)

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
            hash=self._hasher.hash(salt, plaintext),
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
        prefix = self._hasher.lookup_prefix(plaintext)
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
                current.hash, self._hasher.hash(current.salt, plaintext)
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
