"""Helpers shared by the benchmarks: memory, percentiles, tables, server subprocesses.

Kept small on purpose: a bench should read top to bottom, with only the plumbing here.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

#: The repository root: servers are started from here so ``engine`` and ``web`` import.
REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

# -- measuring -------------------------------------------------------------------------------


def _status_bytes(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"/proc/{pid}/status has no {field} line")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size (``VmRSS``) of a process, read from ``/proc/PID/status``."""
    return _status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The highest resident set size the process has had (``VmHWM``)."""
    return _status_bytes(pid, "VmHWM")


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time a process has used so far, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def children_cpu_seconds(pid: int) -> float:
    """CPU time used so far by the live child processes of ``pid`` (a service's offload
    workers): ``cpu_seconds`` of the parent counts only children that have ended."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                total += cpu_seconds(child)
    return total


def percentiles(values: Sequence[float], *qs: float) -> list[float]:
    """Nearest-rank percentiles (``qs`` in 0..100) of ``values``; NaN when there are none."""
    if not values:
        return [math.nan for _ in qs]
    ordered = sorted(values)
    return [ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] for q in qs]


class GcTimer:
    """Time spent in the cyclic garbage collector while the block runs (``gc.callbacks``).

    Many long-lived objects (parked actors) make the collector's full passes expensive; this
    shows how much of a run they took.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def __str__(self) -> str:
        young, middle, full = self.collections
        return f"{self.seconds:.2f} s in cyclic GC ({young}/{middle}/{full} gen0/1/2 passes)"


def add_gc_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gc-threshold",
        metavar="T0,T1,T2",
        help="set gc.set_threshold() instead of the service's own tuning "
        "(engine.actors.memory; Python's default is 700,10,10), to see the GC's share",
    )


def apply_gc_option(args: argparse.Namespace) -> None:
    """The service's own collector settings, unless the command line asks for others."""
    if args.gc_threshold:
        gc.set_threshold(*(int(t) for t in args.gc_threshold.split(",")))
    else:
        from engine.actors.memory import tune_garbage_collector

        tune_garbage_collector()


def environment() -> str:
    """One line saying what the figures were measured on (a load near the CPU count means
    something else was running: the figures are then low and noisy)."""
    import trio  # the benches all run on trio; imported here to keep this module cheap

    load = os.getloadavg()[0]
    thresholds = ",".join(str(t) for t in gc.get_threshold())
    return (
        f"python {platform.python_version()}, trio {trio.__version__}, "
        f"{os.cpu_count()} CPUs, load {load:.2f}, gc {thresholds}"
    )


# -- printing --------------------------------------------------------------------------------


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()
) -> None:
    """Print a plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    print()
    print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    for note in notes:
        print(note)
    sys.stdout.flush()


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


# -- processes -------------------------------------------------------------------------------


def require_executable(name: str, how_to_install: str) -> str:
    """The path of ``name``, or exit with status 2 and a message saying how to install it."""
    path = shutil.which(name)
    if path is None:
        print(
            f"error: `{name}` is not installed; install it with: {how_to_install}", file=sys.stderr
        )
        raise SystemExit(2)
    return path


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (which stop servers) still run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: nothing to load after it


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it if the bench dies (even SIGKILL)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class Server:
    """A server subprocess that has announced where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    urls: list[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, scheme: str = "http") -> str:
        for url in self.urls:
            if url.startswith(f"{scheme}://"):
                return url
        raise LookupError(f"{self.name} does not listen on {scheme}: {self.urls}")


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


@contextlib.contextmanager
def server_process(
    name: str,
    argv: Sequence[str],
    *,
    ready_prefix: str,
    expect: int,
    log_dir: Path,
    timeout: float = 30.0,
) -> Iterator[Server]:
    """Start ``argv``, wait for ``expect`` lines starting with ``ready_prefix`` (each ending
    in a URL), and stop the process on exit from the block, whatever happened.

    Output goes to ``log_dir/NAME.log`` (a file, so a chatty server can never block on a
    full pipe). Stopping sends SIGINT (graceful), then SIGKILL after 5 s, to the process
    group of that one child; the child is also killed by the kernel if the bench dies.
    """
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            urls = _wait_until_listening(process, log_path, ready_prefix, expect, timeout, name)
            yield Server(name, process, urls, log_path)
        finally:
            stop_process(process)


@contextlib.contextmanager
def running_service(config: Path, log_dir: Path) -> Iterator[Server]:
    """``emm serve`` as a subprocess; stopped on leaving the block, whatever happened."""
    with server_process(
        "service",
        [sys.executable, "-m", "web", "serve", "--config", str(config)],
        ready_prefix="emm: listening on ",
        expect=2,  # https and http
        log_dir=log_dir,
        timeout=60.0,
    ) as server:
        yield server


def _wait_until_listening(
    process: subprocess.Popen[bytes],
    log_path: Path,
    prefix: str,
    expect: int,
    timeout: float,
    name: str,
) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace")
        urls = [
            line.removeprefix(prefix).strip()
            for line in text.splitlines()
            if line.startswith(prefix)
        ]
        if len(urls) >= expect:
            return urls
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with status {process.returncode} before listening:\n"
                + _log_tail(log_path)
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{name} did not report listening within {timeout}s:\n" + _log_tail(log_path)
            )
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a child started in its own session: SIGINT, then SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
