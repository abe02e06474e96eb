"""Accounts: an organisation's device owners, managers and resources; templates, name policy;
and the vendor (master) admins who look after organisations.

Three rules shape everything here:

- **Nobody grants more than they hold.** A manager's rights are a subset of the rights of
  whoever set them (system accounts hold all), and a manager may not touch a manager (or a
  manager template) holding rights the actor lacks, which also means nobody raises their
  own rights.
- **Every account comes from a template**, which presets kind, rights and locale. When none
  is named, the organisation's default template of the kind is used, made on first use, so
  an organisation never has to set templates up before its first account.
- **Login ids follow the organisation's name policy**, whose rule text is generated from
  the policy itself, so what users are told is exactly what is checked.

Passwords chosen by an administrator are taken as they are; otherwise a one-time password
is generated, answered once and never stored in clear, and its first sign-in may only
change it (engine/auth.py). Deactivating an account or resetting its password ends its
sessions in the same unit of work.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from .audit import audit_event
from .auth import check_password_rules, sign_in_name
from .errors import AlreadyExists, Forbidden, Invalid, NotFound, refuse_unknown
from .ids import new_id
from .listing import ListQuery, ListSpec, Page
from .organisations import changeable_organisation, readable_organisation, visible_organisation
from .passwords import hash_password, one_time_password
from .principals import (
    ALL_RIGHTS,
    AccountKind,
    Principal,
    Right,
    parse_rights,
    require_organisation_view,
    require_supervisor,
)
from .store import Conflict, Store
from .store.accounts import (
    account_in,
    accounts_page,
    delete_account,
    delete_template,
    devices_owned,
    release_vendor_organisations,
    revoke_account_tokens,
    template_in,
    template_named,
    template_users,
    templates_page,
    update_account as update_account_row,
    update_template as update_template_row,
    vendor_by_id,
    vendor_organisations,
    vendors_page,
)
from .store.audit import insert_event, insert_with_event
from .store.organisations import update_organisation
from .store.rows import Row
from .store.sign_in import clear_attempts
from .timestamps import now

#: Kinds of account an organisation has (system accounts have none).
ORGANISATION_KINDS = (AccountKind.USER, AccountKind.MANAGER, AccountKind.RESOURCE)
#: The template used when an account is created without naming one; made on first use.
DEFAULT_TEMPLATES = {
    AccountKind.USER: "Default user",
    # A manager made without saying more can see, not change: rights are given on purpose.
    AccountKind.MANAGER: "Default manager",
    AccountKind.RESOURCE: "Default resource",
}

EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")
PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ()./-]{2,31}")
LOCALE_PATTERN = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")

ACCOUNT_LIST = ListSpec(
    sortable=("login", "display_name", "email", "kind", "active", "created_at"),
    filterable=("login", "display_name", "email", "kind", "active"),
    default_sort="login",
)
TEMPLATE_LIST = ListSpec(
    sortable=("name", "kind", "locale", "created_at"),
    filterable=("name", "kind", "locale"),
    default_sort="name",
)
VENDOR_LIST = ListSpec(
    sortable=("login", "display_name", "email", "active", "created_at"),
    filterable=("login", "display_name", "email", "active"),
    default_sort="login",
)

#: What PATCH may change, per thing (login and kind never change).
ACCOUNT_EDITABLE = (
    "display_name",
    "email",
    "phone_number",
    "locale",
    "rights",
    "active",
    "template",
)
TEMPLATE_EDITABLE = ("name", "rights", "locale", "description")
VENDOR_EDITABLE = ("display_name", "email", "active")


# --------------------------------------------------------------------------- name policy


@dataclass(frozen=True)
class NamePolicy:
    """Rules for login ids: length, allowed characters, forbidden words.

    ``allowed_characters`` is written like a regular-expression character class without
    brackets: single characters and ranges (``a-z0-9._-``); a ``-`` first or last is itself.
    Forbidden words are matched as substrings, ignoring case.
    """

    min_length: int = 3
    max_length: int = 64
    allowed_characters: str = "A-Za-z0-9._@-"
    forbidden_words: tuple[str, ...] = ()

    @classmethod
    def stored(cls, text: str | None) -> NamePolicy:
        """The policy kept in ``organisations.name_policy``; ``{}`` means the default."""
        values = json.loads(text or "{}")
        if not values:
            return cls()
        return cls(
            values["min_length"],
            values["max_length"],
            values["allowed_characters"],
            tuple(values["forbidden_words"]),
        )

    def checked(self) -> NamePolicy:
        """This policy if it makes sense (refused naming the member at fault)."""
        if self.min_length < 1:
            raise Invalid("min_length must be at least 1", field="min_length")
        if self.max_length < self.min_length:
            raise Invalid("max_length must be at least min_length", field="max_length")
        self.ranges()  # refuses a malformed character class
        for word in self.forbidden_words:
            if not word.strip():
                raise Invalid("forbidden words must not be empty", field="forbidden_words")
        return self

    def ranges(self) -> tuple[tuple[str, str], ...]:
        text = self.allowed_characters
        ranges: list[tuple[str, str]] = []
        i = 0
        while i < len(text):
            if i + 2 < len(text) and text[i + 1] == "-":
                low, high = text[i], text[i + 2]
                i += 3
            else:
                low = high = text[i]
                i += 1
            for char in (low, high):
                if not char.isprintable() or char.isspace():
                    raise Invalid(
                        "allowed_characters: only visible characters and ranges such as a-z",
                        field="allowed_characters",
                    )
            if low > high:
                raise Invalid(
                    f"allowed_characters: the range {low}-{high} is backwards",
                    field="allowed_characters",
                )
            ranges.append((low, high))
        if not ranges:
            raise Invalid("allowed_characters must not be empty", field="allowed_characters")
        return tuple(ranges)

    @property
    def rule(self) -> str:
        """What users are shown: generated from the policy, so it cannot drift from it."""
        allowed = _either(
            f"{low}-{high}" if low != high else f"'{low}'" for low, high in self.ranges()
        )
        text = f"Login ids have {self.min_length} to {self.max_length} characters: {allowed}"
        if self.forbidden_words:
            text += f"; they must not contain {_either(repr(w) for w in self.forbidden_words)}"
        return text + "."

    def check(self, login: str) -> None:
        """Refuse a login id that breaks the policy, saying why and what the rule is."""
        problem = None
        if len(login) < self.min_length:
            problem = "is too short"
        elif len(login) > self.max_length:
            problem = "is too long"
        else:
            ranges = self.ranges()
            bad = [c for c in login if not any(low <= c <= high for low, high in ranges)]
            folded = login.casefold()
            words = [w for w in self.forbidden_words if w.casefold() in folded]
            if bad:
                problem = f"may not contain {bad[0]!r}"
            elif words:
                problem = f"may not contain {words[0]!r}"
        if problem is not None:
            raise Invalid(f"the login id {problem}. {self.rule}", field="login")

    def as_json(self) -> dict[str, Any]:
        return {
            "min_length": self.min_length,
            "max_length": self.max_length,
            "allowed_characters": self.allowed_characters,
            "forbidden_words": list(self.forbidden_words),
        }


def _either(items: Iterable[str]) -> str:
    """``a, b or c``."""
    names = list(items)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def name_policy_view(organisation: Row) -> dict[str, Any]:
    policy = NamePolicy.stored(organisation["name_policy"])
    return policy.as_json() | {
        "rule": policy.rule,
        "default": json.loads(organisation["name_policy"] or "{}") == {},
    }


async def get_name_policy(store: Store, principal: Principal, key: str) -> dict[str, Any]:
    """Every account of the organisation may read it: users are shown its rule."""
    return name_policy_view(await visible_organisation(store, principal, key))


async def set_name_policy(
    store: Store, principal: Principal, key: str, policy: NamePolicy
) -> dict[str, Any]:
    """Replace the policy; existing login ids stay as they are (logins never change)."""
    org = await changeable_organisation(store, principal, key, Right.CONFIGURATION)
    policy = NamePolicy(
        policy.min_length,
        policy.max_length,
        policy.allowed_characters,
        tuple(word.strip() for word in policy.forbidden_words),
    ).checked()
    values = {"name_policy": json.dumps(policy.as_json()), "updated_at": now()}
    event = audit_event(
        principal,
        "name_policy.changed",
        organisation_id=org["id"],
        target_type="organisation",
        target_id=org["id"],
        details=policy.as_json(),
    )
    await store.write(_update_organisation, org["id"], values, event)
    return name_policy_view(org | values)


def _update_organisation(
    conn: sqlite3.Connection, organisation_id: str, values: dict[str, Any], event: dict[str, Any]
) -> None:
    update_organisation(conn, organisation_id, values)
    insert_event(conn, event)


# --------------------------------------------------------------------------- rights


def _held(principal: Principal) -> frozenset[Right]:
    if principal.is_system:
        return ALL_RIGHTS
    if principal.kind is AccountKind.MANAGER:
        return frozenset(Right(r) for r in principal.rights)
    return frozenset()


def _require_holds(principal: Principal, rights: frozenset[Right], why: str) -> None:
    """Refuse unless ``principal`` holds every one of ``rights``."""
    missing = rights - _held(principal)
    if missing:
        raise Forbidden(f"{why}: you lack {', '.join(sorted(missing))}")


def _requested_rights(values: object) -> frozenset[Right]:
    try:
        return parse_rights(values)
    except ValueError as exc:
        raise Invalid(str(exc), field="rights") from None


def _stored_rights(row: Row) -> frozenset[Right]:
    return parse_rights(json.loads(row["rights"]))


def _require_outranks(principal: Principal, row: Row) -> None:
    """A manager (or manager template) is changed only by someone holding all its rights."""
    if row["kind"] == AccountKind.MANAGER:
        _require_holds(principal, _stored_rights(row), "it holds rights you do not")


# --------------------------------------------------------------------------- values


def _check_values(values: dict[str, Any]) -> dict[str, Any]:
    """Contact values as stored: trimmed, empty text meaning "none", formats checked."""
    checked = dict(values)
    if "display_name" in checked:
        checked["display_name"] = checked["display_name"].strip()
    for name, pattern in (
        ("email", EMAIL_PATTERN),
        ("phone_number", PHONE_PATTERN),
        ("locale", LOCALE_PATTERN),
    ):
        if name not in checked:
            continue
        value = (checked[name] or "").strip() or None
        if value is not None and not pattern.fullmatch(value):
            raise Invalid(f"{name}: not a valid {name.replace('_', ' ')}", field=name)
        checked[name] = value
    return checked


async def _initial_password(
    kind: AccountKind, password: str | None
) -> tuple[str | None, str | None]:
    """(hash, one-time password to answer once): chosen, generated, or none for resources."""
    if kind is AccountKind.RESOURCE:
        if password is not None:
            raise Invalid("resource accounts never sign in: no password", field="password")
        return None, None
    generated = None
    if password is None:
        password = generated = one_time_password()
    else:
        try:
            check_password_rules(password)
        except Invalid as exc:
            raise Invalid(str(exc), field="password") from None
    return await trio.to_thread.run_sync(hash_password, password), generated


# --------------------------------------------------------------------------- views


def account_view(row: Row) -> dict[str, Any]:
    """An account as the API shows it (never its password hash or lock-out counters)."""
    return {
        "id": row["id"],
        "organisation_id": row["organisation_id"],
        "login": row["login"],
        "kind": row["kind"],
        "display_name": row["display_name"],
        "email": row["email"],
        "phone_number": row["phone_number"],
        "locale": row["locale"],
        "rights": sorted(json.loads(row["rights"])),
        "active": bool(row["active"]),
        "template": row["template_id"],
        "must_change_password": bool(row["must_change_password"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def template_view(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "rights": sorted(json.loads(row["rights"])),
        "locale": row["locale"],
        "description": row["description"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def vendor_view(row: Row, organisations: list[str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "login": row["login"],
        "display_name": row["display_name"],
        "email": row["email"],
        "active": bool(row["active"]),
        "must_change_password": bool(row["must_change_password"]),
        "organisations": organisations,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


# --------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class NewAccount:
    login: str
    kind: str | None = None  # taken from the template when one is named
    template: str | None = None  # id; None: the default template of the kind
    display_name: str = ""
    email: str | None = None
    phone_number: str | None = None
    locale: str | None = None  # None: the template's
    rights: list[str] | None = None  # managers only; None: the template's
    password: str | None = None  # None: a one-time password is generated


async def list_accounts(store: Store, principal: Principal, key: str, query: ListQuery) -> Page:
    org = await readable_organisation(store, principal, key)
    query = query.checked(ACCOUNT_LIST)
    rows, total = await store.read(accounts_page, org["id"], query)
    return Page([account_view(row) for row in rows], total, query.limit, query.offset)


async def get_account(
    store: Store, principal: Principal, key: str, account_id: str
) -> dict[str, Any]:
    """Managers and system accounts read any account of the organisation; owners their own."""
    org = await visible_organisation(store, principal, key)
    if account_id != principal.account_id:
        require_organisation_view(principal)
    return account_view(await _account(store, org, account_id))


async def _account(store: Store, org: Row, account_id: str) -> Row:
    row = await store.read(account_in, org["id"], account_id)
    if row is None:
        raise NotFound("no such account")
    return row


async def create_account(
    store: Store, principal: Principal, key: str, new: NewAccount
) -> dict[str, Any]:
    """Create an account from a template; answers a generated password once."""
    org = await changeable_organisation(store, principal, key, Right.ACCOUNTS)
    template, default_template = await _template_for(store, org["id"], new.template, new.kind)
    kind = AccountKind(template["kind"])
    if new.rights is None:
        rights = _stored_rights(template)
    elif kind is AccountKind.MANAGER or not new.rights:
        rights = _requested_rights(new.rights)
    else:
        raise Invalid("only managers hold rights", field="rights")
    _require_holds(principal, rights, "nobody grants more than they hold")
    NamePolicy.stored(org["name_policy"]).check(new.login)
    values = _check_values(
        {
            "display_name": new.display_name,
            "email": new.email,
            "phone_number": new.phone_number,
            "locale": new.locale if new.locale is not None else template["locale"],
        }
    )
    password_hash, generated = await _initial_password(kind, new.password)
    at = now()
    account = {
        "id": new_id(),
        "organisation_id": org["id"],
        "login": new.login,
        "kind": kind.value,
        **values,
        "password_hash": password_hash,
        "must_change_password": int(generated is not None),
        "rights": json.dumps(sorted(rights)),
        "template_id": template["id"],
        "created_at": at,
        "updated_at": at,
    }
    try:
        account["template_id"] = await store.write(
            _create_account, principal, account, default_template
        )
    except Conflict:
        raise AlreadyExists(f"an account with login id {new.login!r} exists already") from None
    return account_view(account | {"active": 1}) | {"one_time_password": generated}


async def _template_for(
    store: Store, organisation_id: str, template_id: str | None, kind: str | None
) -> tuple[Row, Row | None]:
    """The template an account is made from, and the default template to make first if any."""
    if template_id is not None:
        row = await store.read(template_in, organisation_id, template_id)
        if row is None:
            raise Invalid("no such account template", field="template")
        if kind is not None and kind != row["kind"]:
            raise Invalid(f"the template makes {row['kind']} accounts", field="kind")
        return row, None
    wanted = kind or AccountKind.USER
    if wanted not in ORGANISATION_KINDS:
        raise Invalid("kind: user, manager or resource", field="kind")
    name = DEFAULT_TEMPLATES[AccountKind(wanted)]
    row = await store.read(template_named, organisation_id, name)
    if row is not None:
        if row["kind"] != wanted:
            raise Invalid(f"the template {name!r} is not a {wanted} template", field="template")
        return row, None
    made = _template_row(organisation_id, AccountKind(wanted), name=name)
    return made, made


def _template_row(organisation_id: str, kind: AccountKind, **values: Any) -> dict[str, Any]:
    """A new template row: no rights, locale or description unless ``values`` say so."""
    at = now()
    return {
        "id": new_id(),
        "organisation_id": organisation_id,
        "kind": kind.value,
        "rights": "[]",
        "locale": None,
        "description": "",
        "created_at": at,
        "updated_at": at,
    } | values


def _create_account(
    conn: sqlite3.Connection,
    principal: Principal,
    account: dict[str, Any],
    default_template: dict[str, Any] | None,
) -> str:
    """Insert the account (and its default template, made on first use); its template id."""
    template_id = account["template_id"]
    if default_template is not None:
        # Made meanwhile by a concurrent request? Then that one is the default.
        existing = template_named(conn, account["organisation_id"], default_template["name"])
        if existing is not None:
            template_id = existing["id"]
        else:
            insert_with_event(
                conn,
                "account_templates",
                default_template,
                _template_event(principal, "created", default_template),
            )
    insert_with_event(
        conn,
        "accounts",
        account | {"template_id": template_id},
        audit_event(
            principal,
            "account.created",
            organisation_id=account["organisation_id"],
            target_type="account",
            target_id=account["id"],
            details={
                "login": account["login"],
                "kind": account["kind"],
                "rights": json.loads(account["rights"]),
                "template": template_id,
            },
        ),
    )
    return template_id


async def update_account(
    store: Store, principal: Principal, key: str, account_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change an account; active=false ends its sessions at once."""
    org = await changeable_organisation(store, principal, key, Right.ACCOUNTS)
    row = await _account(store, org, account_id)
    _require_outranks(principal, row)
    refuse_unknown(changes, ACCOUNT_EDITABLE)
    values = _check_values(
        {k: v for k, v in changes.items() if k not in ("rights", "active", "template")}
    )
    details = dict(changes)
    if "rights" in changes:
        if row["kind"] != AccountKind.MANAGER:
            raise Invalid("only managers hold rights", field="rights")
        rights = _requested_rights(changes["rights"])
        _require_holds(principal, rights, "nobody grants more than they hold")
        values["rights"] = json.dumps(sorted(rights))
        details["rights"] = sorted(rights)
    if "template" in changes:
        # The account now counts as made from it; presets are not re-applied.
        template = await store.read(template_in, org["id"], changes["template"])
        if template is None or template["kind"] != row["kind"]:
            raise Invalid(f"no such {row['kind']} account template", field="template")
        values["template_id"] = template["id"]
    if "active" in changes:
        if not changes["active"] and row["id"] == principal.account_id:
            raise Forbidden("you cannot deactivate your own account")
        values["active"] = int(changes["active"])
    values["updated_at"] = now()
    event = audit_event(
        principal,
        "account.changed",
        organisation_id=org["id"],
        target_type="account",
        target_id=row["id"],
        details=details,
    )
    await store.write(_update_account, row["id"], values, event)
    return account_view(row | values)


