"""Installation codes: what a person types (or scans) to enrol a device.

A code is made automatically with every device (purpose ``enrol_device``) and sent to its
owner; managers make others on demand: one that creates a new account and its device, one
that adds a device to an existing account, one that binds an existing inventory entry. A
code expires (14 days unless told otherwise) and has a usage limit (1 unless told
otherwise; ``None`` means unlimited, for mass enrolment).

The text is 12 characters from an alphabet without the look-alikes 0/O and 1/I, shown in
groups of four (``ABCD-EFGH-JKLM``): 60 random bits, so guessing is hopeless, and short
enough to read over the phone. Codes are unique service-wide, because a device types one
without saying which organisation it belongs to. Typing is forgiving: case, spaces and
dashes do not matter.

:func:`redeem_installation_code` is what the protocols call at enrolment: it checks and
counts a use in one write unit, so a code with a usage limit of one is used exactly once
however many devices race for it. A revoked code is refused exactly like an unknown one.

Device owners (user accounts) see the codes of their own devices and their account, so the
self-service portal can show them the QR code; they make and revoke none.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from . import qrcode
from .audit import audit_event
from .errors import Invalid, NotFound
from .ids import new_id
from .listing import ListQuery, ListSpec, Page
from .organisations import changeable_organisation, visible_organisation
from .principals import AccountKind, Principal, Right, owner_scope
from .store import Store
from .store.accounts import account_by_id, account_in, template_in
from .store.audit import insert_event
from .store.devices import (
    CODE_COLUMNS,
    REMOVED,
    code_by_text,
    code_in,
    codes_page,
    count_use,
    device_by_id,
    insert_code,
    inventory_device_in,
    revoke_code,
)
from .store.organisations import organisation_by_id
from .store.rows import Row
from .timestamps import format_time, now, parse_time

#: 32 symbols (5 bits each) without 0, O, 1 and I, which people mistake for each other.
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GROUP_LENGTH, GROUPS = 4, 3
DEFAULT_LIFETIME = timedelta(days=14)
#: A code is not an account: a year is as long as one may wait for its device.
MAX_LIFETIME = timedelta(days=366)
#: Enough to make a fresh code even if a few collide (at 60 bits none practically will).
_ATTEMPTS = 8


class Purpose:
    ENROL_DEVICE = "enrol_device"  # made with a device; enrols that device
    NEW_ACCOUNT_AND_DEVICE = "new_account_and_device"
    NEW_DEVICE_FOR_ACCOUNT = "new_device_for_account"
    BIND_DEVICE = "bind_device"  # binds an existing inventory entry


PURPOSES = (
    Purpose.ENROL_DEVICE,
    Purpose.NEW_ACCOUNT_AND_DEVICE,
    Purpose.NEW_DEVICE_FOR_ACCOUNT,
    Purpose.BIND_DEVICE,
)
#: Purposes whose code names an existing device.
_FOR_DEVICE = (Purpose.ENROL_DEVICE, Purpose.BIND_DEVICE)

LIST = ListSpec(
    sortable=tuple(CODE_COLUMNS),
    filterable=("purpose", "code", "device", "account"),
    default_sort="created_at",
    default_descending=True,
)


class InstallationCodeRefused(Invalid):
    """A code that cannot be used; ``reason`` tells the protocol what to answer the device.

    Reasons: ``unknown`` (also revoked codes: a revoked code must not be told apart from a
    mistyped one), ``expired``, ``used_up``, ``organisation_inactive``,
    ``device_unavailable`` (its device was removed or deactivated) and
    ``account_unavailable``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, field="code")
        self.reason = reason


# --------------------------------------------------------------------------- code text


def new_code_text() -> str:
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH * GROUPS))
    return _grouped(symbols)


def _grouped(symbols: str) -> str:
    return "-".join(symbols[i : i + GROUP_LENGTH] for i in range(0, len(symbols), GROUP_LENGTH))


