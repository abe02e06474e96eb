"""Where protocol routes meet the actors: hand a device's request to its session.

A route parses nothing of the device session's state itself; it asks the protocol's
listener, which routes to the device's session actor. A full mailbox on the way raises
:class:`~engine.actors.MailboxFull`, which ``web/problems.py`` answers with ``503`` and
``Retry-After`` (backpressure instead of unbounded queues).
"""

from __future__ import annotations

from typing import Any

from engine.actors import DeviceRequest

from .context import service


async def ask_device_session(protocol: str, device_key: str, body: Any) -> Any:
    return await service().listeners[protocol].ref.ask(DeviceRequest(device_key, body))
