"""Admin portal: organisations, dashboard, Configuration → Services, audit log.

Pages read through the same domain operations as the REST routes, and every form is an
action naming its REST twin. Form values arrive as text: they are converted here to the
types the domain takes (whole numbers, dates, switches, empty meaning "none"), and the
domain checks them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, Response, request, url_for

from engine import apns_certificates, audit_log, devices, organisations as domain, service_settings
from engine.accounts import VENDOR_LIST, list_vendors
from engine.config.services import SERVICES
from engine.errors import Invalid, NotFound
from engine.listing import ListQuery, ListSpec, Page
from engine.principals import AccountKind, Principal, Right, holds, require_kind
from engine.timestamps import format_time

from ..api.audit import csv_response
from ..context import service
from .listing import PAGE_SIZE, ListView, list_query
from .pages import action, done, page, refused, render

SYSTEM = (AccountKind.SUPERVISOR, AccountKind.VENDOR)
ADMINS = (AccountKind.SUPERVISOR, AccountKind.VENDOR, AccountKind.MANAGER)
#: A device that has not connected for this long (or never) is listed as silent.
SILENT_AFTER = timedelta(days=7)
#: The dashboard looks at most this many devices for silent ones (sorted oldest first).
SILENT_SCAN = 1_000
_SCAN_PAGE = 500

#: The organisations list: few rows per account, so sorted and filtered here.
ORGANISATION_LIST = ListSpec(
    sortable=("code", "short_name", "long_name", "licences", "active", "vendor", "created_at"),
    filterable=("code", "short_name", "long_name", "active", "vendor"),
    default_sort="code",
)
ORGANISATION_COLUMNS = [
    ("code", "Code", True, True),
    ("short_name", "Short name", True, True),
    ("long_name", "Long name", True, True),
    ("licences", "Licences", True, False),
    ("active", "Active", True, True),
    ("vendor", "Vendor", True, True),
    ("created_at", "Created", True, False),
]
AUDIT_COLUMNS = [
    ("at", "Time (UTC)", True, False),
    ("actor", "Actor", False, True),
    ("action", "Action", False, True),
    ("target_type", "Target type", False, True),
    ("target_id", "Target id", False, True),
    ("details", "Details", False, False),
    ("source", "Source", False, False),
]


def register(blueprint: Blueprint) -> None:
    _organisation_pages(blueprint)
    _dashboard_page(blueprint)
    _service_pages(blueprint)
    _audit_pages(blueprint)


# --------------------------------------------------------------------------- form values


def _text(form: Any, name: str, label: str, *, max_length: int = 200) -> str:
    text = str(form.get(name, "")).strip()
    if len(text) > max_length:
        raise Invalid(f"{label}: at most {max_length} characters", field=name)
    return text


def _whole(form: Any, name: str, label: str) -> int | None:
    """A whole number, or None when left empty."""
    text = _text(form, name, label, max_length=20)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"{label}: enter a whole number", field=name) from None


def _day(form: Any, name: str, label: str) -> str | None:
    """A date input (YYYY-MM-DD) as the timestamp of that day's start, UTC; None if empty."""
    text = _text(form, name, label, max_length=20)
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{label}: enter a date as YYYY-MM-DD", field=name) from None
    return format_time(datetime(day.year, day.month, day.day, tzinfo=UTC))


def _revision(form: Any) -> int | None:
    """The settings revision the form was made from (a stale one is refused)."""
    try:
        return int(form["revision"])
    except (KeyError, ValueError):
        return None


def _setting_value(field: dict[str, Any], form: Any) -> Any:
    """One Configuration → Services input as the value its field's type takes."""
    name, label = field["name"], field["label"]
    key = f"value.{name}"
    if field["type"] == "boolean":
        return key in form
    text = _text(form, key, label, max_length=2048)
    if not text:
        if field["nullable"]:
            return None
        if field["type"] == "string":
            return text  # the domain says what an empty value lacks
        raise Invalid(f"{label}: a value is required", field=name)
    if field["type"] == "integer":
        try:
            return int(text)
        except ValueError:
            raise Invalid(f"{label}: enter a whole number", field=name) from None
    return text


