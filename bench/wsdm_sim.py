"""A WSDM device simulator: many EMM client apps in one process.

Each simulated device enrols with an installation code, checks in (state, inventory, the
configuration hash it holds), executes the commands it receives and reports their results,
and, given a push identity, listens on XMPP and checks in as soon as a wake-up arrives.

HTTP runs on Trio with one ``httpx.AsyncClient`` (a connection pool shared by all devices).
XMPP runs as one slixmpp client per device, all on one asyncio loop in its own thread
(``engine.actors.xmpp.AsyncioThread``); a wake-up crosses to Trio through the Trio token and
a memory channel. Used by the tests (``tests/test_wsdm*.py``) and the benches
(``bench/wsdm_checkin.py``, ``bench/wsdm_push.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from engine.actors.xmpp import PUSH_NAMESPACE, AsyncioThread, ReconnectingClient

WSDM = "/api/v1/wsdm"
_counter = itertools.count()


@dataclass
class SimulatedDevice:
    """One client app's memory: its credentials, configuration and executed commands."""

    name: str
    device_id: str = ""
    token: str = ""
    push: dict[str, str] | None = None
    configuration: dict[str, Any] = field(default_factory=dict)
    executed: dict[str, str] = field(default_factory=dict)  # command id -> WSDM type
    checkins: int = 0
    pushes: int = 0
    #: monotonic time of each wake-up received (the push bench reads them).
    woken_at: list[float] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class WsdmError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text}")
        self.status = response.status_code
        self.body = response.json() if response.content else {}


def state_report(device: SimulatedDevice) -> dict[str, Any]:
    """What an Android phone reports: OS, model, battery, storage, network, apps."""
    return {
        "os_version": "14",
        "model": "Pixel 8",
        "manufacturer": "Google",
        "battery_level": 80,
        "charging": False,
        "rooted": False,
        "storage": {"total_bytes": 128_000_000_000, "free_bytes": 64_000_000_000},
        "network": {"type": "wifi", "roaming": False},
        "applications": [
            {"id": "com.example.mail", "name": "Mail", "version": "3.1"},
            {"id": "com.example.emm", "name": "EMM client", "version": "1.0"},
        ],
    }


def execute(command: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pretend to run a WSDM command: its result and any further locations to report.

    A locate or track result carries the location itself, as the client app reports it.
    """
    kind = command["type"]
    if kind in ("ReportLocation", "TrackLocation"):
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{next(_counter) % 10**6:06d}Z"
        location = {"latitude": 52.52, "longitude": 13.405, "accuracy": 12.5, "at": at}
        return {"command_id": command["command_id"], "status": "done", "detail": location}, []
    return {"command_id": command["command_id"], "status": "done", "detail": {"type": kind}}, []


class Simulator:
    """Drives simulated devices against a running service."""

    def __init__(self, client: httpx.AsyncClient, *, report_inventory: bool = True) -> None:
        self.client = client
        self.report_inventory = report_inventory
        self.latencies: list[float] = []

    async def enrol(self, code: str, name: str = "phone") -> SimulatedDevice:
        device = SimulatedDevice(name)
        response = await self.client.post(
            f"{WSDM}/enrol",
            json={
                "version": 1,
                "code": code,
                "device": {"platform": "android", "name": name, "model": "Pixel 8"},
            },
        )
        if response.status_code != 201:
            raise WsdmError(response)
        answer = response.json()
        device.device_id = answer["device_id"]
        device.token = answer["device_token"]
        device.push = answer["push"]
        device.configuration = answer["configuration"]
        return device

    def check_in_body(self, device: SimulatedDevice, checkin_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version": 1,
            "checkin_id": checkin_id,
            "state": state_report(device) if self.report_inventory else {},
            "configuration_hash": device.configuration.get("hash"),
        }
        if device.push is None:
            body["push_identity"] = False
        return body

    async def check_in(self, device: SimulatedDevice) -> dict[str, Any]:
        """One check-in; executes what it receives and reports the results at once."""
        device.checkins += 1
        body = self.check_in_body(device, f"{device.name}-{device.checkins}")
        started = time.perf_counter()
        response = await self.client.post(f"{WSDM}/checkin", json=body, headers=device.auth)
        self.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise WsdmError(response)
        answer = response.json()
        if "configuration" in answer:
            device.configuration = answer["configuration"]
        if "push" in answer:
            device.push = answer["push"]
        await self.execute_commands(device, answer["commands"])
        return answer

    async def execute_commands(
        self, device: SimulatedDevice, commands: list[dict[str, Any]]
    ) -> None:
        results, locations = [], []
        for command in commands:
            if command["command_id"] in device.executed:
                continue  # handed out again before its result arrived: run once
            result, found = execute(command)
            device.executed[command["command_id"]] = command["type"]
            results.append(result)
            locations += found
        if locations:
            # Locations travel with a check-in; the results follow below.
            device.checkins += 1
            body = self.check_in_body(device, f"{device.name}-{device.checkins}")
            body["locations"] = locations
            response = await self.client.post(f"{WSDM}/checkin", json=body, headers=device.auth)
            if response.status_code != 200:
                raise WsdmError(response)
        if results:
            response = await self.client.post(
                f"{WSDM}/results", json={"version": 1, "results": results}, headers=device.auth
            )
            if response.status_code != 200:
                raise WsdmError(response)

    async def run_interval(self, device: SimulatedDevice, *, stop: trio.Event) -> None:
        """Check in at the configured connection interval until ``stop``."""
        while not stop.is_set():
            await self.check_in(device)
            with trio.move_on_after(device.configuration["connection_interval_seconds"]):
                await stop.wait()


# --------------------------------------------------------------------------- XMPP side


class DeviceXmpp(ReconnectingClient):
    """One device's XMPP session: wake-ups go to ``woken(device)`` on the Trio side."""

    def __init__(
        self,
        device: SimulatedDevice,
        host: str,
        port: int,
        on_wake: Any,
        on_online: Any,
        tls: ssl.SSLContext,
    ) -> None:
        assert device.push is not None
        super().__init__(
            f"{device.push['jid']}/app",
            device.push["password"],
            host,
            port,
            max_backoff=2.0,
            ssl_context=tls,
        )
        self.device = device
        self.on_wake = on_wake
        self.on_online = on_online
        self.register_plugin("xep_0199")
        self.add_event_handler("message", self._message)

    def went_online(self) -> None:
        # Available presence: the server delivers wake-ups (and those it kept offline).
        self.send_presence()
        self._confirming = asyncio.ensure_future(self._confirm_online())

    async def _confirm_online(self) -> None:
        # A ping answered means the presence before it was processed: pushes now arrive.
        with contextlib.suppress(Exception):
            await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=10)
        self.on_online(self.device)

    def _message(self, message: Any) -> None:
        if message.xml.find(f"{{{PUSH_NAMESPACE}}}wsdm") is not None:
            self.device.woken_at.append(time.monotonic())
            self.device.pushes += 1
            self.on_wake(self.device)


