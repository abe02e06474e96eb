"""The DeviceSession actor: one per device, holding its protocol session between requests.

Every request of one device goes through its session actor, in order, so protocol state that
spans HTTP round trips (SyncML message ids, large-object chunks, parked long-polls, Apple
NotNow sets) needs no locks. The protocol-specific part is a :class:`SessionLogic` supplied
by each protocol; this actor only gives it a home, a mailbox and a life cycle.
"""

from __future__ import annotations

from typing import Any, Protocol

from .runtime import Actor


class SessionLogic(Protocol):
    """What a protocol implements to live in a DeviceSession."""

    async def handle(self, message: Any) -> Any:
        """Answer one request (or internal notice) of this device."""
        ...

    async def close(self) -> None:
        """The session is passivating or stopping: hand off anything that must persist."""
        ...


class DeviceSession(Actor):
    """Runs one device's :class:`SessionLogic`; a crash restarts it with fresh logic."""

    def __init__(self, device_key: str, logic: SessionLogic) -> None:
        self.device_key = device_key
        self.logic = logic

    async def receive(self, message: Any) -> Any:
        return await self.logic.handle(message)

    async def stopping(self) -> None:
        await self.logic.close()
