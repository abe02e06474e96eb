"""The ``emm`` command: ``emm init`` makes an installation, ``emm serve`` runs it.

Exit status: 0 on a clean stop, 1 for an operational failure (e.g. already initialised),
2 for a wrong bootstrap file or wrong arguments, with a message naming the file, the key
and the problem.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from engine import __version__
from engine.config import ConfigError, load_bootstrap
from engine.setup import BOOTSTRAP_FILE, AlreadyInitialised, initialise

from .server import BoundAddress
from .service import run_service


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emm", description="The EMM service.")
    parser.add_argument("--version", action="version", version=f"emm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create an installation in a data directory")
    init.add_argument("--data-dir", type=Path, default=Path("data"))
    init.add_argument("--public-url", help="base URL devices and browsers use")
    init.add_argument("--http", action="append", help="plain HTTP host:port (repeatable)")
    init.add_argument("--https", action="append", help="HTTPS host:port (repeatable)")

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument(
        "--config", type=Path, default=Path("data") / BOOTSTRAP_FILE, help="the bootstrap file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        return _init(args)
    return _serve(args.config)


def _init(args: argparse.Namespace) -> int:
    try:
        installation = trio.run(
            lambda: initialise(
                args.data_dir, public_url=args.public_url, http=args.http, https=args.https
            )
        )
    except AlreadyInitialised as exc:
        print(f"emm init: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"emm init: {exc}", file=sys.stderr)
        return 2
    b = installation.bootstrap
    print(f"Initialised {b.data_dir}")
    print(f"  bootstrap file: {b.data_dir / BOOTSTRAP_FILE}")
    print(f"  public URL:     {b.public_url}")
    print(f"  CA certificate: {b.tls.ca_certificate}")
    print(f"Supervisor login: {installation.supervisor_login}")
    print(f"One-time password: {installation.supervisor_password}")
    print("(it must be changed at the first login)")
    return 0


def _serve(config: Path) -> int:
    try:
        bootstrap = load_bootstrap(config)
    except ConfigError as exc:
        print(f"emm serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=bootstrap.log_level.as_logging_level(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def announce(bound: list[BoundAddress]) -> None:
        for address in bound:
            print(f"emm: listening on {address.url}", flush=True)

    trio.run(lambda: run_service(bootstrap, on_listening=announce))
    return 0


if __name__ == "__main__":
    sys.exit(main())
