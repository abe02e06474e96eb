"""The SQLite store: group commit, isolation of failing writes, migrations, readers."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from engine.ids import new_id
from engine.store import Conflict, open_sqlite_store
from engine.store.audit import events_of, insert_event
from engine.store.migrations import MIGRATIONS
from engine.store.organisations import insert_organisation, organisation_by_code
from engine.timestamps import now


def event(n: int, organisation_id: str | None = None) -> dict[str, Any]:
    return {
        "id": new_id(),
        "at": now(),
        "organisation_id": organisation_id,
        "actor": "test",
        "action": "test.write",
        "details": f'{{"n": {n}}}',
    }


def organisation(code: str) -> dict[str, Any]:
    at = now()
    return {"id": new_id(), "code": code, "short_name": code, "created_at": at, "updated_at": at}


def insert_then_fail(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    insert_event(conn, row)
    raise ValueError("refused after writing")


def count_events(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]


async def test_concurrent_writers_are_all_committed_in_few_commits(tmp_path: Path) -> None:
    answered: list[int] = []
    async with open_sqlite_store(tmp_path / "db.sqlite3") as store:

        async def writer(n: int) -> None:
            await store.write(insert_event, event(n))
            answered.append(n)

        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(writer, n)
        assert await store.read(count_events) == 1000
        # Many writers waiting at once share commits (the point of group commit).
        assert store.stats.writes == 1000
        assert store.stats.commits < 100
    assert sorted(answered) == list(range(1000))
    # Durable on disk, read by an independent connection.
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 1000


async def test_without_group_commit_every_write_commits_alone(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "db.sqlite3", group_commit=False) as store:
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(store.write, insert_event, event(n))
        assert (store.stats.writes, store.stats.commits) == (50, 50)


async def test_a_failing_write_does_not_fail_its_batch_mates(tmp_path: Path) -> None:
    outcomes: dict[int, str] = {}
    async with open_sqlite_store(tmp_path / "db.sqlite3") as store:
        await store.write(insert_organisation, organisation("taken"))

        async def good(n: int) -> None:
            await store.write(insert_event, event(n))
            outcomes[n] = "ok"

        async def bad(n: int) -> None:
            try:
                await store.write(insert_then_fail, event(n))
            except ValueError:
                outcomes[n] = "refused"

        async def duplicate(n: int) -> None:
            try:
                await store.write(insert_organisation, organisation("taken"))
            except Conflict:
                outcomes[n] = "conflict"

        # Post them all in one tick so they land in one batch.
        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon([good, bad, duplicate][n % 3], n)
        stored = await store.read(events_of, None, 1000)
    assert [outcomes[n] for n in range(6)] == ["ok", "refused", "conflict"] * 2
    assert len(outcomes) == 300
    # Exactly the good writes are kept; the refused ones left nothing behind.
    assert sorted(int(e["details"][6:-1]) for e in stored) == list(range(0, 300, 3))


async def test_migrations_run_once_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    for _ in range(2):
        async with open_sqlite_store(path) as store:
            await store.write(insert_organisation, organisation(f"org{new_id()[-6:]}"))
    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM organisations").fetchone()[0] == 2
    assert versions == [m.version for m in MIGRATIONS]


async def test_readers_see_committed_writes_and_cannot_write(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "db.sqlite3") as store:
        org = organisation("acme")
        await store.write(insert_organisation, org)
        found = await store.read(organisation_by_code, "acme")
        assert found is not None and found["id"] == org["id"]
        with pytest.raises(sqlite3.OperationalError):
            await store.read(insert_organisation, organisation("sneaky"))
        assert await store.read(organisation_by_code, "sneaky") is None


async def test_closing_commits_what_was_already_accepted(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    answered: list[int] = []

    async def writer(store: Any, n: int) -> None:
        await store.write(insert_event, event(n))
        answered.append(n)

    async with trio.open_nursery() as nursery, open_sqlite_store(path) as store:
        for n in range(200):
            nursery.start_soon(writer, store, n)
        # Let every writer post, then close the store while the writes are queued.
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        assert not answered
    assert len(answered) == 200
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 200
