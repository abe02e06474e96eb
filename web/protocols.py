"""The device protocols the service runs: what each starts beside the web server.

A protocol starts its actors (a listener with its device sessions, push notifiers,
schedulers) in the service's nursery before the server accepts connections, and registers
its listener in ``context.listeners`` so its routes reach the device sessions through
``web.edge.ask_device_session``. At shutdown, after the last request finished, the device
sessions are closed (they hand off what must persist) while the store is still open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from engine.config import Bootstrap

from . import activesync, omadm, omads
from .apple_mdm import start_apple_mdm
from .context import ServiceContext
from .wsdm import start_wsdm

ProtocolStarter = Callable[[trio.Nursery, ServiceContext, Bootstrap], Awaitable[None]]

#: One starter per protocol, started in this order.
STARTERS: tuple[ProtocolStarter, ...] = (
    start_apple_mdm,
    omads.start,
    activesync.start,
    start_wsdm,
    omadm.start,
)


async def start_protocols(
    nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap
) -> None:
    for starter in STARTERS:
        await starter(nursery, context, bootstrap)


async def stop_protocols(context: ServiceContext) -> None:
    for listener in context.listeners.values():
        await listener.sessions.aclose()
