"""API keys: issue once, store only salted hashes, authenticate, revoke, rotate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from alize.errors import AuthenticationError, NotFoundError, ValidationFailedError
from alize.gateway.auth import Authenticator, Principal, require_admin
from alize.gateway.keys import KeyHasher, KeyService
from alize.gateway.limits import LimitSpec
from alize.gateway.projects import ProjectService
from alize.store import Database, open_database
from alize.store.testing import temporary_database

PEPPER = b"test-pepper"


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(request.param, tmp_path) as database:
        yield database


def _keys(db: Database, **auth_options: Any) -> tuple[KeyService, Authenticator]:
    """A key service and an authenticator sharing one pepper, as ``Tenancy.build`` makes them."""
    hasher = KeyHasher(PEPPER)
    auth = Authenticator(db, hasher, **auth_options)
    clock = auth_options.get("clock")
    keys = KeyService(db, hasher, on_revoke=auth.forget, **({"clock": clock} if clock else {}))
    return keys, auth


async def _project(db: Database, name: str = "acme", **kwargs: object) -> str:
    return (await ProjectService(db).create(name, **kwargs)).id  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_create_then_authenticate(db: Database) -> None:
    project_id = await _project(db, limits=LimitSpec(rpm=100, tpm=None, concurrency=4))
    keys, auth = _keys(db)
    created = await keys.create(
        project_id, "ci", allowed_deployments=["chat", "embed"], limits=LimitSpec(rpm=10, tpm=1000)
    )
    assert created.plaintext.startswith(created.info.prefix + ".")
    assert created.info.prefix.startswith("alz-") and len(created.info.prefix) == 12
    assert len(created.plaintext.split(".", 1)[1]) >= 32
    assert created.plaintext not in repr(created)

    principal = await auth.authenticate(created.plaintext)
    assert principal == Principal(
        project_id=project_id,
        key_id=created.info.id,
        key_name="ci",
        scopes=frozenset({"inference"}),
        allowed_deployments=frozenset({"chat", "embed"}),
        key_limits=LimitSpec(rpm=10, tpm=1000),
        project_limits=LimitSpec(rpm=100, concurrency=4),
    )
    [subject_key, subject_project] = principal.rate_limit_subjects()
    assert subject_key.key == f"key:{created.info.id}" and subject_project.limits.rpm == 100
    listed = await keys.list(project_id)
    assert [k.id for k in listed] == [created.info.id]
    assert listed[0].last_used_at is not None


@pytest.mark.asyncio
async def test_wrong_unknown_revoked_and_expired_keys_are_refused(db: Database) -> None:
    now = [datetime(2025, 1, 1, tzinfo=UTC)]
    keys, auth = _keys(db, cache_ttl_s=0, clock=lambda: now[0])
    project_id = await _project(db)
    good = await keys.create(project_id, "a", expires_at=now[0] + timedelta(days=1))
    tampered = good.plaintext[:-1] + ("A" if good.plaintext[-1] != "A" else "B")
    unknown = "alz-zzzzzzzz." + "x" * 43
    for bad in (tampered, unknown, "", None, "not a key", "x" * 10_000, "clé-ünïcode-1234567", "' OR 1=1 --"):
        with pytest.raises(AuthenticationError) as info:
            await auth.authenticate(bad)
        assert info.value.status_code == 401
        assert (bad or "\0") not in info.value.message
    assert (await auth.authenticate(good.plaintext)).key_id == good.info.id

    now[0] += timedelta(days=2)
    with pytest.raises(AuthenticationError, match="expired"):
        await auth.authenticate(good.plaintext)

    other = await keys.create(project_id, "b")
    await keys.revoke(other.info.id)
    await keys.revoke(other.info.id)  # idempotent
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(other.plaintext)


@pytest.mark.asyncio
async def test_revoke_takes_effect_despite_the_cache(db: Database) -> None:
    keys, auth = _keys(db, cache_ttl_s=300)
    created = await keys.create(await _project(db), "a")
    await auth.authenticate(created.plaintext)
    await keys.revoke(created.info.id)
    with pytest.raises(AuthenticationError):
        await auth.authenticate(created.plaintext)


@pytest.mark.asyncio
async def test_cache_serves_repeat_verifications_until_its_ttl(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tick = [0.0]
    keys, auth = _keys(db, cache_ttl_s=5, monotonic=lambda: tick[0])
    created = await keys.create(await _project(db), "a")
    calls = 0
    verify = auth._verify

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await verify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auth, "_verify", counting)
    for _ in range(3):
        await auth.authenticate(created.plaintext)
    assert calls == 1
    assert all(created.plaintext.encode() not in k for k in auth._cache)
    tick[0] = 6
    await auth.authenticate(created.plaintext)
    assert calls == 2


@pytest.mark.asyncio
async def test_a_key_in_steady_use_is_verified_again_ahead_of_its_ttl(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past half its TTL a cached key is verified again in the background: the request that
    triggers it is served from the cache, and later ones never wait for the database."""
    tick = [0.0]
    keys, auth = _keys(db, cache_ttl_s=5, monotonic=lambda: tick[0])
    created = await keys.create(await _project(db), "a")
    calls = 0
    verify = auth._verify

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await verify(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auth, "_verify", counting)
    await auth.authenticate(created.plaintext)
    tick[0] = 3  # past half of the TTL
    await auth.authenticate(created.plaintext)
    await auth.refreshed()
    assert calls == 2
    tick[0] = 5.2  # past the first entry's TTL (5), in the first half of the refreshed one's (8)
    await auth.authenticate(created.plaintext)
    await auth.refreshed()
    assert calls == 2


