"""OMA DS: SyncEvolution syncing 10,000 contacts with this service and with SyncEvolution's
own SyncML server, side by side; then sessions per second of 100 concurrent clients.

What it measures
    Part 1, with the same real client (SyncEvolution, plain files as its store, WBXML, the
    client's default) against two servers: this service (``emm serve`` subprocess, SQLite
    PIM store) and the peer, SyncEvolution's own SyncML HTTP server (Debian
    ``syncevolution-http``: ``syncevo-http-server`` with ``syncevo-dbus-server`` in a private
    D-Bus session, file backend). Three steps each: a slow sync of N contacts into the empty
    server, a two-way sync with no changes, a refresh-from-server (the client fetches all N
    again). Reported per step: wall time of the client's run and the server's CPU seconds
    (user + system from ``/proc``; for the peer summed over its whole process tree:
    dbus-daemon, the HTTP front, syncevo-dbus-server and its helpers).
    Part 2: C simulated clients (hand-written SyncML in XML, MD5 authentication with the
    nonce of the previous session) each run no-change two-way sessions (3 round trips:
    alerts, empty Sync, statuses) in a loop for a fixed time against this service; reported:
    sessions per second and session latency p50/p99.

Why
    A sync service is judged by how fast a full sync is and how many quiet syncs it
    sustains; the peer is the reference implementation the same client was written for.

Target
    This service at least 3x fewer server CPU seconds than the peer, and faster wall time.

Run: ``.venv/bin/python -m bench.omads_sync [--contacts 10000] [--clients 100] [--seconds 10]``
(installs ``syncevolution-http`` with apt-get when the peer is missing; ``--skip-peer``.)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from engine.config import load_bootstrap
from engine.ids import new_id
from engine.passwords import hash_password
from engine.protocols import syncml
from engine.protocols.syncml import (
    Alert,
    Anchor,
    Cred,
    Item,
    Message,
    Meta,
    Source,
    Status,
    Sync,
    SyncHdr,
    Target,
)
from engine.timestamps import now

from .common import (
    REPO,
    Server,
    cpu_seconds,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
    verdict,
)
from .healthz import init_service

CLIENT = REPO.parent / "shared" / "tools" / "syncevolution" / "syncml-client"
USER, PASSWORD = "bench", "bench password 1"
ORGANISATION = "bench"


# -- the data --------------------------------------------------------------------------------


def write_contacts(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (folder / f"c{n:05d}").write_text(
            "BEGIN:VCARD\r\nVERSION:3.0\r\n"
            f"FN:Given{n} Family{n}\r\nN:Family{n};Given{n};;;\r\n"
            f"TEL;TYPE=CELL:+44 20 7946 {n % 10000:04d}\r\n"
            f"EMAIL;TYPE=WORK:person{n}@example.org\r\n"
            f"ORG:Example {n % 97}\r\nEND:VCARD\r\n"
        )


def seed_service(config: Path, owners: dict[str, str]) -> None:
    """One organisation; per client id an owner (login -> client id) with that device."""
    database = load_bootstrap(config).database.path
    at = now()
    organisation = new_id()
    password_hash = hash_password(PASSWORD)
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, ?, 'Bench', ?, ?)",
            (organisation, ORGANISATION, at, at),
        )
        for login, sync_id in owners.items():
            owner = new_id()
            conn.execute(
                "INSERT INTO accounts (id, organisation_id, login, kind, password_hash,"
                " created_at, updated_at) VALUES (?, ?, ?, 'user', ?, ?, ?)",
                (owner, organisation, login, password_hash, at, at),
            )
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, imei, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'other', 'oma_ds', 'enrolled', ?, ?, ?)",
                (new_id(), organisation, owner, sync_id, sync_id, at, at),
            )


# -- servers ---------------------------------------------------------------------------------


def session_cpu_seconds(session: int) -> float:
    """CPU of every live process of a session (the peer's whole tree: D-Bus activation
    re-parents syncevo-dbus-server), with the children each has reaped."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            total += sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def peer_server(work: Path) -> Iterator[tuple[str, int]]:
    """SyncEvolution's SyncML server with a file backend, in its own D-Bus session."""
    if shutil.which("syncevo-http-server") is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "syncevolution-http",
             "python3-twisted", "python3-dbus", "python3-gi"],
            check=True, env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
    home = work / "peer-home"
    store = work / "peer-store"
    env = os.environ | {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
    }
    (store / "addressbook").mkdir(parents=True)
    subprocess.run(
        ["syncevolution", "--configure", "--template", "SyncEvolution_Client", "keyring=no",
         f"username={USER}", f"password={PASSWORD}", "remoteDeviceId=peer-client",
         "addressbook/backend=file", "addressbook/databaseFormat=text/vcard",
         f"addressbook/database=file://{store / 'addressbook'}", "addressbook/sync=two-way",
         "peer-client"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}/syncevolution"
    log = open(work / "peer.log", "wb")  # noqa: SIM115 - closed below
    # Debian's script carries an unsubstituted "#!@PYTHON@" line: run it with python3.
    process = subprocess.Popen(
        ["dbus-run-session", "--", "/usr/bin/python3", "/usr/bin/syncevo-http-server", url],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"listening on port" not in (work / "peer.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the peer did not start:\n" + (work / "peer.log").read_text())
            time.sleep(0.1)
        yield url, process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()


# -- part 1: the real client -----------------------------------------------------------------


@dataclass
class Step:
    name: str
    wall: float
    cpu: float
    items: int


def run_client(url: str, root: Path, device_id: str, mode: str) -> None:
    done = subprocess.run(
        [str(CLIENT), "--url", url, "--user", USER, "--password", PASSWORD,
         "--device-id", device_id, "--dir", str(root), "--mode", mode, "addressbook"],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{mode} against {url} failed:\n{done.stdout[-3000:]}{done.stderr}")


def three_steps(url: str, root: Path, device_id: str, cpu: callable, count: int) -> list[Step]:  # type: ignore[valid-type]
    write_contacts(root / "addressbook", count)
    steps = []
    for name, mode in (
        ("slow sync", "slow"),
        ("two-way, no change", "two-way"),
        ("refresh-from-server", "refresh-from-server"),
    ):
        before, started = cpu(), time.perf_counter()
        run_client(url, root, device_id, mode)
        wall = time.perf_counter() - started
        items = len(list((root / "addressbook").iterdir()))
        steps.append(Step(name, wall, cpu() - before, items))
    return steps


# -- part 2: simulated clients ---------------------------------------------------------------


def _b64md5(data: bytes) -> bytes:
    return base64.b64encode(hashlib.md5(data).digest())


class SimulatedClient:
    """A SyncML client doing no-change two-way syncs of one datastore, in XML."""

    def __init__(self, http: httpx.AsyncClient, url: str, sync_id: str) -> None:
        self.http, self.base, self.sync_id = http, url, sync_id
        self.user = sync_id  # each simulated device has its own owner
        self.session = 0
        self.anchor: str | None = None
        self.nonce: str | None = None
        self.digest = _b64md5(f"{self.user}:{PASSWORD}".encode())

    def _cred(self) -> Cred:
        if self.nonce is None:
            data = base64.b64encode(f"{self.user}:{PASSWORD}".encode()).decode()
            return Cred(data, Meta(type="syncml:auth-basic", format="b64"))
        digest = _b64md5(self.digest + b":" + base64.b64decode(self.nonce)).decode()
        return Cred(digest, Meta(type="syncml:auth-md5", format="b64"))

    async def _send(
        self, url: str, msg_id: int, commands: list[object], cred: Cred | None
    ) -> Message:
        for number, command in enumerate(commands, 1):
            command.cmd_id = str(number)  # type: ignore[attr-defined]
        header = SyncHdr(
            session_id=str(self.session), msg_id=str(msg_id), target=Target(self.base),
            source=Source(self.sync_id, self.user), cred=cred, meta=Meta(max_msg_size=65536),
        )  # fmt: skip
        body = syncml.encode_message(Message(header, commands, True))  # type: ignore[arg-type]
        answer = await self.http.post(
            url, content=body, headers={"Content-Type": syncml.CONTENT_TYPE_DS_XML}
        )
        answer.raise_for_status()
        return syncml.parse_message(answer.content, syncml.CONTENT_TYPE_DS_XML)

    async def sync_once(self) -> None:
        self.session += 1
        mode = "200" if self.anchor else "201"
        next_anchor = f"{self.session}"
        alert = Alert(cmd_id="", data=mode, items=[Item(
            target=Target("addressbook"), source=Source("./addressbook"),
            meta=Meta(anchor=Anchor(next=next_anchor, last=self.anchor)))])  # fmt: skip
        reply = await self._send(self.base, 1, [alert], self._cred())
        header = reply.commands[0]
        assert isinstance(header, Status)
        if header.data != "212":
            raise RuntimeError(f"{self.sync_id}: authentication answered {header.data}")
        if header.chal is not None:
            self.nonce = header.chal.meta.next_nonce
        url = reply.header.resp_uri or self.base
        sync = Sync(cmd_id="", target=Target("addressbook"), source=Source("./addressbook"))
        reply = await self._send(url, 2, [sync], None)
        reply = await self._send(url, 3, [], None)
        if not reply.final:
            raise RuntimeError(f"{self.sync_id}: the session did not end")
        self.anchor = next_anchor


async def concurrent_sessions(
    url: str, clients: int, seconds: float, cpu: Callable[[], float]
) -> tuple[list[float], float, float]:
    """Session latencies of the timed loop, its length and the server's CPU during it (the
    first session of each client, a slow sync with Basic authentication, comes before)."""
    latencies: list[float] = []
    # One connection per client, as devices have: one shared pool of 100 connections costs
    # httpx more CPU than the service spends.
    async with contextlib.AsyncExitStack() as stack:
        simulated = []
        for n in range(clients):
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            simulated.append(SimulatedClient(http, url, f"sim-{n}"))
        async with trio.open_nursery() as nursery:  # first sessions: slow sync, Basic
            for client in simulated:
                nursery.start_soon(client.sync_once)
        cpu_before = cpu()
        started = time.perf_counter()
        deadline = started + seconds

        async def loop(client: SimulatedClient) -> None:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                await client.sync_once()
                latencies.append(time.perf_counter() - begun)

        async with trio.open_nursery() as nursery:
            for client in simulated:
                nursery.start_soon(loop, client)
        return latencies, time.perf_counter() - started, cpu() - cpu_before


# -- main ------------------------------------------------------------------------------------


@contextlib.contextmanager
def service(work: Path, owners: dict[str, str]) -> Iterator[Server]:
    config = init_service(work / "data")
    seed_service(config, owners)
    with running_service(config, work) as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=100, help="concurrent simulated clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of part 2")
    parser.add_argument("--skip-peer", action="store_true", help="measure this service only")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    header = environment()
    with tempfile.TemporaryDirectory(prefix="emm-bench-omads-") as temporary:
        work = Path(temporary)
        sims = [f"sim-{n}" for n in range(args.clients)]
        with service(work, {USER: "bench-client"} | {sim: sim for sim in sims}) as server:
            url = server.url("http") + "/omads"
            ours = three_steps(
                url, work / "client-ours", "bench-client", lambda: cpu_seconds(server.pid),
                args.contacts,
            )  # fmt: skip
            latencies, elapsed, part2_cpu = trio.run(
                concurrent_sessions,
                url,
                args.clients,
                args.seconds,
                lambda: cpu_seconds(server.pid),
            )
            sessions = len(latencies)
        peer: list[Step] = []
        if not args.skip_peer:
            with peer_server(work) as (peer_url, peer_pid):
                peer = three_steps(
                    peer_url, work / "client-peer", "peer-client",
                    lambda: session_cpu_seconds(peer_pid), args.contacts,
                )  # fmt: skip
    rows = []
    for index, step in enumerate(ours):
        row = [step.name, f"{step.wall:.2f}", f"{step.cpu:.2f}", str(step.items)]
        if peer:
            other = peer[index]
            row += [
                f"{other.wall:.2f}",
                f"{other.cpu:.2f}",
                str(other.items),
                f"{other.cpu / step.cpu:.1f}x" if step.cpu else "-",
                f"{other.wall / step.wall:.2f}x",
            ]
        rows.append(row)
    headers = ["step", "wall s", "server CPU s", "items"]
    if peer:
        headers += ["peer wall s", "peer CPU s", "peer items", "CPU ratio", "wall ratio"]
    notes = []
    if peer:
        ours_cpu, peer_cpu = sum(s.cpu for s in ours), sum(s.cpu for s in peer)
        ours_wall, peer_wall = sum(s.wall for s in ours), sum(s.wall for s in peer)
        notes.append(
            f"total: server CPU {ours_cpu:.2f} s vs peer {peer_cpu:.2f} s "
            f"({peer_cpu / max(ours_cpu, 1e-9):.1f}x), wall {ours_wall:.1f} s vs {peer_wall:.1f} s"
        )
        notes.append(
            "target 3x less server CPU and faster wall time: "
            + verdict(peer_cpu >= 3 * ours_cpu and peer_wall > ours_wall)
        )
    print_table(
        f"OMA DS, SyncEvolution client, {args.contacts} contacts, WBXML ({header})",
        headers,
        rows,
        notes,
    )
    p50, p99 = percentiles(latencies, 50, 99)
    print_table(
        f"No-change two-way sessions, {args.clients} concurrent simulated clients, XML",
        ["sessions", "seconds", "sessions/s", "p50 ms", "p99 ms", "server CPU s"],
        [
            [
                str(sessions),
                f"{elapsed:.1f}",
                f"{sessions / elapsed:.0f}",
                f"{p50 * 1000:.1f}",
                f"{p99 * 1000:.1f}",
                f"{part2_cpu:.2f}",
            ]
        ],
    )


if __name__ == "__main__":
    main()
