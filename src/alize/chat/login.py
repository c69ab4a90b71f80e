"""Logging in: the password check behind the login throttle, with lockouts in the audit log.

The audit log is append-only and hash-chained, so nothing personal that erasure would have to
remove goes in it: a locked account is named by its user id (an opaque id that nothing links
to a person once the account is erased), or ``unknown-account`` for an email no account has;
a locked address is recorded with the address, which the operator keeps for security.
"""

from __future__ import annotations

import logging

from alize.chat.accounts import UserInfo, UserService
from alize.chat.throttle import LoginThrottle
from alize.errors import AuthenticationError
from alize.gateway.audit import AuditService

log = logging.getLogger(__name__)


class LoginService:
    def __init__(self, users: UserService, throttle: LoginThrottle, audit: AuditService) -> None:
        self._users = users
        self._throttle = throttle
        self._audit = audit

    async def login(self, email: str, password: str, address: str) -> UserInfo:
        """The user, or 401 (wrong credentials) or 429 ``login_locked`` (too many failures)."""
        account = email.strip().lower()[:320]
        self._throttle.check(account, address)
        try:
            user = await self._users.authenticate(email, password)
        except AuthenticationError:
            for lock in self._throttle.failed(account, address):
                target = (
                    f"address:{address}"
                    if lock.scope == "address"
                    else await self._users.id_of(email) or "unknown-account"
                )
                log.warning(
                    "chat login locked for %ss: %s after %d failures", lock.seconds, target, lock.failures
                )
                await self._audit.append(
                    "system",
                    f"chat_login.locked_{lock.scope}",
                    target,
                    {"failures": lock.failures, "lockout_s": lock.seconds, "address": address},
                )
            raise
        self._throttle.succeeded(account)
        return user