def normalise_code(typed: str) -> str | None:
    """The stored form of a typed code, or None if it cannot be one."""
    symbols = "".join(typed.split()).replace("-", "").upper()
    if len(symbols) != GROUP_LENGTH * GROUPS or any(s not in ALPHABET for s in symbols):
        return None
    return _grouped(symbols)


def enrolment_uri(public_url: str, organisation_code: str, code: str) -> str:
    """What the QR code carries: the client app learns server, organisation and code."""
    query = urlencode({"server": public_url, "organisation": organisation_code, "code": code})
    return f"emm://enrol?{query}"


# --------------------------------------------------------------------------- codes


def state_of(row: Row, at: str) -> str:
    """``used_up`` before ``expired``: a spent code stays spent whatever its date."""
    if row["usage_limit"] is not None and row["times_used"] >= row["usage_limit"]:
        return "used_up"
    if row["expires_at"] is not None and row["expires_at"] <= at:
        return "expired"
    return "active"


def public(row: Row, at: str | None = None) -> dict[str, Any]:
    """A code as the API shows it."""
    return {
        "id": row["id"],
        "code": row["code"],
        "purpose": row["purpose"],
        "device": row["device_id"],
        "account": row["account_id"],
        "template": row["template_id"],
        "expires_at": row["expires_at"],
        "usage_limit": row["usage_limit"],
        "times_used": row["times_used"],
        "last_used_at": row["last_used_at"],
        "state": state_of(row, at or now()),
        "created_at": row["created_at"],
    }


def code_row(
    principal: Principal,
    organisation_id: str,
    purpose: str,
    *,
    device_id: str | None = None,
    account_id: str | None = None,
    template_id: str | None = None,
    expires_at: str | None = None,
    usage_limit: int | None = 1,
) -> Row:
    """A new code (its text is drawn when it is inserted, see :func:`insert_new_code`)."""
    at = now()
    return {
        "id": new_id(),
        "organisation_id": organisation_id,
        "code": "",
        "purpose": purpose,
        "device_id": device_id,
        "account_id": account_id,
        "template_id": template_id,
        "expires_at": expires_at or format_time(datetime.now(UTC) + DEFAULT_LIFETIME),
        "usage_limit": usage_limit,
        "times_used": 0,
        "last_used_at": None,
        "created_by": principal.account_id,
        "created_at": at,
        "revoked_at": None,
    }


def insert_new_code(conn: sqlite3.Connection, principal: Principal, code: Row) -> Row:
    """Draw a text no other code has, insert the code and audit it; for write units.

    The writer runs one unit at a time, so the look-up and the insert cannot race on this
    node; the unique index still guards a cluster (as a Conflict).
    """
    for _ in range(_ATTEMPTS):
        text = new_code_text()
        if code_by_text(conn, text) is None:
            break
    else:  # pragma: no cover - 8 collisions in a row at 60 bits do not happen
        raise RuntimeError("could not draw a fresh installation code")
    code = code | {"code": text}
    insert_code(conn, code)
    insert_event(
        conn,
        audit_event(
            principal,
            "installation_code.created",
            organisation_id=code["organisation_id"],
            target_type="installation_code",
            target_id=code["id"],
            # Never the text: it is a credential for enrolment.
            details={
                "purpose": code["purpose"],
                "device": code["device_id"],
                "account": code["account_id"],
                "expires_at": code["expires_at"],
                "usage_limit": code["usage_limit"],
            },
        ),
    )
    return code