def _update_account(
    conn: sqlite3.Connection, account_id: str, values: dict[str, Any], event: dict[str, Any]
) -> None:
    update_account_row(conn, account_id, values)
    if values.get("active") == 0:
        revoke_account_tokens(conn, account_id, values["updated_at"])
    insert_event(conn, event)


async def remove_account(store: Store, principal: Principal, key: str, account_id: str) -> None:
    """Remove an account that owns no devices (they would be left without an owner)."""
    org = await changeable_organisation(store, principal, key, Right.ACCOUNTS)
    row = await _account(store, org, account_id)
    if row["id"] == principal.account_id:
        raise Forbidden("you cannot remove your own account")
    _require_outranks(principal, row)
    event = audit_event(
        principal,
        "account.removed",
        organisation_id=org["id"],
        target_type="account",
        target_id=row["id"],
        details={"login": row["login"], "kind": row["kind"]},
    )
    await store.write(_remove_account, row["id"], event)


def _remove_account(conn: sqlite3.Connection, account_id: str, event: dict[str, Any]) -> None:
    # Counted here, in the same unit as the removal, so no device can slip in between.
    owned = devices_owned(conn, account_id)
    if owned:
        raise Invalid(
            f"the account owns {owned} device(s): remove them or give them another owner first"
        )
    delete_account(conn, account_id)
    insert_event(conn, event)


