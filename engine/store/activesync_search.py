"""Units of work of ActiveSync's look-ups: the Global Address List (Search, Find,
ResolveRecipients) and the owner's stored mail and calendar (Search, Find, free/busy).

The GAL of a caller is the active users and resources of the caller's own organisation,
never anyone else's: every query is bound to one ``organisation_id``.
"""

from __future__ import annotations

import sqlite3

from .rows import Row, many

#: Account kinds listed in the GAL.
GAL_KINDS = ("user", "resource")
_GAL_COLUMNS = (
    "a.id, a.login, a.display_name, a.email, a.kind,"
    " o.short_name AS organisation_name, o.long_name AS organisation_long_name"
)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def gal_matches(
    conn: sqlite3.Connection, organisation_id: str, text: str, limit: int
) -> tuple[list[Row], int]:
    """The organisation's GAL entries whose display name (or a word of it), email address
    or login starts with ``text``, by display name: at most ``limit`` of them, and how many
    there are."""
    prefix = _like(text.strip()) + "%"
    where = (
        " FROM accounts a JOIN organisations o ON o.id = a.organisation_id"
        " WHERE a.organisation_id = :organisation AND a.active = 1"
        f" AND a.kind IN ({', '.join(repr(k) for k in GAL_KINDS)})"
        " AND (a.display_name LIKE :prefix ESCAPE '\\'"
        " OR a.display_name LIKE '% ' || :prefix ESCAPE '\\'"
        " OR a.email LIKE :prefix ESCAPE '\\' OR a.login LIKE :prefix ESCAPE '\\')"
    )
    values = {"organisation": organisation_id, "prefix": prefix, "limit": limit}
    total = int(conn.execute(f"SELECT count(*){where}", values).fetchone()[0])
    rows = many(
        conn.execute(
            f"SELECT {_GAL_COLUMNS}{where} ORDER BY lower(a.display_name), a.login LIMIT :limit",
            values,
        )
    )
    return rows, total


def gal_entry_by_email(conn: sqlite3.Connection, organisation_id: str, email: str) -> Row | None:
    """The organisation's GAL entry with exactly this email address."""
    rows = many(
        conn.execute(
            f"SELECT {_GAL_COLUMNS} FROM accounts a JOIN organisations o"
            " ON o.id = a.organisation_id WHERE a.organisation_id = ? AND a.active = 1"
            f" AND a.kind IN ({', '.join(repr(k) for k in GAL_KINDS)})"
            " AND lower(a.email) = lower(?)",
            (organisation_id, email.strip()),
        )
    )
    return rows[0] if len(rows) == 1 else None


#: A message whose text is encoded (or has encoded words) may hold a word its raw text
#: does not show: such messages always go to the caller's own matching.
_ENCODED = "i.data LIKE '%base64%' OR i.data LIKE '%quoted-printable%' OR i.data LIKE '%=?%'"


def mail_candidates(
    conn: sqlite3.Connection, account_id: str, kinds: list[str], words: list[str], limit: int
) -> list[Row]:
    """The account's live items of these kinds in its default collections (Inbox, Sent
    Items...: a folder of the owner's own is no default one) that may contain every word,
    newest first:
    those whose raw text holds each ASCII word (without regard to case), and the encoded
    ones. The caller matches the decoded text; this only spares it the rest."""
    if not kinds:
        return []
    marks = ", ".join("?" * len(kinds))
    conditions = ""
    values: list[object] = [account_id, *kinds]
    for word in words:
        if word.isascii():
            conditions += f" AND (i.data LIKE ? ESCAPE '\\' OR {_ENCODED})"
            values.append(f"%{_like(word)}%")
    return many(
        conn.execute(
            "SELECT i.id, i.data, i.updated_at, c.id AS collection_id, c.kind"
            " FROM pim_items i JOIN pim_collections c ON c.id = i.collection_id"
            f" WHERE c.account_id = ? AND c.kind IN ({marks}) AND c.is_default = 1"
            f" AND i.deleted = 0{conditions}"
            " ORDER BY i.id DESC LIMIT ?",
            (*values, limit),
        )
    )
