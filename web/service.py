"""The running service: store, actors and Hypercorn under one Trio nursery.

Shutdown goes in the order that keeps every promise made to a client: the first SIGINT or
SIGTERM stops accepting connections and lets requests in flight finish (Hypercorn's graceful
shutdown); then the store's writer commits whatever it had accepted and closes. A second
signal stops at once.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from functools import partial

import trio

from engine import __version__
from engine.actors.memory import tune_garbage_collector
from engine.config import Bootstrap
from engine.pki import CertificateAuthority
from engine.service_settings import Deployment
from engine.store import open_sqlite_store

from .app import create_service_app
from .context import ServiceContext
from .protocols import start_protocols, stop_protocols
from .server import BoundAddress, hypercorn_config, serve

log = logging.getLogger(__name__)

#: How long requests in flight may take to finish after a shutdown signal.
GRACEFUL_SECONDS = 10.0


def _binds(addresses: tuple[object, ...]) -> list[str]:
    return [str(address) for address in addresses]


async def run_service(
    bootstrap: Bootstrap,
    *,
    on_listening: Callable[[list[BoundAddress]], None] | None = None,
    task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGINT/SIGTERM (or cancellation); reports the bound addresses when ready."""
    config = hypercorn_config(
        http_binds=_binds(bootstrap.listen.http),
        https_binds=_binds(bootstrap.listen.https),
        certfile=str(bootstrap.tls.certificate),
        keyfile=str(bootstrap.tls.private_key),
        ca_certs=str(bootstrap.tls.ca_certificate),
        client_certificates=bootstrap.tls.client_certificates.value,
        max_body=bootstrap.limits.max_request_body,
        graceful_timeout=GRACEFUL_SECONDS,
    )
    stop = trio.Event()
    async with open_sqlite_store(bootstrap.database.path) as store:
        context = ServiceContext(
            store=store,
            deployment=Deployment(
                bootstrap.public_url, bootstrap.xmpp.address if bootstrap.xmpp else None
            ),
            version=__version__,
            started_at=time.monotonic(),
            trusted_proxies=bootstrap.tls.trusted_proxies,
            certificate_authority=await trio.to_thread.run_sync(
                CertificateAuthority.load,
                bootstrap.tls.ca_certificate,
                bootstrap.tls.ca_private_key,
            ),
        )
        app = create_service_app(context, max_body=bootstrap.limits.max_request_body)
        tune_garbage_collector()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, stop, nursery.cancel_scope)
            await start_protocols(nursery, context, bootstrap)
            async with trio.open_nursery() as server:
                bound = await server.start(partial(serve, app, config, shutdown_trigger=stop.wait))
                for address in bound:
                    log.info("listening on %s", address.url)
                if on_listening is not None:
                    on_listening(bound)
                task_status.started(bound)
            # serve() has returned: Hypercorn's graceful shutdown is over. Close the device
            # sessions, then stop the protocols' actors and the signal watch.
            await stop_protocols(context)
            nursery.cancel_scope.cancel()
        log.info("stopped serving; committing what the store accepted")
    log.info("stopped")


async def _watch_signals(stop: trio.Event, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if not stop.is_set():
                log.info("%s: shutting down gracefully", signal.Signals(signum).name)
                stop.set()
            else:
                log.warning("second signal: stopping now")
                scope.cancel()
                return