async def reset_password(
    store: Store, principal: Principal, key: str, account_id: str
) -> dict[str, Any]:
    """Give a user or manager a new one-time password, answered once; its sessions end."""
    org = await changeable_organisation(store, principal, key, Right.ACCOUNTS)
    row = await _account(store, org, account_id)
    if row["id"] == principal.account_id:
        raise Forbidden("change your own password with POST /api/v1/auth/password")
    if row["kind"] == AccountKind.RESOURCE:
        raise Invalid("resource accounts never sign in: no password")
    _require_outranks(principal, row)
    generated = one_time_password()
    at = now()
    values = {
        "password_hash": await trio.to_thread.run_sync(hash_password, generated),
        "must_change_password": 1,
        "updated_at": at,
    }
    event = audit_event(
        principal,
        "account.password_reset",
        organisation_id=org["id"],
        target_type="account",
        target_id=row["id"],
        details={"login": row["login"]},
    )
    # A reset also lifts a lock-out: the administrator vouches for the new start.
    name = sign_in_name(org["code"], row["login"])
    await store.write(_reset_password, row["id"], values, name, event)
    return account_view(row | values) | {"one_time_password": generated}


def _reset_password(
    conn: sqlite3.Connection,
    account_id: str,
    values: dict[str, Any],
    sign_in: str,
    event: dict[str, Any],
) -> None:
    update_account_row(conn, account_id, values)
    revoke_account_tokens(conn, account_id, values["updated_at"])
    clear_attempts(conn, sign_in)
    insert_event(conn, event)


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class NewTemplate:
    name: str
    kind: str
    rights: list[str] = field(default_factory=list)
    locale: str | None = None
    description: str = ""


