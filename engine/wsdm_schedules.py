"""The WSDM scheduler's jobs: overdue devices and scheduled notifications.

The timer is ``engine/actors/scheduler.py``; what each job must remember (when it is next
due, which node took it) is in ``wsdm_schedules``, so schedules survive a restart and two
nodes never both run one job: a job is claimed by moving its ``due_at`` forward in the same
statement that checks it was due.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .service_settings import Deployment, effective_settings_unit
from .store import Store, wsdm as units
from .timestamps import format_time

#: A device is overdue once it missed this many connection intervals.
OVERDUE_INTERVALS = 3

#: How often each organisation's devices are checked for being overdue.
OVERDUE_CHECK = timedelta(minutes=5)


@dataclass
class ScheduleOutcome:
    """What one pass of the scheduler did (for logs and tests)."""

    overdue_marked: int = 0
    notified: int = 0


async def run_schedules(
    store: Store,
    deployment: Deployment,
    node: str,
    wake: Callable[[Sequence[str]], None] | None,
    *,
    at: datetime | None = None,
) -> ScheduleOutcome:
    """One pass: per organisation with WSDM devices, mark devices overdue (they missed
    :data:`OVERDUE_INTERVALS` connection intervals) and, where its settings ask for it, send
    the scheduled wake-up to all its enrolled devices. Each job is claimed in the store
    first, so two nodes running this never both do the same job."""
    moment = at or datetime.now(UTC)
    outcome = ScheduleOutcome()
    for organisation_id in await store.read(units.wsdm_organisations):
        settings = await store.read(effective_settings_unit, deployment, organisation_id)
        wsdm = settings["wsdm"]
        outcome.overdue_marked += await store.write(
            _overdue_job,
            organisation_id,
            int(wsdm["connection_interval"]),
            moment,
            node,  # type: ignore[arg-type]
        )
        if wsdm["scheduled_notifications"] and wake is not None:
            every = timedelta(minutes=int(wsdm["notification_interval"]))  # type: ignore[arg-type]
            devices = await store.write(_notification_job, organisation_id, every, moment, node)
            if devices:
                wake(devices)
                outcome.notified += len(devices)
    return outcome


def _overdue_job(
    conn: sqlite3.Connection, organisation_id: str, interval: int, moment: datetime, node: str
) -> int:
    now_text = format_time(moment)
    if not units.claim_schedule(
        conn,
        f"overdue:{organisation_id}",
        organisation_id,
        now_text,
        format_time(moment + OVERDUE_CHECK),
        node,
    ):
        return 0
    return units.mark_overdue(conn, organisation_id, overdue_before(interval, moment), now_text)


def _notification_job(
    conn: sqlite3.Connection,
    organisation_id: str,
    every: timedelta,
    moment: datetime,
    node: str,
) -> list[str]:
    if not units.claim_schedule(
        conn,
        f"notify:{organisation_id}",
        organisation_id,
        format_time(moment),
        format_time(moment + every),
        node,
    ):
        return []
    return units.enrolled_devices_of(conn, organisation_id)


def overdue_before(connection_interval_minutes: int, at: datetime | None = None) -> str:
    """Devices not seen since this moment are overdue."""
    moment = (at or datetime.now(UTC)) - timedelta(
        minutes=connection_interval_minutes * OVERDUE_INTERVALS
    )
    return format_time(moment)
