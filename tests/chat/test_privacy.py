"""GDPR: erase a chat user in one operation that reports what it removed, keep their usage rows
pseudonymised, export their data; the erased text is nowhere in the database files afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.chat.test_documents import _BagOfWords

from alize.chat.accounts import UserInfo, UserService
from alize.chat.conversations import ConversationService
from alize.chat.documents import DocumentService
from alize.chat.privacy import PrivacyService
from alize.chat.sessions import SessionService
from alize.config import ChatSettings
from alize.errors import AuthenticationError, NotFoundError
from alize.gateway.metering import MeteringService, UsageRecord
from alize.store import Database
from alize.store.models import UsageRow
from alize.store.testing import temporary_database

#: a text that appears nowhere but in what the test stores for Alice
MARK = "Xylophage-Quorinth-7731"
SECRET = b"test-server-secret"


async def _alice_has_everything(db: Database, alice: UserInfo, bob: UserInfo) -> None:
    conversations = ConversationService(db)
    documents = DocumentService(db, ChatSettings(chunk_chars=200, chunk_overlap=20), _BagOfWords())
    for n in range(2):
        c = await conversations.create(
            alice.id, title=f"{MARK} trip {n}", model="m", instructions=f"Be {MARK}"
        )
        await conversations.add_message(alice.id, c.id, role="user", content=f"My secret is {MARK}.")
        await conversations.add_message(
            alice.id, c.id, role="assistant", content=f"Noted: {MARK}.", model="m"
        )
        await documents.upload(
            alice.id, c.id, f"{MARK}.txt", (f"The lighthouse keeper {MARK}. " * 30).encode()
        )
    await conversations.create_agent(alice.id, name=f"{MARK} agent", instructions=MARK, model="m")
    await SessionService(db, 3600).create(alice)
    theirs = await conversations.create(bob.id, title="bob's", model="m", instructions="")
    await conversations.add_message(bob.id, theirs.id, role="user", content="bob keeps this")
    metering = MeteringService(db)
    for i, user in enumerate((alice.id, alice.id, bob.id, None)):
        await metering.record(
            UsageRecord(
                request_id=f"req_{i}",
                project_id=alice.project_id,
                key_id=None,
                deployment="m",
                model="m",
                status="success",
                prompt_tokens=10,
                completion_tokens=5,
                cost_micros=7,
                user_id=user,
            )
        )


async def _usage(db: Database) -> list[tuple[str | None, int, int]]:
    async with db.transaction() as session:
        rows = await session.execute(
            sa.select(UsageRow.user_id, UsageRow.prompt_tokens, UsageRow.cost_micros)
        )
        return sorted(((r[0], r[1], r[2]) for r in rows), key=str)


async def test_erasure_removes_everything_and_reports_it(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    service, alice, bob = users
    await _alice_has_everything(db, alice, bob)
    before = await _usage(db)
    privacy = PrivacyService(db, ConversationService(db), SECRET)
    report = await privacy.erase(alice.id)
    assert report.removed["conversations"] == 2
    assert report.removed["messages"] == 4
    assert report.removed["documents"] == 2
    assert report.removed["chunks"] >= 4
    assert report.removed["sessions"] == 1 and report.removed["agents"] == 1
    assert report.usage_rows_pseudonymised == 2
    # billing is unchanged, and the rows now carry the pseudonym
    after = await _usage(db)
    assert [(p, c) for _, p, c in after] == [(p, c) for _, p, c in before]
    assert [u for u, _, _ in after].count(report.pseudonym) == 2 and alice.id not in [u for u, _, _ in after]
    assert report.pseudonym == privacy.pseudonym(alice.id) != privacy.pseudonym(bob.id)
    # nothing of Alice answers any more; Bob is untouched
    with pytest.raises(NotFoundError):
        await service.get(alice.id)
    with pytest.raises(AuthenticationError):
        await service.authenticate("alice@example.com", "alice-password")
    assert [c.title for c in await ConversationService(db).find(bob.id)] == ["bob's"]
    async with db.transaction() as session:
        for table in ("chat_conversations", "chat_messages", "chat_documents", "chat_chunks"):
            text = (await session.execute(sa.text(f"SELECT * FROM {table}"))).all()
            assert MARK not in str(text), table
    with pytest.raises(NotFoundError):
        await privacy.erase(alice.id)


async def test_erasure_outside_the_callers_project_is_404(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, _ = users
    with pytest.raises(NotFoundError):
        await PrivacyService(db, ConversationService(db), SECRET).erase(alice.id, project_id="proj_other")
    assert (await UserService(db).get(alice.id)).email == "alice@example.com"


async def test_export_holds_all_of_the_users_data_and_nothing_of_others(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, bob = users
    await _alice_has_everything(db, alice, bob)
    export = await PrivacyService(db, ConversationService(db), SECRET).export(alice.id)
    assert export["user"]["email"] == "alice@example.com"
    assert len(export["conversations"]) == 2
    conversation = export["conversations"][0]
    assert [m["content"] for m in conversation["messages"]] == [f"My secret is {MARK}.", f"Noted: {MARK}."]
    assert MARK in conversation["documents"][0]["passages"][0]
    assert export["agents"][0]["instructions"] == MARK
    assert len(export["sessions"]) == 1 and len(export["usage"]) == 2
    assert "bob keeps this" not in str(export) and "password" not in str(export)


async def test_disabling_ends_sessions_at_once(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    service, alice, _ = users
    sessions = SessionService(db, 3600)
    login = await sessions.create(alice)
    await service.set_disabled(alice.id, True)
    with pytest.raises(AuthenticationError):
        await sessions.resolve(login.token)
    with pytest.raises(AuthenticationError):
        await service.authenticate("alice@example.com", "alice-password")
    await service.set_disabled(alice.id, False)
    assert (await service.authenticate("alice@example.com", "alice-password")).id == alice.id


def _files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


async def test_erased_text_is_gone_from_every_sqlite_file(tmp_path: Path) -> None:
    """The bytes: the database file, its WAL and shared memory, every file of the data dir."""
    from tests.chat.conftest import FAST_HASHER

    from alize.gateway.projects import ProjectService

    data = tmp_path / "data"
    data.mkdir()
    async with temporary_database("sqlite", data) as db:
        await ProjectService(db).create("acme")
        service = UserService(db, FAST_HASHER)
        alice = await service.create("acme", f"{MARK.lower()}@example.com", "alice-password")
        bob = await service.create("acme", "bob@example.com", "bob-password!")
        await _alice_has_everything(db, alice, bob)
        usage_before = await _usage(db)
        await db.purge_deleted()  # a checkpoint: the text is in the main file, not only the WAL
        assert any(name.endswith(".db") for name in _files_holding(data, MARK.encode()))
        await PrivacyService(db, ConversationService(db), SECRET).erase(alice.id)
        assert _files_holding(data, MARK.encode()) == []
        assert _files_holding(data, MARK.lower().encode()) == []  # the email too
        assert _files_holding(data, alice.id.encode()) == []  # not even the user id
        assert _files_holding(data, b"bob keeps this")  # Bob's data is still there
        assert [(p, c) for _, p, c in await _usage(db)] == [(p, c) for _, p, c in usage_before]