async def list_templates(store: Store, principal: Principal, key: str, query: ListQuery) -> Page:
    org = await readable_organisation(store, principal, key)
    query = query.checked(TEMPLATE_LIST)
    rows, total = await store.read(templates_page, org["id"], query)
    return Page([template_view(row) for row in rows], total, query.limit, query.offset)


async def get_template(
    store: Store, principal: Principal, key: str, template_id: str
) -> dict[str, Any]:
    org = await readable_organisation(store, principal, key)
    return template_view(await _template(store, org, template_id))


async def _template(store: Store, org: Row, template_id: str) -> Row:
    row = await store.read(template_in, org["id"], template_id)
    if row is None:
        raise NotFound("no such account template")
    return row


def _template_values(kind: str, changes: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """Checked column values of a template from requested ones (any subset of them)."""
    values = _check_values({k: v for k, v in changes.items() if k == "locale"})
    if "name" in changes:
        values["name"] = changes["name"].strip()
        if not values["name"]:
            raise Invalid("name must not be empty", field="name")
    if "description" in changes:
        values["description"] = changes["description"].strip()
    if "rights" in changes:
        rights = _requested_rights(changes["rights"])
        if rights and kind != AccountKind.MANAGER:
            raise Invalid("only manager templates hold rights", field="rights")
        _require_holds(principal, rights, "nobody grants more than they hold")
        values["rights"] = json.dumps(sorted(rights))
    return values


async def create_template(
    store: Store, principal: Principal, key: str, new: NewTemplate
) -> dict[str, Any]:
    org = await changeable_organisation(store, principal, key, Right.CONFIGURATION)
    if new.kind not in ORGANISATION_KINDS:
        raise Invalid("kind: user, manager or resource", field="kind")
    values = _template_values(
        new.kind,
        {
            "name": new.name,
            "rights": new.rights,
            "locale": new.locale,
            "description": new.description,
        },
        principal,
    )
    template = _template_row(org["id"], AccountKind(new.kind), **values)
    try:
        await store.write(
            insert_with_event,
            "account_templates",
            template,
            _template_event(principal, "created", template),
        )
    except Conflict:
        raise AlreadyExists(f"a template named {template['name']!r} exists already") from None
    return template_view(template)


def _template_event(principal: Principal, verb: str, template: Row) -> dict[str, Any]:
    return audit_event(
        principal,
        f"account_template.{verb}",
        organisation_id=template["organisation_id"],
        target_type="account_template",
        target_id=template["id"],
        details={
            "name": template["name"],
            "kind": template["kind"],
            "rights": json.loads(template["rights"]),
            "locale": template["locale"],
        },
    )


async def update_template(
    store: Store, principal: Principal, key: str, template_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change a template; accounts made from it keep what it preset (presets, not links)."""
    org = await changeable_organisation(store, principal, key, Right.CONFIGURATION)
    row = await _template(store, org, template_id)
    _require_outranks(principal, row)
    refuse_unknown(changes, TEMPLATE_EDITABLE)
    values = _template_values(row["kind"], changes, principal) | {"updated_at": now()}
    changed = row | values
    try:
        await store.write(
            _update_template, row["id"], values, _template_event(principal, "changed", changed)
        )
    except Conflict:
        raise AlreadyExists(f"a template named {changed['name']!r} exists already") from None
    return template_view(changed)


def _update_template(
    conn: sqlite3.Connection, template_id: str, values: dict[str, Any], event: dict[str, Any]
) -> None:
    update_template_row(conn, template_id, values)
    insert_event(conn, event)


async def remove_template(store: Store, principal: Principal, key: str, template_id: str) -> None:
    """Remove a template nothing refers to any more."""
    org = await changeable_organisation(store, principal, key, Right.CONFIGURATION)
    row = await _template(store, org, template_id)
    _require_outranks(principal, row)
    await store.write(_remove_template, row["id"], _template_event(principal, "removed", row))


def _remove_template(conn: sqlite3.Connection, template_id: str, event: dict[str, Any]) -> None:
    accounts, codes = template_users(conn, template_id)
    if accounts or codes:
        raise Invalid(
            f"the template is in use by {accounts} account(s) and {codes} installation code(s)",
            field="template",
        )
    delete_template(conn, template_id)
    insert_event(conn, event)


# --------------------------------------------------------------------------- vendors


@dataclass(frozen=True)
class NewVendor:
    login: str
    display_name: str = ""
    email: str | None = None
    password: str | None = None  # None: a one-time password is generated


async def list_vendors(store: Store, principal: Principal, query: ListQuery) -> Page:
    require_supervisor(principal)
    query = query.checked(VENDOR_LIST)
    items, total = await store.read(_vendors_page, query)
    return Page(items, total, query.limit, query.offset)


def _vendors_page(conn: sqlite3.Connection, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
    rows, total = vendors_page(conn, query)
    looked_after = vendor_organisations(conn, [row["id"] for row in rows])
    return [vendor_view(row, looked_after[row["id"]]) for row in rows], total


async def get_vendor(store: Store, principal: Principal, vendor_id: str) -> dict[str, Any]:
    require_supervisor(principal)
    return await store.read(_vendor, vendor_id)


def _vendor(conn: sqlite3.Connection, vendor_id: str) -> dict[str, Any]:
    row = vendor_by_id(conn, vendor_id)
    if row is None:
        raise NotFound("no such vendor")
    return vendor_view(row, vendor_organisations(conn, [vendor_id])[vendor_id])


async def create_vendor(store: Store, principal: Principal, new: NewVendor) -> dict[str, Any]:
    """A vendor admin: a system account that looks after the organisations it creates."""
    require_supervisor(principal)
    NamePolicy().check(new.login)  # system accounts follow the default policy
    values = _check_values({"display_name": new.display_name, "email": new.email})
    password_hash, generated = await _initial_password(AccountKind.VENDOR, new.password)
    at = now()
    vendor = {
        "id": new_id(),
        "organisation_id": None,
        "login": new.login,
        "kind": AccountKind.VENDOR.value,
        **values,
        "password_hash": password_hash,
        "must_change_password": int(generated is not None),
        "created_at": at,
        "updated_at": at,
    }
    event = audit_event(
        principal,
        "vendor.created",
        organisation_id=None,
        target_type="account",
        target_id=vendor["id"],
        details={"login": new.login},
    )
    try:
        await store.write(insert_with_event, "accounts", vendor, event)
    except Conflict:
        raise AlreadyExists(f"a system account {new.login!r} exists already") from None
    view = vendor_view(vendor | {"active": 1, "rights": "[]", "phone_number": None}, [])
    return view | {"one_time_password": generated}


async def update_vendor(
    store: Store, principal: Principal, vendor_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change a vendor admin; active=false ends its sessions (its organisations go on)."""
    require_supervisor(principal)
    refuse_unknown(changes, VENDOR_EDITABLE)
    values = _check_values({k: v for k, v in changes.items() if k != "active"})
    if "active" in changes:
        values["active"] = int(changes["active"])
    values["updated_at"] = now()
    event = audit_event(
        principal,
        "vendor.changed",
        organisation_id=None,
        target_type="account",
        target_id=vendor_id,
        details=changes,
    )
    return await store.write(_update_vendor, vendor_id, values, event)


def _update_vendor(
    conn: sqlite3.Connection, vendor_id: str, values: dict[str, Any], event: dict[str, Any]
) -> dict[str, Any]:
    _vendor(conn, vendor_id)  # NotFound before anything changes
    _update_account(conn, vendor_id, values, event)
    return _vendor(conn, vendor_id)


async def remove_vendor(store: Store, principal: Principal, vendor_id: str) -> None:
    """Remove a vendor admin; its organisations go on, in the supervisor's sole care."""
    require_supervisor(principal)
    await store.write(_remove_vendor, principal, vendor_id)


def _remove_vendor(conn: sqlite3.Connection, principal: Principal, vendor_id: str) -> None:
    vendor = _vendor(conn, vendor_id)
    at = now()
    release_vendor_organisations(conn, vendor_id, at)
    delete_account(conn, vendor_id)
    insert_event(
        conn,
        audit_event(
            principal,
            "vendor.removed",
            organisation_id=None,
            target_type="account",
            target_id=vendor_id,
            details={"login": vendor["login"], "organisations": vendor["organisations"]},
        ),
    )
