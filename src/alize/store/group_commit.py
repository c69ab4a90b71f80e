"""Group commit for SQLite: the hot transactions queued while one commits share the next commit.

SQLite has one writer at a time and every commit with ``synchronous=FULL`` syncs the WAL, so
with one transaction per request the writer, not the CPUs, set how many requests a second a
gateway could admit and meter (measured: flat at 110-125 requests/s from 1 to 32 clients). Here
the works that arrive while a commit runs wait for it, then run one after the other in a single
transaction; if one raises, that transaction is rolled back and each runs again in a
transaction of its own, so only the failing one gets an exception (a savepoint per work cost a
third of the writer's statements at 32 clients, profiled, for a failure that is rare: a
deleted project, a full disk); and no caller hears of success before the commit that holds its
writes is done. Run one after the other on one connection, the works see each
other's writes exactly as consecutive transactions would (a budget can no more be overspent in
a group than in turn).

This is what PostgreSQL's ``commit_delay`` and most write-ahead logs do; here it costs no delay
(a lone work commits at once) and changes no SQL. A work must write only through its
connection: it may run twice, once in a group rolled back.

Each transaction commits with the ``synchronous`` level its works ask for: the database's own
(``FULL`` unless the operator chose otherwise) when any of them is durable, ``NORMAL`` when none
is (``Database.run_sync(durable=False)``). In WAL mode ``NORMAL`` still writes the commit to the
WAL before returning, so it survives the process being killed; only a power cut can undo it, and
only up to the next synced commit, which syncs every frame before its own: a later durable
commit makes the earlier ones durable too, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from sqlalchemy.engine import Connection, Engine

#: the most works in one transaction (a bound on how long the write lock is held at a time)
MAX_GROUP = 64

Work = Callable[[Connection], Any]
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)


_held = threading.local()


def held_connection(engine: Engine) -> Connection:
    """This thread's own connection to ``engine``, kept open between transactions: a pooled
    checkout and its reset (a ``ROLLBACK`` on every return) cost as much as a hold's
    statements. Dropped after a failed transaction, to start the next one afresh."""
    connections: dict[int, Connection] = _held.__dict__.setdefault("connections", {})
    connection = connections.get(id(engine))
    if connection is None or connection.closed or connection.invalidated:
        connection = connections[id(engine)] = engine.connect()
    return connection


def drop_held_connection(engine: Engine) -> None:
    connections: dict[int, Connection] = _held.__dict__.setdefault("connections", {})
    connection = connections.pop(id(engine), None)
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()


def set_synchronous(connection: Connection, level: str) -> None:
    """Put ``connection`` at SQLite's ``synchronous`` ``level`` for its next commits, outside any
    transaction (SQLite ignores the pragma inside one). Remembered on the connection, so
    consecutive transactions at one level cost no statement."""
    if connection.info.get("synchronous") == level:
        return
    # on the driver connection: through SQLAlchemy the statement would autobegin a transaction
    driver: Any = connection.connection.driver_connection
    driver.execute(f"PRAGMA synchronous={level}")
    connection.info["synchronous"] = level


def _alone(engine: Engine, work: Work, level: str) -> Outcome:
    """One work in a transaction of its own."""
    connection = held_connection(engine)
    try:
        set_synchronous(connection, level)
        with connection.begin() as transaction:
            try:
                value = work(connection)
            except Exception as exc:  # the work's own failure: the connection is fine
                transaction.rollback()
                return (False, exc)
    except Exception as exc:  # BEGIN or COMMIT failed: nothing committed
        drop_held_connection(engine)
        return (False, exc)
    return (True, value)


def run_group(engine: Engine, works: list[Work], level: str) -> list[Outcome]:
    """Run ``works`` in one transaction; the outcome of each, in order. If one raises (or the
    commit fails), the whole transaction is rolled back and each runs again alone, so only the
    failing one fails. Works only ever write through their connection, so running one again
    after a rollback is running it once. The commit is at SQLite's ``synchronous`` ``level``."""
    if len(works) > 1:
        connection = held_connection(engine)
        try:
            set_synchronous(connection, level)
            with connection.begin():
                values = [work(connection) for work in works]
        except Exception:
            drop_held_connection(engine)  # whatever failed, start the next transaction afresh
        else:
            return [(True, value) for value in values]
    return [_alone(engine, work, level) for work in works]


class GroupCommit:
    """Queues works for one SQLite database and commits them in groups (module docstring)."""

    def __init__(self, engine: Engine, threads: Executor, lock: asyncio.Lock, *, durable_level: str) -> None:
        self._engine = engine
        self._threads = threads
        # the async engine's writers take the same lock: writers of one process never overlap
        self._lock = lock
        #: the ``synchronous`` level of a durable commit (the database's own)
        self._durable_level = durable_level
        self._queue: list[tuple[Work, asyncio.Future[Any], bool]] = []
        self._committer: asyncio.Task[None] | None = None

    async def run(self, work: Work, *, durable: bool = True) -> Any:
        """``work(connection)``'s result once the transaction that ran it has committed (at the
        database's ``synchronous`` level if ``durable``, else at ``NORMAL``: the module
        docstring). A cancelled caller stops waiting, not the work."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((work, done, durable))
        if self._committer is None:
            self._committer = asyncio.ensure_future(self._commit_all())
        return await asyncio.shield(done)

    async def _commit_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                async with self._lock:
                    group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                    works = [work for work, _, _ in group]
                    level = self._durable_level if any(durable for *_, durable in group) else "NORMAL"
                    try:
                        outcomes = await loop.run_in_executor(
                            self._threads, run_group, self._engine, works, level
                        )
                    except Exception as exc:  # the executor is gone (shutting down)
                        outcomes = [(False, exc)] * len(group)
                for (_, done, _), (ok, value) in zip(group, outcomes, strict=True):
                    if done.cancelled():
                        continue
                    if ok:
                        done.set_result(value)
                    else:
                        done.set_exception(value)
        finally:
            self._committer = None
