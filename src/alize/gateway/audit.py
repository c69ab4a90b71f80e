"""The audit log: append-only and hash-chained, so silent edits or deletions are detectable.

Entry ``n`` stores ``hash = sha256(prev_hash || canonical_json(entry))`` with ``prev_hash`` the
hash of entry ``n - 1`` (64 zeros for the first). Changing, removing or reordering any stored
entry breaks the chain from that point, which ``verify`` reports.

Appends must form one line: an in-process lock orders appends of this process, a database lock
(PostgreSQL advisory transaction lock, SQLite's write lock) orders them across processes, and
the ``seq`` primary key makes two appends claiming the same position impossible regardless.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.models import AuditEntry
from alize.store.repositories import AuditRepository

GENESIS_HASH = "0" * 64
_VERIFY_BATCH = 500
_APPEND_ATTEMPTS = 5


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(
    prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str, details: Mapping[str, Any]
) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def _record(row: AuditEntry) -> AuditRecord:
    return AuditRecord(
        row.seq, row.at, row.actor, row.action, row.target, row.details, row.prev_hash, row.hash
    )


class AuditService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._clock = clock
        self._lock = asyncio.Lock()

    async def append(
        self, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> AuditRecord:
        """Add an entry at the end of the chain. ``details`` must be JSON-serialisable and must
        not hold secrets (API key plaintexts, passwords)."""
        # normalise through JSON first so what is hashed is exactly what is read back
        normalised: dict[str, Any] = json.loads(canonical_json(dict(details or {})))
        async with self._lock:
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    return await self._append_once(actor, action, target, normalised)
                except IntegrityError:
                    # another process took this seq between our read and insert: re-read, retry
                    if attempt == _APPEND_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    async def _append_once(
        self, actor: str, action: str, target: str, details: dict[str, Any]
    ) -> AuditRecord:
        async with self._db.transaction() as session:
            repo = AuditRepository(session)
            await repo.lock_chain()
            last = await repo.last()
            seq = last.seq + 1 if last is not None else 1
            prev = last.hash if last is not None else GENESIS_HASH
            at = self._clock()
            entry = AuditEntry(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                target=target,
                details=details,
                prev_hash=prev,
                hash=entry_hash(prev, seq, at, actor, action, target, details),
            )
            await repo.add(entry)
            return _record(entry)

    async def verify(self) -> tuple[bool, int | None]:
        """Walk the whole chain: ``(True, None)`` if intact, else ``(False, first bad seq)``."""
        expected_prev, expected_seq, after = GENESIS_HASH, 1, 0
        while True:
            async with self._db.transaction() as session:
                batch = await AuditRepository(session).after(after, _VERIFY_BATCH)
            if not batch:
                return True, None
            for row in batch:
                recomputed = entry_hash(
                    row.prev_hash, row.seq, row.at, row.actor, row.action, row.target, row.details
                )
                if row.seq != expected_seq or row.prev_hash != expected_prev or row.hash != recomputed:
                    return False, min(row.seq, expected_seq)
                expected_prev, expected_seq = row.hash, row.seq + 1
            after = batch[-1].seq

    async def list(self, *, limit: int = 100, before_seq: int | None = None) -> list[AuditRecord]:
        """Newest first; page with ``before_seq`` = the last seq of the previous page."""
        async with self._db.transaction() as session:
            return [_record(row) for row in await AuditRepository(session).recent(limit, before_seq)]
