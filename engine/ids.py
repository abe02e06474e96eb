"""Identifiers: time-ordered random UUIDs (UUIDv7, RFC 9562).

Ids are made where the row is made, never by a process counter, so any node of a cluster can
make them. The millisecond timestamp in front keeps new rows at the end of their index,
which keeps inserts cheap; the random bits make them unguessable across organisations.
Within one process ids also strictly increase (RFC 9562 §6.2, monotonic random): two made in
the same millisecond still sort in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_VERSION_AND_VARIANT = 0x7 << 76 | 0x2 << 62
_RANDOM_MASK = (1 << 74) - 1  # rand_a (12 bits) and rand_b (62 bits), without version/variant
_lock = threading.Lock()
_last = 0


def _pack(ms: int, rand: int) -> int:
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    return (ms & (2**48 - 1)) << 80 | rand_a << 64 | rand_b | _VERSION_AND_VARIANT


def new_id() -> str:
    global _last
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big") & _RANDOM_MASK
    with _lock:
        value = _pack(ms, rand)
        if value <= _last:
            # Same millisecond (or the clock stepped back): the next value after the last.
            last_ms, last_rand = (
                _last >> 80,
                ((_last >> 64) & 0xFFF) << 62 | _last & ((1 << 62) - 1),
            )
            value = _pack(last_ms + (last_rand == _RANDOM_MASK), (last_rand + 1) & _RANDOM_MASK)
        _last = value
    return str(uuid.UUID(int=value))
