"""Signing in, API tokens and passwords: the domain operations behind every login.

Passwords are checked with scrypt in a worker thread. Repeated failures lock the account for
a growing delay (throttling), so online guessing is slow even for a distributed attacker,
and a success resets it. API tokens are 256-bit random secrets shown once; only their SHA-256
is stored, which is enough for secrets that cannot be guessed, and lets every request be
authenticated with a single indexed look-up.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from .audit import audit_event
from .errors import Invalid, Throttled, Unauthenticated
from .ids import new_id
from .passwords import hash_password, verify_password
from .principals import AccountKind, Principal, parse_rights
from .store import Store
from .store.accounts import (
    account_by_id,
    account_by_login,
    insert_token,
    revoke_account_tokens,
    revoke_token,
    token_with_account,
    update_account,
)
from .store.audit import insert_event, insert_with_event
from .store.organisations import organisation_by_code
from .store.sign_in import attempts_of, clear_attempts, forget_attempts_before, put_attempts
from .timestamps import format_time, now, parse_time

#: Failed logins allowed before the account is locked for a while.
FREE_ATTEMPTS = 5
#: First lock-out; doubles with every further failure, up to MAX_LOCKOUT.
FIRST_LOCKOUT = timedelta(seconds=30)
MAX_LOCKOUT = timedelta(minutes=15)
#: Failures older than this no longer count towards a lock-out.
FORGET_ATTEMPTS_AFTER = timedelta(days=1)
TOKEN_LIFETIME = timedelta(days=30)
MIN_PASSWORD_LENGTH = 10

#: Token scope of a session opened with a one-time password.
PASSWORD_CHANGE_SCOPE = "password-change"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    expires_at: str
    password_change_required: bool


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _lockout(failures: int) -> timedelta:
    over = failures - FREE_ATTEMPTS
    return min(MAX_LOCKOUT, FIRST_LOCKOUT * 2 ** max(0, over))


async def login(
    store: Store,
    *,
    organisation_code: str | None,
    login_id: str,
    password: str,
    source: str | None,
    label: str = "",
    lifetime: timedelta = TOKEN_LIFETIME,
) -> IssuedToken:
    """Check a login id and password and issue a bearer token valid for ``lifetime``
    (browser sessions are shorter-lived than API tokens).

    ``organisation_code`` is None for system accounts (supervisor, vendor admins). Every
    failure says the same thing, so the answer does not reveal which accounts exist.
    """
    refused = Unauthenticated("wrong organisation, login id or password")
    name = sign_in_name(organisation_code, login_id)
    # The attempt is counted before anything is checked, in one write, per sign-in name
    # whether or not such an account exists: parallel guesses cannot slip past the first
    # failure, and a lock-out says nothing about which accounts exist.
    wait = await store.write(claim_sign_in_attempt, name)
    if wait is not None:
        raise Throttled("too many failed sign-ins", retry_after=wait)
    account = None
    if organisation_code is None:
        account = await store.read(account_by_login, None, login_id)
    else:
        organisation = await store.read(organisation_by_code, organisation_code)
        if organisation is not None and organisation["active"]:
            account = await store.read(account_by_login, organisation["id"], login_id)
    # Without an account the same scrypt work is done (on a dummy), so timing tells nothing.
    ok = await trio.to_thread.run_sync(
        verify_password, password, account["password_hash"] if account else None
    )
    if account is None:
        raise refused
    if not ok or not account["active"] or account["kind"] == AccountKind.RESOURCE:
        failed = audit_event(
            None,
            "account.login_failed",
            organisation_id=account["organisation_id"],
            target_type="account",
            target_id=account["id"],
            actor=account["login"],
            source=source,
        )
        await store.write(insert_event, failed)
        raise refused
    secret = secrets.token_urlsafe(32)
    expires = format_time(datetime.now(UTC) + lifetime)
    change_only = bool(account["must_change_password"])
    token = {
        "id": new_id(),
        "account_id": account["id"],
        "organisation_id": account["organisation_id"],
        "token_hash": _token_hash(secret),
        "label": label,
        "scope": PASSWORD_CHANGE_SCOPE if change_only else "full",
        "created_at": now(),
        "expires_at": expires,
    }
    event = audit_event(
        None,
        "account.login",
        organisation_id=account["organisation_id"],
        target_type="account",
        target_id=account["id"],
        actor=account["login"],
        source=source,
    )
    await store.write(_record_success, name, token, event)
    return IssuedToken(secret, token["id"], expires, change_only)


def qualified_logins(organisation_code: str, login_id: str) -> set[str]:
    """The user names a device protocol accepts for this account: the login id alone or
    qualified with the organisation code (``code/login``, ``code\\login``, ``login@code``)."""
    return {
        login_id,
        f"{organisation_code}/{login_id}",
        f"{organisation_code}\\{login_id}",
        f"{login_id}@{organisation_code}",
    }


def login_readings(user: str) -> list[tuple[str, str]]:
    """The (organisation code, login id) readings of a qualified user name, most likely
    first: ``code\\login``, ``code/login``, ``login@code``."""
    readings: list[tuple[str, str]] = []
    for sep in ("\\", "/"):
        if sep in user:
            code, _, login = user.partition(sep)
            readings.append((code, login))
    if "@" in user:
        login, _, code = user.rpartition("@")
        readings.append((code, login))
    return [(c.strip(), lg.strip()) for c, lg in readings if c.strip() and lg.strip()]


def sign_in_name(organisation_code: str | None, login_id: str) -> str:
    """What sign-in attempts are counted by: the organisation code and the login id."""
    return f"{organisation_code or ''}/{login_id}"


def claim_sign_in_attempt(conn: sqlite3.Connection, name: str) -> int | None:
    """Count a sign-in attempt as failed until it succeeds; seconds to wait if locked."""
    moment = datetime.now(UTC)
    row = attempts_of(conn, name)
    failures = 0
    if row is None:
        # Now and then is enough to forget names nobody has tried for a day.
        forget_attempts_before(conn, format_time(moment - FORGET_ATTEMPTS_AFTER))
    else:
        if row["locked_until"]:
            wait = parse_time(row["locked_until"]) - moment
            if wait > timedelta(0):
                return int(wait.total_seconds()) + 1
        if moment - parse_time(row["updated_at"]) < FORGET_ATTEMPTS_AFTER:
            failures = row["failures"]
    failures += 1
    locked_until = None
    if failures >= FREE_ATTEMPTS:
        locked_until = format_time(moment + _lockout(failures))
    put_attempts(conn, name, failures, locked_until, format_time(moment))
    return None


def _record_success(
    conn: sqlite3.Connection, name: str, token: dict[str, Any], event: dict[str, Any]
) -> None:
    clear_attempts(conn, name)
    insert_token(conn, token)
    insert_event(conn, event)


async def authenticate(store: Store, token: str, *, source: str | None) -> Principal:
    """The principal behind a bearer token; refused at once when revoked or inactive."""
    row = await store.read(token_with_account, _token_hash(token))
    if (
        row is None
        or row["revoked_at"] is not None
        or (row["expires_at"] and row["expires_at"] < now())
        or not row["account_active"]
        or (row["organisation_id"] is not None and not row["organisation_active"])
    ):
        raise Unauthenticated("invalid, expired or revoked token")
    return Principal(
        account_id=row["account_id"],
        login=row["login"],
        kind=AccountKind(row["kind"]),
        organisation_id=row["organisation_id"],
        rights=parse_rights(json.loads(row["rights"])),
        token_id=row["token_id"],
        source=source,
        password_change_only=row["scope"] == PASSWORD_CHANGE_SCOPE,
    )


async def logout(store: Store, principal: Principal) -> None:
    if principal.token_id is not None:
        event = audit_event(
            principal,
            "account.logout",
            organisation_id=principal.organisation_id,
            target_type="account",
            target_id=principal.account_id,
        )
        await store.write(_revoke, principal.token_id, event)


def _revoke(conn: sqlite3.Connection, token_id: str, event: dict[str, Any]) -> None:
    revoke_token(conn, token_id, now())
    insert_event(conn, event)


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters", field="new_password"
        )


async def change_password(
    store: Store,
    principal: Principal,
    *,
    current: str,
    new: str,
    lifetime: timedelta = TOKEN_LIFETIME,
) -> IssuedToken:
    """Change one's own password; the session's token is replaced by a full one."""
    check_password_rules(new)
    if new == current:
        raise Invalid("the new password must differ from the current one", field="new_password")
    account = await store.read(account_by_id, principal.account_id)
    if account is None or not await trio.to_thread.run_sync(
        verify_password, current, account["password_hash"]
    ):
        raise Unauthenticated("the current password is wrong")
    new_hash = await trio.to_thread.run_sync(hash_password, new)
    secret = secrets.token_urlsafe(32)
    expires = format_time(datetime.now(UTC) + lifetime)
    token = {
        "id": new_id(),
        "account_id": principal.account_id,
        "organisation_id": principal.organisation_id,
        "token_hash": _token_hash(secret),
        "label": "",
        "scope": "full",
        "created_at": now(),
        "expires_at": expires,
    }
    event = audit_event(
        principal,
        "account.password_changed",
        organisation_id=principal.organisation_id,
        target_type="account",
        target_id=principal.account_id,
    )
    await store.write(_store_new_password, principal, new_hash, token, event)
    return IssuedToken(secret, token["id"], expires, False)


def _store_new_password(
    conn: sqlite3.Connection,
    principal: Principal,
    new_hash: str,
    token: dict[str, Any],
    event: dict[str, Any],
) -> None:
    update_account(
        conn,
        principal.account_id,
        {"password_hash": new_hash, "must_change_password": 0, "updated_at": now()},
    )
    # Every session of the account ends: a stolen token must not outlive the new password.
    revoke_account_tokens(conn, principal.account_id, now())
    insert_token(conn, token)
    insert_event(conn, event)


async def create_supervisor(store: Store, login_id: str, password: str) -> str:
    """Create the first supervisor account with a one-time password (used by ``emm init``)."""
    password_hash = await trio.to_thread.run_sync(hash_password, password)
    at = now()
    account = {
        "id": new_id(),
        "organisation_id": None,
        "login": login_id,
        "kind": AccountKind.SUPERVISOR.value,
        "display_name": "Supervisor",
        "password_hash": password_hash,
        "must_change_password": 1,
        "created_at": at,
        "updated_at": at,
    }
    event = audit_event(
        None,
        "account.created",
        organisation_id=None,
        target_type="account",
        target_id=account["id"],
        details={"login": login_id, "kind": "supervisor"},
    )
    await store.write(insert_with_event, "accounts", account, event)
    return account["id"]
