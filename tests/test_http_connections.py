"""Keep-alive connections of ``web.server.serve``: its idle timer and its corked responses.

Each test runs a real Hypercorn listener on loopback and talks raw HTTP/1.1 to it over a
TCP socket, so what is checked is what a device's HTTP stack sees: when the server closes
an idle connection, that a slow request is never cut off by the idle timer, that a graceful
shutdown closes idle connections at once but lets a request in progress finish, and that a
streamed response is not held back while the application produces it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from web.server import hypercorn_config, serve

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def _app(answer: Callable[[dict[str, Any], Any], Awaitable[None]]) -> ASGI:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        while (await receive()).get("more_body", False):
            pass
        await answer(scope, send)

    return app


async def _plain(body: bytes, send: Any) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def _serving(
    app: ASGI, *, keep_alive: float, stop: trio.Event | None = None
) -> AsyncIterator[tuple[int, trio.Event]]:
    """The port served, and an event set once ``serve`` has returned."""
    config = hypercorn_config(
        http_binds=["127.0.0.1:0"], keep_alive_timeout=keep_alive, graceful_timeout=5.0
    )
    returned = trio.Event()

    async def run(task_status: trio.TaskStatus[Any]) -> None:
        trigger = stop.wait if stop is not None else None
        await serve(app, config, shutdown_trigger=trigger, task_status=task_status)
        returned.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(run))
        try:
            yield binds[0].port, returned
        finally:
            nursery.cancel_scope.cancel()


async def _request(stream: trio.SocketStream, path: str = "/") -> None:
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())


async def _read_answer(stream: trio.SocketStream) -> bytes:
    """One Content-Length answer, whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed before the head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed in the middle of the body"
        body += chunk
    return head + b"\r\n\r\n" + body


async def _closed_within(stream: trio.SocketStream, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        return await stream.receive_some(1) == b""
    return False


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    async with _serving(_app(lambda scope, send: _plain(b"hello", send)), keep_alive=0.5) as (
        port,
        _,
    ):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for _ in range(3):  # the timer starts again after each answer
            await _request(stream)
            assert (await _read_answer(stream)).endswith(b"\r\n\r\nhello")
            await trio.sleep(0.3)
        assert not await _closed_within(stream, 0.1)  # 0.4 s idle: still open
        assert await _closed_within(stream, 2.0)


async def test_a_slow_request_is_not_cut_off_by_the_idle_timer() -> None:
    async def slow(scope: dict[str, Any], send: Any) -> None:
        await trio.sleep(1.0)  # twice the keep-alive timeout
        await _plain(b"late", send)

    async with _serving(_app(slow), keep_alive=0.5) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await trio.sleep(0.2)
        await _request(stream)
        assert (await _read_answer(stream)).endswith(b"late")
        assert await _closed_within(stream, 2.0)  # idle again: the timer runs again


async def test_a_streamed_answer_is_sent_as_it_is_made() -> None:
    """The head waits for the first part of the body, never for the last."""
    go_on = trio.Event()

    async def streamed(scope: dict[str, Any], send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await send(start)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await go_on.wait()
        await send({"type": "http.response.body", "body": b"second"})

    async with _serving(_app(streamed), keep_alive=5.0) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await _request(stream)
        received = b""
        with trio.fail_after(5):
            while b"first" not in received:
                received += await stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert b"second" not in received
        go_on.set()
        with trio.fail_after(5):
            while b"0\r\n\r\n" not in received:  # the chunked body's end
                received += await stream.receive_some(65536)
        assert b"second" in received


async def test_shutdown_closes_idle_connections_and_finishes_requests_in_progress() -> None:
    stop = trio.Event()
    answering = trio.Event()

    async def answer(scope: dict[str, Any], send: Any) -> None:
        if scope["path"] == "/slow":
            answering.set()
            await trio.sleep(0.5)
        await _plain(scope["path"].encode(), send)

    async with _serving(_app(answer), keep_alive=60.0, stop=stop) as (port, returned):
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await _request(idle, "/quick")
        assert (await _read_answer(idle)).endswith(b"/quick")
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await _request(busy, "/slow")
        await answering.wait()
        stop.set()
        assert await _closed_within(idle, 2.0)  # long before its 60 s keep-alive
        assert (await _read_answer(busy)).endswith(b"/slow")
        assert await _closed_within(busy, 2.0)
        with trio.fail_after(5):
            await returned.wait()


async def test_a_pipelined_request_keeps_its_connection_until_it_is_answered() -> None:
    """Two requests in one write: the second is in progress as soon as the first is
    answered, so neither the idle timer nor a shutdown may close the connection under it."""
    stop = trio.Event()
    answering = trio.Event()

    async def answer(scope: dict[str, Any], send: Any) -> None:
        if scope["path"] == "/slow":
            answering.set()
            await trio.sleep(1.0)  # twice the keep-alive timeout
        await _plain(scope["path"].encode(), send)

    async with _serving(_app(answer), keep_alive=0.5, stop=stop) as (port, returned):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            b"GET /quick HTTP/1.1\r\nHost: test\r\n\r\nGET /slow HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        assert (await _read_answer(stream)).endswith(b"/quick")
        await answering.wait()
        stop.set()
        assert (await _read_answer(stream)).endswith(b"/slow")
        assert await _closed_within(stream, 2.0)
        with trio.fail_after(5):
            await returned.wait()
