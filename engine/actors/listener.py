"""The ProtocolListener actor: one per protocol, routing requests to device sessions.

A web route does not talk to device sessions itself: it asks its protocol's listener, whose
bounded mailbox is the protocol's admission queue (full means ``503 Retry-After`` at the
edge). The listener forwards each request to the device's session actor, activating it on
demand, and the session answers the route directly, so the listener never waits on a device
and one slow device cannot hold up the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .registry import Registry
from .runtime import DEFAULT_POLICY, Actor, ActorRef, RestartPolicy, start
from .session import DeviceSession, SessionLogic


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A request for one device's session; ``body`` is the protocol's own message."""

    device_key: str
    body: Any


class ProtocolListener(Actor):
    #: It only routes and never waits, so it may take a large batch per tick.
    batch_limit = 4096

    def __init__(self, protocol: str, sessions: Registry[str]) -> None:
        self.protocol = protocol
        self.sessions = sessions

    async def receive(self, message: DeviceRequest) -> None:
        # get() and the post inside forward() run in one tick, so the session cannot
        # passivate in between.
        self.forward(self.sessions.get(message.device_key), message.body)


@dataclass(frozen=True)
class Listener:
    """A started protocol listener and the registry of its device sessions."""

    protocol: str
    ref: ActorRef[DeviceRequest]
    sessions: Registry[str]


async def start_listener(
    nursery: trio.Nursery,
    protocol: str,
    logic_factory: Callable[[str], SessionLogic],
    *,
    capacity: int = 1024,
    session_capacity: int = 64,
    session_idle: float = 300.0,
    policy: RestartPolicy = DEFAULT_POLICY,
) -> Listener:
    """Start the listener of ``protocol``; its sessions run in ``nursery`` too."""
    sessions: Registry[str] = Registry(
        nursery,
        lambda key: DeviceSession(key, logic_factory(key)),
        kind=f"{protocol}-session",
        capacity=session_capacity,
        idle=session_idle,
        policy=policy,
    )
    ref = await start(
        nursery,
        lambda: ProtocolListener(protocol, sessions),
        name=f"{protocol}-listener",
        capacity=capacity,
        policy=policy,
    )
    return Listener(protocol, ref, sessions)
