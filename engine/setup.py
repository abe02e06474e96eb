"""``emm init``: everything a new installation needs, made once.

It writes the bootstrap file, creates the service's CA and TLS server certificate, creates
the database (migrations) and the first supervisor account with a one-time password, which
is returned so the command can print it. Run again on an initialised directory, it refuses:
a second supervisor or a new CA made by accident would be worse than an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

from .auth import create_supervisor
from .config import Bootstrap, load_bootstrap, render_bootstrap
from .passwords import one_time_password
from .pki import TLSFiles, ensure_tls_files
from .store import open_sqlite_store

BOOTSTRAP_FILE = "emm.toml"
SUPERVISOR_LOGIN = "supervisor"


class AlreadyInitialised(Exception):
    pass


@dataclass(frozen=True)
class Installation:
    bootstrap: Bootstrap
    supervisor_login: str
    supervisor_password: str


def tls_files(bootstrap: Bootstrap) -> TLSFiles:
    return TLSFiles(
        ca_cert=bootstrap.tls.ca_certificate,
        ca_key=bootstrap.tls.ca_private_key,
        server_cert=bootstrap.tls.certificate,
        server_key=bootstrap.tls.private_key,
    )


async def initialise(
    data_dir: Path,
    *,
    public_url: str | None = None,
    http: list[str] | None = None,
    https: list[str] | None = None,
) -> Installation:
    bootstrap, pending = await trio.to_thread.run_sync(
        lambda: write_files(data_dir, public_url=public_url, http=http, https=https)
    )
    password = one_time_password()
    async with open_sqlite_store(bootstrap.database.path) as store:
        await create_supervisor(store, SUPERVISOR_LOGIN, password)
    # The bootstrap file appears last: an installation interrupted half-way is not taken
    # for a finished one, and `emm init` can simply run again.
    pending.replace(pending.with_name(BOOTSTRAP_FILE))
    return Installation(bootstrap, SUPERVISOR_LOGIN, password)


def write_files(
    data_dir: Path,
    *,
    public_url: str | None,
    http: list[str] | None,
    https: list[str] | None,
) -> tuple[Bootstrap, Path]:
    """The bootstrap file (under a temporary name), the CA and the TLS server certificate."""
    data_dir = data_dir.absolute()
    if (data_dir / BOOTSTRAP_FILE).exists():
        raise AlreadyInitialised(
            f"{data_dir / BOOTSTRAP_FILE} exists already: this installation is initialised"
        )
    path = data_dir / f"{BOOTSTRAP_FILE}.new"
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # keys and the database live here
    http = http if http is not None else ["127.0.0.1:8080"]
    https = https if https is not None else ["127.0.0.1:8443"]
    if public_url is None:
        public_url = f"https://{_url_host(https[0])}" if https else f"http://{_url_host(http[0])}"
    # Write a minimal file, let the loader check it and fill in every default, then write it
    # out in full so that operators see (and can edit) every setting.
    path.write_text(
        f"public_url = {_toml_string(public_url)}\n"
        "[listen]\n"
        f"http = [{', '.join(_toml_string(a) for a in http)}]\n"
        f"https = [{', '.join(_toml_string(a) for a in https)}]\n"
    )
    try:
        bootstrap = load_bootstrap(path)
    except BaseException:
        path.unlink()
        raise
    path.write_text(render_bootstrap(bootstrap, file_dir=data_dir))
    ensure_tls_files(tls_files(bootstrap), public_url=bootstrap.public_url)
    return bootstrap, path


def _url_host(address: str) -> str:
    """``host:port`` of a listen address as it stands in a URL.

    Port 0 (any free port) is unknown until the service starts, so the URL then has none;
    pass ``--public-url`` for such an installation.
    """
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "[::]", ""):
        host = "localhost"
    return host if port == "0" else f"{host}:{port}"


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
