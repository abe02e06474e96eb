"""The portal's device list page of an organisation with 100,000 devices, next to the API.

What it measures
    The same installation as ``bench.device_list`` (its seeding and service start are reused:
    one organisation, its first manager, 2,000 owner accounts and 100,000 devices, filled
    before ``emm serve`` starts on free loopback ports). The bench signs in twice as the
    manager: through the portal's sign-in form like a browser (``GET /sign-in`` sets the
    ``emm_login_csrf`` cookie, posted back as ``csrf_token``; ``POST /sign-in`` sets
    ``emm_session``), and through the API for a bearer token. For each of device_list's
    cases (default sort, ``-last_seen_at``, name sort + model filter, serial number
    fragment, owner login, deep page ``offset=50000``...) it sends, one at a time over one
    keep-alive connection each, N requests of the REST list
    ``GET /api/v1/organisations/{organisation}/devices`` and then N of the portal page
    ``GET /admin/o/{organisation}/devices?sort=...&filter[...]=...&offset=...``, after a
    few untimed ones.
    Reported per case: the page's time at the server (``Server-Timing: app;dur=``) p50/p99,
    the client's latency p50/p99, the page's size, the devices matched (parsed from the
    pager, checked against the API's ``total``), the API's server p50/p99 for the same case
    in the same run, the ratio portal/API, and the store's unit of work alone in-process.

Why
    The inventory page is where an administrator of a large organisation pages, sorts and
    filters devices; it runs the REST list's query and renders it as HTML.

Target
    p99 under 150 ms at the server for every case of the portal page.

Run: ``.venv/bin/python -m bench.portal_device_list [--devices 100000] [--requests 50]``
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from .common import (
    Server,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
    verdict,
)
from .device_list import (
    MANAGER_LOGIN,
    MANAGER_PASSWORD,
    ORGANISATION,
    Case,
    CaseResult,
    cases,
    manager_client,
    run_case,
    seed_database,
    store_share,
    timed_request,
)
from .healthz import init_service

TARGET_MS = 150.0
LOGIN_CSRF_COOKIE = "emm_login_csrf"
SESSION_COOKIE = "emm_session"
#: The pager under the list: "{first}, en dash, {last} of {total}" (portal/macros.html).
_PAGER = re.compile(r'<p class="pager">\s*(\d+)\u2013(\d+) of (\d+)')
#: One selection checkbox per device row of the list.
_ROW = re.compile(r'name="device_ids" value="')


# --------------------------------------------------------------------------- the portal


def portal_client(server: Server) -> httpx.Client:
    """A client signed in to the portal as the manager, the way a browser does it."""
    client = httpx.Client(base_url=server.url("http"), timeout=120.0)
    try:
        form = client.get("/sign-in")
        nonce = client.cookies.get(LOGIN_CSRF_COOKIE)
        if form.status_code != 200 or not nonce:
            raise RuntimeError(f"GET /sign-in answered {form.status_code} without a CSRF cookie")
        answer = client.post(
            "/sign-in",
            data={
                "organisation": ORGANISATION,
                "login": MANAGER_LOGIN,
                "password": MANAGER_PASSWORD,
                "csrf_token": nonce,
            },
        )
        landed = answer.headers.get("location", "")
        if answer.status_code not in (302, 303) or not client.cookies.get(SESSION_COOKIE):
            raise RuntimeError(f"portal sign-in answered {answer.status_code} (to {landed!r})")
        if landed.startswith("/password"):
            raise RuntimeError("portal sign-in asks for a password change first")
    except BaseException:
        client.close()
        raise
    return client


def portal_params(case: Case) -> dict[str, str]:
    """The case's query string as the page takes it (its page size is fixed: no limit)."""
    params = case.params()
    del params["limit"]
    return params


def portal_query(case: Case) -> str:
    return "&".join(f"{key}={value}" for key, value in portal_params(case).items())


@dataclass
class PortalResult:
    case: Case
    total: int
    server_ms: list[float]
    client_ms: list[float]
    page_bytes: int


def _check_page(case: Case, response: httpx.Response) -> tuple[int, int]:
    """The matched total from the pager and the page's size; refuses anything but the list."""
    if response.status_code != 200:
        where = response.headers.get("location", "")
        raise RuntimeError(f"{case.label}: the page answered {response.status_code} {where}")
    text = response.text
    pager = _PAGER.search(text)
    if pager is None:
        raise RuntimeError(f"{case.label}: no pager in the page (not the device list?)")
    total = int(pager[3])
    rows = len(_ROW.findall(text))
    expected = max(0, min(case.limit, total - case.offset))
    if rows != expected:
        raise RuntimeError(f"{case.label}: {rows} rows on the page, expected {expected}")
    return total, len(response.content)


