"""Admin portal: accounts, account templates, name policy; self-service portal: my devices.

Every page reads through the domain operation its REST route uses, and every form builds the
body the REST operation would take, checks it against that operation's own JSON Schema (so a
form accepts exactly what the API accepts) and calls the same domain operation.

One-time passwords (new accounts, password resets) are shown on the page that answers the
form, once, and never kept anywhere (not in a cookie, not in a redirect): that page is sent
with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from quart import Blueprint, Response, request, url_for
from werkzeug.datastructures import MultiDict

from engine import accounts as domain, commands, devices, messages as broadcasts, organisations
from engine.errors import Forbidden, Invalid, NotFound
from engine.listing import ListQuery
from engine.principals import AccountKind, Principal, Right, holds

from ..api.operations import OPERATIONS
from ..api.schema import validate
from ..context import service
from .listing import ListView, columns, list_query
from .pages import action, done, page, render

ADMINS = (AccountKind.SUPERVISOR, AccountKind.VENDOR, AccountKind.MANAGER)
OWNERS = (AccountKind.USER,)

# The REST operations the forms of this module stand in for (as declared in web/api).
_ACCOUNTS = "/organisations/{organisation}/accounts"
_ACCOUNT = _ACCOUNTS + "/{account}"
_TEMPLATES = "/organisations/{organisation}/account-templates"
_TEMPLATE = _TEMPLATES + "/{template}"
_POLICY = "/organisations/{organisation}/name-policy"
_DEVICE_COMMANDS = "/organisations/{organisation}/devices/{device}/commands"
_CANCEL = "/organisations/{organisation}/commands/{command}/cancel"

KIND_LABELS = {"user": "Users", "manager": "Managers", "resource": "Resources"}
RIGHT_LABELS = {
    Right.ACCOUNTS: "Accounts: users, managers, resources",
    Right.DEVICES: "Devices: inventory, groups, installation codes",
    Right.COMMANDS: "Commands: lock, unlock, locate, applications…",
    Right.WIPE: "Wipe: factory and enterprise wipe",
    Right.CONFIGURATION: "Configuration: services, templates, name policy",
    Right.AUDIT: "Audit: export the audit log",
}
TASK_LABELS = {
    "lock": "Lock",
    "unlock": "Unlock",
    "locate": "Locate now",
    "track": "Track",
    "install_application": "Install application",
    "request_inventory": "Request inventory",
    "enterprise_wipe": "Enterprise wipe",
    "wipe": "Factory wipe",
    "message": "Message",
    "remove_application": "Remove application",
}
#: Tasks an owner may run on several devices at once (wipes: one named device at a time).
BULK_TASKS = ("lock", "unlock", "locate", "track", "install_application", "request_inventory")

ACCOUNT_COLUMNS = columns(
    domain.ACCOUNT_LIST,
    ("login", "Login id"),
    ("display_name", "Display name"),
    ("email", "E-mail"),
    ("kind", "Kind"),
    ("active", "Active"),
    ("created_at", "Created"),
    filtered_elsewhere=("active",),  # a select: active, inactive or both
)
TEMPLATE_COLUMNS = columns(
    domain.TEMPLATE_LIST,
    ("name", "Name"),
    ("kind", "Kind"),
    ("rights", "Rights"),
    ("locale", "Locale"),
    ("description", "Description"),
)
MY_DEVICE_COLUMNS = [
    ("name", "Name", True, True),
    ("id", "Id", False, False),
    ("model", "Model", True, True),
    ("phone_number", "Phone number", True, True),
    ("state", "State", True, True),
    ("last_seen_at", "Last seen", True, False),
]
COMMAND_COLUMNS = [
    ("kind", "Task", True, True),
    ("state", "State", True, True),
    ("created_at", "Queued", True, True),
    ("parameters", "Parameters", False, False),
    ("result", "Result", False, False),
    ("completed_at", "Completed", False, False),
]


def _store() -> Any:
    return service().store


# --------------------------------------------------------------------------- form helpers


def _checked(api: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` if the REST operation ``api`` would take it (its declared schema decides)."""
    method, path = api
    for op in OPERATIONS:
        if op.method == method and op.path == path:
            if op.body is not None:
                try:
                    validate(body, op.body)
                except Invalid as exc:
                    raise _readable(exc) from None
            return body
    raise LookupError(f"no REST operation {method} {path}")  # a bug in this module


