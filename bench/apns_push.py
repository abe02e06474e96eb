"""Pushes per second from the APNs notifier to the APNs test server over one HTTP/2 connection.

What it measures
    ``bench.apns_server`` runs as a subprocess on a loopback port (HTTP/2, TLS, client
    certificate required, every push checked as APNs checks it). In this process an
    :class:`~engine.actors.apns.ApnsNotifier` is woken for N devices at once (its
    ``lookup`` hands back N pushes with random 32-byte tokens); the clock runs from the
    wake-up until the notifier has reported every push as sent. After a warm-up of 200
    pushes (TLS handshake, connection set-up), R runs are timed. The server then says how
    many pushes it accepted and over how many connections they came.

Why
    Apple devices act only when pushed: queueing a command for a fleet must wake all of it
    in seconds. APNs wants one connection per certificate carrying many streams, not one
    connection per push.

Target
    10,000 pushes in under 3 s.

Run: ``.venv/bin/python -m bench.apns_push [--pushes 10000] [--streams 1000] [--runs 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio

from engine.actors.apns import ApnsNotifier, ClientIdentity, Push, client_context

from .common import cpu_seconds, environment, exit_on_sigterm, print_table, server_process, verdict

TARGET_SECONDS = 3.0


async def timed_runs(
    url: str, directory: Path, pushes: int, streams: int, runs: int
) -> list[float]:
    identity = ClientIdentity("bench", *_split((directory / "push.pem").read_text()))
    topic = (directory / "topic").read_text()
    batch: dict[str, Push] = {}
    done = trio.Event()
    sent = 0
    expected = 0

    async def lookup(device_ids: Sequence[str]) -> list[Push]:
        return [batch[d] for d in device_ids]

    async def refused(push: Push, reason: str) -> None:
        raise RuntimeError(f"push refused: {reason}")

    async def on_sent(done_pushes: list[Push]) -> None:
        nonlocal sent
        sent += len(done_pushes)
        if sent == expected:
            done.set()

    seconds: list[float] = []
    async with trio.open_nursery() as nursery:
        notifier = ApnsNotifier(
            url,
            lookup,
            refused,
            on_sent,
            ca_file=str(directory / "apple-ca.pem"),
            max_streams=streams,
        )
        await nursery.start(notifier.run)
        for run, count in enumerate([200] + [pushes] * runs):
            batch = {
                f"{run}-{n}": Push(secrets.token_hex(32), f"magic-{n}", topic, identity)
                for n in range(count)
            }
            sent, expected, done = 0, count, trio.Event()
            started = time.perf_counter()
            notifier.wake(batch)
            with trio.fail_after(120):
                await done.wait()
            if run:  # the first is the warm-up
                seconds.append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return seconds


def _split(pem: str) -> tuple[str, str]:
    """Certificate and key of one PEM file."""
    certificate, _, key = pem.partition("-----BEGIN PRIVATE")
    return certificate, "-----BEGIN PRIVATE" + key


def measure(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-apns-")))
        server = stack.enter_context(
            server_process(
                "apns",
                [sys.executable, "-m", "bench.apns_server", "--dir", str(work)],
                ready_prefix="apns: listening on ",
                expect=1,
                log_dir=work,
            )
        )
        url = server.urls[0]
        server_cpu, client_cpu = cpu_seconds(server.pid), cpu_seconds()
        seconds = trio.run(timed_runs, url, work, args.pushes, args.streams, args.runs)
        server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, cpu_seconds() - client_cpu
        context = client_context(
            ClientIdentity("stats", *_split((work / "push.pem").read_text())),
            str(work / "apple-ca.pem"),
        )
        with httpx.Client(http2=True, verify=context) as client:  # TLS wants the certificate
            stats = client.get(f"{url}/stats").json()
    rows = [
        [f"run {n + 1}", f"{args.pushes}", f"{s:.2f}", f"{args.pushes / s:,.0f}"]
        for n, s in enumerate(seconds)
    ]
    best = min(seconds)
    total = 200 + args.pushes * args.runs
    print_table(
        f"APNs pushes over one HTTP/2 connection ({environment()})",
        ["run", "pushes", "seconds", "pushes/s"],
        rows,
        [
            f"server accepted {stats['pushes']} pushes ({stats['refused']} refused) over "
            f"{stats['connections']} connection(s), {args.streams} streams at most at once",
            f"CPU per push: notifier {1000 * client_cpu / total:.2f} ms, test server "
            f"{1000 * server_cpu / total:.2f} ms (both on the same {os.cpu_count()} CPUs)",
            f"target: {args.pushes} pushes in under {TARGET_SECONDS:.0f} s: "
            f"{verdict(best < TARGET_SECONDS)} (best {best:.2f} s)",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=1000, help="pushes in flight at once")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    measure(args)


if __name__ == "__main__":
    main()
