"""``/api/v1``: the audit log, as pages of JSON or as a CSV export.

The CSV is streamed page by page as it is read, and holds at most
``engine.audit_log.MAX_EXPORT_ROWS`` rows; ``X-Export-Rows`` says how many it holds and
``X-Export-Truncated: true`` that more matched (narrow the period or the filters).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from engine import audit_log as domain
from engine.listing import ListQuery
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import Schema, component, enum, nullable, obj, page_of, string, timestamp

blueprint = Blueprint("api_audit", __name__)

EVENT = component(
    "AuditEvent",
    obj(
        {
            "id": string(),
            "at": timestamp(),
            "organisation_id": nullable(string()),
            "actor_id": nullable(string()),
            "actor": string(description="login of who acted, or 'service'"),
            "action": string(examples=["command.queued"]),
            "target_type": nullable(string()),
            "target_id": nullable(string()),
            "details": obj({}, extra=True),
            "source": nullable(string(description="client address")),
        },
        "id",
        "at",
        "organisation_id",
        "actor_id",
        "actor",
        "action",
        "target_type",
        "target_id",
        "details",
        "source",
    ),
)
EVENT_PAGE = component("AuditEventPage", page_of(EVENT))
_PERIOD: dict[str, Schema] = {
    "since": timestamp(description="events at or after this time"),
    "until": timestamp(description="events before this time"),
}
#: The CSV takes the list's filters and order, but no paging (it is the whole selection).
_EXPORT_QUERY: dict[str, Schema] = {
    **_PERIOD,
    "sort": enum("at", "-at", description="'-at' (newest first) unless 'at'"),
    **{
        f"filter[{name}]": string(description=f"case-insensitive substring of {name}")
        for name in domain.AUDIT_LIST.filterable
    },
}
_CSV = string(
    description=f"RFC 4180 CSV with a header row ({', '.join(domain.CSV_COLUMNS)}); cells "
    "starting with = + - @ are prefixed with ' so spreadsheets do not run them; at most "
    f"{domain.MAX_EXPORT_ROWS} rows"
)


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/audit",
    summary="The organisation's audit log, newest first (managers, system accounts)",
    tag="audit",
    listing=domain.AUDIT_LIST,
    query=_PERIOD,
    responses={200: EVENT_PAGE},
)
async def organisation_events(
    who: Principal,
    organisation: str,
    query: ListQuery,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    page = await domain.organisation_events(
        service().store, who, organisation, query, domain.Period.of(since, until)
    )
    return page.as_json()


@operation(
    blueprint,
    "GET",
    "/audit",
    summary="System-wide audit events, of no organisation (supervisor)",
    tag="audit",
    listing=domain.AUDIT_LIST,
    query=_PERIOD,
    responses={200: EVENT_PAGE},
)
async def system_events(
    who: Principal, query: ListQuery, since: str | None, until: str | None
) -> dict[str, Any]:
    page = await domain.system_events(service().store, who, query, domain.Period.of(since, until))
    return page.as_json()


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/audit.csv",
    summary="Export the organisation's audit log as CSV (managers need the audit right)",
    tag="audit",
    query=_EXPORT_QUERY,
    content_type="text/csv",
    responses={200: _CSV},
)
async def export_organisation_events(
    who: Principal, organisation: str, **params: str | None
) -> Response:
    query, period = _export_selection(params)
    export = await domain.export_organisation_events(
        service().store, who, organisation, query, period
    )
    return csv_response(export)


@operation(
    blueprint,
    "GET",
    "/audit.csv",
    summary="Export the system-wide audit events as CSV (supervisor)",
    tag="audit",
    query=_EXPORT_QUERY,
    content_type="text/csv",
    responses={200: _CSV},
)
async def export_system_events(who: Principal, **params: str | None) -> Response:
    query, period = _export_selection(params)
    return csv_response(await domain.export_system_events(service().store, who, query, period))


def _export_selection(params: dict[str, str | None]) -> tuple[ListQuery, domain.Period]:
    """The export's filters and order (as a list query without paging) and its period."""
    filters = tuple(
        (name[len("filter[") : -1], value)
        for name, value in params.items()
        if name.startswith("filter[") and value
    )
    sort = params.get("sort") or "-at"
    query = ListQuery(sort=sort.lstrip("-"), descending=sort.startswith("-"), filters=filters)
    return query, domain.Period.of(params.get("since"), params.get("until"))


def csv_response(export: domain.Export) -> Response:
    """An audit export as a CSV download (the REST API's and the portal's)."""
    response = Response(export.chunks, content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    response.headers["X-Export-Rows"] = str(export.rows)
    response.headers["X-Export-Truncated"] = "true" if export.truncated else "false"
    response.headers["Cache-Control"] = "no-store"
    return response