async def _uploaded_certificate(form: Any) -> apns_certificates.Upload:
    """The APNS upload form: PEM text, or a PKCS#12 file (sent on as base64) and password."""
    files = await request.files
    pem = str(form.get("pem", "")).strip() or None
    p12 = files.get("pkcs12")
    data = p12.read() if p12 is not None and p12.filename else b""
    # The REST API's limits on the same values.
    if pem is not None and len(pem) > 65536:
        raise Invalid("the PEM text is too long", field="pem")
    if len(data) > 98304:
        raise Invalid("the PKCS#12 file is too large", field="pkcs12")
    return apns_certificates.Upload(
        pem=pem,
        pkcs12=base64.b64encode(data).decode() if data else None,
        password=str(form.get("password", "")) or None,
        allow_topic_change="allow_topic_change" in form,
    )


# --------------------------------------------------------------------------- organisations


def _page_of(items: list[dict[str, Any]], query: ListQuery) -> Page:
    """Sort, filter and page a short list the domain returns whole."""
    for field, text in query.filters:
        items = [item for item in items if text.lower() in str(item[field] or "").lower()]
    if query.sort:
        sort = query.sort
        items = sorted(
            items,
            # Empty values first; the first member keeps None from meeting a value.
            key=lambda item: (item[sort] is not None, item[sort] if item[sort] is not None else ""),
            reverse=query.descending,
        )
    return Page(
        items[query.offset : query.offset + query.limit], len(items), query.limit, query.offset
    )


async def _vendor_logins(who: Principal) -> dict[str, str]:
    """Vendor admin id → login, as far as ``who`` may know them."""
    if who.kind is AccountKind.VENDOR:
        return {who.account_id: who.login}
    if who.kind is not AccountKind.SUPERVISOR:
        return {}
    vendors = await list_vendors(service().store, who, ListQuery(limit=500).checked(VENDOR_LIST))
    return {vendor["id"]: vendor["login"] for vendor in vendors.items}


def _edit_url(code: str) -> str:
    return url_for("portal.edit_organisation", organisation=code)


