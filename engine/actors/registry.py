"""Actors by key, activated on first use and passivated when idle (virtual actors).

Device sessions come and go: tens of thousands may be live at a peak and most are idle most
of the day. As in Orleans, a caller never creates or destroys one; it asks the registry for
the key and gets a live reference. What must outlive an activation is in the store.

Idle actors are found by one sweep every ``idle / 4`` seconds rather than by a timer per
actor: re-arming a timer after every message costs each actor CPU and memory all day, while
the sweep costs a few milliseconds per hundred thousand actors. An actor is passivated
between ``idle`` and ``1.25 * idle`` seconds after its last message, and only while it is
parked with an empty mailbox, in the same tick as the registry forgets it; a post to the old
reference then raises :class:`ActorPassivated`, which :meth:`Registry.tell` and
:meth:`Registry.ask` retry on a fresh activation. No message can be lost in between.
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
    Runner,
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
        self._live: dict[K, Runner] = {}
        #: Passivated actors still running their ``stopping``: a new activation of the same
        #: key waits for it, so one device never has two sessions at once.
        self._leaving: dict[K, Runner] = {}
        self._sweeping = False
        self._sweep_scope = trio.CancelScope()
        self.activations = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: K) -> bool:
        return key in self._live

    def get(self, key: K) -> ActorRef[Any]:
        """The live actor for ``key``, activated now if there is none."""
        runner = self._live.get(key)
        if runner is None:
            factory = self._factory
            runner = spawn(
                self._nursery,
                lambda: factory(key),
                name=f"{self._kind}:{key}",
                capacity=self._capacity,
                policy=self._policy,
                on_exit=lambda ref, error: self._forget(key, ref),
                # One device's repeated crashes stop that device's actor, not its siblings.
                escalate=False,
                after=self._leaving[key].finished if key in self._leaving else None,
            )
            self._live[key] = runner
            self.activations += 1
            if not self._sweeping and math.isfinite(self._idle):
                self._sweeping = True
                self._nursery.start_soon(self._sweep, name=f"{self._kind}-passivation")
        return runner.ref

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

    def passivate_idle(self) -> int:
        """Passivate every actor idle for ``idle`` seconds or more; returns how many."""
        idle_since = trio.current_time() - self._idle
        idle = [key for key, r in self._live.items() if r.passivate_if_idle(idle_since)]
        for key in idle:
            self._leaving[key] = self._live.pop(key)
        return len(idle)

    async def aclose(self) -> None:
        """Stop every actor after what it has queued (each hands its state over), and stop
        looking for idle ones. Used at shutdown, before the nursery is cancelled."""
        self._sweep_scope.cancel()
        runners = [*self._live.values(), *self._leaving.values()]
        for runner in runners:
            runner.ref.stop()
        for runner in runners:
            await runner.finished.wait()

    async def _sweep(self) -> None:
        with self._sweep_scope:
            while True:
                await trio.sleep(self._idle / 4)
                self.passivate_idle()

    def _forget(self, key: K, ref: ActorRef[Any]) -> None:
        # Only forget the actor that is leaving: a fresh activation may already hold the key.
        for runners in (self._live, self._leaving):
            runner = runners.get(key)
            if runner is not None and runner.ref is ref:
                del runners[key]
