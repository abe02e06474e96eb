"""Units of work on accounts and API tokens."""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import Row, insert, one, update


def insert_account(conn: sqlite3.Connection, account: dict[str, Any]) -> None:
    insert(conn, "accounts", account)


def update_account(conn: sqlite3.Connection, account_id: str, values: dict[str, Any]) -> int:
    return update(conn, "accounts", account_id, values)


def account_by_login(
    conn: sqlite3.Connection, organisation_id: str | None, login: str
) -> Row | None:
    if organisation_id is None:
        cursor = conn.execute(
            "SELECT * FROM accounts WHERE organisation_id IS NULL AND login = ?", (login,)
        )
    else:
        cursor = conn.execute(
            "SELECT * FROM accounts WHERE organisation_id = ? AND login = ?",
            (organisation_id, login),
        )
    return one(cursor)


def account_by_id(conn: sqlite3.Connection, account_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)))


def insert_token(conn: sqlite3.Connection, token: dict[str, Any]) -> None:
    insert(conn, "api_tokens", token)


def token_with_account(conn: sqlite3.Connection, token_hash: str) -> Row | None:
    """The token, its account and whether its organisation is active, in one look-up."""
    return one(
        conn.execute(
            """SELECT t.id AS token_id, t.scope, t.expires_at, t.revoked_at,
                      a.id AS account_id, a.organisation_id, a.login, a.kind, a.rights,
                      a.active AS account_active, a.must_change_password,
                      o.code AS organisation_code, o.active AS organisation_active
               FROM api_tokens t
               JOIN accounts a ON a.id = t.account_id
               LEFT JOIN organisations o ON o.id = a.organisation_id
               WHERE t.token_hash = ?""",
            (token_hash,),
        )
    )


def revoke_token(conn: sqlite3.Connection, token_id: str, at: str) -> int:
    cursor = conn.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, token_id)
    )
    return cursor.rowcount


def revoke_account_tokens(conn: sqlite3.Connection, account_id: str, at: str) -> int:
    cursor = conn.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
        (at, account_id),
    )
    return cursor.rowcount


def revoke_organisation_tokens(conn: sqlite3.Connection, organisation_id: str, at: str) -> int:
    cursor = conn.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE organisation_id = ? AND revoked_at IS NULL",
        (at, organisation_id),
    )
    return cursor.rowcount
