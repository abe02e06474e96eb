"""Lists with paging, sorting and filtering, as the portals and the REST API show them.

A list query names fields, never SQL: each list declares which fields may be sorted and
filtered, and the store maps those names to columns. Filtering is a case-insensitive
substring match per field (the portals' "filter by a column with a search string").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Invalid

MAX_LIMIT = 500


@dataclass(frozen=True)
class ListSpec:
    """Which fields of one list can be sorted and filtered, and the default order."""

    sortable: tuple[str, ...]
    filterable: tuple[str, ...]
    default_sort: str
    default_descending: bool = False


@dataclass(frozen=True)
class ListQuery:
    limit: int = 50
    offset: int = 0
    sort: str | None = None
    descending: bool = False
    filters: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def checked(self, spec: ListSpec) -> ListQuery:
        """This query with defaults filled in; refuses fields the list does not offer."""
        if not 1 <= self.limit <= MAX_LIMIT:
            raise Invalid(f"limit must be 1 to {MAX_LIMIT}", field="limit")
        if self.offset < 0:
            raise Invalid("offset cannot be negative", field="offset")
        if self.sort is not None and self.sort not in spec.sortable:
            raise Invalid(
                f"cannot sort by {self.sort}; try {', '.join(spec.sortable)}", field="sort"
            )
        for name, _ in self.filters:
            if name not in spec.filterable:
                raise Invalid(
                    f"cannot filter by {name}; try {', '.join(spec.filterable)}", field="filter"
                )
        if self.sort is None:
            return ListQuery(
                self.limit, self.offset, spec.default_sort, spec.default_descending, self.filters
            )
        return self


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    def as_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }
