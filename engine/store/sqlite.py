"""The embedded SQLite backend: one writer actor with group commit, readers in threads.

SQLite allows one writer at a time and pays one ``fsync`` per commit. Rather than have every
request take a lock and sync on its own, all writes go through one :class:`Writer` actor. It
takes every write waiting in its mailbox, runs each in its own savepoint (so a write that
fails rolls back alone), commits them all at once, and only then answers each caller: the
sync is shared by the whole batch, and nothing is acknowledged before it is durable.

Reads use a small pool of their own connections in worker threads; WAL mode lets them read
a consistent snapshot while the writer writes.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from ..actors import Actor, ActorRef, Reply, start
from ..actors.runtime import Envelope
from .base import Conflict, StoreError
from .migrations import MIGRATIONS, Migration

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The most writes one commit takes; bounds the latency of the first write in a batch.
MAX_BATCH = 1024


def connect(path: Path, *, readonly: bool = False, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open a connection configured the way the whole service expects."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # transactions are explicit: BEGIN, SAVEPOINT, COMMIT
        check_same_thread=False,  # one owner at a time, but not always the same thread
        timeout=30.0,
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed write survives power loss, not only a crash of the process.
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations this database has not seen, each in its own transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements():
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at)"
                " VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (migration.version, migration.name),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
        log.info("applied migration %d %s", migration.version, migration.name)
    return applied


def refresh_statistics(conn: sqlite3.Connection) -> None:
    """Give the query planner current table statistics (an approximate, quick ANALYZE).

    Without them SQLite guesses, and on an inventory of 100,000 devices a wrong guess (e.g.
    scanning the organisation index rather than the owner index) costs tens of milliseconds
    per page.
    """
    conn.execute("PRAGMA analysis_limit = 1000")
    conn.execute("ANALYZE")


def _as_store_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        conflict = Conflict(str(exc))
        conflict.__cause__ = exc
        return conflict
    return exc


@dataclass
class WriteStats:
    """How many writes the writer has committed, in how many commits (kept across restarts)."""

    writes: int = 0
    commits: int = 0


class Writer(Actor):
    """Owns the write connection; commits everything waiting in its mailbox together."""

    def __init__(self, path: Path, stats: WriteStats, *, max_batch: int, synchronous: str) -> None:
        self.path = path
        self.stats = stats
        self.max_batch = max_batch
        self.batch_limit = max_batch  # take a whole commit's worth from the mailbox at once
        self.synchronous = synchronous
        self.conn: sqlite3.Connection | None = None

    async def started(self) -> None:
        self.conn = await trio.to_thread.run_sync(
            lambda: connect(self.path, synchronous=self.synchronous)
        )
        await trio.to_thread.run_sync(migrate, self.conn)
        await trio.to_thread.run_sync(refresh_statistics, self.conn)

    async def handle_batch(self, envelopes: deque[Envelope]) -> None:
        while envelopes:
            batch = [envelopes.popleft() for _ in range(min(len(envelopes), self.max_batch))]
            try:
                if all(point for (_, _, point), _ in batch):
                    # Point writes run here, on the event loop: handing each batch's Python
                    # to a thread costs more than it saves, since it needs the GIL the loop
                    # holds. Only the commit (the fsync) goes to a thread.
                    results = self._apply(batch)
                    try:
                        await trio.to_thread.run_sync(self._commit)
                    except BaseException:
                        self._roll_back()  # the thread may never have run the commit
                        raise
                else:
                    results = await trio.to_thread.run_sync(self._apply_and_commit, batch)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else StoreError("store is stopping")
                for _, reply in batch:
                    if reply is not None:
                        reply.fail(StoreError(f"commit failed: {error!r}"))
                raise
            self.stats.commits += 1
            self.stats.writes += len(batch)
            for (_, reply), result in zip(batch, results, strict=True):
                if reply is not None:
                    reply.settle(result)

    def _apply_and_commit(self, batch: list[Envelope]) -> list[outcome.Outcome[Any]]:
        results = self._apply(batch)
        self._commit()
        return results

    def _apply(self, batch: list[Envelope]) -> list[outcome.Outcome[Any]]:
        """One transaction, one savepoint per write; left open for :meth:`_commit`."""
        conn = self.conn
        assert conn is not None
        results: list[outcome.Outcome[Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (unit, args, _), _ in batch:
                conn.execute("SAVEPOINT w")
                try:
                    value = unit(conn, *args)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append(outcome.Error(_as_store_error(exc)))
                else:
                    conn.execute("RELEASE w")
                    results.append(outcome.Value(value))
        except BaseException:
            self._roll_back()
            raise
        return results

    def _commit(self) -> None:
        assert self.conn is not None
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise

    def _roll_back(self) -> None:
        if self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    async def stopping(self) -> None:
        if self.conn is not None:
            self.conn.close()


class SQLiteStore:
    """The :class:`~engine.store.base.Store` on one SQLite file."""

    def __init__(
        self,
        writer: ActorRef[Any],
        readers: trio.MemoryReceiveChannel[sqlite3.Connection],
        give_back: trio.MemorySendChannel[sqlite3.Connection],
        stats: WriteStats,
        point: sqlite3.Connection,
    ) -> None:
        self.stats = stats
        self._writer = writer
        self._readers = readers
        self._give_back = give_back
        self._point = point

    @property
    def alive(self) -> bool:
        return self._writer.alive

    async def write(self, unit: Callable[..., T], /, *args: Any) -> T:
        return await self._write(unit, args, point=False)

    async def write_point(self, unit: Callable[..., T], /, *args: Any) -> T:
        return await self._write(unit, args, point=True)

    async def _write(self, unit: Callable[..., T], args: tuple[Any, ...], *, point: bool) -> T:
        reply = Reply()
        self._writer.post((unit, args, point), reply)
        return await reply.wait()

    async def read(self, unit: Callable[..., T], /, *args: Any) -> T:
        conn = await self._readers.receive()
        try:
            return await trio.to_thread.run_sync(_read, conn, unit, args)
        finally:
            self._give_back.send_nowait(conn)

    async def lookup(self, unit: Callable[..., T], /, *args: Any) -> T:
        # On the event loop's own connection, never shared with a thread. In WAL mode a
        # reader does not wait for the writer; should the file still be busy (a recovery
        # after a crash), the connection gives up at once and a worker thread waits instead.
        try:
            return _read(self._point, unit, args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        return await self.read(unit, *args)


def _read(conn: sqlite3.Connection, unit: Callable[..., T], args: tuple[Any, ...]) -> T:
    conn.execute("BEGIN")  # one snapshot for everything the unit reads
    try:
        return unit(conn, *args)
    finally:
        conn.execute("ROLLBACK")


@asynccontextmanager
async def open_sqlite_store(
    path: Path,
    *,
    readers: int = 4,
    group_commit: bool = True,
    synchronous: str = "FULL",
    mailbox: int = 65536,
) -> AsyncIterator[SQLiteStore]:
    """Open the store, run pending migrations, and close it cleanly on exit.

    On exit the writer first commits whatever is queued, so writes already accepted are not
    dropped by a shutdown.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = WriteStats()
    async with trio.open_nursery() as nursery:
        writer = await start(
            nursery,
            lambda: Writer(
                path, stats, max_batch=MAX_BATCH if group_commit else 1, synchronous=synchronous
            ),
            name="store-writer",
            capacity=mailbox,
        )
        give_back, pool = trio.open_memory_channel[sqlite3.Connection](readers)
        conns = [
            await trio.to_thread.run_sync(lambda: connect(path, readonly=True))
            for _ in range(readers)
        ]
        for conn in conns:
            give_back.send_nowait(conn)
        point = await trio.to_thread.run_sync(lambda: connect(path, readonly=True))
        point.execute("PRAGMA busy_timeout = 0")
        # Its reads are point reads, whose temporary b-trees (an IN list, ORDER BY … LIMIT)
        # hold a few rows: in memory, rather than a temporary file's pager opened for each.
        point.execute("PRAGMA temp_store = MEMORY")
        try:
            yield SQLiteStore(writer, pool, give_back, stats, point)
        finally:
            writer.stop()
            for conn in (*conns, point):
                conn.close()
