"""An organisation, a device owner and inventory devices for the OMA DS tests, written
straight into the running service's SQLite file (WAL lets a test write beside it)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.ids import new_id
from engine.passwords import hash_password
from engine.pim import facts_of
from engine.timestamps import now

from .conftest import RunningService
from .syncevolution import SyncClient

PASSWORD = "a sync password"
TABLES = ("pim_collections", "pim_items", "pim_sync_states", "pim_id_map")
KIND_OF_SOURCE = {
    "addressbook": "contacts",
    "calendar": "calendar",
    "todo": "tasks",
    "memo": "notes",
}


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


@contextmanager
def database(running: RunningService) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(running.bootstrap.database.path, timeout=10)) as conn, conn:
        conn.row_factory = sqlite3.Row
        yield conn


@dataclass
class DsWorld:
    running: RunningService
    organisation_id: str
    owner_id: str
    login: str
    root: Path

    @property
    def url(self) -> str:
        return self.running.http_url + "/omads"

    def add_device(self, sync_id: str, *, owner: str | None = None, state: str = "enrolled") -> str:
        device_id = new_id()
        at = now()
        with database(self.running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, imei, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'android', 'oma_ds', ?, ?, ?, ?)",
                (
                    device_id,
                    self.organisation_id,
                    owner or self.owner_id,
                    sync_id,
                    state,
                    sync_id,
                    at,
                    at,
                ),
            )
        return device_id

    def client(self, sync_id: str, *, wbxml: bool = False, login: str | None = None) -> SyncClient:
        return SyncClient(
            self.url, self.root / sync_id, sync_id, login or self.login, PASSWORD, wbxml
        )

    def counts(self) -> dict[str, int]:
        with database(self.running) as conn:
            return {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in TABLES
            }

    def live_fingerprints(self, kind: str) -> list[str]:
        with database(self.running) as conn:
            rows = conn.execute(
                "SELECT i.data, i.content_type FROM pim_items i JOIN pim_collections c"
                " ON c.id = i.collection_id"
                " WHERE c.kind = ? AND c.account_id = ? AND i.deleted = 0",
                (kind, self.owner_id),
            ).fetchall()
        return sorted(facts_of(kind, row["data"], row["content_type"]).fingerprint for row in rows)

    def scalar(self, sql: str, *args: object) -> object:
        with database(self.running) as conn:
            return conn.execute(sql, args).fetchone()[0]

    def execute(self, sql: str, *args: object) -> None:
        with database(self.running) as conn:
            conn.execute(sql, args)


def make_world(running: RunningService, root: Path, code: str = "acme") -> DsWorld:
    organisation_id, owner_id = new_id(), new_id()
    at = now()
    with database(running) as conn:
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (organisation_id, code, code.title(), at, at),
        )
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, password_hash, created_at,"
            " updated_at) VALUES (?, ?, 'alice', 'user', ?, ?, ?)",
            (owner_id, organisation_id, _password_hash(), at, at),
        )
    return DsWorld(running, organisation_id, owner_id, "alice", root)


def fingerprints(client: SyncClient, source: str) -> list[str]:
    kind = KIND_OF_SOURCE[source]
    return sorted(facts_of(kind, text, None).fingerprint for text in client.items(source).values())


def vcard(name: str, extra: str = "") -> str:
    family, _, given = name.partition(" ")
    return (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nN:{given};{family};;;\r\n"
        f"TEL;TYPE=CELL:+44 20 7946 {abs(hash(name)) % 10000:04d}\r\n{extra}END:VCARD\r\n"
    )


def vevent(uid: str, summary: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTART:20270101T100000Z\r\nDTEND:20270101T110000Z\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def vtodo(uid: str, summary: str) -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\n"
        f"UID:{uid}\r\nSUMMARY:{summary}\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    )
