"""Actors by key, activated on first use and passivated when idle (virtual actors).

Device sessions come and go: tens of thousands may be live at a peak and most are idle most
of the day. As in Orleans, a caller never creates or destroys one; it asks the registry for
the key and gets a live reference. An actor left idle for ``idle`` seconds leaves the
registry and stops; what must outlive it is in the store.

The race between a caller holding a reference and the actor passivating is closed by the
runtime (the mailbox is closed in the same tick as the registry forgets the key, and what was
already queued is still handled); :meth:`Registry.tell` and :meth:`Registry.ask` retry once
on a fresh activation when their post lands on a passivated actor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import trio

from .runtime import (
    DEFAULT_POLICY,
    Actor,
    ActorPassivated,
    ActorRef,
    RestartPolicy,
    spawn,
)

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Registry(Generic[K]):
    """Live actors of one kind by key; their tasks run in the nursery given at creation."""

    def __init__(
        self,
        nursery: trio.Nursery,
        factory: Callable[[K], Actor],
        *,
        kind: str,
        capacity: int = 64,
        idle: float = 300.0,
        policy: RestartPolicy = DEFAULT_POLICY,
    ) -> None:
        self._nursery = nursery
        self._factory = factory
        self._kind = kind
        self._capacity = capacity
        self._idle = idle if idle > 0 else math.inf
        self._policy = policy
        self._live: dict[K, ActorRef[Any]] = {}
        self.activations = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: K) -> bool:
        return key in self._live

    def get(self, key: K) -> ActorRef[Any]:
        """The live actor for ``key``, activated now if there is none."""
        ref = self._live.get(key)
        if ref is None:
            factory = self._factory
            ref = spawn(
                self._nursery,
                lambda: factory(key),
                name=f"{self._kind}:{key}",
                capacity=self._capacity,
                policy=self._policy,
                idle=self._idle,
                on_passivate=lambda r: self._forget(key, r),
                on_exit=lambda r, error: self._forget(key, r),
                # One device's repeated crashes stop that device's actor, not its siblings.
                escalate=False,
            )
            self._live[key] = ref
            self.activations += 1
        return ref

    def tell(self, key: K, message: Any) -> None:
        try:
            self.get(key).tell(message)
        except ActorPassivated:
            self.get(key).tell(message)

    async def ask(self, key: K, message: Any) -> Any:
        try:
            return await self.get(key).ask(message)
        except ActorPassivated:
            return await self.get(key).ask(message)

    def _forget(self, key: K, ref: ActorRef[Any]) -> bool:
        # Only forget the reference that is leaving: a fresh activation may already hold the key.
        if self._live.get(key) is ref:
            del self._live[key]
        return True
