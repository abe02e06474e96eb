"""The WSDM scheduler's jobs on a real SQLite store: overdue devices, scheduled
notifications, claimed in the database so that two nodes never both run one job, and
remembered across a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine import wsdm_schedules
from engine.audit import audit_event
from engine.ids import new_id
from engine.service_settings import Deployment, change_system_unit
from engine.store import open_sqlite_store
from engine.timestamps import format_time, now

DEPLOYMENT = Deployment("https://emm.example.com")
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _world(conn, device_count: int, last_checkin: datetime) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    org_id, at = new_id(), now()
    conn.execute(
        "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
        " VALUES (?, 'acme', 'Acme', ?, ?)",
        (org_id, at, at),
    )
    devices = [new_id() for _ in range(device_count)]
    for device_id in devices:
        conn.execute(
            "INSERT INTO devices (id, organisation_id, platform, protocol, state, created_at,"
            " updated_at) VALUES (?, ?, 'android', 'wsdm', 'enrolled', ?, ?)",
            (device_id, org_id, at, at),
        )
        conn.execute(
            "INSERT INTO wsdm_devices (device_id, organisation_id, token_hash, push_jid,"
            " enrolled_at, last_checkin_at) VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, org_id, new_id(), f"{device_id}@x", at, format_time(last_checkin)),
        )
    return org_id, devices


def _notifications_every_15_minutes(conn) -> int:  # type: ignore[no-untyped-def]
    values = {"scheduled_notifications": True, "notification_interval": 15}
    event = audit_event(None, "settings.system_changed", organisation_id=None)
    return change_system_unit(conn, DEPLOYMENT, "wsdm", values, None, event)


async def test_overdue_devices_are_marked_once_by_one_node(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "emm.db") as store:
        # Last seen 2 h 59 min ago; the interval is 60 min, overdue after three of them.
        await store.write(_world, 2, START - timedelta(minutes=179))
        first = await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-a", None, at=START)
        assert first.overdue_marked == 0
        later = START + timedelta(minutes=6)
        a = await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-a", None, at=later)
        b = await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-b", None, at=later)
        assert (a.overdue_marked, b.overdue_marked) == (2, 0)  # node-b found the job taken
        rows = await store.read(_overdue_since)
        assert {row[0] for row in rows} == {format_time(later)}


async def test_scheduled_notifications_follow_the_settings_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    woken: list[list[str]] = []
    async with open_sqlite_store(tmp_path / "emm.db") as store:
        _, devices = await store.write(_world, 3, START)
        off = await wsdm_schedules.run_schedules(
            store, DEPLOYMENT, "node-a", woken.append, at=START
        )
        assert off.notified == 0 and woken == []  # off unless the settings ask for it
        await store.write(_notifications_every_15_minutes)
        await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-a", woken.append, at=START)
        await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-b", woken.append, at=START)
        assert woken == [devices]  # sent once, by one node
    async with open_sqlite_store(tmp_path / "emm.db") as store:  # a restart
        soon = START + timedelta(minutes=10)
        await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-a", woken.append, at=soon)
        assert len(woken) == 1  # not due again before its 15 minutes
        due = START + timedelta(minutes=15)
        await wsdm_schedules.run_schedules(store, DEPLOYMENT, "node-b", woken.append, at=due)
        assert woken == [devices, devices]


def _overdue_since(conn) -> list[tuple[str]]:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT overdue_since FROM wsdm_devices").fetchall()
