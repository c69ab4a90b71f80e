"""Users, passwords, sessions and CSRF tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from alize.chat.accounts import UserInfo, UserService
from alize.chat.sessions import SessionService, csrf_for, digest
from alize.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationFailedError,
)
from alize.store import Database
from alize.store.chat_models import ChatSession, ChatUser


async def test_passwords_are_stored_as_argon2_hashes_only(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    service, alice, _ = users
    assert alice.email == "alice@example.com"
    async with db.session() as session:
        stored = (
            await session.execute(sa.select(ChatUser.password_hash).where(ChatUser.id == alice.id))
        ).scalar_one()
    assert stored.startswith("$argon2id$") and "alice-password" not in stored
    assert (await service.authenticate(" ALICE@example.com", "alice-password")).id == alice.id


@pytest.mark.parametrize(("email", "password"), [("alice@example.com", "wrong"), ("nobody@example.com", "x")])
async def test_wrong_credentials_give_one_error(
    users: tuple[UserService, UserInfo, UserInfo], email: str, password: str
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await users[0].authenticate(email, password)
    assert caught.value.code == "invalid_credentials"


async def test_create_checks_project_email_and_password(
    users: tuple[UserService, UserInfo, UserInfo],
) -> None:
    service = users[0]
    with pytest.raises(ConflictError):
        await service.create("acme", "alice@example.com", "another-password")
    with pytest.raises(NotFoundError):
        await service.create("no-such-project", "c@example.com", "long-enough")
    with pytest.raises(ValidationFailedError):
        await service.create("acme", "c@example.com", "short")
    with pytest.raises(ValidationFailedError):
        await service.create("acme", "not-an-email", "long-enough")


async def test_language_is_saved(users: tuple[UserService, UserInfo, UserInfo]) -> None:
    service, alice, _ = users
    assert (await service.set_language(alice.id, "fr")).language == "fr"
    with pytest.raises(ValidationFailedError):
        await service.set_language(alice.id, "xx")


async def test_sessions_store_only_digests_and_expire(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, _ = users
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    sessions = SessionService(db, ttl_s=3600, clock=lambda: now[0])
    new = await sessions.create(alice)
    async with db.session() as session:
        row = (await session.execute(sa.select(ChatSession))).scalar_one()
    assert row.token_hash == digest(new.token) and new.token not in (row.token_hash, row.csrf_hash)
    info = await sessions.resolve(new.token)
    assert info.user.id == alice.id
    with pytest.raises(AuthenticationError):
        await sessions.resolve("forged-token")
    with pytest.raises(AuthenticationError):
        await sessions.resolve(None)
    now[0] += timedelta(hours=2)
    with pytest.raises(AuthenticationError):
        await sessions.resolve(new.token)


async def test_csrf_token_is_bound_to_the_session(
    db: Database, users: tuple[UserService, UserInfo, UserInfo]
) -> None:
    _, alice, bob = users
    sessions = SessionService(db, ttl_s=3600)
    first, second = await sessions.create(alice), await sessions.create(bob)
    info = await sessions.resolve(first.token)
    assert first.csrf_token == csrf_for(first.token)
    info.check_csrf(first.csrf_token)
    for wrong in (None, "", second.csrf_token, first.token):
        with pytest.raises(PermissionDeniedError):
            info.check_csrf(wrong)


async def test_logout_revokes(db: Database, users: tuple[UserService, UserInfo, UserInfo]) -> None:
    sessions = SessionService(db, ttl_s=3600)
    new = await sessions.create(users[1])
    await sessions.revoke(new.token)
    with pytest.raises(AuthenticationError):
        await sessions.resolve(new.token)
