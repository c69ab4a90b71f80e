"""Conversations: isolation between users, edit/truncate, real deletion, export."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from alize.chat.accounts import UserInfo, UserService
from alize.chat.conversations import ConversationService
from alize.chat.export import to_json, to_markdown
from alize.errors import NotFoundError
from alize.store import Database
from alize.store.chat_models import ChatChunk, ChatDocument, ChatMessage
from alize.store.ids import utc_now


async def test_a_user_never_sees_another_users_conversation(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, bob = users
    service = ConversationService(db)
    mine = await service.create(alice.id, model="m")
    await service.add_message(alice.id, mine.id, role="user", content="secret plans")
    assert [c.id for c in await service.find(alice.id)] == [mine.id]
    assert await service.find(bob.id) == []
    for attempt in (
        service.get(bob.id, mine.id),
        service.detail(bob.id, mine.id),
        service.update(bob.id, mine.id, title="hijacked"),
        service.delete(bob.id, mine.id),
        service.add_message(bob.id, mine.id, role="user", content="x"),
        service.truncate(bob.id, mine.id, 0),
    ):
        with pytest.raises(NotFoundError):
            await attempt
    assert (await service.detail(alice.id, mine.id)).messages[0].content == "secret plans"


async def test_title_from_first_message_rename_and_search(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, _ = users
    service = ConversationService(db)
    one = await service.create(alice.id, model="m")
    await service.add_message(alice.id, one.id, role="user", content="  Recipe   for 100% rye bread ")
    two = await service.create(alice.id, model="m", title="Holiday plans")
    assert (await service.get(alice.id, one.id)).title == "Recipe for 100% rye bread"
    assert [c.id for c in await service.find(alice.id, "RYE")] == [one.id]
    assert [c.id for c in await service.find(alice.id, "100%")] == [one.id]
    assert await service.find(alice.id, "_") == []
    await service.update(alice.id, two.id, title="Trip to Lyon")
    assert [c.title for c in await service.find(alice.id, "lyon")] == ["Trip to Lyon"]


async def test_edit_drops_later_messages(db: Database, users: tuple[UserService, UserInfo, UserInfo]) -> None:
    _, alice, _ = users
    service = ConversationService(db)
    c = await service.create(alice.id, model="m")
    first = await service.add_message(alice.id, c.id, role="user", content="one")
    await service.add_message(alice.id, c.id, role="assistant", content="reply one")
    await service.add_message(alice.id, c.id, role="user", content="two")
    await service.add_message(alice.id, c.id, role="user", content="one, edited", replace_from=first.seq)
    assert [m.content for m in await service.messages(alice.id, c.id)] == ["one, edited"]


async def test_delete_removes_messages_documents_and_chunks(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, _ = users
    service = ConversationService(db)
    c = await service.create(alice.id, model="m")
    await service.add_message(alice.id, c.id, role="user", content="hello")
    async with db.transaction() as session:
        session.add(
            ChatDocument(
                id="doc_1",
                conversation_id=c.id,
                name="a.txt",
                media_type="text/plain",
                size_bytes=1,
                pages=None,
                embedding_model=None,
                created_at=utc_now(),
            )
        )
        await session.flush()
        session.add(ChatChunk(id="chunk_1", document_id="doc_1", seq=0, text="t", embedding=None))
    await service.delete(alice.id, c.id)
    async with db.session() as session:
        for table in (ChatMessage, ChatDocument, ChatChunk):
            assert (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar() == 0


async def test_export_markdown_and_json(db: Database, users: tuple[UserService, UserInfo, UserInfo]) -> None:
    _, alice, _ = users
    service = ConversationService(db)
    c = await service.create(alice.id, model="smollm2", title="Bread", instructions="Be brief.")
    await service.add_message(alice.id, c.id, role="user", content="How long to bake?")
    await service.add_message(
        alice.id,
        c.id,
        role="assistant",
        content="About 40 minutes [1].",
        model="smollm2",
        status="stopped",
        citations=[{"n": 1, "chunk_id": "c", "document": "bread.md", "text": "Bake 40 min."}],
    )
    detail = await service.detail(alice.id, c.id)
    markdown = to_markdown(detail)
    assert markdown.startswith("# Bread\n")
    assert "## You\n\nHow long to bake?" in markdown
    assert "## Assistant *(stopped)*\n\nAbout 40 minutes [1]." in markdown
    assert "- [1] bread.md" in markdown and "Be brief." in markdown
    exported = json.loads(to_json(detail))
    assert exported["title"] == "Bread" and exported["instructions"] == "Be brief."
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert exported["messages"][1]["citations"][0]["document"] == "bread.md"


async def test_agents_belong_to_their_user(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, bob = users
    service = ConversationService(db)
    agent = await service.create_agent(alice.id, name="Translator", instructions="Translate.", model="m")
    assert [a.name for a in await service.agents(alice.id)] == ["Translator"]
    assert await service.agents(bob.id) == []
    with pytest.raises(NotFoundError):
        await service.delete_agent(bob.id, agent.id)
    await service.delete_agent(alice.id, agent.id)
    assert await service.agents(alice.id) == []
