"""Garbage-collector settings for a process that holds many long-lived actors.

Each live actor is a few dozen small container objects (task, coroutine frames, channel,
deques) that live for minutes. CPython's default generation-0 threshold (700 allocations)
then runs the cyclic collector thousands of times while a burst of devices connects, and
each older-generation pass walks every actor: measured, about 70% of activation time. A
larger first threshold and freezing what start-up made (configuration, modules, the app)
keep the collector for real garbage.
"""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    gc.collect()
    gc.freeze()  # what exists now lives as long as the process
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, max(second, 20), max(third, 20))
