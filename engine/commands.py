"""Commands: one generic model, queued per device, translated into each protocol later.

A manager (or a device owner, for the self-service kinds on their own devices) queues a
command of one :class:`CommandKind` with parameters checked against that kind's table
(:data:`KINDS`). The protocol code of the device later takes it (:func:`pending_commands`),
marks it sent (:func:`mark_sent`) and records the device's answer (:func:`record_result`);
every move follows the one state table :data:`TRANSITIONS`.

Decisions worth knowing:

* A command belongs to the owner its device had when it was queued (``owner_id``; none if
  the device had no owner). A device owner sees the commands queued for them, whoever gave
  them, and keeps seeing them after the device has gone to someone else (their own
  history); they never see the commands of the device's earlier or later owners, nor
  their results (locations). A result that arrives after the device has changed hands
  may describe the new owner, so the command is then taken from the earlier owner
  (``owner_id`` cleared: managers still see it). Device routes stay for the device's
  current owner: its command list shows only the commands queued for them.
* Cancelling is best effort: a ``sent`` command may already be on the device. Whoever may
  not give a kind of command may not cancel one either (a helpdesk manager does not
  countermand a wipe); a device owner cancels only the commands they gave themselves, and
  only while the device is still theirs, so that an owner cannot undo the organisation's
  lock or wipe of their phone, nor reach a phone that is no longer theirs.
* A bulk command writes one audit event for its batch (not one per device); each command
  carries the ``batch_id``. Devices that take no commands (removed, inactive) are skipped
  and reported; unknown device or group ids refuse the whole request.
* The protocol side is audited where it matters: a command's final result is an audit
  event (``command.acknowledged`` / ``command.failed``, by the service); being *sent* is not,
  since it happens on every delivery and the command row keeps ``sent_at``.
* Secret parameters (the macOS wipe PIN) are stored for the device but never written to
  the audit log.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .audit import audit_event
from .errors import Forbidden, Invalid, NotFound
from .ids import new_id
from .listing import ListQuery, ListSpec, Page
from .organisations import visible_organisation
from .principals import (
    AccountKind,
    Principal,
    Right,
    owner_scope,
    require_kind,
    require_right,
)
from .store import Store
from .store.audit import insert_event
from .store.commands import (
    batch_summary,
    change_state,
    command_by_id,
    command_in,
    commands_of_device,
    commands_page,
    device_in,
    devices_in,
    devices_of_groups,
    groups_in,
    insert_commands,
)
from .store.rows import Row
from .timestamps import now
from .wakeups import Waiting, Wakeups


class CommandKind(StrEnum):
    LOCK = "lock"
    UNLOCK = "unlock"
    WIPE = "wipe"  # factory reset: everything on the device goes
    ENTERPRISE_WIPE = "enterprise_wipe"  # only the organisation's data, apps and profiles
    LOCATE = "locate"  # report the location once
    TRACK = "track"  # report the location repeatedly for a while
    MESSAGE = "message"
    INSTALL_APPLICATION = "install_application"
    REMOVE_APPLICATION = "remove_application"
    REQUEST_INVENTORY = "request_inventory"


#: What device owners may give their own devices from the self-service portal.
SELF_SERVICE = frozenset(
    {
        CommandKind.LOCK,
        CommandKind.UNLOCK,
        CommandKind.LOCATE,
        CommandKind.TRACK,
        CommandKind.WIPE,
        CommandKind.ENTERPRISE_WIPE,
        CommandKind.INSTALL_APPLICATION,
        CommandKind.REQUEST_INVENTORY,
    }
)
#: Kinds that destroy data: managers need the wipe right besides the commands right.
WIPES = frozenset({CommandKind.WIPE, CommandKind.ENTERPRISE_WIPE})
#: Device states in which a device takes no new commands.
REFUSING_DEVICE_STATES = frozenset({"removed", "inactive"})
#: The most devices one bulk command reaches (one write unit; about 1 s of writer time).
MAX_BULK_DEVICES = 100_000


# --------------------------------------------------------------------------- life cycle


class State(StrEnum):
    QUEUED = "queued"  # waiting for the device to connect
    SENT = "sent"  # handed to the device, no answer yet
    ACKNOWLEDGED = "acknowledged"  # the device did it
    FAILED = "failed"  # the device answered with an error
    CANCELLED = "cancelled"  # withdrawn before an answer


#: Each state and the states a command in it may move to; the only place that says so.
TRANSITIONS: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        State.QUEUED: frozenset({State.SENT, State.CANCELLED}),
        State.SENT: frozenset({State.ACKNOWLEDGED, State.FAILED, State.CANCELLED}),
        State.ACKNOWLEDGED: frozenset(),
        State.FAILED: frozenset(),
        State.CANCELLED: frozenset(),
    }
)
FINAL = frozenset(state for state, onward in TRANSITIONS.items() if not onward)


class RefusedTransition(Invalid):
    """The state table does not allow this move (e.g. cancelling an acknowledged command)."""

    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"a {current} command cannot become {target}", field="state")
        self.current = current
        self.target = target


def check_transition(current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        raise RefusedTransition(current, target)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Parameter:
    """One parameter of a command kind: enough to check a value and to document it."""

    name: str
    type: type  # str, int or bool, as JSON has them
    help: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # the whole string must match
    check: Callable[[Any], None] | None = None  # raises ValueError with the problem
    secret: bool = False  # kept for the device, never written to the audit log

    def describe(self) -> str:
        """One line for the API documentation."""
        required = ", required" if self.required else ""
        return f"{self.name} ({_JSON_TYPES[self.type]}{required}): {self.help}"

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value``, or None."""
        # bool is an int subclass; JSON keeps them apart and so does this check.
        if isinstance(value, bool) is not (self.type is bool) or not isinstance(value, self.type):
            return f"expected {_JSON_TYPES[self.type]}"
        if isinstance(value, int) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"at least {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return f"at most {self.maximum}"
        if isinstance(value, str):
            if self.required and not value.strip():
                return "must not be blank"
            if self.max_length is not None and len(value) > self.max_length:
                return f"at most {self.max_length} characters"
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                return f"must match {self.pattern}"
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                return str(exc)
        return None


