"""The chat's retention rules: conversations untouched too long, and old uploaded documents."""

from __future__ import annotations

from datetime import datetime

from alize.config import RetentionSettings
from alize.retention import RetentionRule, days
from alize.store.database import Database
from alize.store.repositories.chat import ConversationRepository, DocumentRepository


def chat_retention_rules(db: Database, settings: RetentionSettings) -> list[RetentionRule]:
    async def conversations(before: datetime) -> int:
        async with db.transaction() as session:
            count = await ConversationRepository(session).delete_idle_before(before)
        await db.purge_deleted()
        return count

    async def uploaded_files(before: datetime) -> int:
        async with db.transaction() as session:
            count = await DocumentRepository(session).delete_uploaded_before(before)
        await db.purge_deleted()
        return count

    return [
        RetentionRule("conversations", days(settings.conversations_days), conversations),
        RetentionRule("uploaded_files", days(settings.uploaded_files_days), uploaded_files),
    ]