def run_portal_case(
    client: httpx.Client, path: str, case: Case, requests: int, warmup: int
) -> PortalResult:
    params = portal_params(case)
    for _ in range(warmup):
        _check_page(case, timed_request(client, "GET", path, params=params).response)
    servers, clients, totals, sizes = [], [], set(), set()
    for _ in range(requests):
        timed = timed_request(client, "GET", path, params=params)
        servers.append(timed.server_ms)
        clients.append(timed.client_ms)
        total, size = _check_page(case, timed.response)
        totals.add(total)
        sizes.add(size)
    if len(totals) != 1:
        raise RuntimeError(f"{case.label}: the matched total changed: {sorted(totals)}")
    return PortalResult(case, totals.pop(), servers, clients, max(sizes))


# --------------------------------------------------------------------------- report


def report(
    pairs: list[tuple[PortalResult, CaseResult]], devices: int, args: argparse.Namespace
) -> None:
    rows, missed = [], []
    for portal, api in pairs:
        s50, s99 = percentiles(portal.server_ms, 50, 99)
        c50, c99 = percentiles(portal.client_ms, 50, 99)
        a50, a99 = percentiles(api.server_ms, 50, 99)
        if not s99 < TARGET_MS:
            missed.append(portal.case.label)
        rows.append(
            [
                portal.case.label,
                portal_query(portal.case),
                f"{portal.total:,}",
                f"{s50:,.1f}",
                f"{s99:,.1f}",
                f"{c50:,.1f}",
                f"{c99:,.1f}",
                f"{portal.page_bytes / 1024:,.1f}",
                f"{a50:,.1f}",
                f"{a99:,.1f}",
                f"{api.sql_ms:,.1f}",
                f"{s50 / a50:.2f}",
                f"{s99 / a99:.2f}",
                verdict(s99 < TARGET_MS),
            ]
        )
    notes = [
        f"{args.requests} timed requests per case and route after {args.warmup} untimed, one at "
        "a time, one keep-alive connection per route; the API's case runs just before the page's",
        f"target: portal page p99 at the server < {TARGET_MS:.0f} ms in every case: "
        + verdict(not missed)
        + (f" ({len(missed)} of {len(pairs)} miss it: {', '.join(missed)})" if missed else ""),
    ]
    print_table(
        f"GET /admin/o/{{organisation}}/devices (portal page) and the API's list, "
        f"{devices:,} devices ({environment()})",
        [
            "case",
            "page query",
            "matched",
            "server p50",
            "server p99",
            "client p50",
            "client p99",
            "page KiB",
            "api p50",
            "api p99",
            "sql p50",
            "page/api p50",
            "page/api p99",
            f"p99 < {TARGET_MS:.0f} ms",
        ],
        rows,
        notes,
    )
    print(
        "(times in ms; server, client: the portal page; api: Server-Timing of "
        "GET /api/v1/organisations/{organisation}/devices with the same query and limit=50; "
        "sql: devices_page alone in-process)"
    )


def measure(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        print(f"filling the database with {args.devices:,} devices...", file=sys.stderr)
        database, seeded = seed_database(
            config, devices=args.devices, owners=args.owners, seed=args.seed
        )
        server = stack.enter_context(running_service(config, work))
        api = manager_client(server)
        stack.callback(api.close)
        portal = portal_client(server)
        stack.callback(portal.close)
        api_path = f"/api/v1/organisations/{ORGANISATION}/devices"
        page_path = f"/admin/o/{ORGANISATION}/devices"
        pairs = []
        for case in cases(seeded, args.devices, rng):
            api_result = run_case(api, api_path, case, args.requests, args.warmup)
            page_result = run_portal_case(portal, page_path, case, args.requests, args.warmup)
            if page_result.total != api_result.total:
                raise RuntimeError(
                    f"{case.label}: the page says {page_result.total} devices match, "
                    f"the API {api_result.total}"
                )
            s50, s99 = percentiles(page_result.server_ms, 50, 99)
            a50, a99 = percentiles(api_result.server_ms, 50, 99)
            print(
                f"{case.label}: page p50 {s50:.1f} ms, p99 {s99:.1f} ms; "
                f"api p50 {a50:.1f} ms, p99 {a99:.1f} ms",
                file=sys.stderr,
            )
            pairs.append((page_result, api_result))
        for _, api_result in pairs:
            store_share(database, seeded.organisation_id, api_result, runs=5)
    # The service is stopped here (the ExitStack has closed), even when a step failed.
    report(pairs, args.devices, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000, help="devices in the organisation")
    parser.add_argument("--owners", type=int, default=2_000, help="owner (user) accounts")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per case first")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    args = parser.parse_args(argv)
    if args.devices < 100 or args.requests < 1 or args.warmup < 0 or args.owners < 0:
        parser.error("need --devices >= 100, --requests >= 1, --warmup >= 0, --owners >= 0")
    exit_on_sigterm()
    try:
        measure(args)
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
