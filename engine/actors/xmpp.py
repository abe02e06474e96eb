"""The XMPP notifier: the service as an XMPP client, waking devices with push messages.

slixmpp runs on asyncio, the service on Trio. The notifier keeps asyncio in one place: a
dedicated thread runs its own asyncio event loop with one slixmpp client (the service's
account, from the bootstrap file). Trio talks to that thread in two ways only:

* fire and forget: :meth:`XmppNotifier.push` hands JIDs to the loop with
  ``call_soon_threadsafe`` (it never blocks, so a wake-up subscriber may call it);
* request and answer: :meth:`XmppNotifier.call` runs a coroutine on the loop and wakes the
  waiting Trio task through its ``TrioToken`` when it is done (creating and deleting device
  accounts with XEP-0133 ad-hoc commands).

The client reconnects with exponential backoff (0.25 s doubling to ``max_backoff``) when the
server goes away or refuses. Pushes asked for while disconnected wait in a set (one per
JID) and go out as soon as the session is back; the XMPP server keeps them for devices
that are offline (``mod_offline``), and a device that hears nothing still connects at its
connection interval.

A wake-up is a ``normal`` message with a ``<wsdm xmlns="urn:emm:wsdm:push:1"/>`` payload
and the body ``check-in``: the device checks in when it sees one (docs/wsdm.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import slixmpp
import trio
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

log = logging.getLogger(__name__)

T = TypeVar("T")

PUSH_NAMESPACE = "urn:emm:wsdm:push:1"
PUSH_BODY = "check-in"
_ADMIN = "http://jabber.org/protocol/admin"
ADD_USER = f"{_ADMIN}#add-user"
DELETE_USER = f"{_ADMIN}#delete-user"
CHANGE_PASSWORD = f"{_ADMIN}#change-user-password"
#: How long account requests wait for a session that is (re)connecting.
SESSION_WAIT = 3.0
#: How long one ad-hoc command step may take before the server counts as unreachable.
IQ_TIMEOUT = 10.0
#: How long making the client on its loop may take (it loads the system's CA store).
CLIENT_WAIT = 10.0


class XmppUnavailable(Exception):
    """The XMPP server cannot be reached now, or refused the request."""


@dataclass(frozen=True)
class XmppAccount:
    """Where and as whom the notifier logs in."""

    jid: str
    password: str
    host: str
    port: int

    @property
    def domain(self) -> str:
        return self.jid.partition("@")[2]


def _is_loopback(host: str) -> bool:
    """Plain (un-encrypted) streams are allowed to a server on this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_client(client: slixmpp.ClientXMPP, loopback: bool) -> None:
    """TLS rules: STARTTLS to a remote server; a loopback server may go without TLS
    (SCRAM still keeps the password off the wire)."""
    client.enable_direct_tls = False
    if loopback:
        client.enable_starttls = False
        client.enable_plaintext = True
        client.plugin["feature_mechanisms"].unencrypted_scram = True


