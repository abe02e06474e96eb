"""A bare ASGI app on Hypercorn (trio worker): the ceiling ``bench.healthz`` compares with.

It answers every HTTP request with what the service's ``GET /healthz`` answers (same status,
same headers, a body of the same length), with the same Hypercorn settings as the service
(``web.server.hypercorn_config``) but none of its layers (Quart, the per-connection wrapper).
Run by ``bench.healthz`` as ``python -m bench.bare_asgi [--through-web-serve]``; it binds a
free loopback port, prints ``bare: listening on URL`` and serves until SIGINT or SIGTERM.
With ``--through-web-serve`` it is served by the service's ``web.server.serve`` (Hypercorn
plus the per-connection TLS/body-limit wrapper), which separates that wrapper's cost from
Quart's.
"""

from __future__ import annotations

import argparse
import signal
from functools import partial
from typing import Any

import trio
from hypercorn.trio import serve

from web.server import hypercorn_config, serve as web_serve

BODY = b'{"status": "ok", "version": "0.1.0", "uptime_seconds": 12.345}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


async def main(bind: str, through_web_serve: bool) -> None:
    config = hypercorn_config(http_binds=[bind], graceful_timeout=1.0)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        if through_web_serve:  # the service's own serve(): its per-connection wrapper included
            bound = await nursery.start(partial(web_serve, app, config, shutdown_trigger=stop.wait))
            urls = [address.url for address in bound]
        else:
            urls = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        for url in urls:
            print(f"bare: listening on {url}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bind", nargs="?", default="127.0.0.1:0", help="host:port to bind")
    parser.add_argument(
        "--through-web-serve",
        action="store_true",
        help="serve with web.server.serve (the service's wrapper) instead of Hypercorn's serve",
    )
    args = parser.parse_args()
    trio.run(main, args.bind, args.through_web_serve)