def _organisation_pages(blueprint: Blueprint) -> None:
    @page(blueprint, "/admin/organisations", kinds=SYSTEM)
    async def organisations(who: Principal) -> Response:
        vendors = await _vendor_logins(who)
        rows = [
            {
                "id": org["id"],
                "code": org["code"],
                "short_name": org["short_name"],
                "long_name": org["long_name"],
                "licences": org["licences"],
                "active": "yes" if org["active"] else "no",
                "vendor": vendors.get(org["vendor"], org["vendor"]) if org["vendor"] else "",
                "created_at": org["created_at"][:10],
            }
            for org in await domain.organisations_of(service().store, who)
        ]
        query = list_query(ORGANISATION_LIST)
        listing = ListView(query, _page_of(rows, query))
        return await render(
            "portal/organisations/list.html",
            who,
            listing=listing,
            columns=ORGANISATION_COLUMNS,
            rows=listing.page.items,
            edit_url=lambda row: _edit_url(row["code"]),
        )

    @page(blueprint, "/admin/organisations/new", kinds=SYSTEM)
    async def new_organisation(who: Principal) -> Response:
        return await render("portal/organisations/new.html", who)

    @action(blueprint, "/admin/organisations", api=("POST", "/organisations"))
    async def create_organisation(who: Principal, form: Any) -> Response:
        new = domain.NewOrganisation(
            code=_text(form, "code", "Code id", max_length=32),
            short_name=_text(form, "short_name", "Short name", max_length=100),
            long_name=_text(form, "long_name", "Long name"),
            licences=_whole(form, "licences", "Licences") or 0,
            devices_per_user=_whole(form, "devices_per_user", "Devices per user"),
            subscription_expires=_day(form, "subscription_expires", "Subscription expires"),
            first_manager_login=_text(form, "first_manager_login", "Manager login", max_length=64)
            or "admin",
            first_manager_password=str(form.get("first_manager_password", "")) or None,
        )
        created = await domain.create_organisation(service().store, who, new)
        who_signs_in = (
            f"; its manager {new.first_manager_login} can sign in"
            if new.first_manager_password
            else ""
        )
        return done(
            _edit_url(created["code"]), f"Organisation {created['code']} created{who_signs_in}."
        )

    @page(blueprint, "/admin/organisations/<organisation>/edit", kinds=SYSTEM)
    async def edit_organisation(who: Principal, organisation: str) -> Response:
        org = await domain.get_organisation(service().store, who, organisation)
        vendors = await _vendor_logins(who)
        return await render(
            "portal/organisations/edit.html",
            who,
            organisation=org,
            features=domain.FEATURES,
            vendors=vendors,
            may_assign_vendor=who.kind is AccountKind.SUPERVISOR,
        )

    @action(
        blueprint,
        "/admin/organisations/<organisation>/edit",
        api=("PATCH", "/organisations/{organisation}"),
    )
    async def update_organisation(who: Principal, form: Any, organisation: str) -> Response:
        store = service().store
        current = await domain.get_organisation(store, who, organisation)
        require_kind(who, *SYSTEM)  # as the domain does, before "nothing changed"
        wanted: dict[str, Any] = {
            "short_name": _text(form, "short_name", "Short name", max_length=100),
            "long_name": _text(form, "long_name", "Long name"),
            "licences": _whole(form, "licences", "Licences") or 0,
            "devices_per_user": _whole(form, "devices_per_user", "Devices per user"),
            "subscription_expires": _day(form, "subscription_expires", "Subscription expires"),
            "features": {name: f"feature.{name}" in form for name in domain.FEATURES},
        }
        changes = {name: value for name, value in wanted.items() if value != current[name]}
        expires = current["subscription_expires"]
        if (
            expires
            and wanted["subscription_expires"]
            and expires[:10] == wanted["subscription_expires"][:10]
        ):
            changes.pop("subscription_expires", None)  # the form shows the day only
        if not changes:
            return done(_edit_url(current["code"]), "Nothing changed.")
        await domain.update_organisation(store, who, current["id"], changes)
        return done(_edit_url(current["code"]), f"Organisation {current['code']} saved.")

    @action(
        blueprint,
        "/admin/organisations/<organisation>/active",
        api=("PATCH", "/organisations/{organisation}"),
    )
    async def set_organisation_active(who: Principal, form: Any, organisation: str) -> Response:
        active = form.get("active") == "true"
        changed = await domain.update_organisation(
            service().store, who, organisation, {"active": active}
        )
        if active:
            message = f"Organisation {changed['code']} is active again: its accounts can sign in."
        else:
            message = (
                f"Organisation {changed['code']} is inactive: its accounts were signed out and "
                "its devices cannot connect."
            )
        return done(_edit_url(changed["code"]), message)

    @action(
        blueprint,
        "/admin/organisations/<organisation>/vendor",
        api=("PATCH", "/organisations/{organisation}"),
    )
    async def assign_vendor(who: Principal, form: Any, organisation: str) -> Response:
        vendor = str(form.get("vendor", "")).strip() or None
        changed = await domain.update_organisation(
            service().store, who, organisation, {"vendor": vendor}
        )
        return done(_edit_url(changed["code"]), f"Vendor of {changed['code']} saved.")

    @action(
        blueprint,
        "/admin/organisations/<organisation>/remove",
        api=("DELETE", "/organisations/{organisation}"),
    )
    async def remove_organisation(who: Principal, form: Any, organisation: str) -> Response:
        store = service().store
        org = await domain.get_organisation(store, who, organisation)
        await domain.remove_organisation(store, who, org["id"])
        return done(url_for("portal.organisations"), f"Organisation {org['code']} removed.")


# --------------------------------------------------------------------------- dashboard


