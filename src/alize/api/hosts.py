"""Which host names this server answers to: the defence against DNS rebinding.

A web page the operator visits can point its own domain at 127.0.0.1 and then call the local
server from the browser: the request reaches Alizé with ``Host: rebind.attacker.example``. In
open mode (no API key yet) that was enough to reach ``/admin/api/projects``. So every request's
``Host`` must be one this server is meant to be reached by:

* loopback names (``localhost``, ``127.0.0.1``, ``[::1]``...) always: a rebinding page can never
  make the browser send them, since the browser sends the attacker's name;
* the names in ``ALIZE_ALLOWED_HOSTS`` (``chat.example.eu``; ``.example.eu`` for the domain and
  its subdomains; ``*`` for any);
* when that list is empty, any other name only once API keys exist (then every API call needs a
  key, which a rebinding page does not have, and the chat cookie is bound to the name the user
  logged in under).

Anything else is a 400 ``invalid_host``. ``/health`` and ``/ready`` answer whatever the name, so
orchestrators may probe a pod's address. The chat page's Origin check uses the same rule
(:func:`origin_allowed`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from alize.api.errors import error_response
from alize.errors import InvalidRequestError

if TYPE_CHECKING:
    from alize.api.deps import Services

PROBE_PATHS = frozenset({"/health", "/ready"})


def host_name(host: str) -> str | None:
    """The name part of a ``Host`` header value (no port, no brackets, lower case); ``None``
    when it is not a plausible host (empty, spaces, userinfo)."""
    host = host.strip().lower()
    if not host or any(c in host for c in " @/\\\t"):
        return None
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 1 else None
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if port and not port.isdigit():
        return None
    return name or None


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def matches(name: str, patterns: Sequence[str]) -> bool:
    """``name`` against ``chat.example.eu``, ``.example.eu`` (domain and subdomains) or ``*``."""
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
    return False


class HostPolicy:
    """The configured names, and the one decision every request and Origin check goes through."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = tuple(allowed)

    def allows(self, name: str | None, *, keys_exist: bool) -> bool:
        if name is None:
            return False
        if is_loopback_name(name) or matches(name, self.allowed):
            return True
        return not self.allowed and keys_exist

    def needs_keys_to_decide(self, name: str | None) -> bool:
        """Only an unlisted name with an empty list depends on whether keys exist."""
        return name is not None and not self.allowed and not is_loopback_name(name)


def origin_allowed(
    origin: str, own_host: str, policy: HostPolicy, *, keys_exist: bool, extra: Sequence[str] = ()
) -> bool:
    """An ``Origin`` may post if it is listed in ``extra``, or if it is this server's own origin
    (the request's ``Host``) under a host name the policy allows."""
    origin = origin.rstrip("/").lower()
    if origin in {o.rstrip("/").lower() for o in extra}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc != own_host.strip().lower():
        return False
    return policy.allows(host_name(parts.netloc), keys_exist=keys_exist)


def _host_header(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return bytes(value).decode("latin-1")
    return ""


class HostGate:
    """Pure ASGI: refuse a request whose ``Host`` this server is not meant to answer to."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        policy = services.hosts
        header = _host_header(scope)
        name = host_name(header)
        keys = await services.tenancy.keys_exist() if policy.needs_keys_to_decide(name) else False
        if policy.allows(name, keys_exist=keys):
            await self.app(scope, receive, send)
            return
        shown = header[:100].encode("ascii", "backslashreplace").decode()
        error = InvalidRequestError(
            f"This server does not answer to the host name '{shown}'. An operator can allow it "
            "with ALIZE_ALLOWED_HOSTS.",
            code="invalid_host",
        )
        await error_response(error)(scope, receive, send)
