"""One page of a list, with the filters and order of a :class:`~engine.listing.ListQuery`."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..listing import ListQuery
from .rows import Row, many


def like_pattern(text: str) -> str:
    """A LIKE pattern (with ESCAPE '\\') matching ``text`` anywhere, taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def select_page(
    conn: sqlite3.Connection,
    *,
    table: str,
    columns: Mapping[str, str],
    where: Sequence[str],
    args: Sequence[Any],
    query: ListQuery,
) -> tuple[list[Row], int]:
    """Rows and total count of one page.

    ``columns`` maps the list's field names to SQL expressions (written in code, never from
    a request); ``where``/``args`` carry the caller's scope (organisation, owner...).
    """
    conditions = list(where)
    values = list(args)
    for name, text in query.filters:
        conditions.append(f"{columns[name]} LIKE ? ESCAPE '\\'")
        values.append(like_pattern(text))
    clause = " AND ".join(conditions) or "1 = 1"
    total = conn.execute(f"SELECT count(*) FROM {table} WHERE {clause}", values).fetchone()[0]
    order = "DESC" if query.descending else "ASC"
    sort = columns[query.sort] if query.sort else "id"
    rows = many(
        conn.execute(
            f"SELECT * FROM {table} WHERE {clause} ORDER BY {sort} {order}, id {order}"
            " LIMIT ? OFFSET ?",
            [*values, query.limit, query.offset],
        )
    )
    return rows, total
