"""Running ``emm`` as a real subprocess, the way operators do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

EMM = [sys.executable, "-m", "web"]


def init(data_dir: Path) -> str:
    """``emm init`` on loopback ports chosen by the OS; returns the one-time password."""
    done = subprocess.run(
        [
            *EMM,
            "init",
            "--data-dir",
            str(data_dir),
            "--public-url",
            "https://localhost:8443",
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("One-time password:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no one-time password in: {done.stdout}")


async def serve(data_dir: Path, log: Path) -> tuple[trio.Process, dict[str, str]]:
    """Start ``emm serve`` and wait until it says where it listens."""
    process = await trio.lowlevel.open_process(
        [*EMM, "serve", "--config", str(data_dir / "emm.toml")],
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
    )
    assert process.stdout is not None
    urls: dict[str, str] = {}
    buffer = b""
    with trio.fail_after(30):
        while len(urls) < 2:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise AssertionError(f"emm serve exited early; see {log}")
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode()
                if text.startswith("emm: listening on "):
                    url = text.removeprefix("emm: listening on ")
                    urls[url.split(":", 1)[0]] = url
    return process, urls
