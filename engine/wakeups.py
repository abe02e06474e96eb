"""Wake-ups: which devices have something waiting, told to the protocols' push notifiers.

A device only acts when it connects. When a command is queued, the protocol that manages the
device may shorten the wait by pushing a wake-up (XMPP for the EMM client app, APNs for Apple
devices). The domain tells this hub *after* the write committed; each notifier subscribes
and takes the devices of its own protocol. Subscribers must not block and must not raise:
they hand the work to their own actor (a memory channel or a set drained by a task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Waiting:
    """One device with something waiting for it."""

    organisation_id: str
    device_id: str
    protocol: str


Subscriber = Callable[[Sequence[Waiting]], None]


class Wakeups:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns what removes it again."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def wake(self, devices: Sequence[Waiting]) -> None:
        if not devices:
            return
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(devices)
            except Exception:  # one notifier's fault must not fail the queueing it follows
                log.exception("wake-up subscriber %r failed", subscriber)
