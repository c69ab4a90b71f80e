"""Login sessions and CSRF tokens.

A session is a server-side row; the browser holds a random 256-bit token in an HttpOnly,
SameSite=Strict cookie, and the database keeps only its SHA-256 (a leaked table opens no
session). Each session also has a CSRF token, handed to the page in the ``/me`` answer (kept in
memory, never in localStorage) and sent back in a header on every state-changing request; the
server compares its digest with the session's in constant time (double submit bound to the
session; it is derived from the cookie token with HMAC, so every tab gets the same one). The
Origin check lives beside the routes, since it is about HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from alize.chat.accounts import UserInfo
from alize.errors import AuthenticationError, PermissionDeniedError
from alize.store.chat_models import ChatSession
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.repositories.chat import ChatSessionRepository


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_for(token: str) -> str:
    """The CSRF token of a session, derived from its cookie token: every tab of one login gets
    the same value, and it can be handed out again without storing it in clear."""
    return hmac.new(token.encode(), b"alize-chat-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSession:
    """What the browser receives once: the cookie token and the CSRF token."""

    token: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    user: UserInfo
    csrf_hash: str

    def check_csrf(self, presented: str | None) -> None:
        """403 unless ``presented`` is this session's CSRF token."""
        if not presented or not hmac.compare_digest(digest(presented), self.csrf_hash):
            raise PermissionDeniedError("Missing or invalid CSRF token.", code="csrf_failed")


class SessionService:
    def __init__(self, db: Database, ttl_s: int, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock

    async def create(self, user: UserInfo) -> NewSession:
        token = secrets.token_urlsafe(32)
        csrf = csrf_for(token)
        now = self._clock()
        row = ChatSession(
            id=new_id("sess"),
            user_id=user.id,
            token_hash=digest(token),
            csrf_hash=digest(csrf),
            created_at=now,
            expires_at=now + self._ttl,
        )
        async with self._db.transaction() as session:
            repo = ChatSessionRepository(session)
            await repo.delete_expired(now)
            await repo.add(row)
        return NewSession(token=token, csrf_token=csrf, expires_at=row.expires_at)

    async def resolve(self, token: str | None) -> SessionInfo:
        """The live session of this cookie token, or 401."""
        if token:
            async with self._db.transaction() as session:
                found = await ChatSessionRepository(session).get_live(digest(token), self._clock())
            if found is not None:
                row, user = found
                info = UserInfo(
                    id=user.id, project_id=user.project_id, email=user.email, language=user.language
                )
                return SessionInfo(id=row.id, user=info, csrf_hash=row.csrf_hash)
        raise AuthenticationError("Please log in.", code="not_logged_in")

    async def revoke(self, token: str) -> None:
        async with self._db.transaction() as session:
            await ChatSessionRepository(session).delete(digest(token))
