"""The APNs notifier: wakes Apple devices with MDM push notifications over HTTP/2.

One actor per service. Whoever wants devices woken calls :meth:`ApnsNotifier.wake` (it
never blocks: the device ids join a set the actor drains); the actor looks the devices up
(``lookup``: enrolled, with a push token APNs has not refused), and sends each a push with
the APNS certificate of its organisation as the TLS client certificate:

``POST {base_url}/3/device/<hex token>`` with ``apns-topic: <certificate UID>``,
``apns-push-type: mdm`` and the body ``{"mdm": "<PushMagic>"}`` (Apple's MDM push).

One HTTP/2 connection per certificate carries all of that certificate's pushes at once
(streams, bounded by :attr:`max_streams`). Answers:

* ``200``: sent;
* ``410`` (``Unregistered``, ``ExpiredToken``) or ``400`` ``BadDeviceToken`` /
  ``DeviceTokenNotForTopic``: the token is bad for good: ``refused`` marks it, and it is
  never tried again until the device sends a new one;
* ``429`` and ``5xx`` (and a dropped connection): transient, retried with exponential
  backoff up to :attr:`attempts` times;
* anything else (a bad certificate, a malformed request): logged, not retried.

The actor knows nothing of the store: the service hands it ``lookup``, ``refused`` and
``sent`` (``engine/apple_mdm.py``).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

log = logging.getLogger(__name__)

#: APNs reasons that say the token will never work again.
PERMANENT_REASONS = frozenset(
    {"BadDeviceToken", "Unregistered", "ExpiredToken", "DeviceTokenNotForTopic"}
)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ClientIdentity:
    """An APNS certificate (PEM, with its chain) and its private key (PEM)."""

    id: str
    certificate_pem: str
    private_key_pem: str = field(repr=False)


@dataclass(frozen=True)
class Push:
    token: str  # hex
    push_magic: str
    topic: str
    identity: ClientIdentity
    target: Any = None  # handed back to ``refused`` and ``sent``


Lookup = Callable[[Sequence[str]], Awaitable[list[Push]]]
Refused = Callable[[Push, str], Awaitable[None]]
Sent = Callable[[list[Push]], Awaitable[None]]


def client_context(identity: ClientIdentity, ca_file: str | None) -> ssl.SSLContext:
    """TLS for APNs: HTTP/2 by ALPN, the certificate as client identity."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    # load_cert_chain reads files only: a private temporary file, removed at once.
    fd, name = tempfile.mkstemp(prefix=".apns-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(identity.certificate_pem + "\n" + identity.private_key_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)
    return context


class ApnsNotifier:
    def __init__(
        self,
        base_url: str,
        lookup: Lookup,
        refused: Refused,
        sent: Sent,
        *,
        ca_file: str | None = None,
        max_streams: int = 1000,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.lookup = lookup
        self.refused = refused
        self.sent = sent
        self.ca_file = ca_file
        self.max_streams = max_streams
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._waiting: set[str] = set()
        self._ready = trio.Event()
        self._clients: dict[str, tuple[ClientIdentity, httpx.AsyncClient]] = {}
        self._nursery: trio.Nursery | None = None
        self._streams = trio.Semaphore(max_streams)
        #: Pushes sent and not yet reported: reported together, one store write per batch.
        self._sent: list[Push] = []
        self._sent_ready = trio.Event()

    # -- what others call ------------------------------------------------------------------

    def wake(self, device_ids: Iterable[str], delay: float = 0.0) -> None:
        """Push these devices (after ``delay`` seconds); never blocks, never raises."""
        ids = list(device_ids)
        if delay > 0 and self._nursery is not None:
            self._nursery.start_soon(self._later, ids, delay)
            return
        self._waiting.update(ids)
        self._ready.set()

    async def _later(self, ids: list[str], delay: float) -> None:
        await trio.sleep(delay)
        self.wake(ids)

    # -- the actor -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._report_sent)
                task_status.started()
                while True:
                    await self._ready.wait()
                    self._ready = trio.Event()
                    batch, self._waiting = list(self._waiting), set()
                    try:
                        pushes = await self.lookup(batch)
                    except Exception:
                        log.exception("APNs: looking up %d devices failed", len(batch))
                        continue
                    for push in pushes:
                        await self._streams.acquire()
                        nursery.start_soon(self._deliver, push)
        finally:
            with trio.CancelScope(shield=True):
                for _, client in self._clients.values():
                    await client.aclose()

    async def _report_sent(self) -> None:
        """Tell ``sent`` what went out, in batches (a fleet's pushes are not 10,000 writes)."""
        while True:
            await self._sent_ready.wait()
            self._sent_ready = trio.Event()
            batch, self._sent = self._sent, []
            try:
                await self.sent(batch)
            except Exception:
                log.exception("APNs: recording %d pushes failed", len(batch))

    def _client(self, identity: ClientIdentity) -> httpx.AsyncClient:
        known = self._clients.get(identity.id)
        if known is not None and known[0] == identity:
            return known[1]
        client = httpx.AsyncClient(
            http2=True,
            verify=client_context(identity, self.ca_file),
            timeout=self.timeout,
            # One connection per certificate: HTTP/2 streams carry the concurrency.
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        if known is not None and self._nursery is not None:
            self._nursery.start_soon(known[1].aclose)  # a renewed certificate
        self._clients[identity.id] = (identity, client)
        return client

    async def _deliver(self, push: Push) -> None:
        try:
            outcome = await self.send(push)
            if outcome == "sent":
                self._sent.append(push)
                self._sent_ready.set()
            elif outcome in PERMANENT_REASONS:
                await self.refused(push, outcome)
        except Exception:
            log.exception("APNs: push to %s failed", push.token[:8])
        finally:
            self._streams.release()

    async def send(self, push: Push) -> str:
        """One push with retries; answers "sent", a permanent reason, or "failed"."""
        client = self._client(push.identity)
        body = json.dumps({"mdm": push.push_magic}).encode()
        headers = {
            "apns-topic": push.topic,
            "apns-push-type": "mdm",
            "apns-priority": "10",
            "content-type": "application/json",
        }
        url = f"{self.base_url}/3/device/{push.token}"
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                log.warning("APNs: %s (attempt %d)", exc, attempt)
            else:
                if response.status_code == 200:
                    return "sent"
                reason = _reason(response)
                if reason in PERMANENT_REASONS or response.status_code == 410:
                    return reason if reason in PERMANENT_REASONS else "Unregistered"
                if response.status_code not in TRANSIENT_STATUSES:
                    log.error("APNs refused a push: %s %s", response.status_code, reason)
                    return "failed"
                log.info("APNs: %s %s, retrying", response.status_code, reason)
            if attempt < self.attempts:
                await trio.sleep(delay)
                delay *= 2
        return "failed"


def _reason(response: httpx.Response) -> str:
    try:
        value = response.json().get("reason")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
