"""Ask round trips per second through ProtocolListener -> DeviceSession, on one core.

What it measures
    In one ``trio.run`` (one thread, so one core), C concurrent callers ask device sessions
    spread over K device keys for a fixed time each, at several concurrencies C. Each ask
    goes the way a protocol route's does: ``listener.ref.ask(DeviceRequest(key, body))``,
    the listener forwards it to the session actor (activated on demand; all K are activated
    before timing starts) and the session answers the caller. The baseline, in the same run
    with the same callers and keys, asks the session actor directly (``sessions.ask``) with
    no listener hop; the ratio listener/direct is the listener's cost. A caller whose post
    finds a mailbox full (``MailboxFull``, a 503 at the HTTP edge) retries; refusals are
    counted in ``full``. The listener's mailbox is sized to the largest concurrency by
    default; with ``--listener-capacity 1024`` (the production size) the 4,096-caller row
    shows the listener refusing bursts of callers woken together. Sessions keep the
    production idle period (300 s); ``--idle 0`` turns passivation off.

Why
    Every device request pays this path before any protocol work, so its rate is the
    ceiling of the whole service on one core.

Target
    At least 30,000 asks/s through the listener.

Run: ``.venv/bin/python -m bench.ask_throughput [--concurrency 1 16 256 4096] [--seconds 3]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from engine.actors import DeviceRequest, Listener, MailboxFull, start_listener

from .common import (
    GcTimer,
    add_gc_option,
    apply_gc_option,
    environment,
    percentiles,
    print_table,
    verdict,
)

TARGET = 30_000

Ask = Callable[[str], Awaitable[Any]]


class EchoLogic:
    """The cheapest session logic: count and answer, so the runtime's cost is what shows."""

    __slots__ = ("requests",)

    def __init__(self, device_key: str) -> None:
        self.requests = 0

    async def handle(self, message: Any) -> Any:
        self.requests += 1
        return self.requests

    async def close(self) -> None:
        pass


@dataclass
class Result:
    path: str
    concurrency: int
    asks: int
    seconds: float
    full: int
    latencies: list[float] = field(repr=False)
    gc: GcTimer

    @property
    def rate(self) -> float:
        return self.asks / self.seconds


async def run_callers(
    path: str, ask: Ask, keys: list[str], concurrency: int, seconds: float, retry_after: float
) -> Result:
    """``concurrency`` callers ask in a loop until ``seconds`` have passed."""
    latencies: list[float] = []
    full = 0
    clock = time.perf_counter

    async def caller(first: int) -> None:
        nonlocal full
        n = first
        while (started := clock()) < end:
            key = keys[n % len(keys)]
            n += concurrency
            while True:
                try:
                    await ask(key)
                    break
                except MailboxFull:  # a 503 with Retry-After at the HTTP edge
                    full += 1
                    if retry_after > 0:
                        await trio.sleep(retry_after)
                    else:
                        await trio.lowlevel.checkpoint()
            latencies.append(clock() - started)

    with GcTimer() as gc_time:
        begin = clock()
        end = begin + seconds
        async with trio.open_nursery() as nursery:
            for first in range(concurrency):
                nursery.start_soon(caller, first)
        elapsed = clock() - begin
    return Result(path, concurrency, len(latencies), elapsed, full, latencies, gc_time)


async def measure(args: argparse.Namespace) -> None:
    keys = [f"device-{n:05d}" for n in range(args.keys)]
    results: list[tuple[Result, Result]] = []
    async with trio.open_nursery() as nursery:
        listener: Listener = await start_listener(
            nursery,
            "bench",
            EchoLogic,
            capacity=args.listener_capacity,
            session_capacity=args.session_capacity,
            session_idle=args.idle,
        )

        async def through_listener(key: str) -> Any:
            return await listener.ref.ask(DeviceRequest(key, b"ping"))

        async def direct(key: str) -> Any:
            return await listener.sessions.ask(key, b"ping")

        # Activate every session first: the timed runs measure asks, not activations.
        for key in keys:
            await direct(key)
        await trio.testing.wait_all_tasks_blocked()

        for concurrency in args.concurrency:
            pair = []
            for path, ask in (("direct", direct), ("listener", through_listener)):
                await run_callers(path, ask, keys, concurrency, args.warmup, args.retry_after)
                result = await run_callers(
                    path, ask, keys, concurrency, args.seconds, args.retry_after
                )
                pair.append(result)
            results.append((pair[0], pair[1]))
        if len(listener.sessions) != args.keys:
            raise SystemExit(f"error: {args.keys} sessions expected, {len(listener.sessions)} live")
        nursery.cancel_scope.cancel()

    rows = []
    for direct_result, listener_result in results:
        for result in (direct_result, listener_result):
            p50, p99 = percentiles(result.latencies, 50, 99)
            ratio = (
                f"{listener_result.rate / direct_result.rate:.2f}"
                if result is listener_result
                else ""
            )
            rows.append(
                [
                    result.path,
                    f"{result.concurrency:,}",
                    f"{result.asks:,}",
                    f"{result.rate:,.0f}",
                    ratio,
                    f"{p50 * 1e6:,.0f}",
                    f"{p99 * 1e6:,.0f}",
                    f"{result.full:,}",
                    f"{result.gc.seconds:.2f}",
                ]
            )
    print_table(
        f"ask round trips, {args.keys:,} device keys, listener mailbox "
        f"{args.listener_capacity:,}, {args.seconds:g} s per row, "
        f"one thread ({environment()})",
        [
            "path",
            "callers",
            "asks",
            "asks/s",
            "vs direct",
            "p50 us",
            "p99 us",
            "full",
            "gc s",
        ],
        rows,
    )
    worst = min(listener_result.rate for _, listener_result in results)
    print(
        f"target: >= {TARGET:,} asks/s through the listener at every concurrency: "
        f"lowest {worst:,.0f}/s, {verdict(worst >= TARGET)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 16, 256, 4096],
        help="concurrent callers, one row pair each",
    )
    parser.add_argument("--keys", type=int, default=1000, help="device keys the asks spread over")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds before a row")
    parser.add_argument(
        "--listener-capacity",
        type=int,
        help="listener mailbox (default: the largest --concurrency, at least 1024, the "
        "production size, so that the rows measure asks rather than refusals)",
    )
    parser.add_argument(
        "--session-capacity", type=int, default=64, help="session mailbox (production: 64)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=300.0,
        help="session idle period in s (production: 300); 0 = never passivate",
    )
    parser.add_argument(
        "--retry-after",
        type=float,
        default=0.0,
        help="seconds a caller whose ask was refused (mailbox full) waits before retrying "
        "(0: yield once, then retry)",
    )
    parser.add_argument("--pin", type=int, metavar="CPU", help="pin the process to this CPU")
    add_gc_option(parser)
    args = parser.parse_args(argv)
    apply_gc_option(args)
    if args.keys < 1 or min(args.concurrency) < 1 or args.seconds <= 0:
        parser.error("--keys, --concurrency and --seconds must be positive")
    if args.listener_capacity is None:
        args.listener_capacity = max(1024, *args.concurrency)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    trio.run(measure, args)


if __name__ == "__main__":
    main()
