"""Units of work on accounts and API tokens."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..listing import ListQuery
from .listing import select_page
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


# --------------------------------------------------------------------------- accounts of
# an organisation, their templates, and the vendor admins (system accounts)

#: List fields of accounts → SQL; ``active`` reads as the words the API shows.
ACCOUNT_COLUMNS = {
    "login": "login",
    "display_name": "display_name",
    "email": "email",
    "kind": "kind",
    "active": "(CASE WHEN active = 1 THEN 'true' ELSE 'false' END)",
    "created_at": "created_at",
}
TEMPLATE_COLUMNS = {
    "name": "name",
    "kind": "kind",
    "locale": "locale",
    "created_at": "created_at",
}


def accounts_page(
    conn: sqlite3.Connection, organisation_id: str, query: ListQuery
) -> tuple[list[Row], int]:
    return select_page(
        conn,
        table="accounts",
        columns=ACCOUNT_COLUMNS,
        where=["organisation_id = ?"],
        args=[organisation_id],
        query=query,
    )


def account_in(conn: sqlite3.Connection, organisation_id: str, account_id: str) -> Row | None:
    """An account of this organisation only: another organisation's id finds nothing."""
    return one(
        conn.execute(
            "SELECT * FROM accounts WHERE id = ? AND organisation_id = ?",
            (account_id, organisation_id),
        )
    )


def devices_owned(conn: sqlite3.Connection, account_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM devices WHERE owner_id = ?", (account_id,)
    ).fetchone()[0]


def delete_account(conn: sqlite3.Connection, account_id: str) -> None:
    """Remove an account with its tokens; what it made stays, without its author.

    Commands, installation codes and certificates it created keep existing (the audit log
    still says who made them); installation codes issued *for* it are useless without it.
    Devices it owns are the caller's to refuse (see :func:`devices_owned`).
    """
    conn.execute("DELETE FROM api_tokens WHERE account_id = ?", (account_id,))
    conn.execute("DELETE FROM installation_codes WHERE account_id = ?", (account_id,))
    for table in ("commands", "installation_codes", "certificates"):
        conn.execute(f"UPDATE {table} SET created_by = NULL WHERE created_by = ?", (account_id,))
    conn.execute("DELETE FROM accounts WHERE id = ?", (account_id,))


def update_template(conn: sqlite3.Connection, template_id: str, values: dict[str, Any]) -> int:
    return update(conn, "account_templates", template_id, values)


def template_in(conn: sqlite3.Connection, organisation_id: str, template_id: str) -> Row | None:
    return one(
        conn.execute(
            "SELECT * FROM account_templates WHERE id = ? AND organisation_id = ?",
            (template_id, organisation_id),
        )
    )


def template_named(conn: sqlite3.Connection, organisation_id: str, name: str) -> Row | None:
    return one(
        conn.execute(
            "SELECT * FROM account_templates WHERE organisation_id = ? AND name = ?",
            (organisation_id, name),
        )
    )


def templates_page(
    conn: sqlite3.Connection, organisation_id: str, query: ListQuery
) -> tuple[list[Row], int]:
    return select_page(
        conn,
        table="account_templates",
        columns=TEMPLATE_COLUMNS,
        where=["organisation_id = ?"],
        args=[organisation_id],
        query=query,
    )


def template_users(conn: sqlite3.Connection, template_id: str) -> tuple[int, int]:
    """How many accounts and installation codes refer to a template."""
    accounts = conn.execute(
        "SELECT count(*) FROM accounts WHERE template_id = ?", (template_id,)
    ).fetchone()[0]
    codes = conn.execute(
        "SELECT count(*) FROM installation_codes WHERE template_id = ?", (template_id,)
    ).fetchone()[0]
    return accounts, codes


def delete_template(conn: sqlite3.Connection, template_id: str) -> None:
    conn.execute("DELETE FROM account_templates WHERE id = ?", (template_id,))


def vendors_page(conn: sqlite3.Connection, query: ListQuery) -> tuple[list[Row], int]:
    return select_page(
        conn,
        table="accounts",
        columns=ACCOUNT_COLUMNS,
        where=["organisation_id IS NULL", "kind = 'vendor'"],
        args=[],
        query=query,
    )


def vendor_by_id(conn: sqlite3.Connection, vendor_id: str) -> Row | None:
    return one(
        conn.execute(
            "SELECT * FROM accounts WHERE id = ? AND organisation_id IS NULL AND kind = 'vendor'",
            (vendor_id,),
        )
    )


def vendor_organisations(conn: sqlite3.Connection, vendor_ids: list[str]) -> dict[str, list[str]]:
    """The codes of the organisations each vendor looks after."""
    looked_after: dict[str, list[str]] = {vendor_id: [] for vendor_id in vendor_ids}
    if not vendor_ids:
        return looked_after
    marks = ", ".join("?" for _ in vendor_ids)
    for vendor_id, code in conn.execute(
        f"SELECT vendor_id, code FROM organisations WHERE vendor_id IN ({marks}) ORDER BY code",
        vendor_ids,
    ):
        looked_after[vendor_id].append(code)
    return looked_after


def release_vendor_organisations(conn: sqlite3.Connection, vendor_id: str, at: str) -> int:
    """The vendor's organisations go back to the supervisor's sole care."""
    cursor = conn.execute(
        "UPDATE organisations SET vendor_id = NULL, updated_at = ? WHERE vendor_id = ?",
        (at, vendor_id),
    )
    return cursor.rowcount