_JSON_TYPES: Mapping[type, str] = MappingProxyType({str: "string", int: "integer", bool: "boolean"})


@dataclass(frozen=True)
class KindSpec:
    """A command kind: what it does, its parameters, and a rule across them (if any)."""

    kind: CommandKind
    help: str
    parameters: tuple[Parameter, ...] = ()
    #: Checks the parameters together; raises ValueError(name, problem).
    rule: Callable[[Mapping[str, Any]], None] | None = None

    def check(self, values: Mapping[str, object]) -> dict[str, Any]:
        """``values`` if they are right for this kind, else :class:`Invalid` naming one."""
        known = {p.name: p for p in self.parameters}
        for name in values:
            if name not in known:
                expected = ", ".join(known) or "none"
                raise _invalid(name, f"unknown parameter for {self.kind}; it takes: {expected}")
        for parameter in self.parameters:
            if parameter.name not in values:
                if parameter.required:
                    raise _invalid(parameter.name, "required")
                continue
            problem = parameter.problem(values[parameter.name])
            if problem is not None:
                raise _invalid(parameter.name, problem)
        if self.rule is not None:
            try:
                self.rule(values)
            except ValueError as exc:
                name, problem = exc.args
                raise _invalid(name, problem) from None
        return dict(values)

    def redacted(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters as the audit log may show them."""
        secret = {p.name for p in self.parameters if p.secret}
        return {name: "(secret)" if name in secret else value for name, value in values.items()}


def _invalid(name: str, problem: str) -> Invalid:
    return Invalid(f"parameters.{name}: {problem}", field=f"parameters.{name}")


def _https_url(value: str) -> None:
    # Devices fetch the app themselves: iOS refuses manifests over plain HTTP, and a
    # download without TLS could be swapped on the way.
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("must be an https:// URL")


def _track_rule(values: Mapping[str, Any]) -> None:
    if values["interval_minutes"] > values["duration_minutes"]:
        raise ValueError("interval_minutes", "cannot be longer than duration_minutes")


def _one_application(values: Mapping[str, Any]) -> None:
    if ("application_id" in values) == ("url" in values):
        raise ValueError("application_id", "give either application_id or url, not both")


_APPLICATION_ID = Parameter(
    "application_id",
    str,
    "the application: an app-store id, package name or bundle id, or the id of an "
    "application of the organisation",
    max_length=255,
    pattern=r"\S+",
)

KINDS: Mapping[CommandKind, KindSpec] = MappingProxyType(
    {
        spec.kind: spec
        for spec in (
            KindSpec(
                CommandKind.LOCK,
                "Lock the device's screen.",
                (
                    Parameter("message", str, "shown on the lock screen", max_length=200),
                    Parameter(
                        "phone_number",
                        str,
                        "a number to call, shown on the lock screen",
                        pattern=r"\+?[0-9][0-9 ()/-]{2,31}",
                    ),
                ),
            ),
            KindSpec(CommandKind.UNLOCK, "Clear the passcode so the owner can set a new one."),
            KindSpec(
                CommandKind.WIPE,
                "Factory reset: erase everything on the device.",
                (
                    Parameter(
                        "pin",
                        str,
                        "six digits a Mac asks for before it can be used again",
                        pattern=r"[0-9]{6}",
                        secret=True,
                    ),
                    Parameter("preserve_data_plan", bool, "keep the eSIM's data plan"),
                ),
            ),
            KindSpec(
                CommandKind.ENTERPRISE_WIPE,
                "Remove the organisation's data, applications and profiles only.",
            ),
            KindSpec(CommandKind.LOCATE, "Report the device's location once."),
            KindSpec(
                CommandKind.TRACK,
                "Report the device's location repeatedly for a while.",
                (
                    Parameter(
                        "duration_minutes",
                        int,
                        "how long to keep reporting (at most a week)",
                        required=True,
                        minimum=1,
                        maximum=10080,
                    ),
                    Parameter(
                        "interval_minutes",
                        int,
                        "minutes between reports",
                        required=True,
                        minimum=1,
                        maximum=1440,
                    ),
                ),
                _track_rule,
            ),
            KindSpec(
                CommandKind.MESSAGE,
                "Show a message on the device (in the EMM client app where there is one).",
                (
                    Parameter("text", str, "the message", required=True, max_length=1000),
                    Parameter("title", str, "a title above it", max_length=100),
                ),
            ),
            KindSpec(
                CommandKind.INSTALL_APPLICATION,
                "Install an application, by its id or from an https URL.",
                (
                    _APPLICATION_ID,
                    Parameter(
                        "url",
                        str,
                        "where the device downloads it (an https URL)",
                        max_length=2048,
                        check=_https_url,
                    ),
                ),
                _one_application,
            ),
            KindSpec(
                CommandKind.REMOVE_APPLICATION,
                "Remove an application the organisation installed.",
                (
                    Parameter(
                        _APPLICATION_ID.name,
                        str,
                        _APPLICATION_ID.help,
                        required=True,
                        max_length=_APPLICATION_ID.max_length,
                        pattern=_APPLICATION_ID.pattern,
                    ),
                ),
            ),
            KindSpec(CommandKind.REQUEST_INVENTORY, "Report hardware, software and settings now."),
        )
    }
)


def parse_kind(kind: str) -> CommandKind:
    try:
        return CommandKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in CommandKind)
        raise Invalid(f"kind: unknown command kind; known: {known}", field="kind") from None


def check_parameters(kind: CommandKind, values: Mapping[str, object]) -> dict[str, Any]:
    """The parameters if they are right for ``kind``, else :class:`Invalid` naming one."""
    return KINDS[kind].check(values)


# --------------------------------------------------------------------------- views, access

COMMAND_LIST = ListSpec(
    sortable=("created_at", "updated_at", "kind", "state", "device_id", "batch_id"),
    filterable=("kind", "state", "device_id", "batch_id", "created_at"),
    default_sort="created_at",
    default_descending=True,
)


def public(row: Mapping[str, Any], *, for_device: bool = False) -> dict[str, Any]:
    """A command as the API shows it; secret parameters (a wipe PIN) only go to the device."""
    parameters = json.loads(row["parameters"])
    if not for_device:
        parameters = KINDS[CommandKind(row["kind"])].redacted(parameters)
    return {
        "id": row["id"],
        "device_id": row["device_id"],
        "kind": row["kind"],
        "parameters": parameters,
        "state": row["state"],
        "result": json.loads(row["result"]) if row["result"] is not None else None,
        "batch_id": row["batch_id"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "sent_at": row["sent_at"],
        "completed_at": row["completed_at"],
    }


def _page(rows_total: tuple[list[Row], int], query: ListQuery) -> Page:
    rows, total = rows_total
    return Page([public(row) for row in rows], total, query.limit, query.offset)


def _require_may_give(principal: Principal, kind: CommandKind) -> None:
    """Managers need the commands right (and wipe for wipes); owners the self-service kinds."""
    if principal.kind is AccountKind.USER:
        if kind not in SELF_SERVICE:
            raise Forbidden(f"device owners may not give {kind} commands")
        return  # on their own devices only: checked with the device
    require_right(principal, Right.COMMANDS)
    if kind in WIPES:
        require_right(principal, Right.WIPE)


def _device_for(
    conn: sqlite3.Connection, principal: Principal, organisation_id: str, device_id: str
) -> Row:
    """The device, if it is of this organisation and (for an owner) theirs; else NotFound."""
    row = device_in(conn, organisation_id, device_id)
    owner = owner_scope(principal)
    if row is None or (owner is not None and row["owner_id"] != owner):
        raise NotFound("no such device")
    return row


def _command_for(
    conn: sqlite3.Connection, principal: Principal, organisation_id: str, command_id: str
) -> Row:
    row = command_in(conn, organisation_id, command_id)
    owner = owner_scope(principal)
    if row is None or (owner is not None and row["owner_id"] != owner):
        raise NotFound("no such command")
    return row


def _new_command(
    principal: Principal,
    organisation_id: str,
    device_id: str,
    kind: CommandKind,
    parameters: dict[str, Any],
    at: str,
    batch_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "organisation_id": organisation_id,
        "device_id": device_id,
        "kind": kind.value,
        "parameters": json.dumps(parameters, sort_keys=True),
        "state": State.QUEUED.value,
        "created_by": principal.account_id,
        "created_at": at,
        "updated_at": at,
        "batch_id": batch_id,
    }


# --------------------------------------------------------------------------- managers, owners


async def queue_command(
    store: Store,
    principal: Principal,
    organisation: str,
    device_id: str,
    kind: str,
    parameters: Mapping[str, object],
    *,
    wakeups: Wakeups | None = None,
) -> dict[str, Any]:
    """Queue one command for one device; ``wakeups`` hears of it once it is committed."""
    org = await visible_organisation(store, principal, organisation)
    command_kind = parse_kind(kind)
    _require_may_give(principal, command_kind)
    values = check_parameters(command_kind, parameters)
    command = _new_command(principal, org["id"], device_id, command_kind, values, now())
    event = audit_event(
        principal,
        "command.queued",
        organisation_id=org["id"],
        target_type="command",
        target_id=command["id"],
        details={
            "kind": command_kind.value,
            "device_id": device_id,
            "parameters": KINDS[command_kind].redacted(values),
        },
    )
    protocol = await store.write(_queue_one, principal, command, event)
    if wakeups is not None:
        wakeups.wake([Waiting(org["id"], device_id, protocol)])
    return public(command | {"result": None, "sent_at": None, "completed_at": None})


def _queue_one(
    conn: sqlite3.Connection, principal: Principal, command: dict[str, Any], event: dict[str, Any]
) -> str:
    """Insert the command; answers the device's protocol."""
    device = _device_for(conn, principal, command["organisation_id"], command["device_id"])
    if device["state"] in REFUSING_DEVICE_STATES:
        raise Invalid(f"the device is {device['state']} and takes no commands", field="device")
    insert_commands(conn, [command | {"owner_id": device["owner_id"]}])
    insert_event(conn, event)
    return str(device["protocol"])


@dataclass(frozen=True)
class _Bulk:
    principal: Principal
    organisation_id: str
    batch_id: str
    kind: CommandKind
    parameters: dict[str, Any]
    device_ids: list[str]
    group_ids: list[str]


async def queue_bulk(
    store: Store,
    principal: Principal,
    organisation: str,
    kind: str,
    parameters: Mapping[str, object],
    *,
    device_ids: Iterable[str] = (),
    group_ids: Iterable[str] = (),
    wakeups: Wakeups | None = None,
) -> dict[str, Any]:
    """One command for many devices (named, and the members of groups) in one batch.

    Everything is queued in one write unit: all or nothing, and one commit for thousands.
    """
    org = await visible_organisation(store, principal, organisation)
    command_kind = parse_kind(kind)
    require_right(principal, Right.COMMANDS)  # owners give commands one own device at a time
    _require_may_give(principal, command_kind)
    values = check_parameters(command_kind, parameters)
    bulk = _Bulk(
        principal,
        org["id"],
        new_id(),
        command_kind,
        values,
        list(dict.fromkeys(device_ids)),
        list(dict.fromkeys(group_ids)),
    )
    if not bulk.device_ids and not bulk.group_ids:
        raise Invalid("name at least one device or group", field="device_ids")
    queued, skipped = await store.write(_queue_bulk, bulk)
    if wakeups is not None:
        wakeups.wake(queued)
    return {
        "batch_id": bulk.batch_id,
        "kind": command_kind.value,
        "queued": len(queued),
        "skipped": skipped,
    }


def _queue_bulk(conn: sqlite3.Connection, bulk: _Bulk) -> tuple[list[Waiting], list[str]]:
    named = devices_in(conn, bulk.organisation_id, bulk.device_ids)
    _refuse_unknown("device_ids", bulk.device_ids, {row["id"] for row in named})
    _refuse_unknown(
        "group_ids", bulk.group_ids, groups_in(conn, bulk.organisation_id, bulk.group_ids)
    )
    devices = {row["id"]: row for row in named}
    devices.update(
        (row["id"], row) for row in devices_of_groups(conn, bulk.organisation_id, bulk.group_ids)
    )
    targets = [row for row in devices.values() if row["state"] not in REFUSING_DEVICE_STATES]
    skipped = [row["id"] for row in devices.values() if row["state"] in REFUSING_DEVICE_STATES]
    if not targets:
        raise Invalid(
            "none of these devices takes commands (removed or inactive)", field="device_ids"
        )
    if len(targets) > MAX_BULK_DEVICES:
        raise Invalid(f"at most {MAX_BULK_DEVICES} devices per bulk command", field="device_ids")
    at = now()
    insert_commands(
        conn,
        (
            _new_command(
                bulk.principal,
                bulk.organisation_id,
                device["id"],
                bulk.kind,
                bulk.parameters,
                at,
                bulk.batch_id,
            )
            | {"owner_id": device["owner_id"]}
            for device in targets
        ),
    )
    insert_event(
        conn,
        audit_event(
            bulk.principal,
            "command.bulk_queued",
            organisation_id=bulk.organisation_id,
            target_type="command_batch",
            target_id=bulk.batch_id,
            details={
                "kind": bulk.kind.value,
                "parameters": KINDS[bulk.kind].redacted(bulk.parameters),
                "named_devices": len(bulk.device_ids),
                "group_ids": bulk.group_ids,
                "queued": len(targets),
                "skipped": len(skipped),
            },
        ),
    )
    waiting = [Waiting(bulk.organisation_id, row["id"], row["protocol"]) for row in targets]
    return waiting, skipped


def _refuse_unknown(field: str, asked: list[str], found: set[str]) -> None:
    missing = [value for value in asked if value not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Invalid(f"{field}: no such {field[:-4]} {missing[0]}{more}", field=field)


async def device_commands(
    store: Store, principal: Principal, organisation: str, device_id: str, query: ListQuery
) -> Page:
    """One device's commands, newest first unless sorted otherwise."""
    org = await visible_organisation(store, principal, organisation)
    owner_scope(principal)
    query = query.checked(COMMAND_LIST)
    return _page(await store.read(_device_page, principal, org["id"], device_id, query), query)


def _device_page(
    conn: sqlite3.Connection,
    principal: Principal,
    organisation_id: str,
    device_id: str,
    query: ListQuery,
) -> tuple[list[Row], int]:
    _device_for(conn, principal, organisation_id, device_id)
    return commands_page(conn, organisation_id, query, device_id, owner_scope(principal))


async def organisation_commands(
    store: Store, principal: Principal, organisation: str, query: ListQuery
) -> Page:
    """The organisation's commands; a device owner sees those queued for them."""
    org = await visible_organisation(store, principal, organisation)
    owner = owner_scope(principal)
    query = query.checked(COMMAND_LIST)
    return _page(await store.read(commands_page, org["id"], query, None, owner), query)


async def get_command(
    store: Store, principal: Principal, organisation: str, command_id: str
) -> dict[str, Any]:
    org = await visible_organisation(store, principal, organisation)
    owner_scope(principal)
    return public(await store.read(_command_for, principal, org["id"], command_id))


async def cancel_command(
    store: Store, principal: Principal, organisation: str, command_id: str
) -> dict[str, Any]:
    """Withdraw a queued or sent command; cancelling a cancelled one changes nothing."""
    org = await visible_organisation(store, principal, organisation)
    if principal.kind is not AccountKind.USER:
        require_right(principal, Right.COMMANDS)
    row = await store.read(_command_for, principal, org["id"], command_id)
    kind = CommandKind(row["kind"])
    if principal.kind is AccountKind.USER:
        if row["created_by"] != principal.account_id:
            raise Forbidden("device owners may cancel only the commands they gave")
        if row["device_owner_id"] != principal.account_id:
            raise Forbidden("the device is no longer yours")
    else:
        _require_may_give(principal, kind)
    event = audit_event(
        principal,
        "command.cancelled",
        organisation_id=org["id"],
        target_type="command",
        target_id=command_id,
        details={"kind": kind.value, "device_id": row["device_id"], "was": row["state"]},
    )
    return public(await store.write(_cancel, command_id, event))


def _cancel(conn: sqlite3.Connection, command_id: str, event: dict[str, Any]) -> Row:
    row = command_row(conn, command_id)
    if row["state"] == State.CANCELLED:
        return row  # cancelling twice is what the first time did
    return _move(conn, row, State.CANCELLED, {}, event)


async def batch_status(
    store: Store, principal: Principal, organisation: str, batch_id: str
) -> dict[str, Any]:
    """How far a bulk command got: its commands counted per state."""
    org = await visible_organisation(store, principal, organisation)
    require_kind(principal, AccountKind.MANAGER, AccountKind.SUPERVISOR, AccountKind.VENDOR)
    rows = await store.read(batch_summary, org["id"], batch_id)
    if not rows:
        raise NotFound("no such batch")
    counts = dict.fromkeys((state.value for state in State), 0)
    for row in rows:
        counts[row["state"]] += row["count"]
    return {
        "batch_id": batch_id,
        "kind": rows[0]["kind"],
        "created_at": min(row["created_at"] for row in rows),
        "total": sum(counts.values()),
        "counts": counts,
    }


# --------------------------------------------------------------------------- protocol side


async def pending_commands(
    store: Store, device_id: str, *, include_sent: bool = False
) -> list[dict[str, Any]]:
    """What a device still has to be given, oldest first.

    ``include_sent`` adds the commands sent but not answered, for protocols that deliver
    again when an answer was lost (Apple MDM after ``NotNow``, a dropped connection).
    """
    states = [State.QUEUED.value, *([State.SENT.value] if include_sent else [])]
    rows = await store.read(commands_of_device, device_id, states)
    return [public(row, for_device=True) for row in rows]


async def mark_sent(store: Store, command_id: str) -> dict[str, Any]:
    """The command went to its device; sending it again keeps the first ``sent_at``."""
    return public(await store.write_point(mark_sent_unit, command_id), for_device=True)


def mark_sent_unit(conn: sqlite3.Connection, command_id: str, read: Row | None = None) -> Row:
    """``read``: the command as read before this unit (a protocol's snapshot of what its
    device has to be given), which spares reading it again. A queued one is moved on only
    if still queued; should it have moved on since, it is read again, as if never read."""
    if read is not None and read["state"] == State.QUEUED:
        with contextlib.suppress(RefusedTransition):
            return _move(conn, read, State.SENT, {}, None)
    row = command_row(conn, command_id)
    if row["state"] == State.SENT:
        return row
    return _move(conn, row, State.SENT, {}, None)


async def record_result(
    store: Store, command_id: str, ok: bool, result: Mapping[str, Any]
) -> dict[str, Any]:
    """The device's answer. The same final answer again changes nothing (devices repeat
    themselves after a lost response); a different one is refused."""
    if not isinstance(result, Mapping):
        raise Invalid("result must be a JSON object", field="result")
    try:
        stored = json.dumps(dict(result), sort_keys=True)
    except (TypeError, ValueError):
        raise Invalid("result must be a JSON object", field="result") from None
    target = State.ACKNOWLEDGED if ok else State.FAILED
    return public(
        await store.write_point(record_result_unit, command_id, target, stored), for_device=True
    )


def record_result_unit(
    conn: sqlite3.Connection, command_id: str, target: State, stored: str, read: Row | None = None
) -> Row:
    """``read``: the command as read before this unit (e.g. in the snapshot that found the
    command a device answered), which spares reading it again. A command read in a state
    that is not final is moved on only if still in that state; should that be refused (it
    moved on since, or may not move so), it is read again, as if never read.
    """
    if read is not None and read["state"] not in FINAL:
        with contextlib.suppress(RefusedTransition):
            return _record_result(conn, read, target, stored)
    return _record_result(conn, command_row(conn, command_id), target, stored)


def _record_result(conn: sqlite3.Connection, row: Row, target: State, stored: str) -> Row:
    command_id = row["id"]
    if row["state"] == target and row["result"] == stored:
        return row
    values: dict[str, Any] = {"result": stored}
    if row["owner_id"] is not None:
        device = device_in(conn, row["organisation_id"], row["device_id"])
        if device is None or device["owner_id"] != row["owner_id"]:
            values["owner_id"] = None  # the device changed hands: the answer may be theirs
    event = audit_event(
        None,
        f"command.{target.value}",
        organisation_id=row["organisation_id"],
        target_type="command",
        target_id=command_id,
        details={"kind": row["kind"], "device_id": row["device_id"]},
    )
    return _move(conn, row, target, values, event)


def command_row(conn: sqlite3.Connection, command_id: str) -> Row:
    row = command_by_id(conn, command_id)
    if row is None:
        raise NotFound("no such command")
    return row


def _move(
    conn: sqlite3.Connection,
    row: Row,
    target: State,
    values: dict[str, Any],
    event: dict[str, Any] | None,
) -> Row:
    """Move a command to ``target`` if the state table allows it, with its timestamps."""
    current = State(row["state"])
    check_transition(current, target)
    at = now()
    changes = {**values, "state": target.value, "updated_at": at}
    if target is State.SENT:
        changes["sent_at"] = at
    elif target in FINAL:
        changes["completed_at"] = at
    if change_state(conn, row["id"], current.value, changes) != 1:
        raise RefusedTransition(current, target)  # moved on meanwhile (another writer)
    if event is not None:
        insert_event(conn, event)
    return row | changes
