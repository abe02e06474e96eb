"""``GET /healthz`` requests per second: the whole service vs a bare Hypercorn app.

What it measures
    The real service, made with ``emm init`` and run with ``emm serve`` as a subprocess on
    free loopback ports (plain HTTP is measured), and side by side a bare ASGI callable on
    Hypercorn's trio worker (``bench/bare_asgi.py``, its own subprocess, same Hypercorn
    settings, same response) as the ceiling, and between the two the same bare app served
    through the service's ``web.server.serve`` (Hypercorn plus the per-connection TLS and
    body-limit wrapper), which splits the service's cost into wrapper and Quart. ``wrk``
    loads each in turn, in its own process, with the same settings (by default
    ``-t1 -c64 -d10s --latency``, after a short warm-up).
    Reported: requests/s, latency p50/p99 (wrk's), errors, the server's CPU use during the
    run (100% = one core saturated) and RSS after it, and the ratios to the bare app.

Why
    ``/healthz`` does no work of its own, so its rate is the cost of the HTTP stack under the
    service (Quart-trio, the TLS/body-limit wrapper, the app's hooks): the most any route can
    reach, and how much of Hypercorn's own ceiling the service keeps.

Target
    None fixed: the ratio service/bare shows what the layers above Hypercorn cost.

Needs ``wrk`` (``apt-get update && apt-get install -y wrk`` on Debian).
Run: ``.venv/bin/python -m bench.healthz [--connections 64] [--duration 10]``
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .common import (
    MIB,
    REPO,
    Server,
    cpu_seconds,
    die_with_parent,
    environment,
    exit_on_sigterm,
    print_table,
    require_executable,
    rss_bytes,
    running_service,
    server_process,
)

WRK_INSTALL = "apt-get update && apt-get install -y wrk"
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class WrkResult:
    requests: int
    rate: float
    p50: float
    p99: float
    errors: int
    cpu: float  # the server's CPU seconds per wall second during the run
    rss: int  # the server's RSS after the run


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> tuple[int, float, float, float, int]:
    """requests, requests/s, p50 s, p99 s, errors (socket errors and non-2xx/3xx)."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{output}")
        return match

    requests = int(find(r"^\s*(\d+) requests in")[1])
    rate = float(find(r"^Requests/sec:\s*([\d.]+)")[1])
    p50 = _seconds(find(r"^\s*50%\s+(\S+)")[1])
    p99 = _seconds(find(r"^\s*99%\s+(\S+)")[1])
    errors = 0
    if socket := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(n) for n in socket.groups())
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non_2xx[1])
    return requests, rate, p50, p99, errors


def run_wrk(wrk: str, server: Server, args: argparse.Namespace, duration: float) -> WrkResult:
    url = server.url("http") + "/healthz"
    argv = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "5s",
        url,
    ]
    cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
        preexec_fn=die_with_parent,
    )
    cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    requests, rate, p50, p99, errors = parse_wrk(done.stdout)
    return WrkResult(requests, rate, p50, p99, errors, cpu, rss_bytes(server.pid))


def check_answers(server: Server) -> None:
    """One request first: a server that answers errors must not be measured as fast."""
    with urllib.request.urlopen(server.url("http") + "/healthz", timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"{server.name}: GET /healthz answered {response.status}")


def init_service(data_dir: Path) -> Path:
    """``emm init`` on free loopback ports; returns the bootstrap file."""
    argv = [
        sys.executable,
        "-m",
        "web",
        "init",
        "--data-dir",
        str(data_dir),
        "--public-url",
        "https://127.0.0.1",
        "--http",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
    ]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"emm init failed ({done.returncode}): {done.stderr or done.stdout}")
    return data_dir / "emm.toml"


def measure(args: argparse.Namespace, wrk: str) -> None:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        servers = [
            stack.enter_context(running_service(config, work)),
        ]
        bare_servers: list[tuple[str, list[str]]] = []
        if not args.skip_wrapper:
            bare_servers.append(("wrapped", ["--through-web-serve"]))
        bare_servers.append(("bare", []))
        for name, options in bare_servers:
            servers.append(
                stack.enter_context(
                    server_process(
                        name,
                        [sys.executable, "-m", "bench.bare_asgi", "127.0.0.1:0", *options],
                        ready_prefix="bare: listening on ",
                        expect=1,
                        log_dir=work,
                    )
                )
            )
        results: dict[str, WrkResult] = {}
        for server in servers:
            check_answers(server)
            if args.warmup > 0:
                run_wrk(wrk, server, args, args.warmup)
            results[server.name] = run_wrk(wrk, server, args, args.duration)
            print(
                f"{server.name}: {results[server.name].rate:,.0f} req/s",
                file=sys.stderr,
                flush=True,
            )
    # Every server is stopped here (the ExitStack has closed), even when a step failed.

    service, bare = results["service"], results["bare"]
    labels = {
        "service": "service (emm serve)",
        "wrapped": "bare app, web.server.serve",
        "bare": "bare app, Hypercorn serve",
    }
    rows = []
    for name, result in results.items():
        rows.append(
            [
                labels[name],
                f"{result.requests:,}",
                f"{result.rate:,.0f}",
                f"{result.p50 * 1e3:,.2f}",
                f"{result.p99 * 1e3:,.2f}",
                f"{result.errors:,}",
                f"{result.cpu * 100:,.0f}",
                f"{result.rss / MIB:,.1f}",
            ]
        )
    notes = [f"service/bare req/s: {service.rate / bare.rate:.2f}"]
    if "wrapped" in results:
        notes.append(f"web.server.serve/bare req/s: {results['wrapped'].rate / bare.rate:.2f}")
    print_table(
        f"GET /healthz over plain HTTP/1.1, wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:g}s ({environment()})",
        ["server", "requests", "req/s", "p50 ms", "p99 ms", "errors", "server CPU %", "RSS MiB"],
        rows,
        notes,
    )
    if any(result.errors for result in results.values()):
        print("warning: some requests failed; the rates above count only answered requests")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (-c)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per server (-d)")
    parser.add_argument(
        "--skip-wrapper",
        action="store_true",
        help="leave out the row of the bare app served through web.server.serve",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed wrk seconds first")
    args = parser.parse_args(argv)
    if args.connections < args.threads or args.threads < 1 or args.duration < 1:
        parser.error("need --threads >= 1, --connections >= --threads, --duration >= 1")
    wrk = require_executable("wrk", WRK_INSTALL)
    exit_on_sigterm()
    try:
        measure(args, wrk)
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
