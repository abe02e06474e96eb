"""Identifiers: time-ordered random UUIDs (UUIDv7, RFC 9562).

Ids are made where the row is made, never by a process counter, so any node of a cluster can
make them. The millisecond timestamp in front keeps new rows at the end of their index,
which keeps inserts cheap; the 74 random bits make them unguessable across organisations.
"""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | rand & (2**80 - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return str(uuid.UUID(int=value))
