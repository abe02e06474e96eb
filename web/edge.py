"""Where protocol routes meet the actors: hand a device's request to its session.

A route parses nothing of the device session's state itself; it asks the protocol's
listener, which routes to the device's session actor. A full mailbox on the way raises
:class:`~engine.actors.MailboxFull`, which ``web/problems.py`` answers with ``503`` and
``Retry-After`` (backpressure instead of unbounded queues). The deadline lives here, at the
edge where a client waits, not on every internal ask: a session that has not answered by
then is as good as busy, and gets the same answer.
"""

from __future__ import annotations

from typing import Any

import trio

from engine.actors import DeviceRequest

from .context import ServiceContext, service

#: How long a device request may wait for its session before the client is told to retry.
DEVICE_REQUEST_DEADLINE = 30.0


async def ask_device_session(
    protocol: str, device_key: str, body: Any, context: ServiceContext | None = None
) -> Any:
    """The device session's answer; ``context`` for routes served outside Quart."""
    listener = (context or service()).listeners[protocol]
    with trio.fail_after(DEVICE_REQUEST_DEADLINE):
        return await listener.ref.ask(DeviceRequest(device_key, body))
