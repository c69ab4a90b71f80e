"""Login throttling and password hashing off the event loop (issue 17, fault 4)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from tests.api.test_auth import make_settings
from tests.chat.conftest import FAST_HASHER
from tests.support.apps import scripted_app

from alize.chat.passwords import PasswordPool
from alize.chat.throttle import LoginThrottle
from alize.config import ChatSettings
from alize.errors import RateLimitError
from alize.gateway.projects import ProjectService

PASSWORD = "the-right-password"
ORIGIN = {"origin": "http://127.0.0.1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(max_failures=3, max_failures_per_address=5, window_s=60, lockout_s=300, clock=clock)


def test_an_account_locks_after_its_failures_and_unlocks_after_the_lockout() -> None:
    clock = Clock()
    t = throttle(clock)
    assert t.failed("a@x", "1.1.1.1") == []
    assert t.failed("a@x", "1.1.1.2") == []
    [lock] = t.failed("a@x", "1.1.1.3")
    assert (lock.scope, lock.failures, lock.seconds) == ("account", 3, 300)
    with pytest.raises(RateLimitError) as caught:
        t.check("a@x", "9.9.9.9")  # any address: the account is locked
    assert caught.value.code == "login_locked" and caught.value.headers["Retry-After"] == "300"
    t.check("b@x", "1.1.1.1")  # another account from the same addresses is still fine
    clock.now += 301
    t.check("a@x", "9.9.9.9")


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    t = throttle(clock)
    t.failed("a@x", "1.1.1.1")
    t.failed("a@x", "1.1.1.1")
    clock.now += 61
    assert t.failed("a@x", "1.1.1.1") == []
    t.check("a@x", "1.1.1.1")


def test_an_address_guessing_many_accounts_locks_and_a_success_does_not_reset_it() -> None:
    clock = Clock()
    t = throttle(clock)
    for i in range(4):
        assert t.failed(f"user{i}@x", "6.6.6.6") == []
    t.succeeded("mine@x")  # the attacker's own valid account
    [lock] = t.failed("user4@x", "6.6.6.6")
    assert lock.scope == "address"
    with pytest.raises(RateLimitError):
        t.check("fresh@x", "6.6.6.6")


def test_tracked_entries_are_bounded() -> None:
    t = LoginThrottle(max_failures=3, max_failures_per_address=3, window_s=60, lockout_s=60, max_tracked=10)
    for i in range(1000):
        t.failed(f"u{i}@x", f"10.0.{i // 256}.{i % 256}")
    assert len(t._counters) == 10


class RecordingHasher(PasswordHasher):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.threads: set[int] = set()
        self.gate = gate

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.threads.add(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(10)
        return super().verify(hash, password)


async def test_hashes_run_off_the_event_loop() -> None:
    hasher = RecordingHasher()
    pool = PasswordPool(hasher, workers=2, queue_max=0)
    try:
        stored = await pool.hash("pw-pw-pw-pw")
        assert await pool.verify(stored, "pw-pw-pw-pw")
        assert not await pool.verify(stored, "wrong")
        assert not await pool.verify("not a hash", "pw")
        assert hasher.threads and threading.get_ident() not in hasher.threads
    finally:
        pool.close()


async def test_past_the_bound_a_login_is_refused_not_queued() -> None:
    gate = threading.Event()
    hasher = RecordingHasher(gate)
    pool = PasswordPool(hasher, workers=1, queue_max=2)
    try:
        stored = hasher.hash("pw-pw-pw-pw")
        waiting = [asyncio.create_task(pool.verify(stored, "pw-pw-pw-pw")) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(RateLimitError) as caught:
            await pool.verify(stored, "pw-pw-pw-pw")
        assert caught.value.code == "login_busy"
        gate.set()
        assert await asyncio.gather(*waiting) == [True, True, True]
        assert await pool.verify(stored, "pw-pw-pw-pw")  # the bound frees up again
    finally:
        gate.set()
        pool.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    chat = ChatSettings(login_max_failures=3, login_max_failures_per_address=6, login_lockout_s=600)
    with scripted_app(make_settings(tmp_path, chat=chat)) as c:
        services = c.app.state.services  # type: ignore[attr-defined]
        services.chat.users.passwords.hasher = FAST_HASHER
        assert c.portal is not None
        c.portal.call(ProjectService(services.db).create, "p")
        c.portal.call(services.chat.users.create, "p", "ana@example.org", PASSWORD)
        yield c


def _login(client: TestClient, email: str, password: str) -> int:
    r = client.post("/chat/api/login", json={"email": email, "password": password}, headers=ORIGIN)
    return r.status_code


def test_wrong_passwords_over_http_get_429_with_retry_after_and_are_audited(client: TestClient) -> None:
    statuses = [_login(client, "ana@example.org", f"guess-{i}") for i in range(10)]
    assert statuses == [401, 401, 401] + [429] * 7
    r = client.post(
        "/chat/api/login", json={"email": "ana@example.org", "password": PASSWORD}, headers=ORIGIN
    )
    assert r.status_code == 429 and r.json()["error"]["code"] == "login_locked"
    assert 590 <= int(r.headers["Retry-After"]) <= 600
    services = client.app.state.services  # type: ignore[attr-defined]
    audit = client.get("/admin/api/audit").json()["data"]
    [locked] = [e for e in audit if e["action"] == "chat_login.locked_account"]
    user_id = client.portal.call(services.chat.users.id_of, "ana@example.org")  # type: ignore[union-attr]
    assert locked["target"] == user_id and locked["details"]["failures"] == 3
    assert "ana@example.org" not in str(audit)  # the append-only log holds no email


def test_one_address_spraying_accounts_is_locked_out(client: TestClient) -> None:
    statuses = [_login(client, f"user{i}@example.org", "whatever-guess") for i in range(8)]
    assert statuses == [401] * 6 + [429] * 2
    assert _login(client, "ana@example.org", PASSWORD) == 429  # the address, not the account
    audit = client.get("/admin/api/audit").json()["data"]
    assert [e["target"] for e in audit if e["action"] == "chat_login.locked_address"] == [
        "address:testclient"
    ]


def test_a_right_password_before_the_limit_clears_the_account(client: TestClient) -> None:
    assert [_login(client, "ana@example.org", "bad-guess") for _ in range(2)] == [401, 401]
    assert _login(client, "ana@example.org", PASSWORD) == 200
    assert [_login(client, "ana@example.org", "bad-guess") for _ in range(2)] == [401, 401]
    assert _login(client, "ana@example.org", PASSWORD) == 200
