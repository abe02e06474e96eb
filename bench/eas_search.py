"""Exchange ActiveSync look-ups: how fast Search, Find, ResolveRecipients and fetching a
message as MIME answer.

What it measures
    The real service (``emm init`` + ``emm serve``, a subprocess on loopback). The bench
    writes an organisation with ``--accounts`` users (the GAL; each with a one-hour event in
    their calendar) and ``--messages`` messages in one user's Sent Items straight into the
    service's SQLite file, then that user's simulated phone (the tests' ActiveSync client)
    sends ``--requests`` of each look-up, one after the other: a GAL Search by a name prefix,
    ResolveRecipients of an exact address with a day of free/busy, a mailbox Search by free
    text (every message scanned), Find (16.1) of the mailbox, and ItemOperations fetching a
    message by LongId as MIME. Reported per look-up: latency p50/p99, requests per second and
    the server's CPU time.

Target
    None fixed; a GAL look-up well under 50 ms at p99 with 1,000 accounts.

Run: ``.venv/bin/python -m bench.eas_search [--accounts 1000] [--messages 1000] [--requests 100]``
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import trio

from engine.config.bootstrap import load_bootstrap
from engine.ids import new_id
from engine.passwords import hash_password
from engine.pim import facts_of
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    ITEM_OPERATIONS,
    RESOLVE_RECIPIENTS,
    SEARCH,
)
from engine.protocols.wbxml import Element
from engine.timestamps import now

from .common import (
    cpu_seconds,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
)
from .eas_client import EasClient, mailbox_find, search
from .healthz import init_service

PASSWORD = "bench password"
EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
    "DTSTART:20270310T{hour:02d}0000Z\r\nDTEND:20270310T{next:02d}0000Z\r\nSUMMARY:Busy\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
MESSAGE = (
    "From: alice@bench.test\r\nTo: person{n}@bench.test\r\nSubject: Report {n}\r\n"
    "Message-ID: <m{n}@bench.test>\r\nDate: Mon, 01 Mar 2027 09:00:00 +0000\r\n"
    'Content-Type: text/plain; charset="utf-8"\r\n\r\n'
    "Figures for week {n}: {word}. Regards, Alice\r\n"
)


def _item(collection: str, organisation: str, version: int, kind: str, text: str) -> tuple:
    facts = facts_of(kind, text, "message/rfc822" if kind == "sent_mail" else None)
    at = now()
    return (collection, organisation, version, facts.content_type, text, facts.uid,
            facts.fingerprint, at, at)  # fmt: skip


def populate(database: Path, accounts: int, messages: int) -> None:
    organisation, alice, sent = new_id(), new_id(), new_id()
    at = now()
    digest = hash_password(PASSWORD)
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
        people = [(alice, "alice", "Alice Bench")] + [
            (new_id(), f"p{n:05d}", f"Person{n:05d} Bench") for n in range(accounts)
        ]
        conn.executemany(
            "INSERT INTO accounts (id, organisation_id, login, kind, display_name, email,"
            " password_hash, created_at, updated_at) VALUES (?, ?, ?, 'user', ?, ?, ?, ?, ?)",
            [(i, organisation, login, name, f"{login}@bench.test", digest, at, at)
             for i, login, name in people],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
            " state, udid, created_at, updated_at) VALUES (?, ?, ?, 'BENCHPHONE', 'ios', 'eas',"
            " 'enrolled', 'BENCHPHONE', ?, ?)",
            (new_id(), organisation, alice, at, at),
        )
        calendars, events = [], []
        for number, (account, _, _) in enumerate(people[1:]):
            calendar = new_id()
            calendars.append((calendar, organisation, account, "calendar", 1, at))
            hour = 8 + number % 8
            text = EVENT.format(uid=f"e{number}", hour=hour, next=hour + 1)
            events.append(_item(calendar, organisation, 1, "calendar", text))
        calendars.append((sent, organisation, alice, "sent_mail", messages, at))
        conn.executemany(
            "INSERT INTO pim_collections (id, organisation_id, account_id, kind, version,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            calendars,
        )
        words = ("budget", "travel", "hiring", "launch")
        mails = [
            _item(sent, organisation, n + 1, "sent_mail",
                  MESSAGE.format(n=n, word=words[n % len(words)]))
            for n in range(messages)
        ]  # fmt: skip
        conn.executemany(
            "INSERT INTO pim_items (collection_id, organisation_id, version, content_type,"
            " data, uid, fingerprint, deleted, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            events + mails,
        )


def gal_search(number: int) -> Element:
    return search("GAL", f"Person{number % 100:02d}", el(SEARCH, "Range", "0-9"))


def resolve(number: int, accounts: int) -> Element:
    return el(
        RESOLVE_RECIPIENTS,
        "ResolveRecipients",
        el(RESOLVE_RECIPIENTS, "To", f"p{number % accounts:05d}@bench.test"),
        el(
            RESOLVE_RECIPIENTS,
            "Options",
            el(
                RESOLVE_RECIPIENTS,
                "Availability",
                el(RESOLVE_RECIPIENTS, "StartTime", "2027-03-10T00:00:00.000Z"),
                el(RESOLVE_RECIPIENTS, "EndTime", "2027-03-11T00:00:00.000Z"),
            ),
        ),
    )


def mailbox_search(number: int) -> Element:
    word = ("budget", "travel", "hiring", "launch")[number % 4]
    query = el(
        SEARCH,
        "Query",
        el(
            SEARCH,
            "And",
            el(AIRSYNC, "Class", "Email"),
            el(AIRSYNC, "CollectionId", "sent"),
            el(SEARCH, "FreeText", word),
        ),
    )
    bodies = el(
        AIRSYNCBASE,
        "BodyPreference",
        el(AIRSYNCBASE, "Type", "1"),
        el(AIRSYNCBASE, "TruncationSize", "100"),
    )
    return search("Mailbox", query, el(SEARCH, "Range", "0-9"), bodies)


def find(number: int) -> Element:
    return mailbox_find(str(number), f"week {number % 500}:", "0-9")


def fetch_mime(long_id: str) -> Element:
    return el(
        ITEM_OPERATIONS,
        "ItemOperations",
        el(
            ITEM_OPERATIONS,
            "Fetch",
            el(ITEM_OPERATIONS, "Store", "Mailbox"),
            el(SEARCH, "LongId", long_id),
            el(
                ITEM_OPERATIONS,
                "Options",
                el(AIRSYNC, "MIMESupport", "2"),
                el(AIRSYNCBASE, "BodyPreference", el(AIRSYNCBASE, "Type", "4")),
            ),
        ),
    )


async def timed(
    phone: EasClient, pid: int, count: int, command: str, body: Callable[[int], Element]
) -> list[str]:
    latencies: list[float] = []
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    for number in range(count):
        sent = time.perf_counter()
        answer = await phone.call(command, body(number))
        latencies.append(time.perf_counter() - sent)
        if answer is None or child_text(answer, "Status") != "1":
            raise RuntimeError(f"{command} failed: {answer}")
    seconds = time.perf_counter() - started
    p50, p99 = percentiles(latencies, 50, 99)
    return [
        f"{p50 * 1000:.1f}",
        f"{p99 * 1000:.1f}",
        f"{count / seconds:,.0f}",
        f"{cpu_seconds(pid) - cpu:.2f}",
    ]


async def run(args: argparse.Namespace, url: str, pid: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        phone = EasClient(http, "bench\\alice", PASSWORD, "BENCHPHONE")
        await phone.folder_sync()
        found = await phone.call("Search", mailbox_search(0))
        long_id = child_text(found.find("Response").find("Store").find("Result"), "LongId")  # type: ignore[union-attr,arg-type]
        rows: list[list[str]] = []
        looks: list[tuple[str, str, Callable[[int], Element]]] = [
            ("GAL Search (prefix)", "Search", gal_search),
            ("ResolveRecipients + free/busy", "ResolveRecipients",
             lambda n: resolve(n, args.accounts)),
            ("mailbox Search (free text)", "Search", mailbox_search),
            ("Find mailbox (16.1)", "Find", find),
            ("ItemOperations MIME by LongId", "ItemOperations",
             lambda _: fetch_mime(long_id or "")),
        ]  # fmt: skip
        for name, command, body in looks:
            rows.append([name, *await timed(phone, pid, args.requests, command, body)])
    print_table(
        f"ActiveSync look-ups, {args.accounts:,} accounts, {args.messages:,} messages"
        f" — {environment()}",
        ["look-up", "p50 ms", "p99 ms", "req/s", "server CPU s"],
        rows,
        [f"{args.requests} requests of each, one at a time, from one device"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    exit_on_sigterm()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        server = stack.enter_context(running_service(config, work))
        populate(load_bootstrap(config).database.path, args.accounts, args.messages)
        trio.run(run, args, server.url("http"), server.pid)


if __name__ == "__main__":
    main()