@pytest.mark.asyncio
async def test_a_burst_on_an_expired_entry_verifies_once_and_a_caller_leaving_stops_no_one(
    db: Database,
) -> None:
    """Requests that find no fresh entry for one key share the verification in flight: one read
    for a burst (each request read the database before). A caller cancelled while it waits (its
    client left) does not cancel that verification for the others; a wrong key shares its
    refusal the same way."""
    tick = [0.0]
    keys, auth = _keys(db, cache_ttl_s=5, monotonic=lambda: tick[0])
    created = await keys.create(await _project(db), "a")
    verify, gate = auth._verify, asyncio.Event()
    calls = 0

    async def counting_then_wait(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        found = await verify(*args, **kwargs)
        await gate.wait()
        return found

    auth._verify = counting_then_wait  # type: ignore[method-assign]
    burst = [asyncio.ensure_future(auth.authenticate(created.plaintext)) for _ in range(8)]
    await asyncio.sleep(0.05)
    burst[0].cancel()
    await asyncio.sleep(0)
    gate.set()
    done = await asyncio.gather(*burst[1:])
    assert calls == 1
    assert {p.key_id for p in done} == {created.info.id}
    assert burst[0].cancelled()
    await auth.authenticate(created.plaintext)  # cached by the shared verification
    assert calls == 1
    tick[0] = 6  # expired: the next burst verifies once more
    await asyncio.gather(*(auth.authenticate(created.plaintext) for _ in range(4)))
    assert calls == 2
    wrong = created.plaintext[:-4] + ("aaaa" if not created.plaintext.endswith("aaaa") else "bbbb")
    refused = await asyncio.gather(*(auth.authenticate(wrong) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) for r in refused) and calls == 3
    assert not auth._verifying


@pytest.mark.asyncio
async def test_a_request_after_a_revoke_here_does_not_join_a_verification_begun_before_it(
    db: Database,
) -> None:
    """A verification in flight may have read the key's row before this process revoked it: a
    request that comes after the revoke verifies afresh and is refused."""
    keys, auth = _keys(db)
    created = await keys.create(await _project(db), "a")
    verify, read, gate = auth._verify, asyncio.Event(), asyncio.Event()

    async def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        found = await verify(*args, **kwargs)
        read.set()
        await gate.wait()
        return found

    auth._verify = read_then_wait  # type: ignore[method-assign]
    before = asyncio.ensure_future(auth.authenticate(created.plaintext))
    await read.wait()
    await keys.revoke(created.info.id)
    auth._verify = verify  # type: ignore[method-assign]
    with pytest.raises(AuthenticationError, match="revoked"):  # joining would wait for the gate
        await asyncio.wait_for(auth.authenticate(created.plaintext), 5)
    gate.set()
    assert (await before).key_id == created.info.id  # it came before the revoke
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(created.plaintext)  # and stored nothing
    await auth.refreshed()
    assert not auth._verifying


@pytest.mark.asyncio
async def test_a_refresh_never_outlives_a_revoke(db: Database) -> None:
    """A key revoked elsewhere (another process: no forget here) is dropped by the refresh; one
    revoked here while a refresh runs is not stored back by it."""
    tick = [0.0]
    keys, auth = _keys(db, cache_ttl_s=5, monotonic=lambda: tick[0])
    elsewhere = KeyService(db, KeyHasher(PEPPER))  # another process's service: no on_revoke
    created = await keys.create(await _project(db), "a")
    await auth.authenticate(created.plaintext)
    await elsewhere.revoke(created.info.id)
    tick[0] = 3
    await auth.authenticate(created.plaintext)  # still cached: within the TTL, as before
    await auth.refreshed()
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(created.plaintext)
    other = await keys.create(await _project(db, "p2"), "b")
    await auth.authenticate(other.plaintext)
    verify, read, revoked = auth._verify, asyncio.Event(), asyncio.Event()

    async def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        found = await verify(*args, **kwargs)  # the key as it was before the revoke...
        read.set()
        await revoked.wait()  # ...returned after it
        return found

    auth._verify = read_then_wait  # type: ignore[method-assign]
    tick[0] = 6
    await auth.authenticate(other.plaintext)  # a refresh starts
    await read.wait()
    await keys.revoke(other.info.id)
    revoked.set()
    await auth.refreshed()
    auth._verify = verify  # type: ignore[method-assign]
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(other.plaintext)


@pytest.mark.asyncio
async def test_rotate_issues_a_new_key_with_the_same_settings_and_revokes_the_old(db: Database) -> None:
    keys, auth = _keys(db)
    project_id = await _project(db)
    old = await keys.create(
        project_id,
        "svc",
        scopes=["inference", "admin"],
        allowed_deployments=["chat"],
        limits=LimitSpec(rpm=5),
    )
    await auth.authenticate(old.plaintext)
    new = await keys.rotate(old.info.id)
    assert new.plaintext != old.plaintext and new.info.id != old.info.id
    assert (new.info.name, new.info.scopes, new.info.allowed_deployments, new.info.limits) == (
        "svc",
        frozenset({"admin", "inference"}),
        ("chat",),
        LimitSpec(rpm=5),
    )
    with pytest.raises(AuthenticationError):
        await auth.authenticate(old.plaintext)
    assert (await auth.authenticate(new.plaintext)).key_id == new.info.id


@pytest.mark.asyncio
async def test_keys_of_another_project_are_invisible(db: Database) -> None:
    keys, _ = _keys(db)
    mine, theirs = await _project(db, "mine"), await _project(db, "theirs")
    their_key = await keys.create(theirs, "x")
    with pytest.raises(NotFoundError):
        await keys.get(their_key.info.id, project_id=mine)
    with pytest.raises(NotFoundError):
        await keys.revoke(their_key.info.id, project_id=mine)
    with pytest.raises(NotFoundError):
        await keys.rotate(their_key.info.id, project_id=mine)
    assert await keys.list(mine) == []
    with pytest.raises(NotFoundError):
        await keys.create("proj_missing", "x")
    with pytest.raises(ValidationFailedError):
        await keys.create(mine, "x", scopes=["root"])


@pytest.mark.asyncio
async def test_bootstrap_admin_key_is_idempotent_and_rotates_when_changed(db: Database) -> None:
    keys, auth = _keys(db)
    first = await keys.ensure_bootstrap_admin_key("operator-chosen-admin-secret-1")
    again = await keys.ensure_bootstrap_admin_key("operator-chosen-admin-secret-1")
    assert first.id == again.id and len(await keys.list()) == 1
    assert first.prefix.startswith("ext-") and "operator" not in first.prefix
    principal = await auth.authenticate("operator-chosen-admin-secret-1")
    assert principal.is_admin
    require_admin(principal)

    second = await keys.ensure_bootstrap_admin_key("operator-chosen-admin-secret-2")
    assert second.id != first.id
    with pytest.raises(AuthenticationError):
        await auth.authenticate("operator-chosen-admin-secret-1")
    assert (await auth.authenticate("operator-chosen-admin-secret-2")).key_id == second.id
    with pytest.raises(ValueError):
        await keys.ensure_bootstrap_admin_key("short")


@pytest.mark.asyncio
async def test_plaintext_never_reaches_the_database_file_or_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path}/secrets.db", echo=True)
    try:
        keys, auth = _keys(db, cache_ttl_s=0)
        project_id = await _project(db)
        created = await keys.create(project_id, "a")
        rotated = await keys.rotate(created.info.id)
        boot = "bootstrap-secret-value-123456"
        await keys.ensure_bootstrap_admin_key(boot)
        for plaintext in (rotated.plaintext, boot):
            await auth.authenticate(plaintext)
        with pytest.raises(AuthenticationError):
            await auth.authenticate(created.plaintext)
    finally:
        await db.close()
    assert "INSERT INTO api_keys" in caplog.text  # SQL echo was captured, parameters included
    files = sorted(tmp_path.glob("secrets.db*"))  # noqa: ASYNC240 (test teardown, after close)
    stored = b"".join(p.read_bytes() for p in files)
    for plaintext in (created.plaintext, rotated.plaintext, boot):
        secret = plaintext.split(".", 1)[-1]
        assert secret.encode() not in stored
        assert secret not in caplog.text
