"""A real Prosody for tests and benches: loopback only, in a temporary directory.

The configuration listens for clients on 127.0.0.1 only (no server-to-server links, no HTTP),
keeps its data and pid file in the directory, and makes the service's account an admin so
that the service can create device accounts with XEP-0133 ad-hoc commands. Prosody runs in
the foreground as its own process and is stopped by its process id.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "emm.test"
SERVICE_USER = "emm"
SERVICE_PASSWORD = "service account secret"

_CONFIG = """\
-- Written by the tests: a loopback-only Prosody for the EMM service's push.
daemonize = false
-- Run as whoever runs the tests (prosodyctl would otherwise switch to the prosody user,
-- which cannot write the temporary directory).
prosody_user = "{user}"
prosody_group = "{group}"
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
-- offline: a wake-up for a device that is not connected waits for its next login.
modules_enabled = {{
    "roster", "saslauth", "disco", "ping", "posix", "offline", "adhoc", "admin_adhoc"
}}
modules_disabled = {{ "s2s", "c2s_limits" }}
-- Loopback in a test: no certificate, so no TLS; SCRAM keeps the password off the wire.
c2s_require_encryption = false
allow_unencrypted_plain_auth = false
authentication = "internal_hashed"
-- Fewer PBKDF2 rounds than production's 10,000: thousands of simulated devices log in.
default_iteration_count = 1000
allow_registration = false
admins = {{ "{service}@{domain}" }}
storage = "internal"
VirtualHost "{domain}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Prosody:
    """A configured Prosody in ``directory``; :meth:`start` and :meth:`stop` it by pid."""

    directory: Path
    port: int
    domain: str = DOMAIN
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def service_jid(self) -> str:
        return f"{SERVICE_USER}@{self.domain}"

    @classmethod
    def configure(cls, directory: Path) -> Prosody:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        server = cls(directory, free_port())
        server.config.write_text(
            _CONFIG.format(
                dir=directory,
                port=server.port,
                domain=DOMAIN,
                service=SERVICE_USER,
                user=pwd.getpwuid(os.getuid()).pw_name,
                group=grp.getgrgid(os.getgid()).gr_name,
            )
        )
        server.prosodyctl("register", SERVICE_USER, DOMAIN, SERVICE_PASSWORD)
        return server

    def has_account(self, user: str) -> bool:
        """Whether ``user`` has an account (Prosody's internal storage: one file each, its
        name with every non-alphanumeric character as %xx)."""
        encoded = "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in user)
        host = "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in self.domain)
        return (self.directory / "data" / host / "accounts" / f"{encoded}.dat").exists()

    def prosodyctl(self, *args: str) -> None:
        subprocess.run(
            ["prosodyctl", "--config", str(self.config), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start Prosody in the foreground and wait until it accepts clients."""
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "prosody.log"
                    text = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"prosody did not start: {text}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop Prosody by its process id (SIGTERM, then SIGKILL if it lingers)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@contextmanager
def running_prosody(directory: Path) -> Iterator[Prosody]:
    """A started Prosody, stopped again on leaving (also when the test fails)."""
    server = Prosody.configure(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
