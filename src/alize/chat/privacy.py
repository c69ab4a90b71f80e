"""A chat user's data under the GDPR: export it (right of access and portability) and erase it
(right to erasure) in one operation that says what it removed.

Erasure deletes the account and, through ``ON DELETE CASCADE``, every row hanging off it:
sessions, agents, conversations, their messages, documents and the documents' passages with
their embeddings. The usage ledger stays, because the project is billed for those requests, but
each of the user's rows has its user id replaced by a pseudonym (``erased:`` + a keyed hash of
the id): totals are unchanged, the rows of one former user still group together for a billing
dispute, and nothing in them leads back to a person once the account row is gone. Then the
deletions are made physical (:meth:`alize.store.database.Database.purge_deleted`), so the
user's text is not left in SQLite's free pages or its write-ahead log.

The audit log records the erasure with the user id and the counts only: it is append-only and
hash-chained, so it must never hold what erasure has to remove.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alize.chat.accounts import user_not_found
from alize.chat.conversations import ConversationService
from alize.chat.export import conversation_dict
from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.models import UsageRow
from alize.store.repositories import UsageRepository
from alize.store.repositories.chat import (
    ChatAgentRepository,
    ChatSessionRepository,
    ChatUserRepository,
    ConversationRepository,
    DocumentRepository,
)


@dataclass(frozen=True, slots=True)
class ErasureReport:
    user_id: str
    project_id: str
    #: rows deleted, by kind: conversations, messages, documents, chunks, sessions, agents
    removed: dict[str, int] = field(default_factory=dict)
    #: usage rows kept for billing, now under ``pseudonym``
    usage_rows_pseudonymised: int = 0
    pseudonym: str = ""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _usage(row: UsageRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "deployment": row.deployment,
        "model": row.model,
        "status": row.status,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_micros": row.cost_micros,
        "created_at": _iso(row.created_at),
    }


class PrivacyService:
    def __init__(
        self,
        db: Database,
        conversations: ConversationService,
        secret: bytes,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self._conversations = conversations
        self._secret = secret
        self._clock = clock

    def pseudonym(self, user_id: str) -> str:
        """Stable per user, unlinkable without the server secret and the (deleted) user id."""
        mac = hmac.new(self._secret, b"alize-erased-user:" + user_id.encode(), hashlib.sha256)
        return "erased:" + mac.hexdigest()[:24]

    async def erase(self, user_id: str, *, project_id: str | None = None) -> ErasureReport:
        """Delete the user and all their data in one transaction; 404 outside ``project_id``."""
        async with self._db.transaction() as session:
            users = ChatUserRepository(session)
            user = await users.get(user_id)
            if user is None or (project_id is not None and user.project_id != project_id):
                raise user_not_found(user_id)
            removed = await users.footprint(user_id)
            pseudonym = self.pseudonym(user_id)
            pseudonymised = await UsageRepository(session).pseudonymise_user(user_id, pseudonym)
            await users.delete(user_id)
            owner = user.project_id
        await self._db.purge_deleted()
        return ErasureReport(user_id, owner, removed, pseudonymised, pseudonym)

    async def export(self, user_id: str) -> dict[str, Any]:
        """Everything stored about the user, as JSON values (what the chat page downloads)."""
        async with self._db.transaction() as session:
            owned = [c.id for c in await ConversationRepository(session).list(user_id, limit=1_000_000)]
        conversations = []
        for conversation_id in owned:
            body = conversation_dict(await self._conversations.detail(user_id, conversation_id))
            async with self._db.transaction() as session:
                chunks = await DocumentRepository(session).chunks(conversation_id)
            for document in body["documents"]:
                document["passages"] = [c.text for c, d in chunks if d.id == document["id"]]
            conversations.append(body)
        async with self._db.transaction() as session:
            user = await ChatUserRepository(session).get(user_id)
            if user is None:
                raise user_not_found(user_id)
            agents = await ChatAgentRepository(session).list(user_id)
            sessions = await ChatSessionRepository(session).of_user(user_id)
            usage = await UsageRepository(session).of_user(user_id)
        return {
            "object": "chat.user_export",
            "exported_at": self._clock().isoformat(),
            "user": {
                "id": user.id,
                "email": user.email,
                "project_id": user.project_id,
                "language": user.language,
                "created_at": _iso(user.created_at),
                "disabled_at": _iso(user.disabled_at),
            },
            "conversations": conversations,
            "agents": [
                {"id": a.id, "name": a.name, "instructions": a.instructions, "model": a.model} for a in agents
            ],
            "sessions": [
                {"created_at": _iso(s.created_at), "expires_at": _iso(s.expires_at)} for s in sessions
            ],
            "usage": [_usage(r) for r in usage],
        }
