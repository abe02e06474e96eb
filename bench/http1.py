"""A lean keep-alive HTTP/1.1 client for load generators.

A bench's simulated devices share the machine with the service they measure: every
millisecond of CPU the load generator spends is one the service does not get. httpx costs
several times what writing a request and reading a ``Content-Length`` answer costs, so the
round-trip bench drives its devices with this instead. It speaks only what the service's
answers use (``Content-Length`` bodies, keep-alive, ``Connection: close``); anything else
is an error, not silently misread. Plain HTTP on loopback only: no TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import trio


class HttpError(Exception):
    """An answer this client does not read (or a status ``raise_for_status`` refuses)."""


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: dict[str, str]  # lower-case names
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpError(f"{self.status_code}: {self.content[:200]!r}")


class _ClosedBeforeAnswer(HttpError):
    """The connection ended before any byte of the answer arrived."""


class KeepAliveClient:
    """One connection, reopened when the server closes it; one request at a time."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError("plain http://host:port only")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()

    async def __aenter__(self) -> KeepAliveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def put(self, url: str, *, content: bytes, headers: dict[str, str]) -> Response:
        return await self.request("PUT", url, content=content, headers=headers)

    async def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> Response:
        return await self.request("POST", url, content=content, headers=headers)

    async def request(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str]
    ) -> Response:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(content)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + content
        with trio.fail_after(self.timeout):
            reused = self._stream is not None
            try:
                response = await self._exchange(request)
            except (_ClosedBeforeAnswer, trio.BrokenResourceError):
                if not reused:
                    raise HttpError("the server closed the connection mid-answer") from None
                # The server closed an idle keep-alive connection as the request went out:
                # nothing of it was answered, so it is sent again on a new connection, as
                # HTTP clients do (RFC 9112, section 9.3.1).
                await self.aclose()
                response = await self._exchange(request)
        if response.headers.get("connection", "").lower() == "close":
            await self.aclose()
        return response

    async def _exchange(self, request: bytes) -> Response:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buffer.clear()
        await self._stream.send_all(request)
        return await self._response()

    async def _response(self) -> Response:
        end = self._buffer.find(b"\r\n\r\n")
        while end < 0:
            await self._receive()
            end = self._buffer.find(b"\r\n\r\n")
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers or "content-length" not in headers:
            raise HttpError("only Content-Length bodies are read")
        length = int(headers["content-length"])
        while len(self._buffer) < length:
            await self._receive()
        content = bytes(self._buffer[:length])
        del self._buffer[:length]
        return Response(status, headers, content)

    async def _receive(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(65536)
        if not data:
            nothing_yet = not self._buffer
            await self.aclose()
            if nothing_yet:
                raise _ClosedBeforeAnswer
            raise HttpError("the server closed the connection mid-answer")
        self._buffer += data
