"""Admin portal: devices, device groups, installation codes, commands.

Every page reads through the domain operation its REST route uses, and every form is an
action naming its REST twin; what may be done is decided by the domain (rights, tenancy),
whose refusals come back to the page as messages.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, Response, redirect, request, url_for

from engine import (
    accounts,
    commands as orders,
    device_groups as groups,
    devices as inventory,
    installation_codes as codes,
    organisations,
)
from engine.errors import DomainError, Invalid
from engine.listing import ListQuery
from engine.principals import AccountKind, Principal

from ..context import service
from .listing import ListView, columns, list_query
from .pages import action, done, page, render

#: Who uses these pages: managers and system accounts (owners have the self-service portal).
ADMINS = (AccountKind.MANAGER, AccountKind.SUPERVISOR, AccountKind.VENDOR)

_DEVICES = "/organisations/{organisation}/devices"
_DEVICE = _DEVICES + "/{device}"
_GROUPS = "/organisations/{organisation}/device-groups"
_GROUP = _GROUPS + "/{group}"
_MEMBER = _GROUP + "/devices/{device}"
_CODES = "/organisations/{organisation}/installation-codes"
_CODE = _CODES + "/{code}"

#: Inventory columns: (field, label, sortable, filterable), from the REST list's spec.
DEVICE_COLUMNS = columns(
    inventory.LIST,
    ("name", "Name"),
    ("owner", "Owner"),
    ("platform", "Platform"),
    ("protocol", "Protocol"),
    ("state", "State"),
    ("model", "Model"),
    ("os_version", "OS version"),
    ("phone_number", "Phone number"),
    ("imei", "IMEI"),
    ("serial_number", "Serial number"),
    ("last_seen_at", "Last seen"),
    ("compliant", "Compliance"),
)
GROUP_COLUMNS = columns(
    groups.LIST,
    ("name", "Name"),
    ("description", "Description"),
    ("devices", "Devices"),
    ("created_at", "Created"),
)
CODE_COLUMNS = columns(
    codes.LIST,
    ("code", "Code"),
    ("purpose", "Purpose"),
    ("device_name", "Device"),
    ("device", "Device id"),
    ("account_login", "Account"),
    ("account", "Account id"),
    ("expires_at", "Expires"),
    ("usage_limit", "Usage limit"),
    ("times_used", "Times used"),
    ("last_used_at", "Last used"),
    ("state", "State"),
)
#: Commands the inventory list gives to a selection at once (wipes ask first).
BULK_KINDS = (
    ("lock", "Lock"),
    ("unlock", "Unlock"),
    ("locate", "Locate"),
    ("request_inventory", "Request inventory"),
)
WIPE_LABELS = {"wipe": "Wipe (factory reset)", "enterprise_wipe": "Enterprise wipe"}
PURPOSE_LABELS = {
    codes.Purpose.ENROL_DEVICE: "Enrol a device of the inventory",
    codes.Purpose.NEW_ACCOUNT_AND_DEVICE: "Create a new account and its device",
    codes.Purpose.NEW_DEVICE_FOR_ACCOUNT: "Add a new device to an existing account",
    codes.Purpose.BIND_DEVICE: "Bind an existing inventory entry",
}
#: Purposes whose code names a device of the inventory.
FOR_DEVICE = (codes.Purpose.ENROL_DEVICE, codes.Purpose.BIND_DEVICE)
#: How many choices a form's drop-down offers (owners, devices, templates).
CHOICES = 500


def _store() -> Any:
    return service().store


async def _organisation(who: Principal, organisation: str) -> dict[str, Any]:
    """The organisation as the navigation shows it (NotFound for one ``who`` may not see)."""
    return await organisations.get_organisation(_store(), who, organisation)


def _text(form: Mapping[str, Any], name: str) -> str | None:
    """A text field, None when empty."""
    value = str(form.get(name, "")).strip()
    return value or None


def _whole_number(form: Mapping[str, Any], name: str, label: str) -> int | None:
    value = _text(form, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"{label}: expected a whole number", field=name) from None


async def _users(who: Principal, organisation: str) -> list[dict[str, Any]]:
    """The organisation's user accounts, which may own devices."""
    query = ListQuery(CHOICES, 0, "login", False, (("kind", AccountKind.USER.value),))
    page_ = await accounts.list_accounts(_store(), who, organisation, query)
    return [account for account in page_.items if account["kind"] == AccountKind.USER]


async def _user_templates(who: Principal, organisation: str) -> list[dict[str, Any]]:
    query = ListQuery(CHOICES, 0, "name", False, (("kind", AccountKind.USER.value),))
    page_ = await accounts.list_templates(_store(), who, organisation, query)
    return [template for template in page_.items if template["kind"] == AccountKind.USER]


