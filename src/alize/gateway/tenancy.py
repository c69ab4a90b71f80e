"""Tenancy wiring: the server secret, the tenancy services built together, and the rules that
tie them to the request path (open mode, the operator's project, audit actors).

Rules written down here once:

* **Open mode.** Until any API key row exists (revoked ones count), the platform needs no key and
  meters every request under the ``default`` project. The first key ever issued closes it for
  good: revoking every key afterwards does not reopen the platform.
* **Platform vs project admins.** An ``admin`` key of the ``default`` project (the operator's
  project: the bootstrap key and ``alize keys create --admin`` live there) administers every
  project, the catalog and the deployments (:meth:`Tenancy.require_platform_admin`). An
  ``admin`` key of any other project administers only its own project's keys and usage;
  everything else looks to it as if it did not exist (404: :meth:`Tenancy.project_scope`,
  :meth:`Tenancy.visible_project_id`).
* **Server secret.** The key-hash pepper comes from ``ALIZE_SECRET_KEY`` or, when unset, from a
  random file created once in the data directory, so the CLI (which opens the database directly)
  and every server sharing that directory verify the same keys.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alize.config import Settings
from alize.errors import ConflictError, NotFoundError, PermissionDeniedError
from alize.gateway.audit import AuditRecord, AuditService
from alize.gateway.auth import Authenticator, Principal
from alize.gateway.budget import BudgetService
from alize.gateway.keys import KeyHasher, KeyService
from alize.gateway.limits import MemoryRateLimiter, RateLimiter
from alize.gateway.metering import MeteringService, UsageRecord
from alize.gateway.projects import ProjectService
from alize.store.database import Database
from alize.store.repositories import UsageRepository

DEFAULT_PROJECT = "default"
SECRET_FILE = "secret_key"


def server_secret(settings: Settings) -> bytes:
    """The configured secret, else the one stored in ``data_dir`` (created, mode 0600, if missing)."""
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    try:
        # O_EXCL: two processes starting at once agree on whichever file was written first
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    return value


def build_rate_limiter(settings: Settings) -> RateLimiter:
    """Redis when ``redis_url`` is set (exact across gateway processes), else in-process."""
    if settings.redis_url:
        from alize.gateway.limits_redis import RedisRateLimiter

        return RedisRateLimiter.from_url(settings.redis_url)
    return MemoryRateLimiter()


def actor_of(principal: Principal | None) -> str:
    """How the audit log names who acted: ``key:<id>`` or ``open-mode`` (no keys yet)."""
    return f"key:{principal.key_id}" if principal is not None else "open-mode"


@dataclass
class Tenancy:
    """Projects, keys, limits, budgets, metering and audit: one instance per app or CLI run."""

    db: Database
    projects: ProjectService
    keys: KeyService
    auth: Authenticator
    limiter: RateLimiter
    budget: BudgetService
    metering: MeteringService
    audit: AuditService
    _secured: bool = False
    _default_project_id: str | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        *,
        limiter: RateLimiter | None = None,
        instance_id: str | None = None,
    ) -> Tenancy:
        """``instance_id``: the serving process whose budget holds these are (alize.gateway.holds)."""
        hasher = KeyHasher(server_secret(settings))
        auth = Authenticator(db, hasher)
        return cls(
            db=db,
            projects=ProjectService(db),
            keys=KeyService(db, hasher, on_revoke=auth.forget),
            auth=auth,
            limiter=limiter if limiter is not None else build_rate_limiter(settings),
            budget=BudgetService(db, owner=instance_id),
            metering=MeteringService(db),
            audit=AuditService(db),
        )

    async def aclose(self) -> None:
        await self.auth.refreshed()
        await self.limiter.aclose()

    async def keys_exist(self) -> bool:
        """Whether the platform is closed (any key was ever issued). Once true, stays true."""
        if not self._secured:
            self._secured = bool(await self.keys.list(include_revoked=True))
        return self._secured

    async def default_project_id(self) -> str:
        """The operator's ``default`` project, created on first use (open-mode requests land here)."""
        if self._default_project_id is None:
            found = await self.projects.get_by_name(DEFAULT_PROJECT)
            if found is None:
                try:
                    found = await self.projects.create(DEFAULT_PROJECT)
                except ConflictError:  # another process or request created it meanwhile
                    found = await self.projects.get_by_name(DEFAULT_PROJECT)
            assert found is not None
            self._default_project_id = found.id
        return self._default_project_id

    async def is_platform_admin(self, principal: Principal | None) -> bool:
        """Open mode, or an admin key of the operator's project."""
        if principal is None:
            return True
        return principal.is_admin and principal.project_id == await self.default_project_id()

    async def require_platform_admin(
        self,
        principal: Principal | None,
        message: str = "This operation requires a platform admin key (an admin key of the default project).",
    ) -> None:
        """403 ``platform_admin_required`` unless the caller administers the whole platform."""
        if not await self.is_platform_admin(principal):
            raise PermissionDeniedError(message, code="platform_admin_required")

    async def project_scope(self, principal: Principal | None) -> str | None:
        """``None`` for a platform admin (every project), else the only project the caller sees."""
        if await self.is_platform_admin(principal):
            return None
        assert principal is not None
        return principal.project_id

    async def visible_project_id(self, principal: Principal | None, project_id: str | None) -> str | None:
        """The project a request is about: ``project_id`` when the caller may see it (404 when
        not, exactly as if it did not exist), else the caller's own scope (``None`` = all)."""
        scope = await self.project_scope(principal)
        if scope is not None and project_id is not None and project_id != scope:
            raise NotFoundError(f"Project '{project_id}' not found.")
        return scope or project_id

    async def bootstrap(self, settings: Settings) -> None:
        """Install ``ALIZE_ADMIN_KEY`` as an admin key of the default project (idempotent)."""
        if settings.admin_key is None or not settings.admin_key.get_secret_value():
            return
        await self.default_project_id()
        info = await self.keys.ensure_bootstrap_admin_key(
            settings.admin_key.get_secret_value(), project_name=DEFAULT_PROJECT
        )
        self._secured = True
        await self.audit.append(
            "system", "key.bootstrap", info.id, {"project_id": info.project_id, "prefix": info.prefix}
        )

    async def usage_row(self, request_id: str, project_id: str | None) -> UsageRecord | None:
        """One request's ledger row; with ``project_id``, only if it belongs to that project."""
        if project_id is not None:
            return await self.metering.get(request_id, project_id=project_id)
        async with self.db.transaction() as session:
            row = await UsageRepository(session).get(request_id)
            owner = row.project_id if row is not None else None
        return await self.metering.get(request_id, project_id=owner) if owner is not None else None


class UnsafeBindError(RuntimeError):
    """Refusal to serve a public address while anyone could call the API without a key."""


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def check_bind_address(settings: Settings, tenancy: Tenancy) -> None:
    """DESIGN rule 6: a non-loopback bind needs an admin key (``ALIZE_ADMIN_KEY`` or an issued
    key), else anyone reaching the port could use and administer the platform."""
    if is_loopback_host(settings.host) or await tenancy.keys_exist():
        return
    raise UnsafeBindError(
        f"refusing to serve on {settings.host}: no API key exists, so anyone who can reach this "
        "address could use and administer the platform. Set ALIZE_ADMIN_KEY, or run "
        "`alize keys create --admin` first, or bind to 127.0.0.1."
    )


async def audit_admin_action(
    audit: AuditService,
    principal: Principal | None,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """Record an admin action (routers of every admin area call this after a change succeeds).

    ``action`` is ``<noun>.<verb>``, e.g. ``deployment.create`` or ``price.update``; ``details``
    must never hold secrets.
    """
    return await audit.append(actor_of(principal), action, target, details or {})