class PushListeners:
    """Every simulated device's XMPP client on one asyncio loop in one thread.

    ``wakes`` yields the devices woken by a push, on the Trio side.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.tls = ssl.create_default_context()  # one for all devices (see ReconnectingClient)
        self.thread = AsyncioThread("wsdm-sim-xmpp")
        self.clients: dict[str, DeviceXmpp] = {}
        self._token = trio.lowlevel.current_trio_token()
        self._send, self.wakes = trio.open_memory_channel[SimulatedDevice](100_000)
        self.online: set[str] = set()
        self._online_changed = trio.Event()

    def _woken(self, device: SimulatedDevice) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send.send_nowait, device)

    def _came_online(self, device: SimulatedDevice) -> None:
        def mark() -> None:
            self.online.add(device.device_id)
            self._online_changed.set()

        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(mark)

    async def listen(self, devices: list[SimulatedDevice]) -> None:
        """Connect these devices and wait until all are online (callers set the deadline)."""

        async def connect() -> None:
            for device in devices:
                client = DeviceXmpp(
                    device, self.host, self.port, self._woken, self._came_online, self.tls
                )
                self.clients[device.device_id] = client
                client.start()

        await self.thread.call(connect)
        await self.wait_online([d.device_id for d in devices])

    async def wait_online(self, device_ids: list[str]) -> None:
        while not all(d in self.online for d in device_ids):
            await self._online_changed.wait()
            self._online_changed = trio.Event()

    def mark_all_offline(self) -> None:
        """Forget who is online (e.g. before restarting the server)."""
        self.online.clear()

    async def aclose(self) -> None:
        async def close() -> None:
            closing = [c.close() for c in self.clients.values()]
            pending = [f for f in closing if f is not None]
            if pending:
                await asyncio.wait(pending, timeout=3)

        with trio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await self.thread.call(close)
            await self.thread.stop()


@contextlib.asynccontextmanager
async def push_listeners(host: str, port: int) -> AsyncIterator[PushListeners]:
    listeners = PushListeners(host, port)
    try:
        yield listeners
    finally:
        await listeners.aclose()


async def answer_pushes(simulator: Simulator, listeners: PushListeners) -> None:
    """Check in every device that is woken, as the client app does; runs until cancelled."""
    async with trio.open_nursery() as nursery:
        async for device in listeners.wakes:
            nursery.start_soon(simulator.check_in, device)
