"""Retention settings are enforced: the sweep deletes what is older than allowed, on SQLite and
PostgreSQL, reports it, and one failing rule does not stop the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.chat.test_documents import _BagOfWords

from alize.chat.accounts import UserInfo, UserService
from alize.chat.conversations import ConversationService
from alize.chat.documents import DocumentService
from alize.chat.retention import chat_retention_rules
from alize.config import ChatSettings, RetentionSettings
from alize.gateway.metering import MeteringService, UsageRecord
from alize.retention import RetentionRule, RetentionSweeper, days
from alize.store import Database

T0 = datetime(2025, 1, 1, tzinfo=UTC)


async def test_old_conversations_documents_and_request_logs_go(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, _ = users
    old = ConversationService(db, clock=lambda: T0)
    new = ConversationService(db, clock=lambda: T0 + timedelta(days=40))
    await old.create(alice.id, title="stale", model="m", instructions="")
    fresh = await new.create(alice.id, title="fresh", model="m", instructions="")
    await new.add_message(alice.id, fresh.id, role="user", content="keep me")
    documents = DocumentService(db, ChatSettings(), _BagOfWords())
    await documents.upload(alice.id, fresh.id, "a.txt", b"an uploaded file")
    metering = MeteringService(db)
    for i, when in enumerate((T0, T0 + timedelta(days=40))):
        await metering.record(
            UsageRecord(f"r{i}", alice.project_id, None, "m", "m", "success", 1, 1, created_at=when)
        )
    settings = RetentionSettings(conversations_days=30, uploaded_files_days=1, request_logs_days=30)
    rules = [
        *chat_retention_rules(db, settings),
        RetentionRule("request_logs", days(settings.request_logs_days), metering.purge_before),
    ]
    reported: list[dict[str, int]] = []

    async def report(removed: dict[str, int]) -> None:
        reported.append(removed)

    later = T0 + timedelta(days=41)
    sweeper = RetentionSweeper(rules, interval_s=3600, clock=lambda: later, report=report)
    removed = await sweeper.sweep()
    assert removed == {"conversations": 1, "request_logs": 1}  # the documents are recent
    assert reported == [removed]
    assert [c.title for c in await new.find(alice.id)] == ["fresh"]
    assert await sweeper.sweep() == {}
    # documents carry their real upload time: a day later they go, their conversation stays
    tomorrow = datetime.now(UTC) + timedelta(days=2)
    only_files = [r for r in rules if r.name == "uploaded_files"]
    assert await RetentionSweeper(only_files, interval_s=1, clock=lambda: tomorrow).sweep() == {
        "uploaded_files": 1
    }
    detail = await new.detail(alice.id, fresh.id)
    assert detail.documents == [] and [m.content for m in detail.messages] == ["keep me"]


async def test_zero_keeps_for_good_and_a_failing_rule_does_not_stop_the_others() -> None:
    calls: list[str] = []

    async def broken(_: datetime) -> int:
        calls.append("broken")
        raise RuntimeError("disk on fire")

    async def fine(_: datetime) -> int:
        calls.append("fine")
        return 3

    async def never(_: datetime) -> int:
        calls.append("never")
        return 1

    rules = [
        RetentionRule("a", days(1), broken),
        RetentionRule("b", days(1), fine),
        RetentionRule("c", days(0), never),
    ]
    sweeper = RetentionSweeper(rules, interval_s=1, clock=lambda: T0)
    with pytest.raises(RuntimeError):
        await sweeper.sweep()
    assert calls == ["broken", "fine"]
    await sweeper.start()  # a failing first pass is logged, the server still starts
    await sweeper.stop()
