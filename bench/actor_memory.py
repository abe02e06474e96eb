"""Memory of live DeviceSession actors: process RSS with N sessions active and parked.

What it measures
    N device sessions are activated through a ProtocolListener, one request each (as a
    device's first request would), so N DeviceSession actors are live, each parked on its
    empty mailbox (idle actors are found by the registry's sweep, no timer per actor). The
    session logic is trivial but
    holds a little state (its key, a request count, the last message). The process RSS is
    read before the activations, after them, and after ``gc.collect()``; the difference
    divided by N is what one live actor costs. The activation rate is reported too.

Why
    Tens of thousands of devices can hold a live session at a peak (EAS Ping, Apple MDM,
    SyncML sessions that span several round trips). What one parked actor costs decides how
    many devices one node can serve before it is memory-bound rather than CPU-bound.

Target
    100,000 live actors under 1 GiB RSS for the whole process.

Run: ``.venv/bin/python -m bench.actor_memory [--actors 100000] [--callers 256]``
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import trio
import trio.testing

from engine.actors import DeviceRequest, Listener, start_listener

from .common import (
    MIB,
    GcTimer,
    add_gc_option,
    apply_gc_option,
    environment,
    peak_rss_bytes,
    print_table,
    rss_bytes,
    verdict,
)

TARGET_ACTORS = 100_000
TARGET_RSS = 1024 * MIB


class TinyLogic:
    """A session logic with a little state, the least a real protocol session holds."""

    __slots__ = ("device_key", "last", "requests")

    def __init__(self, device_key: str) -> None:
        self.device_key = device_key
        self.requests = 0
        self.last: Any = None

    async def handle(self, message: Any) -> Any:
        self.requests += 1
        self.last = message
        return self.requests

    async def close(self) -> None:
        pass


async def activate(listener: Listener, actors: int, callers: int) -> float:
    """Send one request to each of ``actors`` new device keys; returns the seconds it took.

    The keys are made here, as a request would bring them, so the strings the registry
    keeps count as the actors' memory.
    """

    async def caller(first: int) -> None:
        for n in range(first, actors, callers):
            await listener.ref.ask(DeviceRequest(f"device-{n:07d}", n))

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(callers):
            nursery.start_soon(caller, first)
    return time.perf_counter() - started


async def measure(args: argparse.Namespace) -> None:
    gc.collect()
    async with trio.open_nursery() as nursery:
        listener = await start_listener(
            nursery, "bench", TinyLogic, capacity=args.listener_capacity, session_idle=args.idle
        )
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        before = rss_bytes()

        with GcTimer() as gc_time:
            seconds = await activate(listener, args.actors, args.callers)
        # Every session has answered; let each one finish its turn and park on its mailbox.
        await trio.testing.wait_all_tasks_blocked()
        live = len(listener.sessions)
        after = rss_bytes()
        gc.collect()
        after_gc = rss_bytes()
        peak = peak_rss_bytes()
        if live != args.actors or listener.sessions.activations != args.actors:
            raise SystemExit(
                f"error: expected {args.actors} live sessions, found {live} "
                f"({listener.sessions.activations} activations): some passivated or failed"
            )
        nursery.cancel_scope.cancel()

    def row(stage: str, actors: int, rss: int) -> list[str]:
        grown = rss - before
        per_actor = f"{grown / actors:,.0f}" if actors else "-"
        return [stage, f"{actors:,}", f"{rss / MIB:,.1f}", f"{grown / MIB:,.1f}", per_actor]

    print_table(
        f"Live DeviceSession actors ({environment()})",
        ["stage", "live actors", "RSS MiB", "grown MiB", "bytes/actor"],
        [
            row("before activation", 0, before),
            row("after activation", live, after),
            row("after gc.collect()", live, after_gc),
        ],
        [
            f"activation: {live:,} actors in {seconds:.2f} s = {live / seconds:,.0f} actors/s "
            f"({args.callers} concurrent callers through the listener); {gc_time}",
            f"peak RSS during the run: {peak / MIB:,.1f} MiB",
        ],
    )
    if args.actors == TARGET_ACTORS:
        met = after_gc < TARGET_RSS
        print(
            f"target: {TARGET_ACTORS:,} live actors under {TARGET_RSS // MIB:,} MiB RSS: "
            f"{after_gc / MIB:,.1f} MiB, {verdict(met)}"
        )
    else:
        projected = before + (after_gc - before) / args.actors * TARGET_ACTORS
        print(
            f"target: {TARGET_ACTORS:,} actors under {TARGET_RSS // MIB:,} MiB; "
            f"projected from this run: {projected / MIB:,.1f} MiB"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=TARGET_ACTORS, help="sessions to activate")
    parser.add_argument(
        "--callers", type=int, default=256, help="concurrent callers doing the activations"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=3600.0,
        help="session idle timeout in s (long, so none passivates during the run); "
        "0 = never passivate",
    )
    parser.add_argument(
        "--listener-capacity", type=int, default=1024, help="the listener's mailbox size"
    )
    add_gc_option(parser)
    args = parser.parse_args(argv)
    apply_gc_option(args)
    if args.actors < 1 or args.callers < 1:
        parser.error("--actors and --callers must be at least 1")
    if args.callers > args.listener_capacity:
        parser.error("--callers above --listener-capacity would overflow the listener mailbox")
    trio.run(measure, args)


if __name__ == "__main__":
    main()
