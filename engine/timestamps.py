"""Timestamps as stored and shown: ISO 8601 in UTC with milliseconds and a ``Z``.

One fixed-width text form sorts correctly as text in every backend and reads well in JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
