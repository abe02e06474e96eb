"""Reading the audit log: pages with filters and a period, and CSV export.

Who may read: every manager of an organisation, and the system accounts that look after it;
device owners may not. Exporting (CSV) is sensitive, so managers need the audit right. The
system-wide events (no organisation) are the supervisor's only.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .audit import audit_event
from .errors import Invalid
from .listing import ListQuery, ListSpec, Page
from .organisations import visible_organisation
from .principals import (
    AccountKind,
    Principal,
    Right,
    require_kind,
    require_right,
    require_supervisor,
)
from .store import Store
from .store.audit import events_page, insert_event
from .store.rows import Row
from .timestamps import format_time, now

AUDIT_LIST = ListSpec(
    sortable=("at",),
    filterable=("action", "actor", "target_type", "target_id"),
    default_sort="at",
    default_descending=True,
)
#: The most rows one CSV export holds; narrow the period or filters for more.
MAX_EXPORT_ROWS = 100_000
_EXPORT_CHUNK = 2_000
CSV_COLUMNS = ("at", "actor", "action", "target_type", "target_id", "source", "details", "id")
#: Cells a spreadsheet would run as a formula (CSV injection; OWASP adds tab and CR).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Period:
    """``since`` ≤ ``at`` < ``until``, as stored timestamps (either end may be open)."""

    since: str | None = None
    until: str | None = None

    @classmethod
    def of(cls, since: str | None, until: str | None) -> Period:
        """From RFC 3339 text as a client sends it; a time without zone is taken as UTC."""
        period = cls(_stored_time(since, "since"), _stored_time(until, "until"))
        if period.since and period.until and period.since >= period.until:
            raise Invalid("since must be before until", field="since")
        return period


def _stored_time(text: str | None, name: str) -> str | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{name}: expected an RFC 3339 date-time", field=name) from None
    return format_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def public_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """An audit event as the API shows it."""
    return {
        "id": row["id"],
        "at": row["at"],
        "organisation_id": row["organisation_id"],
        "actor_id": row["actor_id"],
        "actor": row["actor"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "details": json.loads(row["details"]),
        "source": row["source"],
    }


async def _readable_organisation(
    store: Store, principal: Principal, key: str, *, export: bool
) -> Row:
    """The organisation (id or code) whose log ``principal`` may read (and export)."""
    row = await visible_organisation(store, principal, key)
    require_kind(principal, AccountKind.MANAGER, AccountKind.SUPERVISOR, AccountKind.VENDOR)
    if export:
        require_right(principal, Right.AUDIT)
    return row


async def organisation_events(
    store: Store, principal: Principal, organisation: str, query: ListQuery, period: Period
) -> Page:
    """An organisation's audit log, newest first unless sorted otherwise."""
    org = await _readable_organisation(store, principal, organisation, export=False)
    return await _page(store, org["id"], query, period)


async def system_events(
    store: Store, principal: Principal, query: ListQuery, period: Period
) -> Page:
    """The events of no organisation: sign-ins of system accounts, service settings…"""
    require_supervisor(principal)
    return await _page(store, None, query, period)


async def _page(
    store: Store, organisation_id: str | None, query: ListQuery, period: Period
) -> Page:
    query = query.checked(AUDIT_LIST)
    rows, total = await store.read(events_page, organisation_id, query, period.since, period.until)
    return Page([public_event(row) for row in rows], total, query.limit, query.offset)


@dataclass(frozen=True)
class Export:
    """A CSV export: its file name, how many rows it holds, and its text in chunks."""

    filename: str
    rows: int
    truncated: bool  # more events matched than MAX_EXPORT_ROWS
    chunks: AsyncIterator[str]


async def export_organisation_events(
    store: Store, principal: Principal, organisation: str, query: ListQuery, period: Period
) -> Export:
    """An organisation's audit log as CSV (managers need the audit right)."""
    org = await _readable_organisation(store, principal, organisation, export=True)
    return await _export(store, principal, org["id"], f"audit-{org['code']}", query, period)


async def export_system_events(
    store: Store, principal: Principal, query: ListQuery, period: Period
) -> Export:
    require_supervisor(principal)
    return await _export(store, principal, None, "audit-system", query, period)


async def _export(
    store: Store,
    principal: Principal,
    organisation_id: str | None,
    name: str,
    query: ListQuery,
    period: Period,
) -> Export:
    """Check the query, record the export, then read it page by page while it is sent.

    The period is closed at the moment of the export, so the file holds exactly what
    existed then, however long sending it takes.
    """
    at = now()
    period = Period(period.since, min(period.until or at, at))
    query = replace(
        ListQuery(1, 0, query.sort, query.descending, query.filters).checked(AUDIT_LIST),
        limit=_EXPORT_CHUNK,
    )
    first, total = await store.read(events_page, organisation_id, query, period.since, period.until)
    rows = min(total, MAX_EXPORT_ROWS)
    event = audit_event(
        principal,
        "audit.exported",
        organisation_id=organisation_id,
        target_type="audit_log",
        target_id=organisation_id,
        details={
            "filters": dict(query.filters),
            "since": period.since,
            "until": period.until,
            "rows": rows,
        },
    )
    await store.write(insert_event, event)
    return Export(
        f"{name}-{at[:10]}.csv",
        rows,
        total > rows,
        _csv_chunks(store, organisation_id, query, period, first, rows),
    )


async def _csv_chunks(
    store: Store,
    organisation_id: str | None,
    query: ListQuery,
    period: Period,
    page: list[Row],
    rows: int,
) -> AsyncIterator[str]:
    yield csv_text([CSV_COLUMNS])
    sent = 0
    while page and sent < rows:
        page = page[: rows - sent]
        yield csv_text([[row[column] for column in CSV_COLUMNS] for row in page])
        sent += len(page)
        last = page[-1]
        page, _ = await store.read(
            events_page,
            organisation_id,
            query,
            period.since,
            period.until,
            (last["at"], last["id"]),
        )


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    """RFC 4180 CSV (CRLF, quotes doubled) with formula-like cells made inert.

    A cell starting with ``=``, ``+``, ``-``, ``@`` (or tab, CR) gets a leading ``'``, so a
    spreadsheet shows an actor or target name such as ``=HYPERLINK(...)`` as text.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([_inert(cell) for cell in row] for row in rows)
    return out.getvalue()


def _inert(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
