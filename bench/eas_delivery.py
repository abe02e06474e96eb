"""Exchange ActiveSync local delivery: SendMail to many colleagues, and how fast their parked
Pings answer.

What it measures
    The real service (``emm init`` + ``emm serve``, a subprocess on loopback). The bench
    writes an organisation with ``--accounts`` users (``u0000@bench.test``, ...), one
    inventory device each, straight into the service's SQLite file (provisioning switched off).
    Every device primes its Inbox. Then ``--messages`` times: ``--recipients`` colleagues park
    a Ping on their Inbox, the first user sends them one message (SendMail, WBXML, kept in
    Sent Items), and each recipient's Ping must answer; each recipient then Syncs its Inbox and
    must find exactly that message. Reported: SendMail's round trip (one write unit: the Sent
    copy and one Inbox copy per recipient), the time from sending to each Ping's answer, and
    the recipients' Sync round trip (p50, p99, max).

Target
    Every recipient's Ping answers within 1 s of SendMail (p99), every message delivered once.

Run: ``.venv/bin/python -m bench.eas_delivery [--accounts 200] [--recipients 50] [--messages 20]``
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import trio

from engine.config.bootstrap import load_bootstrap
from engine.ids import new_id
from engine.passwords import hash_password
from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import AIRSYNC, COMPOSE_MAIL, PING
from engine.timestamps import now

from .common import (
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
    verdict,
)
from .eas_ping import PASSWORD, exchange, read_response, request
from .healthz import init_service


def populate(database: Path, accounts: int) -> list[tuple[str, str, str]]:
    """An organisation, its users and one device each; (user name, DeviceId, address)."""
    organisation = new_id()
    at = now()
    digest = hash_password(PASSWORD)
    people: list[tuple[str, str, str]] = []
    with sqlite3.connect(database, timeout=30) as conn:
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, 'bench', 'Bench', ?, ?)",
            (organisation, at, at),
        )
        conn.execute(
            "INSERT INTO eas_settings (organisation_id, settings, revision, updated_at)"
            " VALUES (?, '{\"require_provisioning\": false}', 1, ?)",
            (organisation, at),
        )
        for number in range(accounts):
            account, login = new_id(), f"u{number:04d}"
            device = f"MAIL{number:06d}"
            conn.execute(
                "INSERT INTO accounts (id, organisation_id, login, kind, email, password_hash,"
                " created_at, updated_at) VALUES (?, ?, ?, 'user', ?, ?, ?, ?)",
                (account, organisation, login, f"{login}@bench.test", digest, at, at),
            )
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, udid, created_at, updated_at) VALUES (?, ?, ?, ?, 'ios', 'eas',"
                " 'enrolled', ?, ?, ?)",
                (new_id(), organisation, account, device, device, at, at),
            )
            people.append((f"bench\\{login}", device, f"{login}@bench.test"))
    return people


def inbox_sync(key: str) -> bytes:
    parts = [el(AIRSYNC, "SyncKey", key), el(AIRSYNC, "CollectionId", "inbox")]
    return eas.encode(
        el(AIRSYNC, "Sync", el(AIRSYNC, "Collections", el(AIRSYNC, "Collection", *parts)))
    )


def inbox_ping() -> bytes:
    folder = el(PING, "Folder", el(PING, "Id", "inbox"), el(PING, "Class", "Email"))
    return eas.encode(
        el(PING, "Ping", el(PING, "HeartbeatInterval", "600"), el(PING, "Folders", folder))
    )


def send_mail(number: int, to: list[str]) -> bytes:
    text = (
        f"From: u0000@bench.test\r\nTo: {', '.join(to)}\r\nSubject: Bench {number}\r\n"
        f"Message-ID: <bench-{number}@bench.test>\r\n\r\nMessage {number}.\r\n"
    )
    return eas.encode(
        el(
            COMPOSE_MAIL,
            "SendMail",
            el(COMPOSE_MAIL, "ClientId", f"bench-{number}"),
            el(COMPOSE_MAIL, "SaveInSentItems"),
            el(COMPOSE_MAIL, "Mime", text.encode()),
        )
    )


async def run(args: argparse.Namespace, url: str, people: list[tuple[str, str, str]]) -> None:
    host, port_text = url.removeprefix("http://").split(":")
    port = int(port_text)
    keys: dict[str, str] = {}

    async def sync(user: str, device: str) -> tuple[float, int]:
        """One Inbox Sync: its round trip and how many messages it brought."""
        started = time.perf_counter()
        key = keys.get(device, "0")
        status, body = await exchange(
            host, port, request(host, user, device, "Sync", inbox_sync(key))
        )
        if status != 200:
            raise RuntimeError(f"Sync answered {status}")
        collection = eas.decode(body).find("Collections").find("Collection")  # type: ignore[union-attr]
        keys[device] = child_text(collection, "SyncKey") or key  # type: ignore[arg-type]
        commands = collection.find("Commands")  # type: ignore[union-attr]
        added = [c for c in (commands.elements() if commands else []) if c.tag == "Add"]
        return time.perf_counter() - started, len(added)

    async def hold(
        user: str,
        device: str,
        answered: dict[str, float],
        total: int,
        everyone: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Park a Ping on the Inbox; note when it answers (``everyone``: all have)."""
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(request(host, user, device, "Ping", inbox_ping()))
            task_status.started()
            await read_response(stream)
        answered[device] = time.perf_counter()
        if len(answered) == total:
            everyone.set()

    for user, device, _ in people:  # prime every Inbox: SyncKey 0, then an empty Sync
        await sync(user, device)
        await sync(user, device)
    sender_user, sender_device, _ = people[0]
    colleagues = people[1:]
    sends: list[float] = []
    woken: list[float] = []
    syncs: list[float] = []
    delivered = expected = 0
    for number in range(args.messages):
        start = (number * args.recipients) % len(colleagues)
        chosen = [colleagues[(start + i) % len(colleagues)] for i in range(args.recipients)]
        answered: dict[str, float] = {}
        everyone = trio.Event()
        async with trio.open_nursery() as nursery:
            for user, device, _ in chosen:
                await nursery.start(hold, user, device, answered, len(chosen), everyone)
            await trio.sleep(0.3)  # let the last Pings park
            sent = time.perf_counter()
            status, _ = await exchange(
                host,
                port,
                request(
                    host,
                    sender_user,
                    sender_device,
                    "SendMail",
                    send_mail(number, [address for _, _, address in chosen]),
                ),
            )
            sends.append(time.perf_counter() - sent)
            if status != 200:
                raise RuntimeError(f"SendMail answered {status}")
            with trio.move_on_after(5):
                await everyone.wait()
            nursery.cancel_scope.cancel()
        woken += [moment - sent for moment in answered.values()]
        for user, device, _ in chosen:
            seconds, added = await sync(user, device)
            syncs.append(seconds)
            delivered += added
            expected += 1
    rows = []
    for name, values in (
        (f"SendMail to {args.recipients}", sends),
        ("SendMail to Ping answer", woken),
        ("recipient's Inbox Sync", syncs),
    ):
        p50, p99, top = percentiles(values, 50, 99, 100)
        rows.append(
            [
                name,
                f"{len(values)}",
                f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {top * 1000:.0f} ms",
            ]
        )
    rows.append(["messages delivered", f"{delivered} of {expected}", ""])
    print_table(f"ActiveSync local delivery — {environment()}", ["measure", "count", "time"], rows)
    p99 = percentiles(woken, 99)[0] if woken else float("inf")
    in_time = p99 < 1.0 and len(woken) == expected
    print(
        f"target every Ping answered within 1 s (p99): {verdict(in_time)}"
        f"; every message delivered once: {verdict(delivered == expected)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--recipients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    if not 0 < args.recipients < args.accounts:
        sys.exit("--recipients must be between 1 and --accounts - 1")
    exit_on_sigterm()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        server = stack.enter_context(running_service(config, work))
        people = populate(load_bootstrap(config).database.path, args.accounts)
        trio.run(run, args, server.url("http"), people)


if __name__ == "__main__":
    main()
