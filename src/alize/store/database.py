"""Opening the database: the async engine, per-connection settings, and migrations to head.

One ``Database`` is built in the app's lifespan (never at import time) and handed to services.
Services own transactions: ``async with db.transaction() as session`` commits on success and
rolls back on error; repositories only ever receive the session.

The ledger's hot transactions (a budget hold; a ledger row with its charge) run through
:meth:`Database.run_sync`: the whole transaction on a synchronous connection in one worker
thread, one hop from the event loop. Through the async engine each statement is its own hop
(aiosqlite's thread, SQLAlchemy's greenlet): a hold took 4-5 ms there against 0.25 ms for the
same statements on the driver with ``synchronous=FULL`` (measured on 2 cores), and the two
transactions were nearly all of what the gateway added to a request.

SQLite gets, on every connection: WAL (readers never block the writer), ``synchronous=FULL``
(a committed ledger row survives a power cut, not just a process crash; an operator may choose
``NORMAL``, which survives a killed process only), foreign keys on, a busy timeout, and
``BEGIN IMMEDIATE`` for transactions. The last one matters for correctness under concurrency: a
deferred transaction that reads and then writes can fail with SQLITE_BUSY_SNAPSHOT instead of
waiting, while ``BEGIN IMMEDIATE`` takes the write lock up front and waits on the busy timeout.

A hot transaction may be run as not durable (``run_sync(durable=False)``): committed and seen by
every reader at once, surviving the process being killed, but not fsynced, so a power cut can
undo it (SQLite ``synchronous=NORMAL`` for that commit, PostgreSQL ``synchronous_commit=off``
for that transaction). That is for writes that mean nothing once the process that made them is
gone: a budget hold, whose request dies with the machine. It saves a sync (0.3-0.5 ms on the
machines measured) before the request reaches its engine; any later durable commit makes it
durable too, since a sync covers every write before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from alize.store.group_commit import GroupCommit, drop_held_connection

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_T = TypeVar("_T")
#: threads (and pooled connections) for :meth:`Database.run_sync` on PostgreSQL; SQLite has one
#: writer at a time, so one thread
_POSTGRES_SYNC_THREADS = 4

#: SQLite's ``synchronous`` levels an operator may choose for durable commits
SQLITE_SYNCHRONOUS_LEVELS = ("FULL", "NORMAL")

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    # deleted rows are overwritten with zeros, not just unlinked: an erased user's text does not
    # linger in free pages of the file (GDPR erasure; see Database.purge_deleted)
    "PRAGMA secure_delete=ON",
)

#: key of the PostgreSQL advisory lock that serialises concurrent migrations (several workers
#: starting at once against one database)
_MIGRATION_LOCK_KEY = 0x616C697A65  # "alize"

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}
_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite+pysqlite", "postgresql+psycopg": "postgresql+psycopg"}


def database_urls(url: str | URL) -> tuple[URL, URL]:
    """The (async, sync) URL pair for a configured URL; only SQLite and PostgreSQL are supported.

    The sync twin is used by Alembic in a worker thread. URL objects are returned rather than
    strings because ``str(url)`` masks the password.
    """
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database driver {parsed.drivername!r}: use sqlite+aiosqlite:// or postgresql+psycopg://"
        )
    async_url = parsed.set(drivername=driver)
    return async_url, async_url.set(drivername=_SYNC_DRIVERS[driver])


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def configure_sqlite(engine: Engine, synchronous: str = "FULL") -> None:
    """Install the per-connection pragmas and ``BEGIN IMMEDIATE`` on a (sync or sync-facade)
    engine; ``synchronous`` is the level of a durable commit."""
    if synchronous not in SQLITE_SYNCHRONOUS_LEVELS:
        raise ValueError(f"synchronous must be one of {SQLITE_SYNCHRONOUS_LEVELS}, not {synchronous!r}")

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from the sqlite3 module; "begin" below emits BEGIN
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in (*SQLITE_PRAGMAS, f"PRAGMA synchronous={synchronous}"):
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class _SyncTwin:
    """A synchronous engine on the same database, used from its own threads only."""

    def __init__(self, url: URL, synchronous: str) -> None:
        postgres = url.get_backend_name() == "postgresql"
        threads = _POSTGRES_SYNC_THREADS if postgres else 1
        sync_url = database_urls(url)[1]
        # a file SQLite needs no liveness check; a PostgreSQL connection may have been cut
        self.engine = sa.create_engine(sync_url, pool_size=threads, max_overflow=0, pool_pre_ping=postgres)
        if not postgres:
            configure_sqlite(self.engine, synchronous)
        self.threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="alize-db")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already shut down
            self.threads.submit(drop_held_connection, self.engine).result()
        self.threads.shutdown(wait=True)
        self.engine.dispose()


class Database:
    """The process's handle on the database: an async engine and a session factory."""

    def __init__(self, engine: AsyncEngine, *, synchronous: str = "FULL") -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        # SQLite has one writer at a time; queueing writers here instead of in SQLite's busy
        # handler (which sleeps with backoff) keeps commits back to back under load
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # an in-memory SQLite database exists only inside the async engine's connection
        self._twin = None if _is_memory_sqlite(engine.url) else _SyncTwin(engine.url, synchronous)
        self._group: GroupCommit | None = None
        if self._twin is not None and self._write_lock is not None:
            self._group = GroupCommit(
                self._twin.engine, self._twin.threads, self._write_lock, durable_level=synchronous
            )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``: repositories pick dialect-specific SQL with it."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session without an explicit transaction (it autobegins); the caller commits."""
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on normal exit, rolled back on error.

        Do not nest: on SQLite transactions of one ``Database`` run one at a time.
        """
        if self._write_lock is None:
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._sessions() as session, session.begin():
            yield session

    async def run_sync(self, work: Callable[[Connection], _T], *, durable: bool = True) -> _T:
        """``work(connection)`` inside a transaction, committed when it returns, rolled back
        when it raises; in one hop to a worker thread (the module docstring says why, and what
        ``durable=False`` gives up: a power cut, not a killed process, may undo it). On a
        SQLite file the works that queue meanwhile share one commit
        (:mod:`alize.store.group_commit`: a work may run twice, once in a group rolled back,
        so it writes only through its connection); an in-memory database runs on the async engine's
        own connection. ``work`` must not block on anything but the database. A cancelled
        caller stops waiting, not the transaction."""
        if self._twin is None:
            async with self._locked(), self.engine.begin() as connection:
                return await connection.run_sync(work)
        if self._group is not None:
            result: _T = await self._group.run(work, durable=durable)
            return result
        twin = self._twin

        def run() -> _T:
            with twin.engine.begin() as connection:
                if not durable:  # PostgreSQL: this transaction's commit does not wait for the WAL flush
                    connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                return work(connection)

        running = asyncio.get_running_loop().run_in_executor(twin.threads, run)
        return await asyncio.shield(running)

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    async def purge_deleted(self) -> None:
        """Make committed deletions physical where the backend allows it.

        SQLite: with ``secure_delete`` the deleted cells are zeroed in the pages written to the
        WAL, but older WAL frames still hold the text; a ``TRUNCATE`` checkpoint copies the
        zeroed pages into the main file and empties the WAL. PostgreSQL keeps dead tuples until
        (auto)vacuum reuses their space; rows are gone for every query at once, bytes later.
        """
        if self._write_lock is None:
            return
        async with self._write_lock, self.engine.connect() as connection:
            # on the driver connection: a checkpoint cannot run inside the BEGIN IMMEDIATE
            # that SQLAlchemy's autobegin would emit first
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        if self._twin is not None:
            await asyncio.to_thread(self._twin.close)
        await self.engine.dispose()


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config  # only where a migration runs: a quarter of this module's import

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade_on(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _upgrade_in_thread(sync_url: URL) -> None:
    engine = sa.create_engine(sync_url, poolclass=NullPool)
    is_postgres = sync_url.get_backend_name() == "postgresql"
    if not is_postgres:
        if sync_url.database:
            Path(sync_url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        configure_sqlite(engine)
    try:
        with engine.connect() as connection:
            if is_postgres:
                connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                connection.commit()
            try:
                _upgrade_on(connection)
            finally:
                if is_postgres:
                    connection.rollback()
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                    connection.commit()
    finally:
        engine.dispose()


async def open_database(url: str | URL, *, echo: bool = False, sqlite_synchronous: str = "FULL") -> Database:
    """Connect, bring the schema to the latest migration, and return the ``Database``.
    ``sqlite_synchronous`` is SQLite's level for a durable commit (``FULL`` or ``NORMAL``, in
    either case).

    Alembic is synchronous, so migrations run in a worker thread on a short-lived sync engine
    (an in-memory SQLite database, which only exists inside its one connection, is migrated on
    the async engine's own connection instead).
    """
    sqlite_synchronous = sqlite_synchronous.upper()
    async_url, sync_url = database_urls(url)
    memory = _is_memory_sqlite(async_url)
    engine = create_async_engine(async_url, echo=echo, pool_pre_ping=not memory)
    if async_url.get_backend_name() == "sqlite":
        configure_sqlite(engine.sync_engine, sqlite_synchronous)
    try:
        if memory:
            async with engine.connect() as connection:
                await connection.run_sync(_upgrade_on)
                await connection.commit()
        else:
            await asyncio.to_thread(_upgrade_in_thread, sync_url)
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine, synchronous=sqlite_synchronous)
