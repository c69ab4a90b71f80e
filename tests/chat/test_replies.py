"""One assistant turn through the real pipeline (scripted engines): events in order, the reply
saved once with its status (complete, stopped, error), the slot freed when the user stops, the
turn metered to the user's project, sources from the conversation's documents."""

from __future__ import annotations

from typing import Any

import pytest
from tests.chat.conftest import Gateway, ledger

from alize.chat.accounts import UserInfo, UserService
from alize.chat.conversations import ConversationService
from alize.chat.documents import DocumentService
from alize.chat.language import LanguageGuesser
from alize.chat.replies import ReplyService
from alize.config import ChatSettings
from alize.errors import InvalidRequestError, NotFoundError
from alize.store import Database


class _NoLanguage(LanguageGuesser):
    """Skips building the language detector (seconds); the reply's language is not under test."""

    async def detect(self, text: str) -> str | None:
        return None


def _service(db: Database, gateway: Gateway) -> ReplyService:
    settings = ChatSettings(chunk_chars=100, chunk_overlap=0)
    conversations = ConversationService(db)
    documents = DocumentService(db, settings, gateway.embedder)
    return ReplyService(settings, conversations, documents, gateway.pipeline, gateway.manager, _NoLanguage())


async def _all(events: Any) -> list[dict[str, Any]]:
    return [e async for e in events]


async def test_a_turn_streams_saves_and_is_metered(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, _ = users
    service = _service(db, gateway)
    c = await service.conversations.create(alice.id, model="echo")
    run = await service.send(alice.id, c.id, "tell me a story", project_id=alice.project_id)
    events = await _all(run.events())
    kinds = [e["type"] for e in events]
    assert kinds[0] == "user" and kinds[1] == "status" and kinds[-1] == "done"  # loading: first use
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    assert text == "tell me a story "  # the echo engine repeats the last user message
    saved = events[-1]["message"]
    assert (saved.role, saved.content, saved.status, saved.model) == ("assistant", text, "complete", "echo")
    assert await run.finish() is saved  # once: a second finish saves nothing more
    messages = await service.conversations.messages(alice.id, c.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    [row] = await ledger(gateway.tenancy, alice.project_id)
    assert (row.deployment, row.user_id, row.status) == ("echo", alice.id, "success")
    # loaded now: no loading status on the next turn
    second = await _all((await service.send(alice.id, c.id, "again", project_id=alice.project_id)).events())
    assert "status" not in [e["type"] for e in second]


async def test_stopping_saves_what_came_and_frees_the_slot(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, _ = users
    service = _service(db, gateway)
    c = await service.conversations.create(alice.id, model="echo")
    run = await service.send(alice.id, c.id, "one two three four five")
    events = run.events()
    while (await anext(events))["type"] != "delta":
        pass
    saved = await run.finish()  # what the HTTP layer does when the user presses stop
    await events.aclose()
    assert saved is not None and saved.status == "stopped" and saved.content == "one "
    assert gateway.manager.get("echo").queue.busy == 0


async def test_an_engine_failure_is_an_error_event_and_keeps_the_partial_reply(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, _ = users
    service = _service(db, gateway)
    c = await service.conversations.create(alice.id, model="error-mid-stream")
    events = await _all((await service.send(alice.id, c.id, "one two three four")).events())
    error = next(e for e in events if e["type"] == "error")
    assert (error["error"]["code"], error["error"]["message"]) == ("engine_error", "scripted failure")
    done = events[-1]
    assert done["type"] == "done" and done["message"].status == "error"
    assert done["message"].content == "one two "  # the two tokens before the failure


async def test_sources_come_from_the_conversations_documents(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, _ = users
    service = _service(db, gateway)
    c = await service.conversations.create(alice.id, model="echo")
    text = b"The village bakery sells rye bread.\n\nThe lighthouse is green."
    await service.documents.upload(alice.id, c.id, "notes.txt", text, project_id=alice.project_id)
    events = await _all((await service.send(alice.id, c.id, "bakery bread?")).events())
    [sources] = [e for e in events if e["type"] == "sources"]
    assert "bakery" in sources["citations"][0]["text"]
    assert events[-1]["message"].citations == sources["citations"]


async def test_edit_and_regenerate_replace_the_later_messages(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, bob = users
    service = _service(db, gateway)
    c = await service.conversations.create(alice.id, model="echo")
    with pytest.raises(InvalidRequestError) as err:
        await service.regenerate(alice.id, c.id)
    assert err.value.code == "nothing_to_regenerate"
    with pytest.raises(InvalidRequestError):
        await service.send(alice.id, c.id, "   ")
    first = await service.send(alice.id, c.id, "first question")
    await _all(first.events())
    assert first.user_message is not None
    edited = await service.send(alice.id, c.id, "second question", edit_message_id=first.user_message.id)
    await _all(edited.events())
    again = await service.regenerate(alice.id, c.id)
    await _all(again.events())
    messages = await service.conversations.messages(alice.id, c.id)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "second question"),
        ("assistant", "second question "),
    ]
    with pytest.raises(NotFoundError):
        await service.send(alice.id, c.id, "x", edit_message_id="msg_missing")
    with pytest.raises(NotFoundError):
        await service.send(bob.id, c.id, "not yours")