async def _device_total(who: Principal, organisation_id: str, **filters: str) -> int:
    """How many devices match ``filters`` (the total of a one-row inventory page)."""
    found = await devices.list_devices(
        service().store, who, organisation_id, ListQuery(limit=1, filters=tuple(filters.items()))
    )
    return found.total


async def _silent_devices(
    who: Principal, organisation_id: str
) -> tuple[list[dict[str, Any]], bool]:
    """Active devices last seen before the cut-off or never, oldest first; and whether the
    scan stopped at :data:`SILENT_SCAN` devices (so there may be more)."""
    cutoff = format_time(datetime.now(UTC) - SILENT_AFTER)
    silent: list[dict[str, Any]] = []
    for offset in range(0, SILENT_SCAN, _SCAN_PAGE):
        found = await devices.list_devices(
            service().store,
            who,
            organisation_id,
            ListQuery(limit=_SCAN_PAGE, offset=offset, sort="last_seen_at"),
        )
        for device in found.items:
            if device["last_seen_at"] is not None and device["last_seen_at"] >= cutoff:
                return silent, False
            if device["state"] != "inactive":
                silent.append(device)
        if len(found.items) < _SCAN_PAGE:
            return silent, False
    return silent, True


def _dashboard_page(blueprint: Blueprint) -> None:
    @page(blueprint, "/admin/o/<organisation>", kinds=ADMINS)
    async def dashboard(who: Principal, organisation: str) -> Response:
        store = service().store
        org = await domain.get_organisation(store, who, organisation)
        key = org["id"]
        by_state = {
            state: await _device_total(who, key, state=state)
            for state in devices.STATES
            if state != "removed"
        }
        by_platform = {
            platform: await _device_total(who, key, platform=platform)
            for platform in devices.PLATFORMS
        }
        non_compliant = await devices.list_devices(
            store, who, key, ListQuery(limit=10, filters=(("compliant", "false"),))
        )
        silent, more_silent = await _silent_devices(who, key)
        events = await audit_log.organisation_events(
            store, who, key, ListQuery(limit=10, sort="at", descending=True), audit_log.Period()
        )
        expires = org["subscription_expires"]
        return await render(
            "portal/organisations/dashboard.html",
            who,
            organisation=org,
            total=sum(by_state.values()),
            licences_used=by_state["created"] + by_state["enrolled"],
            by_state=by_state,
            by_platform=by_platform,
            non_compliant=non_compliant,
            silent=silent[:10],
            silent_count=len(silent),
            more_silent=more_silent,
            silent_days=SILENT_AFTER.days,
            expired=bool(expires) and expires < format_time(datetime.now(UTC)),
            events=events.items,
            device_link=lambda name: url_for(
                "portal.devices", organisation=org["code"], **{"filter[name]": name}
            ),
            may_edit=who.is_system,
        )


# --------------------------------------------------------------------------- services


