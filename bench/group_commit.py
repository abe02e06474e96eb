"""Group commit vs commit-per-write in the SQLite store, under 1,000 concurrent writers.

What it measures
    W concurrent writers (trio tasks) each make K writes through ``store.write`` (an audit
    event insert, the commonest write of the service), one after the other. It runs twice,
    each time on a fresh SQLite file in a temporary directory with ``synchronous=FULL`` (the
    production setting, one real ``fsync`` per commit): once with group commit (the writer
    actor commits every write waiting in its mailbox together) and once with
    ``group_commit=False`` (one commit per write), and reports writes/s, commits, writes per
    commit, p50/p99 write latency (from ``store.write`` called to committed and answered),
    and the ratio group/per-write of writes/s.

Why
    Every request that changes state waits for its commit before it is answered. SQLite
    pays one ``fsync`` per commit, so sharing it among all waiting writes is what lets one
    node take thousands of state-changing requests per second.

Target
    Group commit at least 10x the writes/s of commit-per-write.

Run: ``.venv/bin/python -m bench.group_commit [--writers 1000] [--writes-each 20]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.ids import new_id
from engine.store import open_sqlite_store
from engine.store.audit import insert_event
from engine.timestamps import now

from .common import environment, percentiles, print_table, verdict

TARGET_RATIO = 10.0


@dataclass
class Result:
    mode: str
    writes: int
    commits: int
    seconds: float
    latencies: list[float] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.writes / self.seconds


def event(writer: int, n: int) -> dict[str, Any]:
    return {
        "id": new_id(),
        "at": now(),
        "organisation_id": None,
        "actor": f"bench-writer-{writer}",
        "action": "bench.write",
        "details": f'{{"writer": {writer}, "n": {n}}}',
    }


def count_events(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM audit_events").fetchone()[0])


async def run_mode(
    group_commit: bool, writers: int, writes_each: int, directory: Path, synchronous: str
) -> Result:
    mode = "group commit" if group_commit else "commit per write"
    latencies: list[float] = []
    clock = time.perf_counter
    with tempfile.TemporaryDirectory(prefix="emm-bench-", dir=directory) as scratch:
        path = Path(scratch) / "store.sqlite3"
        async with open_sqlite_store(
            path, group_commit=group_commit, synchronous=synchronous
        ) as store:

            async def writer(w: int) -> None:
                for n in range(writes_each):
                    row = event(w, n)
                    started = clock()
                    await store.write(insert_event, row)
                    latencies.append(clock() - started)

            begin = clock()
            async with trio.open_nursery() as nursery:
                for w in range(writers):
                    nursery.start_soon(writer, w)
            seconds = clock() - begin
            stored = await store.read(count_events)
            writes, commits = store.stats.writes, store.stats.commits
    if stored != writers * writes_each or writes != stored:
        raise SystemExit(f"error: {mode}: {writers * writes_each} writes made, {stored} stored")
    return Result(mode, writes, commits, seconds, latencies)


def filesystem_of(directory: Path) -> str:
    """The type of the filesystem holding ``directory`` (a tmpfs makes fsync free)."""
    best, kind = "", "?"
    target = str(directory.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mount_point, fs_type, *_ = line.split()
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


async def measure(args: argparse.Namespace) -> None:
    group = await run_mode(True, args.writers, args.writes_each, args.dir, args.synchronous)
    single = await run_mode(False, args.writers, args.writes_each, args.dir, args.synchronous)
    rows = []
    for result in (single, group):
        p50, p99 = percentiles(result.latencies, 50, 99)
        rows.append(
            [
                result.mode,
                f"{result.writes:,}",
                f"{result.seconds:.2f}",
                f"{result.rate:,.0f}",
                f"{result.commits:,}",
                f"{result.writes / result.commits:,.1f}",
                f"{p50 * 1e3:,.1f}",
                f"{p99 * 1e3:,.1f}",
            ]
        )
    ratio = group.rate / single.rate
    print_table(
        f"SQLite store, {args.writers:,} concurrent writers x {args.writes_each} writes, "
        f"synchronous={args.synchronous}, {filesystem_of(args.dir)} at {args.dir} "
        f"({environment()})",
        ["mode", "writes", "seconds", "writes/s", "commits", "writes/commit", "p50 ms", "p99 ms"],
        rows,
        [f"group/per-write writes/s: {ratio:.1f}x"],
    )
    print(f"target: group commit >= {TARGET_RATIO:g}x commit-per-write: {verdict(ratio >= 10)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=1000, help="concurrent writer tasks")
    parser.add_argument("--writes-each", type=int, default=20, help="writes per writer (K)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the temporary database directories go (use a real disk, not tmpfs)",
    )
    parser.add_argument(
        "--synchronous",
        default="FULL",
        choices=["FULL", "NORMAL", "OFF"],
        help="SQLite synchronous pragma (production: FULL)",
    )
    args = parser.parse_args(argv)
    if args.writers < 1 or args.writes_each < 1:
        parser.error("--writers and --writes-each must be at least 1")
    if not os.access(args.dir, os.W_OK):
        parser.error(f"--dir {args.dir} is not writable")
    trio.run(measure, args)


if __name__ == "__main__":
    main()
