"""FilterType, sans-IO: the window's start per value (calendar months), and what each class
is dated by (an event's last occurrence, a message's Date, a task's completion)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.protocols.activesync_filter import accepts, admits, window_start
from engine.protocols.eas_pim import dated

NOW = datetime(2027, 3, 31, 12, 0, tzinfo=UTC)


def event(*lines: str) -> str:
    body = "\r\n".join(lines)
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\n"
        f"{body}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.mark.parametrize(
    ("filter_type", "start"),
    [
        (1, datetime(2027, 3, 30, 12, 0, tzinfo=UTC)),
        (2, datetime(2027, 3, 28, 12, 0, tzinfo=UTC)),
        (3, datetime(2027, 3, 24, 12, 0, tzinfo=UTC)),
        (4, datetime(2027, 3, 17, 12, 0, tzinfo=UTC)),
        (5, datetime(2027, 2, 28, 12, 0, tzinfo=UTC)),  # no 31 February
        (6, datetime(2026, 12, 31, 12, 0, tzinfo=UTC)),
        (7, datetime(2026, 9, 30, 12, 0, tzinfo=UTC)),
        (0, None),
        (8, None),
    ],
)
def test_window_starts_the_period_before_now(filter_type: int, start: datetime | None) -> None:
    assert window_start(filter_type, NOW) == start


def test_each_class_takes_its_own_filter_types() -> None:
    assert [v for v in range(10) if accepts("calendar", v)] == [0, 4, 5, 6, 7]
    assert [v for v in range(10) if accepts("sent_mail", v)] == [0, 1, 2, 3, 4, 5]
    assert [v for v in range(10) if accepts("tasks", v)] == [0, 8]
    assert accepts("contacts", 4) and admits("contacts", 4, "BEGIN:VCARD", NOW)


def test_an_event_is_dated_by_the_end_of_its_last_occurrence() -> None:
    ended = event("DTSTART:20270201T100000Z", "DTEND:20270201T110000Z")
    assert dated("calendar", ended) == (datetime(2027, 2, 1, 11, tzinfo=UTC), False)
    lasting = event("DTSTART:20270301T100000Z", "DURATION:PT2H")
    assert dated("calendar", lasting)[0] == datetime(2027, 3, 1, 12, tzinfo=UTC)
    all_day = event("DTSTART;VALUE=DATE:20270310")
    assert dated("calendar", all_day)[0] == datetime(2027, 3, 11, tzinfo=UTC)
    until = event(
        "DTSTART:20260101T100000Z",
        "DTEND:20260101T110000Z",
        "RRULE:FREQ=WEEKLY;UNTIL=20270320T100000Z",
    )
    assert dated("calendar", until)[0] == datetime(2027, 3, 20, 11, tzinfo=UTC)
    counted = event(
        "DTSTART:20270101T100000Z", "DTEND:20270101T110000Z", "RRULE:FREQ=DAILY;INTERVAL=2;COUNT=3"
    )
    assert dated("calendar", counted)[0] == datetime(2027, 1, 5, 11, tzinfo=UTC)
    endless = event("DTSTART:20200101T100000Z", "RRULE:FREQ=YEARLY")
    assert dated("calendar", endless) == (None, False)
    # Two weeks back from 31 March: February's meeting is out, the series without end is in.
    assert not admits("calendar", 4, ended, NOW)
    assert admits("calendar", 4, until, NOW) and admits("calendar", 4, endless, NOW)
    assert admits("calendar", 5, ended, NOW) is False and admits("calendar", 6, ended, NOW)


def test_mail_by_its_date_and_tasks_by_completion() -> None:
    message = "Date: Mon, 29 Mar 2027 09:00:00 +0200\r\nSubject: hi\r\n\r\nbody\r\n"
    assert dated("sent_mail", message)[0] == datetime(2027, 3, 29, 7, tzinfo=UTC)
    assert admits("sent_mail", 2, message, NOW) and not admits("sent_mail", 1, message, NOW)
    assert admits("sent_mail", 1, "Subject: undated\r\n\r\nbody\r\n", NOW)
    done = "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nSTATUS:COMPLETED\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    open_task = (
        "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nSTATUS:NEEDS-ACTION\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    )
    assert not admits("tasks", 8, done, NOW) and admits("tasks", 8, open_task, NOW)
    assert admits("tasks", 0, done, NOW)