def _service_pages(blueprint: Blueprint) -> None:
    @page(blueprint, "/admin/config/services", kinds=(AccountKind.SUPERVISOR,))
    async def system_services(who: Principal) -> Response:
        context = service()
        view = await service_settings.system_settings(context.store, who, context.deployment)
        certificate = await apns_certificates.system_certificate(
            context.store, who, context.deployment
        )
        services = [
            {
                **settings,
                "fields": [
                    field | {"value": settings["values"][field["name"]]}
                    for field in settings["fields"]
                ],
            }
            for settings in view["services"].values()
        ]
        return await render(
            "portal/organisations/system_services.html",
            who,
            services=services,
            revision=view["revision"],
            certificate=certificate,
        )

    @action(
        blueprint,
        "/admin/config/services/<service_name>",
        api=("PATCH", "/config/services/{service_name}"),
    )
    async def change_system_service(who: Principal, form: Any, service_name: str) -> Response:
        context = service()
        view = await service_settings.system_settings(context.store, who, context.deployment)
        settings = view["services"].get(service_name)
        if settings is None:
            raise NotFound(f"no such service: {service_name}")
        changes = {}
        for field in settings["fields"]:
            if not field["read_only"]:
                value = _setting_value(field, form)
                if value != settings["values"][field["name"]]:
                    changes[field["name"]] = value
        back = url_for("portal.system_services") + f"#{service_name}"
        if not changes:
            return done(back, f"{settings['title']}: nothing changed.")
        await service_settings.change_system_settings(
            context.store,
            who,
            context.deployment,
            service_name,
            changes,
            expected_revision=_revision(form),
        )
        return done(back, f"{settings['title']}: system-wide settings saved.")

    @action(blueprint, "/admin/config/apns-certificate", api=("POST", "/config/apns-certificate"))
    async def upload_system_certificate(who: Principal, form: Any) -> Response:
        context = service()
        uploaded = await apns_certificates.upload_system_certificate(
            context.store, who, context.deployment, await _uploaded_certificate(form)
        )
        return done(
            url_for("portal.system_services") + "#apple_mdm",
            f"APNS certificate saved: topic {uploaded['topic']}, "
            f"expires {uploaded['not_after'][:10]}.",
        )

    @page(blueprint, "/admin/o/<organisation>/config/services", kinds=ADMINS)
    async def organisation_services(who: Principal, organisation: str) -> Response:
        context = service()
        org = await domain.get_organisation(context.store, who, organisation)
        view = await service_settings.organisation_settings(
            context.store, who, context.deployment, org["id"]
        )
        certificate = await apns_certificates.organisation_certificate(
            context.store, who, context.deployment, org["id"]
        )
        services = []
        for name, settings in view["services"].items():
            described = SERVICES[name].describe()
            fields = [
                field
                | settings["effective"][field["name"]]
                | {
                    "overridden": field["name"] in settings["overrides"],
                    "kept": settings["overrides"].get(field["name"]),
                }
                for field in described["fields"]
            ]
            services.append(
                {
                    "name": name,
                    "title": settings["title"],
                    "description": described["description"],
                    "use_system_wide": settings["use_system_wide"],
                    "fields": fields,
                }
            )
        return await render(
            "portal/organisations/organisation_services.html",
            who,
            organisation=org,
            services=services,
            revision=view["revision"],
            certificate=certificate,
            may_configure=holds(who, Right.CONFIGURATION),
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/config/services/<service_name>",
        api=("PATCH", "/organisations/{organisation}/config/services/{service_name}"),
    )
    async def change_organisation_service(
        who: Principal, form: Any, organisation: str, service_name: str
    ) -> Response:
        context = service()
        view = await service_settings.organisation_settings(
            context.store, who, context.deployment, organisation
        )
        settings = view["services"].get(service_name)
        if settings is None:
            raise NotFound(f"no such service: {service_name}")
        clear = [name for name in form.getlist("clear") if name]
        shown = set(form.getlist("field"))  # the inputs that were enabled
        overrides = {}
        for field in SERVICES[service_name].describe()["fields"]:
            name = field["name"]
            if name in shown and name not in clear and not field["read_only"]:
                value = _setting_value(field, form)
                if value != settings["effective"][name]["value"]:
                    overrides[name] = value
        await service_settings.change_organisation_settings(
            context.store,
            who,
            context.deployment,
            organisation,
            service_name,
            use_system_wide="use_system_wide" in form,
            overrides=overrides,
            clear=clear,
            expected_revision=_revision(form),
        )
        back = url_for("portal.organisation_services", organisation=view["organisation"])
        return done(f"{back}#{service_name}", f"{settings['title']}: settings saved.")

    @action(
        blueprint,
        "/admin/o/<organisation>/config/apns-certificate",
        api=("POST", "/organisations/{organisation}/config/apns-certificate"),
    )
    async def upload_organisation_certificate(
        who: Principal, form: Any, organisation: str
    ) -> Response:
        context = service()
        org = await domain.get_organisation(context.store, who, organisation)
        uploaded = await apns_certificates.upload_organisation_certificate(
            context.store, who, context.deployment, org["id"], await _uploaded_certificate(form)
        )
        back = url_for("portal.organisation_services", organisation=org["code"])
        return done(
            f"{back}#apple_mdm",
            f"APNS certificate saved: topic {uploaded['topic']}, "
            f"expires {uploaded['not_after'][:10]}; Apple MDM now uses it.",
        )


# --------------------------------------------------------------------------- audit log


@dataclass(frozen=True)
class _PeriodListView(ListView):
    """A list view whose sort and paging links keep the period."""

    period: tuple[tuple[str, str], ...] = ()

    def _link(self, **changes: Any) -> str:
        link = super()._link(**changes)
        if not self.period:
            return link
        return link + ("&" if len(link) > 1 else "") + urlencode(self.period)


def _period_args() -> tuple[tuple[tuple[str, str], ...], audit_log.Period]:
    """The period of the request (datetime-local inputs, taken as UTC)."""
    given = tuple(
        (name, request.args[name].strip())
        for name in ("since", "until")
        if request.args.get(name, "").strip()
    )
    values = dict(given)
    return given, audit_log.Period.of(values.get("since"), values.get("until"))


async def _audit_page(who: Principal, org: dict[str, Any] | None) -> Response:
    """An organisation's audit log, or with ``org`` None the system-wide one (supervisor)."""
    store = service().store
    query = list_query(audit_log.AUDIT_LIST)
    error = None
    try:
        given, period = _period_args()
    except Invalid as exc:
        given, period, error = (), audit_log.Period(), str(exc)
    if org is None:
        events = await audit_log.system_events(store, who, query, period)
        export_url = url_for("portal.system_audit_csv")
    else:
        events = await audit_log.organisation_events(store, who, org["id"], query, period)
        export_url = url_for("portal.audit_csv", organisation=org["code"])
    listing = _PeriodListView(query, events, period=given)
    rows = [
        event
        | {
            "at": event["at"][:19].replace("T", " "),
            "details": json.dumps(event["details"], ensure_ascii=False, sort_keys=True)
            if event["details"]
            else "",
        }
        for event in events.items
    ]
    export = {f"filter[{name}]": value for name, value in query.filters}
    if query.sort:
        export["sort"] = ("-" if query.descending else "") + query.sort
    export.update(given)
    return await render(
        "portal/organisations/audit.html",
        who,
        organisation=org,
        scope_name=org["short_name"] if org else "System-wide",
        listing=listing,
        columns=AUDIT_COLUMNS,
        rows=rows,
        period=dict(given),
        period_error=error,
        export_url=export_url + ("?" + urlencode(export) if export else ""),
        may_export=holds(who, Right.AUDIT),
        page_size=PAGE_SIZE,
    )


async def _audit_csv(who: Principal, organisation: str | None, back: str) -> Response:
    query = list_query(audit_log.AUDIT_LIST)
    try:
        _, period = _period_args()
    except Invalid as exc:
        return refused(back, str(exc))
    store = service().store
    if organisation is None:
        export = await audit_log.export_system_events(store, who, query, period)
    else:
        export = await audit_log.export_organisation_events(store, who, organisation, query, period)
    return csv_response(export)


def _audit_pages(blueprint: Blueprint) -> None:
    @page(blueprint, "/admin/o/<organisation>/audit", kinds=ADMINS)
    async def audit(who: Principal, organisation: str) -> Response:
        return await _audit_page(
            who, await domain.get_organisation(service().store, who, organisation)
        )

    @page(blueprint, "/admin/o/<organisation>/audit.csv", kinds=ADMINS)
    async def audit_csv(who: Principal, organisation: str) -> Response:
        back = url_for("portal.audit", organisation=organisation)
        return await _audit_csv(who, organisation, back)

    @page(blueprint, "/admin/audit", kinds=(AccountKind.SUPERVISOR,))
    async def system_audit(who: Principal) -> Response:
        return await _audit_page(who, None)

    @page(blueprint, "/admin/audit.csv", kinds=(AccountKind.SUPERVISOR,))
    async def system_audit_csv(who: Principal) -> Response:
        return await _audit_csv(who, None, url_for("portal.system_audit"))