@dataclass(frozen=True)
class NewCode:
    purpose: str
    device: str | None = None
    account: str | None = None
    template: str | None = None
    expires_at: str | None = None
    usage_limit: int | None = 1

    def check(self) -> None:
        """What each purpose needs and allows (references are checked in the write)."""
        if self.purpose not in PURPOSES:
            raise Invalid(f"purpose must be one of {', '.join(PURPOSES)}", field="purpose")
        needs = {
            "device": self.purpose in _FOR_DEVICE,
            "account": self.purpose == Purpose.NEW_DEVICE_FOR_ACCOUNT,
        }
        for name, needed in needs.items():
            given = getattr(self, name) is not None
            if needed and not given:
                raise Invalid(f"a {self.purpose} code needs a {name}", field=name)
            if given and not needed:
                raise Invalid(f"a {self.purpose} code takes no {name}", field=name)
        if self.template is not None and self.purpose != Purpose.NEW_ACCOUNT_AND_DEVICE:
            raise Invalid("only new_account_and_device codes take a template", field="template")
        if self.usage_limit is not None and self.usage_limit < 1:
            raise Invalid("usage_limit must be at least 1", field="usage_limit")

    def expiry(self) -> str | None:
        """``expires_at`` in the stored form; it must lie in the future, within a year."""
        if self.expires_at is None:
            return None
        try:
            moment = parse_time(self.expires_at)
        except ValueError:
            raise Invalid("expires_at is not a date-time", field="expires_at") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # a time without offset is taken as UTC
        current = datetime.now(UTC)
        if moment <= current:
            raise Invalid("expires_at must lie in the future", field="expires_at")
        if moment > current + MAX_LIFETIME:
            raise Invalid("a code lives at most a year", field="expires_at")
        return format_time(moment)


async def create_code(
    store: Store, principal: Principal, organisation: str, new: NewCode
) -> dict[str, Any]:
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    new.check()
    code = code_row(
        principal,
        org["id"],
        new.purpose,
        device_id=new.device,
        account_id=new.account,
        template_id=new.template,
        expires_at=new.expiry(),
        usage_limit=new.usage_limit,
    )
    return public(await store.write(_create, principal, code))


def _create(conn: sqlite3.Connection, principal: Principal, code: Row) -> Row:
    """Check what the code refers to, in the same unit that inserts it."""
    org_id = code["organisation_id"]
    if (
        code["device_id"] is not None
        and inventory_device_in(conn, org_id, code["device_id"]) is None
    ):
        raise Invalid("no such device in this organisation", field="device")
    if code["account_id"] is not None:
        account = account_in(conn, org_id, code["account_id"])
        if account is None or account["kind"] != AccountKind.USER:
            raise Invalid("no such user account in this organisation", field="account")
    if code["template_id"] is not None:
        template = template_in(conn, org_id, code["template_id"])
        if template is None or template["kind"] != AccountKind.USER:
            raise Invalid("no such user account template in this organisation", field="template")
    return insert_new_code(conn, principal, code)


async def list_codes(
    store: Store, principal: Principal, organisation: str, query: ListQuery
) -> Page:
    org = await visible_organisation(store, principal, organisation)
    holder = owner_scope(principal)
    query = query.checked(LIST)
    rows, total = await store.read(codes_page, org["id"], query, holder)
    at = now()
    return Page([public(row, at) for row in rows], total, query.limit, query.offset)


async def _visible_code(
    store: Store, principal: Principal, organisation: str, code_id: str
) -> tuple[Row, Row]:
    """The organisation and the code, if ``principal`` may see it (else NotFound)."""
    org = await visible_organisation(store, principal, organisation)
    holder = owner_scope(principal)
    row = await store.read(_code_for, org["id"], code_id, holder)
    if row is None:
        raise NotFound("no such installation code")
    return org, row


def _code_for(
    conn: sqlite3.Connection, organisation_id: str, code_id: str, holder: str | None
) -> Row | None:
    row = code_in(conn, organisation_id, code_id)
    if row is None or holder is None or row["account_id"] == holder:
        return row
    device = (
        inventory_device_in(conn, organisation_id, row["device_id"]) if row["device_id"] else None
    )
    return row if device is not None and device["owner_id"] == holder else None


async def get_code(
    store: Store, principal: Principal, organisation: str, code_id: str
) -> dict[str, Any]:
    _, row = await _visible_code(store, principal, organisation, code_id)
    return public(row)