async def _all_devices(who: Principal, organisation: str) -> list[dict[str, Any]]:
    query = ListQuery(CHOICES, 0, "name")
    return (await inventory.list_devices(_store(), who, organisation, query)).items


async def _all_groups(who: Principal, organisation: str) -> list[dict[str, Any]]:
    query = ListQuery(CHOICES, 0, "name")
    return (await groups.list_groups(_store(), who, organisation, query)).items


def _device_row(device: dict[str, Any]) -> dict[str, Any]:
    """A device as the list shows it: the owner's login, compliance in words."""
    compliant = device["compliant"]
    return device | {
        "owner": device["owner"]["login"] if device["owner"] else None,
        "compliant": None if compliant is None else ("compliant" if compliant else "not compliant"),
    }


def _parameters(kind: orders.CommandKind, form: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's parameters from its fields ``<kind>.<parameter>``; empty ones left out."""
    values: dict[str, Any] = {}
    for parameter in orders.KINDS[kind].parameters:
        field = f"{kind.value}.{parameter.name}"
        if parameter.type is bool:
            if form.get(field):
                values[parameter.name] = True
        elif parameter.type is int:
            number = _whole_number(form, field, f"parameters.{parameter.name}")
            if number is not None:
                values[parameter.name] = number
        else:
            text = _text(form, field)
            if text is not None:
                values[parameter.name] = text
    return values


def _inline_svg(svg: str, label: str, size: int = 256) -> str:
    """The domain's SVG for embedding in a page: no XML declaration, labelled as an image,
    drawn ``size`` pixels square (it has a viewBox, so it scales without loss)."""
    body = svg.split("?>", 1)[-1].strip()
    head, rest = body.split(">", 1)
    head = re.sub(r' (width|height)="\d+"', f' \\1="{size}"', head)
    labelled = f'<svg role="img" aria-label="{html.escape(label)}" '
    return head.replace("<svg ", labelled, 1) + ">" + rest


def register(blueprint: Blueprint) -> None:
    # ----------------------------------------------------------------------- inventory

    @page(blueprint, "/admin/o/<organisation>/devices", kinds=ADMINS)
    async def devices(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        query = list_query(inventory.LIST)
        found = await inventory.list_devices(_store(), who, organisation, query)
        return await render(
            "portal/inventory/devices.html",
            who,
            organisation=org,
            listing=ListView(query, found),
            columns=DEVICE_COLUMNS,
            rows=[_device_row(device) for device in found.items],
            link=lambda row: url_for(
                "portal.device_page", organisation=org["code"], device=row["id"]
            ),
            bulk_kinds=BULK_KINDS,
            wipe_labels=WIPE_LABELS,
            groups=await _all_groups(who, organisation),
        )

    @page(blueprint, "/admin/o/<organisation>/devices/new", kinds=ADMINS)
    async def device_new(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        return await render(
            "portal/inventory/device_new.html",
            who,
            organisation=org,
            platforms=inventory.PLATFORMS,
            protocols=inventory.PROTOCOLS,
            users=await _users(who, organisation),
        )

    @action(blueprint, "/admin/o/<organisation>/devices", api=("POST", _DEVICES))
    async def device_create(who: Principal, form: Any, organisation: str) -> Response:
        new = inventory.NewDevice(
            name=str(form.get("name", "")),
            platform=str(form.get("platform", "")),
            protocol=str(form.get("protocol", "")),
            owner=_text(form, "owner"),
            imei=_text(form, "imei"),
            serial_number=_text(form, "serial_number"),
            udid=_text(form, "udid"),
            model=_text(form, "model"),
            os_version=_text(form, "os_version"),
            phone_number=_text(form, "phone_number"),
        )
        created = await inventory.create_device(_store(), who, organisation, new)
        code = created["installation_code"]
        return done(
            url_for("portal.installation_code", organisation=organisation, code=code["id"]),
            f"Device {created['name']} created; its installation code is {code['code']}.",
        )

    @page(blueprint, "/admin/o/<organisation>/devices/bulk-confirm", kinds=ADMINS)
    async def devices_bulk_confirm(who: Principal, organisation: str) -> Response:
        """Wipes of a selection ask first, naming how many devices (and which) they erase."""
        org = await _organisation(who, organisation)
        kind = request.args.get("kind", "")
        if kind not in WIPE_LABELS:
            return redirect(url_for("portal.devices", organisation=organisation))
        chosen = []
        for device_id in dict.fromkeys(request.args.getlist("device_ids")):
            chosen.append(await inventory.get_device(_store(), who, organisation, device_id))
        return await render(
            "portal/inventory/bulk_confirm.html",
            who,
            organisation=org,
            kind=kind,
            label=WIPE_LABELS[kind],
            chosen=chosen,
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/commands",
        api=("POST", "/organisations/{organisation}/commands"),
    )
    async def devices_bulk_command(who: Principal, form: Any, organisation: str) -> Response:
        kind = orders.parse_kind(str(form.get("kind", "")))
        device_ids = list(dict.fromkeys(form.getlist("device_ids")))
        if kind in orders.WIPES and device_ids and form.get("confirmed") != str(len(device_ids)):
            target = url_for("portal.devices_bulk_confirm", organisation=organisation)
            return redirect(
                target + "?" + urlencode({"kind": kind.value, "device_ids": device_ids}, True)
            )
        queued = await orders.queue_bulk(
            _store(),
            who,
            organisation,
            kind.value,
            _parameters(kind, form),
            device_ids=device_ids,
            wakeups=service().wakeups,
        )
        skipped = queued["skipped"]
        message = f"{kind.value} queued for {queued['queued']} device(s)"
        if skipped:
            message += f"; {len(skipped)} skipped (removed or inactive)"
        return done(
            url_for("portal.devices", organisation=organisation),
            f"{message} (batch {queued['batch_id']}).",
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/group-members",
        api=("PUT", _MEMBER),
    )
    async def devices_bulk_group_add(who: Principal, form: Any, organisation: str) -> Response:
        group_id = _text(form, "group")
        if group_id is None:
            raise Invalid("choose a group", field="group")
        device_ids = list(dict.fromkeys(form.getlist("device_ids")))
        if not device_ids:
            raise Invalid("select at least one device", field="device_ids")
        group = await groups.get_group(_store(), who, organisation, group_id)
        added = 0
        for device_id in device_ids:
            added += await groups.add_device(_store(), who, organisation, group_id, device_id)
        return done(
            url_for("portal.devices", organisation=organisation),
            f"{added} device(s) added to {group['name']}.",
        )

    # ----------------------------------------------------------------------- one device

    @page(blueprint, "/admin/o/<organisation>/devices/<device>", kinds=ADMINS)
    async def device_page(who: Principal, organisation: str, device: str) -> Response:
        org = await _organisation(who, organisation)
        found = await inventory.get_device(_store(), who, organisation, device)
        query = list_query(orders.COMMAND_LIST)
        commands = await orders.device_commands(_store(), who, organisation, device, query)
        code_query = ListQuery(CHOICES, 0, "created_at", True, (("device", device),))
        device_codes = await codes.list_codes(_store(), who, organisation, code_query)
        member_of = {group["id"] for group in found["groups"]}
        return await render(
            "portal/inventory/device.html",
            who,
            organisation=org,
            device=found,
            commands=ListView(query, commands),
            cancellable=(orders.State.QUEUED.value, orders.State.SENT.value),
            kinds=[spec for kind, spec in orders.KINDS.items() if kind not in orders.WIPES],
            wipe_kinds=[orders.KINDS[orders.CommandKind(kind)] for kind in WIPE_LABELS],
            wipe_labels=WIPE_LABELS,
            users=await _users(who, organisation),
            other_groups=[
                group
                for group in await _all_groups(who, organisation)
                if group["id"] not in member_of
            ],
            codes=[code for code in device_codes.items if code["device"] == device],
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/edit",
        api=("PATCH", _DEVICE),
    )
    async def device_update(who: Principal, form: Any, organisation: str, device: str) -> Response:
        current = await inventory.get_device(_store(), who, organisation, device)
        wanted: dict[str, Any] = {
            "name": str(form.get("name", "")).strip(),
            "owner": _text(form, "owner"),
            "phone_number": _text(form, "phone_number"),
        }
        known = {
            "name": current["name"],
            "owner": current["owner"]["id"] if current["owner"] else None,
            "phone_number": current["phone_number"],
        }
        changes = {name: value for name, value in wanted.items() if value != known[name]}
        state = form.get("state")
        if state is not None and (state == "inactive") != (current["state"] == "inactive"):
            changes["state"] = state
        if not changes:
            return done(
                url_for("portal.device_page", organisation=organisation, device=device),
                "Nothing changed.",
            )
        updated = await inventory.update_device(_store(), who, organisation, device, changes)
        return done(
            url_for("portal.device_page", organisation=organisation, device=device),
            f"Device {updated['name']} saved.",
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/remove",
        api=("DELETE", _DEVICE),
    )
    async def device_remove(who: Principal, form: Any, organisation: str, device: str) -> Response:
        current = await inventory.get_device(_store(), who, organisation, device)
        await inventory.remove_device(_store(), who, organisation, device)
        return done(
            url_for("portal.devices", organisation=organisation),
            f"Device {current['name']} removed.",
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/commands",
        api=("POST", _DEVICE + "/commands"),
    )
    async def device_command_queue(
        who: Principal, form: Any, organisation: str, device: str
    ) -> Response:
        kind = orders.parse_kind(str(form.get("kind", "")))
        command = await orders.queue_command(
            _store(),
            who,
            organisation,
            device,
            kind.value,
            _parameters(kind, form),
            wakeups=service().wakeups,
        )
        return done(
            url_for("portal.device_page", organisation=organisation, device=device),
            f"{command['kind']} queued.",
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/commands/<command>/cancel",
        api=("POST", "/organisations/{organisation}/commands/{command}/cancel"),
    )
    async def device_command_cancel(
        who: Principal, form: Any, organisation: str, device: str, command: str
    ) -> Response:
        cancelled = await orders.cancel_command(_store(), who, organisation, command)
        return done(
            url_for("portal.device_page", organisation=organisation, device=device),
            f"{cancelled['kind']} cancelled.",
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/groups",
        api=("PUT", _MEMBER),
    )
    async def device_membership_add(
        who: Principal, form: Any, organisation: str, device: str
    ) -> Response:
        group_id = _text(form, "group")
        if group_id is None:
            raise Invalid("choose a group", field="group")
        group = await groups.get_group(_store(), who, organisation, group_id)
        await groups.add_device(_store(), who, organisation, group_id, device)
        return done(
            url_for("portal.device_page", organisation=organisation, device=device),
            f"Added to {group['name']}.",
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/groups/<group>/remove",
        api=("DELETE", _MEMBER),
    )
    async def device_membership_remove(
        who: Principal, form: Any, organisation: str, device: str, group: str
    ) -> Response:
        found = await groups.get_group(_store(), who, organisation, group)
        await groups.remove_device(_store(), who, organisation, group, device)
        return done(
            url_for("portal.device_page", organisation=organisation, device=device),
            f"Taken out of {found['name']}.",
        )

    # ----------------------------------------------------------------------- groups

    @page(blueprint, "/admin/o/<organisation>/groups", kinds=ADMINS)
    async def device_groups(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        query = list_query(groups.LIST)
        found = await groups.list_groups(_store(), who, organisation, query)
        return await render(
            "portal/inventory/groups.html",
            who,
            organisation=org,
            listing=ListView(query, found),
            columns=GROUP_COLUMNS,
            rows=found.items,
            link=lambda row: url_for(
                "portal.device_group", organisation=org["code"], group=row["id"]
            ),
        )

    @action(blueprint, "/admin/o/<organisation>/groups", api=("POST", _GROUPS))
    async def device_group_create(who: Principal, form: Any, organisation: str) -> Response:
        created = await groups.create_group(
            _store(),
            who,
            organisation,
            groups.NewGroup(str(form.get("name", "")), str(form.get("description", ""))),
        )
        return done(
            url_for("portal.device_group", organisation=organisation, group=created["id"]),
            f"Group {created['name']} created.",
        )

    @page(blueprint, "/admin/o/<organisation>/groups/<group>", kinds=ADMINS)
    async def device_group(who: Principal, organisation: str, group: str) -> Response:
        org = await _organisation(who, organisation)
        found = await groups.get_group(_store(), who, organisation, group)
        query = list_query(inventory.LIST)
        members = await groups.list_members(_store(), who, organisation, group, query)
        return await render(
            "portal/inventory/group.html",
            who,
            organisation=org,
            group=found,
            listing=ListView(query, members),
            columns=DEVICE_COLUMNS,
            rows=[_device_row(device) for device in members.items],
            link=lambda row: url_for(
                "portal.device_page", organisation=org["code"], device=row["id"]
            ),
        )

    @action(blueprint, "/admin/o/<organisation>/groups/<group>/edit", api=("PATCH", _GROUP))
    async def device_group_update(
        who: Principal, form: Any, organisation: str, group: str
    ) -> Response:
        changes = {
            "name": str(form.get("name", "")),
            "description": str(form.get("description", "")),
        }
        updated = await groups.update_group(_store(), who, organisation, group, changes)
        return done(
            url_for("portal.device_group", organisation=organisation, group=group),
            f"Group {updated['name']} saved.",
        )

    @action(blueprint, "/admin/o/<organisation>/groups/<group>/remove", api=("DELETE", _GROUP))
    async def device_group_remove(
        who: Principal, form: Any, organisation: str, group: str
    ) -> Response:
        found = await groups.get_group(_store(), who, organisation, group)
        await groups.remove_group(_store(), who, organisation, group)
        return done(
            url_for("portal.device_groups", organisation=organisation),
            f"Group {found['name']} removed; its devices stay in the inventory.",
        )

    # ----------------------------------------------------------------------- codes

    @page(blueprint, "/admin/o/<organisation>/codes", kinds=ADMINS)
    async def installation_codes(who: Principal, organisation: str) -> Response:
        org = await _organisation(who, organisation)
        query = list_query(codes.LIST)
        found = await codes.list_codes(_store(), who, organisation, query)
        all_devices = await _all_devices(who, organisation)
        users = await _users(who, organisation)
        device_names = {device["id"]: device["name"] for device in all_devices}
        logins = {user["id"]: user["login"] for user in users}
        rows = [
            code
            | {
                "device_name": device_names.get(code["device"]),
                "account_login": logins.get(code["account"]),
                "usage_limit": "unlimited" if code["usage_limit"] is None else code["usage_limit"],
            }
            for code in found.items
        ]
        return await render(
            "portal/inventory/codes.html",
            who,
            organisation=org,
            listing=ListView(query, found),
            columns=CODE_COLUMNS,
            rows=rows,
            link=lambda row: url_for(
                "portal.installation_code", organisation=org["code"], code=row["id"]
            ),
            purposes=PURPOSE_LABELS,
            devices=all_devices,
            users=users,
            templates=await _user_templates(who, organisation),
        )

    @action(blueprint, "/admin/o/<organisation>/codes", api=("POST", _CODES))
    async def installation_code_create(who: Principal, form: Any, organisation: str) -> Response:
        purpose = str(form.get("purpose", ""))
        # Each purpose takes only what it needs: fields of the others are left out.
        device = _text(form, "device") if purpose in FOR_DEVICE else None
        account = (
            _text(form, "account") if purpose == codes.Purpose.NEW_DEVICE_FOR_ACCOUNT else None
        )
        template = (
            _text(form, "template") if purpose == codes.Purpose.NEW_ACCOUNT_AND_DEVICE else None
        )
        new = codes.NewCode(
            purpose=purpose,
            device=device,
            account=account,
            template=template,
            expires_at=_text(form, "expires_at"),
            usage_limit=_whole_number(form, "usage_limit", "usage limit"),
        )
        created = await codes.create_code(_store(), who, organisation, new)
        return done(
            url_for("portal.installation_code", organisation=organisation, code=created["id"]),
            f"Installation code {created['code']} created.",
        )

    @page(blueprint, "/admin/o/<organisation>/codes/<code>", kinds=ADMINS)
    async def installation_code(who: Principal, organisation: str, code: str) -> Response:
        org = await _organisation(who, organisation)
        found = await codes.get_code(_store(), who, organisation, code)
        svg = await codes.code_qr_svg(
            _store(), who, organisation, code, service().deployment.public_url
        )
        device = account = account_template = None
        try:
            if found["device"]:
                device = await inventory.get_device(_store(), who, organisation, found["device"])
            if found["account"]:
                account = await accounts.get_account(_store(), who, organisation, found["account"])
            if found["template"]:
                account_template = await accounts.get_template(
                    _store(), who, organisation, found["template"]
                )
        except DomainError:
            pass  # removed since: the code page still shows the id
        return await render(
            "portal/inventory/code.html",
            who,
            organisation=org,
            code=found,
            purpose=PURPOSE_LABELS.get(found["purpose"], found["purpose"]),
            qr=_inline_svg(svg, f"QR code of installation code {found['code']}"),
            device=device,
            account=account,
            account_template=account_template,
        )

    @page(blueprint, "/admin/o/<organisation>/codes/<code>/qr.svg", kinds=ADMINS)
    async def installation_code_qr(who: Principal, organisation: str, code: str) -> Response:
        """The same image as the REST route's, for a browser signed in with a session."""
        svg = await codes.code_qr_svg(
            _store(), who, organisation, code, service().deployment.public_url
        )
        return Response(svg, content_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @action(blueprint, "/admin/o/<organisation>/codes/<code>/revoke", api=("DELETE", _CODE))
    async def installation_code_revoke(
        who: Principal, form: Any, organisation: str, code: str
    ) -> Response:
        found = await codes.get_code(_store(), who, organisation, code)
        await codes.revoke(_store(), who, organisation, code)
        return done(
            url_for("portal.installation_codes", organisation=organisation),
            f"Installation code {found['code']} revoked.",
        )