class ReconnectingClient(slixmpp.ClientXMPP):
    """A slixmpp client that stays connected: exponential backoff from 0.25 s to
    ``max_backoff`` after a failed attempt or a lost session (slixmpp's own backoff grows
    to 300 s, far too long to notice a restarted server). Used by the service and by the
    device simulator."""

    def __init__(
        self,
        jid: str,
        password: str,
        host: str,
        port: int,
        *,
        max_backoff: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # A client makes its own TLS context (loading the system's CA store, ~30 ms)
        # unless given one: thousands of simulated devices share one.
        super().__init__(jid, password, ssl_context=ssl_context)
        self.host, self.port = host, port
        configure_client(self, _is_loopback(host))
        self.max_backoff = max_backoff
        self._backoff_delay = 0.25
        self._retry_timer: asyncio.TimerHandle | None = None
        self._closing_down = False
        self.online = False
        self.online_event = asyncio.Event()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("connection_failed", self._on_connection_failed)

    def start(self) -> None:
        self.connect(self.host, self.port)

    def went_online(self) -> None:
        """The session is up (again); subclasses send what waited."""

    def _on_session_start(self, _: Any) -> None:
        self.online = True
        self.online_event.set()
        self._backoff_delay = 0.25
        self.went_online()

    def _on_connection_failed(self, reason: Any) -> None:
        log.info("XMPP server %s:%d unreachable: %s", self.host, self.port, reason)
        self.cancel_connection_attempt()
        self._retry_later()

    def _on_disconnected(self, reason: Any) -> None:
        self.online = False
        self.online_event = asyncio.Event()
        if not self._closing_down:
            log.info("XMPP session of %s lost (%s); reconnecting", self.boundjid.bare, reason)
            self._retry_later()

    def _retry_later(self) -> None:
        if self._retry_timer is not None or self._closing_down:
            return
        delay, self._backoff_delay = (
            self._backoff_delay,
            min(self._backoff_delay * 2, self.max_backoff),
        )
        self._retry_timer = self.loop.call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry_timer = None
        if not self._closing_down:
            self.start()

    def close(self) -> asyncio.Future[Any] | None:
        self._closing_down = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self.cancel_connection_attempt()
        return self.disconnect(wait=0.5) if self.online else None


class ServiceClient(ReconnectingClient):
    """The service's XMPP session; lives on the notifier's asyncio loop only."""

    def __init__(self, account: XmppAccount, *, max_backoff: float) -> None:
        super().__init__(
            f"{account.jid}/emm-notifier",
            account.password,
            account.host,
            account.port,
            max_backoff=max_backoff,
        )
        self.account = account
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0050")
        self.pending: dict[str, None] = {}  # JIDs to wake, in order, each once
        self.sent = 0

    def went_online(self) -> None:
        log.info("XMPP session of %s started", self.account.jid)
        self._flush()

    # ---------------------------------------------------------------- pushes

    def push(self, jids: Iterable[str]) -> None:
        for jid in jids:
            self.pending[jid] = None
        if self.online:
            self._flush()

    def _flush(self) -> None:
        while self.pending and self.online:
            jid = next(iter(self.pending))
            del self.pending[jid]
            message = self.make_message(mto=jid, mbody=PUSH_BODY, mtype="normal")
            message.append(ET.Element(f"{{{PUSH_NAMESPACE}}}wsdm"))
            message.send()
            self.sent += 1

    # ---------------------------------------------------------------- accounts (XEP-0133)

    async def create_account(self, jid: str, password: str) -> None:
        fields = {"accountjid": jid, "password": password, "password-verify": password}
        notes = await self._admin_command(ADD_USER, fields)
        if any(kind == "error" and "exists" in text for kind, text in notes):
            notes = await self._admin_command(
                CHANGE_PASSWORD, {"accountjid": jid, "password": password}
            )
        errors = [text for kind, text in notes if kind == "error"]
        if errors:
            raise XmppUnavailable(f"the XMPP server refused the account {jid}: {errors[0]}")

    async def delete_account(self, jid: str) -> None:
        await self._admin_command(DELETE_USER, {"accountjids": [jid]})

    async def _admin_command(self, node: str, values: dict[str, Any]) -> list[tuple[str, str]]:
        """Run one XEP-0133 command (execute, then complete with the form); its notes."""
        if not self.online:
            # Just started or reconnecting: worth a short wait, not an enrolment's patience.
            try:
                await asyncio.wait_for(self.online_event.wait(), SESSION_WAIT)
            except TimeoutError:
                raise XmppUnavailable("not connected to the XMPP server") from None
        try:
            first = self.make_iq_set(ito=self.account.domain)
            first["command"]["node"] = node
            first["command"]["action"] = "execute"
            answer = await first.send(timeout=IQ_TIMEOUT)
            form = self.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", ftype="hidden", value=_ADMIN)
            for name, value in values.items():
                form.add_field(var=name, value=value)
            second = self.make_iq_set(ito=self.account.domain)
            second["command"]["node"] = node
            second["command"]["sessionid"] = answer["command"]["sessionid"]
            second["command"]["action"] = "complete"
            second["command"].append(form)
            done = await second.send(timeout=IQ_TIMEOUT)
        except (IqError, IqTimeout) as exc:
            raise XmppUnavailable(f"{node}: {exc!r}") from None
        return list(done["command"]["notes"])


class AsyncioThread:
    """An asyncio event loop in its own thread, bridged to the Trio run that made it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Finish every task before closing, so that nothing (slixmpp's filters) is left to
        # be cancelled on a closed loop when its client is collected.
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop; returns at once (safe from any Trio task)."""
        self.loop.call_soon_threadsafe(fn, *args)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine ``make()`` on the loop and wait for it without a worker thread."""
        done = trio.Event()

        async def wrapped() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)

        def finished(_: Any) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(done.set)

        future.add_done_callback(finished)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    async def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        await trio.to_thread.run_sync(self._thread.join)


class XmppNotifier:
    """The Trio face of the service's XMPP client: pushes and device accounts.

    The client exists once :meth:`start` (run by :func:`run_notifier`) has made it.
    """

    def __init__(self, account: XmppAccount, *, max_backoff: float = 10.0) -> None:
        self.account = account
        self.max_backoff = max_backoff
        self.thread = AsyncioThread("xmpp-notifier")
        self._client: ServiceClient | None = None

    @property
    def client(self) -> ServiceClient:
        if self._client is None:
            raise RuntimeError("the XMPP notifier is not started")
        return self._client

    @property
    def domain(self) -> str:
        return self.account.domain

    async def start(self) -> None:
        """Make the client and let it connect. slixmpp binds a client to the loop running
        when it is made, so it is made on the notifier's loop, awaited without blocking
        Trio; :class:`XmppUnavailable` if that loop does not answer in time."""
        account, max_backoff = self.account, self.max_backoff

        async def make() -> ServiceClient:
            return ServiceClient(account, max_backoff=max_backoff)

        with trio.move_on_after(CLIENT_WAIT):
            self._client = await self.thread.call(make)
        if self._client is None:
            raise XmppUnavailable(f"the XMPP client was not made within {CLIENT_WAIT} s")
        self.thread.soon(self._client.start)

    def push(self, jids: Iterable[str]) -> None:
        """Wake these devices; never blocks."""
        self.thread.soon(self.client.push, list(jids))

    @property
    def online(self) -> bool:
        return self._client is not None and self._client.online

    @property
    def pushes_sent(self) -> int:
        return self.client.sent

    async def create_account(self, jid: str, password: str) -> None:
        await self.thread.call(lambda: self.client.create_account(jid, password))

    async def delete_account(self, jid: str) -> None:
        await self.thread.call(lambda: self.client.delete_account(jid))

    async def aclose(self) -> None:
        client = self._client

        async def close() -> None:
            if client is None:  # never started
                return
            closing = client.close()
            if closing is not None:
                with _suppress_all():
                    await asyncio.wait_for(closing, 2)

        with trio.CancelScope(shield=True):
            with _suppress_all():
                await self.thread.call(close)
            await self.thread.stop()


class _suppress_all:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if exc is not None and isinstance(exc, Exception):
            log.debug("ignored while closing the XMPP client: %r", exc)
            return True
        return False


async def run_notifier(
    notifier: XmppNotifier, *, task_status: trio.TaskStatus[XmppNotifier] = trio.TASK_STATUS_IGNORED
) -> None:
    """Connect, hand the notifier back, and close it when the surrounding scope is cancelled."""
    try:
        await notifier.start()
        task_status.started(notifier)
        await trio.sleep_forever()
    finally:
        await notifier.aclose()