async def code_qr_svg(
    store: Store, principal: Principal, organisation: str, code_id: str, public_url: str
) -> str:
    """The code's enrolment URI as a QR code, to show on screen or print."""
    org, row = await _visible_code(store, principal, organisation, code_id)
    uri = enrolment_uri(public_url, org["code"], row["code"])
    return qrcode.to_svg(qrcode.encode(uri))


async def revoke(store: Store, principal: Principal, organisation: str, code_id: str) -> None:
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    await store.write(_revoke, principal, org["id"], code_id)


def _revoke(conn: sqlite3.Connection, principal: Principal, org_id: str, code_id: str) -> None:
    row = code_in(conn, org_id, code_id)
    if row is None:
        raise NotFound("no such installation code")
    revoke_code(conn, code_id, now())
    insert_event(
        conn,
        audit_event(
            principal,
            "installation_code.revoked",
            organisation_id=org_id,
            target_type="installation_code",
            target_id=code_id,
            details={"purpose": row["purpose"], "times_used": row["times_used"]},
        ),
    )


# --------------------------------------------------------------------------- redemption


@dataclass(frozen=True)
class Grant:
    """What a redeemed code allows the enrolling device to do."""

    code_id: str
    organisation_id: str
    organisation_code: str
    purpose: str
    device_id: str | None  # enrol_device, bind_device: this inventory entry
    account_id: str | None  # new_device_for_account: the device's owner
    template_id: str | None  # new_account_and_device: the new account's template
    times_used: int


async def redeem_installation_code(
    store: Store, code_text: str, *, source: str | None = None
) -> Grant:
    """Use a code once at enrolment; raises :class:`InstallationCodeRefused`.

    Every check and the count happen in one write unit: two devices racing for the last
    use cannot both get it. A refusal changes nothing.
    """
    text = normalise_code(code_text)
    if text is None:
        raise InstallationCodeRefused("unknown installation code", "unknown")
    return await store.write(redeem_unit, text, now(), source)


def redeem_unit(conn: sqlite3.Connection, text: str, at: str, source: str | None) -> Grant:
    row = code_by_text(conn, text)
    if row is None or row["revoked_at"] is not None:
        raise InstallationCodeRefused("unknown installation code", "unknown")
    state = state_of(row, at)
    if state == "used_up":
        raise InstallationCodeRefused("this installation code has been used up", "used_up")
    if state == "expired":
        raise InstallationCodeRefused("this installation code has expired", "expired")
    organisation = organisation_by_id(conn, row["organisation_id"])
    if organisation is None or not organisation["active"]:
        raise InstallationCodeRefused("the organisation is inactive", "organisation_inactive")
    if row["device_id"] is not None:
        device = device_by_id(conn, row["device_id"])
        if device is None or device["state"] in (REMOVED, "inactive"):
            raise InstallationCodeRefused(
                "the code's device was removed or deactivated", "device_unavailable"
            )
    if row["account_id"] is not None:
        account = account_by_id(conn, row["account_id"])
        if account is None or not account["active"]:
            raise InstallationCodeRefused(
                "the code's account was removed or deactivated", "account_unavailable"
            )
    if count_use(conn, row["id"], at) != 1:  # guarded again in SQL, for other writers
        raise InstallationCodeRefused("this installation code has been used up", "used_up")
    insert_event(
        conn,
        audit_event(
            None,
            "installation_code.redeemed",
            organisation_id=row["organisation_id"],
            target_type="installation_code",
            target_id=row["id"],
            details={"purpose": row["purpose"], "device": row["device_id"]},
            actor="enrolment",
            source=source,
        ),
    )
    return Grant(
        code_id=row["id"],
        organisation_id=row["organisation_id"],
        organisation_code=organisation["code"],
        purpose=row["purpose"],
        device_id=row["device_id"],
        account_id=row["account_id"],
        template_id=row["template_id"],
        times_used=row["times_used"] + 1,
    )
