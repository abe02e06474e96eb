"""List state of a portal page: sort, filters and paging from the query string, as links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from quart import request

from engine.listing import ListQuery, ListSpec, Page

PAGE_SIZE = 50

#: A list column as ``list_table`` takes it: (field, label, sortable, filterable).
Column = tuple[str, str, bool, bool]


def columns(
    spec: ListSpec, *labelled: tuple[str, str], filtered_elsewhere: tuple[str, ...] = ()
) -> list[Column]:
    """Columns whose sorting and filtering follow the list's spec (the REST list's own);
    ``filtered_elsewhere`` names fields the page filters with a control of its own."""
    return [
        (
            field,
            label,
            field in spec.sortable,
            field in spec.filterable and field not in filtered_elsewhere,
        )
        for field, label in labelled
    ]


@dataclass(frozen=True)
class ListView:
    query: ListQuery
    page: Page

    @property
    def sort(self) -> str | None:
        return self.query.sort

    @property
    def descending(self) -> bool:
        return self.query.descending

    @property
    def filters(self) -> dict[str, str]:
        return dict(self.query.filters)

    @property
    def total(self) -> int:
        return self.page.total

    @property
    def first(self) -> int:
        return min(self.page.offset + 1, self.page.total)

    @property
    def last(self) -> int:
        return self.page.offset + len(self.page.items)

    def _link(self, **changes: Any) -> str:
        params: dict[str, Any] = {f"filter[{k}]": v for k, v in self.query.filters}
        sort = changes.pop("sort", ("-" if self.descending else "") + (self.sort or ""))
        if sort:
            params["sort"] = sort
        offset = changes.pop("offset", 0)
        if offset:
            params["offset"] = offset
        return "?" + urlencode(params)

    def sort_link(self, field: str) -> str:
        descending = self.sort == field and not self.descending
        return self._link(sort=("-" if descending else "") + field)

    @property
    def next_link(self) -> str | None:
        if self.last >= self.page.total:
            return None
        return self._link(offset=self.page.offset + PAGE_SIZE)

    @property
    def previous_link(self) -> str | None:
        if self.page.offset == 0:
            return None
        return self._link(offset=max(0, self.page.offset - PAGE_SIZE))


def list_query(spec: ListSpec) -> ListQuery:
    """The list query of this request (bad values fall back to the defaults)."""
    args = request.args
    sort = args.get("sort") or None
    descending = False
    if sort and sort.startswith("-"):
        sort, descending = sort[1:], True
    if sort not in spec.sortable:
        sort, descending = None, False
    filters = tuple(
        (key[7:-1], value.strip())
        for key, value in args.items()
        if key.startswith("filter[")
        and key.endswith("]")
        and value.strip()
        and key[7:-1] in spec.filterable
    )
    try:
        offset = max(0, int(args.get("offset", "0")))
    except ValueError:
        offset = 0
    return ListQuery(PAGE_SIZE, offset, sort, descending, filters).checked(spec)
