"""Sync's and GetItemEstimate's FilterType (MS-ASCMD 2.2.3.68), sans-IO.

The window starts the FilterType's period before now and has no end: an item is inside
when it is dated at or after the start. What "dated" means per class is
:func:`engine.protocols.eas_pim.dated`: for calendar items the end of their last
occurrence (so a meeting that ended before the window is outside, one that is going on or
in the future is inside, and a series without an end is always inside); for mail the
message's Date. Tasks have no window, only 8 (incomplete tasks only). Contacts and notes
have no filter: any FilterType there is ignored, as it is for classes without dates.

Months are calendar months: one month back from 31 March is 28 (or 29) February.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .eas_pim import MAIL_KINDS, dated

#: The FilterType values each class accepts (MS-ASCMD 2.2.3.68.2's table).
ALLOWED = {
    **{kind: frozenset({0, 1, 2, 3, 4, 5}) for kind in MAIL_KINDS},
    "calendar": frozenset({0, 4, 5, 6, 7}),
    "tasks": frozenset({0, 8}),
}
#: Incomplete tasks only.
INCOMPLETE_TASKS = 8
_DAYS = {1: 1, 2: 3, 3: 7, 4: 14}
_MONTHS = {5: 1, 6: 3, 7: 6}


def accepts(kind: str, filter_type: int) -> bool:
    """Whether ``filter_type`` is a FilterType of the class (always, for undated classes)."""
    allowed = ALLOWED.get(kind)
    return allowed is None or filter_type in allowed


def applies(kind: str, filter_type: int) -> bool:
    """Whether the filter leaves anything out in this class."""
    return filter_type != 0 and kind in ALLOWED


def window_start(filter_type: int, now: datetime) -> datetime | None:
    """The start of a time window (None: the filter is no time window)."""
    if filter_type in _DAYS:
        return now - timedelta(days=_DAYS[filter_type])
    months = _MONTHS.get(filter_type)
    if months is None:
        return None
    month = now.month - months
    year = now.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    for day in range(now.day, 0, -1):
        try:
            return now.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("every month has a first day")


def admits(kind: str, filter_type: int, text: str, now: datetime) -> bool:
    """Whether the stored item ``text`` of ``kind`` is inside the filter at ``now``."""
    if not applies(kind, filter_type):
        return True
    when, complete = dated(kind, text)
    if kind == "tasks":
        return not (filter_type == INCOMPLETE_TASKS and complete)
    start = window_start(filter_type, now)
    return start is None or when is None or when >= start