def _readable(exc: Invalid) -> Invalid:
    """Schema messages for people: "email: not a valid e-mail address", not a regex."""
    if exc.field and "does not match" in str(exc):
        name = exc.field.replace("_", " ").replace("email", "e-mail address")
        return Invalid(f"{exc.field}: not a valid {name}", field=exc.field)
    return exc


def _text(form: MultiDict, name: str) -> str:
    return str(form.get(name, "")).strip()


def _optional(form: MultiDict, name: str) -> str | None:
    return _text(form, name) or None


def _whole(form: MultiDict, name: str, label: str) -> int:
    text = _text(form, name)
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"{label}: a whole number, please", field=name) from None


def _rights_offered(who: Principal) -> list[tuple[str, str]]:
    """The rights ``who`` may grant: those it holds (system accounts hold all)."""
    return [(right.value, RIGHT_LABELS[right]) for right in Right if holds(who, right)]


def _words(text: str) -> list[str]:
    """Forbidden words typed one per line or separated by commas."""
    return [w.strip() for line in text.splitlines() for w in line.split(",") if w.strip()]


async def _organisation(who: Principal, key: str) -> dict[str, Any]:
    """The organisation for the navigation (NotFound for one ``who`` may not see)."""
    return await organisations.get_organisation(_store(), who, key)


async def _password_once(
    who: Principal, org: dict[str, Any], account: dict[str, Any], heading: str
) -> Response:
    """The page that shows an account's one-time password, once: never kept by a cache."""
    response = await render(
        "portal/people/password_once.html",
        who,
        organisation=org,
        account=account,
        password=account["one_time_password"],
        heading=heading,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _pretty(value: Any) -> str:
    if not value:
        return ""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- locations


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def locations(command_list: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Locations reported in the results of locate and track commands, newest first.

    A result is one location (``latitude``, ``longitude``, optional ``accuracy`` in metres
    and ``at``) or holds several under ``locations``; anything else is not a location.
    """
    found = []
    for command in command_list:
        if command["kind"] not in ("locate", "track") or not command.get("result"):
            continue
        result = command["result"]
        points = result.get("locations") if isinstance(result.get("locations"), list) else [result]
        for point in points:
            if not isinstance(point, dict):
                continue
            latitude, longitude = _number(point.get("latitude")), _number(point.get("longitude"))
            if latitude is None or longitude is None:
                continue
            found.append(
                {
                    "latitude": latitude,
                    "longitude": longitude,
                    "accuracy": _number(point.get("accuracy")),
                    "at": str(point.get("at") or command.get("completed_at") or ""),
                    "kind": TASK_LABELS.get(command["kind"], command["kind"]),
                }
            )
    return sorted(found, key=lambda location: location["at"], reverse=True)


def _command_row(command: dict[str, Any]) -> dict[str, Any]:
    label = TASK_LABELS.get(command["kind"], command["kind"])
    return command | {
        "name": f"{label} of {command['created_at']}",
        "kind": label,
        "parameters": _pretty(command["parameters"]),
        "result": _pretty(command["result"]),
    }


def task_parameters(kind: str, form: MultiDict) -> dict[str, Any]:
    """The parameters of a task as its form gives them (the domain checks them)."""
    parameters: dict[str, Any] = {}
    if kind == "lock":
        for name in ("message", "phone_number"):
            if value := _text(form, name):
                parameters[name] = value
    elif kind == "track":
        parameters["duration_minutes"] = _whole(form, "duration_minutes", "Track for (minutes)")
        parameters["interval_minutes"] = _whole(form, "interval_minutes", "Report every (minutes)")
    elif kind == "install_application":
        application = _text(form, "application")
        if not application:
            raise Invalid("give the application's id or an https URL", field="application")
        parameters["url" if "://" in application else "application_id"] = application
    return parameters


# --------------------------------------------------------------------------- pages


def register(blueprint: Blueprint) -> None:
    _register_accounts(blueprint)
    _register_templates(blueprint)
    _register_my_devices(blueprint)


def _register_accounts(blueprint: Blueprint) -> None:
    def account_url(code: str, account_id: str) -> str:
        return url_for("portal.account", organisation=code, account=account_id)

    @page(blueprint, "/admin/o/<organisation>/accounts", kinds=ADMINS)
    async def accounts(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        query = list_query(domain.ACCOUNT_LIST)
        result = await domain.list_accounts(_store(), who, organisation, query)
        rows = [item | {"active": "yes" if item["active"] else "no"} for item in result.items]
        return await render(
            "portal/people/accounts.html",
            who,
            organisation=org,
            listing=ListView(query, result),
            columns=ACCOUNT_COLUMNS,
            rows=rows,
            kinds=KIND_LABELS,
            link=lambda row: account_url(org["code"], row["id"]),
            may_change=holds(who, Right.ACCOUNTS),
        )

    @page(blueprint, "/admin/o/<organisation>/accounts/new", kinds=ADMINS)
    async def account_new(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        policy = await domain.get_name_policy(_store(), who, organisation)
        templates = await domain.list_templates(
            _store(), who, organisation, ListQuery(500).checked(domain.TEMPLATE_LIST)
        )
        kind = request.args.get("kind", "user")
        return await render(
            "portal/people/account_new.html",
            who,
            organisation=org,
            policy=policy,
            templates=templates.items,
            rights=_rights_offered(who),
            kind=kind if kind in KIND_LABELS else "user",
            may_change=holds(who, Right.ACCOUNTS),
        )

    @action(blueprint, "/admin/o/<organisation>/accounts", api=("POST", _ACCOUNTS))
    async def account_create(who: Principal, form: MultiDict, organisation: str) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        body: dict[str, Any] = {
            "login": _text(form, "login"),
            "display_name": _text(form, "display_name"),
        }
        for name in ("kind", "template", "email", "phone_number", "locale"):
            if (value := _optional(form, name)) is not None:
                body[name] = value
        if form.get("rights_from") == "chosen":
            body["rights"] = form.getlist("rights")
        if form.get("password_from") == "chosen":
            body["password"] = str(form.get("password", ""))
        _checked(("POST", _ACCOUNTS), body)
        created = await domain.create_account(
            _store(), who, organisation, domain.NewAccount(**body)
        )
        if created["one_time_password"] is None:
            return done(
                account_url(org["code"], created["id"]), f"Account {created['login']} created."
            )
        return await _password_once(who, org, created, f"Account {created['login']} created")

    @page(blueprint, "/admin/o/<organisation>/accounts/<account>", kinds=ADMINS)
    async def account(who: Principal, organisation: str, account: str) -> Response:
        org = await _organisation(who, organisation)
        shown = await domain.get_account(_store(), who, organisation, account)
        templates = await domain.list_templates(
            _store(),
            who,
            organisation,
            ListQuery(500, filters=(("kind", shown["kind"]),)).checked(domain.TEMPLATE_LIST),
        )
        owned: list[dict[str, Any]] = []
        if shown["kind"] == AccountKind.USER:
            query = ListQuery(500, filters=(("owner", shown["login"]),)).checked(devices.LIST)
            found = await devices.list_devices(_store(), who, organisation, query)
            # The filter matches parts of login ids: keep this account's devices only.
            owned = [d for d in found.items if d["owner"] and d["owner"]["id"] == shown["id"]]
        return await render(
            "portal/people/account.html",
            who,
            organisation=org,
            account=shown,
            templates=[t for t in templates.items if t["kind"] == shown["kind"]],
            rights=_rights_offered(who),
            right_labels={right.value: label for right, label in RIGHT_LABELS.items()},
            devices=owned,
            device_url=lambda device: f"/admin/o/{org['code']}/devices/{device['id']}",
            may_change=holds(who, Right.ACCOUNTS),
            is_self=shown["id"] == who.account_id,
        )

    @action(blueprint, "/admin/o/<organisation>/accounts/<account>", api=("PATCH", _ACCOUNT))
    async def account_update(
        who: Principal, form: MultiDict, organisation: str, account: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        current = await domain.get_account(_store(), who, organisation, account)
        changes: dict[str, Any] = {}
        if (name := _text(form, "display_name")) != current["display_name"]:
            changes["display_name"] = name
        for field in ("email", "phone_number", "locale"):
            if (value := _optional(form, field)) != current[field]:
                changes[field] = value
        template = _optional(form, "template")
        if template is not None and template != current["template"]:
            changes["template"] = template
        if current["kind"] == AccountKind.MANAGER and "rights_shown" in form:
            rights = sorted(set(form.getlist("rights")))
            if rights != sorted(current["rights"]):
                changes["rights"] = rights
        url = url_for("portal.account", organisation=org["code"], account=account)
        if not changes:
            return done(url, "Nothing changed.")
        _checked(("PATCH", _ACCOUNT), changes)
        await domain.update_account(_store(), who, organisation, account, changes)
        return done(url, f"Account {current['login']} changed.")

    @action(blueprint, "/admin/o/<organisation>/accounts/<account>/active", api=("PATCH", _ACCOUNT))
    async def account_set_active(
        who: Principal, form: MultiDict, organisation: str, account: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        active = form.get("active") == "true"
        changes = _checked(("PATCH", _ACCOUNT), {"active": active})
        changed = await domain.update_account(_store(), who, organisation, account, changes)
        url = url_for("portal.account", organisation=org["code"], account=account)
        verb = "activated" if active else "deactivated: its sessions have ended"
        return done(url, f"Account {changed['login']} {verb}.")

    @action(
        blueprint,
        "/admin/o/<organisation>/accounts/<account>/password",
        api=("POST", _ACCOUNT + "/password"),
    )
    async def account_reset_password(
        who: Principal, form: MultiDict, organisation: str, account: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        reset = await domain.reset_password(_store(), who, organisation, account)
        return await _password_once(who, org, reset, f"New one-time password for {reset['login']}")

    @action(
        blueprint, "/admin/o/<organisation>/accounts/<account>/remove", api=("DELETE", _ACCOUNT)
    )
    async def account_remove(
        who: Principal, form: MultiDict, organisation: str, account: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        gone = await domain.get_account(_store(), who, organisation, account)
        await domain.remove_account(_store(), who, organisation, account)
        return done(
            url_for("portal.accounts", organisation=org["code"]),
            f"Account {gone['login']} removed.",
        )


def _register_templates(blueprint: Blueprint) -> None:
    def template_row(template: dict[str, Any]) -> dict[str, Any]:
        return template | {"rights": ", ".join(template["rights"])}

    @page(blueprint, "/admin/o/<organisation>/templates", kinds=ADMINS)
    async def account_templates(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        query = list_query(domain.TEMPLATE_LIST)
        result = await domain.list_templates(_store(), who, organisation, query)
        return await render(
            "portal/people/templates.html",
            who,
            organisation=org,
            listing=ListView(query, result),
            columns=TEMPLATE_COLUMNS,
            rows=[template_row(t) for t in result.items],
            link=lambda row: url_for(
                "portal.account_template", organisation=org["code"], template=row["id"]
            ),
            rights=_rights_offered(who),
            kinds=KIND_LABELS,
            may_change=holds(who, Right.CONFIGURATION),
        )

    @action(blueprint, "/admin/o/<organisation>/templates", api=("POST", _TEMPLATES))
    async def account_template_create(
        who: Principal, form: MultiDict, organisation: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        body: dict[str, Any] = {
            "name": _text(form, "name"),
            "kind": _text(form, "kind"),
            "rights": sorted(set(form.getlist("rights"))),
            "description": _text(form, "description"),
        }
        if (locale := _optional(form, "locale")) is not None:
            body["locale"] = locale
        _checked(("POST", _TEMPLATES), body)
        created = await domain.create_template(
            _store(), who, organisation, domain.NewTemplate(**body)
        )
        return done(
            url_for("portal.account_template", organisation=org["code"], template=created["id"]),
            f"Template {created['name']} created.",
        )

    @page(blueprint, "/admin/o/<organisation>/templates/<template>", kinds=ADMINS)
    async def account_template(who: Principal, organisation: str, template: str) -> Response:
        org = await _organisation(who, organisation)
        shown = await domain.get_template(_store(), who, organisation, template)
        return await render(
            "portal/people/template.html",
            who,
            organisation=org,
            account_template=shown,
            rights=_rights_offered(who),
            may_change=holds(who, Right.CONFIGURATION),
        )

    @action(blueprint, "/admin/o/<organisation>/templates/<template>", api=("PATCH", _TEMPLATE))
    async def account_template_update(
        who: Principal, form: MultiDict, organisation: str, template: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        current = await domain.get_template(_store(), who, organisation, template)
        changes: dict[str, Any] = {}
        for field in ("name", "description"):
            if (value := _text(form, field)) != current[field]:
                changes[field] = value
        if (locale := _optional(form, "locale")) != current["locale"]:
            changes["locale"] = locale
        if current["kind"] == AccountKind.MANAGER and "rights_shown" in form:
            rights = sorted(set(form.getlist("rights")))
            if rights != current["rights"]:
                changes["rights"] = rights
        url = url_for("portal.account_template", organisation=org["code"], template=template)
        if not changes:
            return done(url, "Nothing changed.")
        _checked(("PATCH", _TEMPLATE), changes)
        changed = await domain.update_template(_store(), who, organisation, template, changes)
        return done(url, f"Template {changed['name']} changed.")

    @action(
        blueprint,
        "/admin/o/<organisation>/templates/<template>/remove",
        api=("DELETE", _TEMPLATE),
    )
    async def account_template_remove(
        who: Principal, form: MultiDict, organisation: str, template: str
    ) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        gone = await domain.get_template(_store(), who, organisation, template)
        await domain.remove_template(_store(), who, organisation, template)
        return done(
            url_for("portal.account_templates", organisation=org["code"]),
            f"Template {gone['name']} removed.",
        )

    @page(blueprint, "/admin/o/<organisation>/name-policy", kinds=ADMINS)
    async def name_policy(who: Principal, organisation: str) -> Response:
        return await render(
            "portal/people/name_policy.html",
            who,
            organisation=await _organisation(who, organisation),
            policy=await domain.get_name_policy(_store(), who, organisation),
            may_change=holds(who, Right.CONFIGURATION),
        )

    @action(blueprint, "/admin/o/<organisation>/name-policy", api=("PUT", _POLICY))
    async def name_policy_update(who: Principal, form: MultiDict, organisation: str) -> Response:
        org = await _organisation(who, organisation)  # another's: 404 before anything
        body = _checked(
            ("PUT", _POLICY),
            {
                "min_length": _whole(form, "min_length", "Shortest login id"),
                "max_length": _whole(form, "max_length", "Longest login id"),
                "allowed_characters": _text(form, "allowed_characters"),
                "forbidden_words": _words(str(form.get("forbidden_words", ""))),
            },
        )
        policy = domain.NamePolicy(
            body["min_length"],
            body["max_length"],
            body["allowed_characters"],
            tuple(body["forbidden_words"]),
        )
        changed = await domain.set_name_policy(_store(), who, organisation, policy)
        return done(
            url_for("portal.name_policy", organisation=org["code"]),
            f"Name policy saved. {changed['rule']}",
        )


# --------------------------------------------------------------------------- self-service


def _require_owner(who: Principal) -> str:
    """The owner's organisation id; the self-service forms are for device owners only."""
    if who.kind is not AccountKind.USER or who.organisation_id is None:
        raise Forbidden("the self-service portal is for device owners")
    return who.organisation_id


def _register_my_devices(blueprint: Blueprint) -> None:
    def device_url(device_id: str) -> str:
        return url_for("portal.my_device", device=device_id)

    @page(blueprint, "/my/devices", kinds=OWNERS)
    async def my_devices(who: Principal) -> Response:
        organisation = _require_owner(who)
        query = list_query(devices.LIST)
        result = await devices.list_devices(_store(), who, organisation, query)
        # Named, not passed as ``organisation``: that would link the admin navigation.
        sender = await organisations.get_organisation(_store(), who, organisation)
        return await render(
            "portal/people/my_devices.html",
            who,
            listing=ListView(query, result),
            columns=MY_DEVICE_COLUMNS,
            rows=result.items,
            link=lambda row: device_url(row["id"]),
            tasks=[(kind, TASK_LABELS[kind]) for kind in BULK_TASKS],
            messages=await broadcasts.my_messages(_store(), who),
            sender=sender["long_name"] or sender["short_name"],
        )

    @page(blueprint, "/my/devices/<device>", kinds=OWNERS)
    async def my_device(who: Principal, device: str) -> Response:
        organisation = _require_owner(who)
        shown = await devices.get_device(_store(), who, organisation, device)
        query = list_query(commands.COMMAND_LIST)
        result = await commands.device_commands(_store(), who, organisation, device, query)
        reported = []
        for kind in ("locate", "track"):
            located = await commands.device_commands(
                _store(),
                who,
                organisation,
                device,
                ListQuery(200, filters=(("kind", kind), ("state", "acknowledged"))).checked(
                    commands.COMMAND_LIST
                ),
            )
            reported.extend(located.items)
        return await render(
            "portal/people/my_device.html",
            who,
            device=shown,
            listing=ListView(query, result),
            columns=COMMAND_COLUMNS,
            rows=[_command_row(command) for command in result.items],
            locations=locations(reported),
        )

    @action(blueprint, "/my/devices/<device>/commands", api=("POST", _DEVICE_COMMANDS))
    async def my_device_task(who: Principal, form: MultiDict, device: str) -> Response:
        organisation = _require_owner(who)
        shown = await devices.get_device(_store(), who, organisation, device)  # else 404
        kind = _text(form, "kind")
        body = _checked(
            ("POST", _DEVICE_COMMANDS),
            {"kind": kind, "parameters": task_parameters(kind, form)},
        )
        await commands.queue_command(
            _store(),
            who,
            organisation,
            device,
            body["kind"],
            body["parameters"],
            wakeups=service().wakeups,
        )
        return done(
            device_url(device),
            f"{TASK_LABELS.get(kind, kind)} queued for {shown['name']}; it runs when the "
            "device next connects.",
        )

    @action(blueprint, "/my/devices/commands", api=("POST", _DEVICE_COMMANDS))
    async def my_devices_task(who: Principal, form: MultiDict) -> Response:
        """One task for the selected devices: one command per device, as REST does it."""
        organisation = _require_owner(who)
        selected = list(dict.fromkeys(form.getlist("device_ids")))
        if not selected:
            raise Invalid("select at least one device", field="device_ids")
        kind = _text(form, "kind")
        if kind not in BULK_TASKS:
            raise Invalid("choose a task for the selected devices", field="kind")
        body = _checked(
            ("POST", _DEVICE_COMMANDS),
            {"kind": kind, "parameters": task_parameters(kind, form)},
        )
        named = [await devices.get_device(_store(), who, organisation, d) for d in selected]
        queued, refused = [], []
        for device in named:
            try:
                await commands.queue_command(
                    _store(),
                    who,
                    organisation,
                    device["id"],
                    kind,
                    body["parameters"],
                    wakeups=service().wakeups,
                )
            except Invalid as exc:
                if exc.field != "device":
                    raise  # wrong for every device alike (parameters): said once
                refused.append(f"{device['name']}: {exc}")
            else:
                queued.append(device["name"])
        if not queued:
            raise Invalid("; ".join(refused))
        message = f"{TASK_LABELS[kind]} queued for {', '.join(queued)}."
        if refused:
            message += f" Not queued: {'; '.join(refused)}."
        return done(url_for("portal.my_devices"), message)

    @action(blueprint, "/my/devices/<device>/commands/cancel", api=("POST", _CANCEL))
    async def my_device_cancel(who: Principal, form: MultiDict, device: str) -> Response:
        """Cancel the selected commands of one device (owners: those they gave)."""
        organisation = _require_owner(who)
        await devices.get_device(_store(), who, organisation, device)  # else 404
        selected = list(dict.fromkeys(form.getlist("command_ids")))
        if not selected:
            raise Invalid("select the tasks to cancel", field="command_ids")
        for command_id in selected:
            command = await commands.get_command(_store(), who, organisation, command_id)
            if command["device_id"] != device:
                raise NotFound("no such command")
        for command_id in selected:
            await commands.cancel_command(_store(), who, organisation, command_id)
        return done(device_url(device), f"{len(selected)} task(s) cancelled.")
