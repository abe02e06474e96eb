"""Ids are UUIDv7: time-ordered, strictly increasing within the process, unique."""

from __future__ import annotations

import threading
import uuid

from engine.ids import new_id


def test_ids_are_version_7_and_increase_even_within_one_millisecond() -> None:
    ids = [new_id() for _ in range(50_000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)


def test_ids_made_in_threads_are_unique() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_id() for _ in range(10_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for into in made for i in into]
    assert len(set(every)) == len(every) == 40_000
    assert all(into == sorted(into) for into in made)
