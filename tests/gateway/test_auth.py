"""Authorisation rules on a principal: scopes, admin, the deployment allow-list."""

from __future__ import annotations

import pytest

from alize.errors import PermissionDeniedError
from alize.gateway.auth import Principal, authorize_deployment, require_admin, require_scope
from alize.gateway.limits import LimitSpec


def _principal(scopes: set[str], allowed: set[str] | None) -> Principal:
    return Principal(
        "p",
        "k",
        "n",
        frozenset(scopes),
        None if allowed is None else frozenset(allowed),
        LimitSpec(),
        LimitSpec(),
    )


def test_authorization_helpers() -> None:
    inference = _principal({"inference"}, {"chat"})
    authorize_deployment(inference, "chat")
    with pytest.raises(PermissionDeniedError) as info:
        authorize_deployment(inference, "other")
    assert info.value.status_code == 403
    with pytest.raises(PermissionDeniedError):
        require_admin(inference)
    admin_only = _principal({"admin"}, None)
    require_admin(admin_only)
    require_scope(admin_only, "inference")  # admin implies every scope
    authorize_deployment(admin_only, "anything")
    with pytest.raises(PermissionDeniedError):
        authorize_deployment(_principal(set(), None), "chat")
