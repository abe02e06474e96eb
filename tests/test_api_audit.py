"""The audit log over the REST API: lists, filters, periods, CSV export, who may read."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest

from engine import audit_log
from engine.ids import new_id
from engine.principals import AccountKind
from web.api.audit import EVENT_PAGE

from .conftest import RunningService
from .test_api_commands import (
    API,
    Org,
    add_account,
    answer,
    audit_rows,
    database,
    new_organisation,
    sign_in_supervisor,
)

#: Events planted in an organisation's log: (at, actor, action, target_type, target_id).
PLANTED = [
    ("2020-01-01T10:00:00.000Z", "alice", "test.created", "device", "dev-1"),
    ("2020-01-02T10:00:00.000Z", "bob", "test.changed", "device", "dev-1"),
    ("2020-01-03T10:00:00.000Z", "alice", "test.changed", "account", "acct-7"),
    ("2020-01-04T10:00:00.000Z", "carol", "test.removed", "device", "dev-2"),
    ("2020-01-05T10:00:00.000Z", "alice", "test.removed", "account", "acct-7"),
]
#: Cells a spreadsheet would run, and ones that only need quoting.
HOSTILE = [
    (
        "2020-02-01T00:00:00.000Z",
        '=HYPERLINK("http://evil.example","x")',
        "test.hostile",
        "+1",
        "-2",
    ),
    ("2020-02-02T00:00:00.000Z", "@SUM(A1)", "test.hostile", "a,b", 'say "hi"\r\nbye'),
]


def plant(running: RunningService, org: Org | None, events: list[tuple[str, ...]]) -> None:
    with database(running) as conn:
        conn.executemany(
            "INSERT INTO audit_events (id, at, organisation_id, actor, action, target_type,"
            " target_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (new_id(), at, org.id if org else None, actor, action, kind, target, '{"n": 1}')
                for at, actor, action, kind, target in events
            ],
        )


async def events(
    client: httpx.AsyncClient, url: str, auth: dict[str, str], **params: str | int
) -> list[tuple[str, str, str, str]]:
    page = answer(await client.get(url, params=params, headers=auth), 200, EVENT_PAGE)
    return [(e["at"], e["actor"], e["action"], e["target_id"]) for e in page["items"]]


async def test_lists_filter_page_and_sort(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "audit")
        plant(running, org, PLANTED)
        url = f"{API}/organisations/{org.code}/audit"
        tests = {"filter[action]": "test."}
        newest = await events(client, url, org.admin, **tests)
        assert [e[0] for e in newest] == sorted((p[0] for p in PLANTED), reverse=True)
        oldest = await events(client, url, org.admin, sort="at", **tests)
        assert oldest == newest[::-1]
        page = answer(
            await client.get(url, params={**tests, "limit": 2, "offset": 2}, headers=org.admin),
            200,
            EVENT_PAGE,
        )
        assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
        assert [e["at"] for e in page["items"]] == [PLANTED[2][0], PLANTED[1][0]]
        assert page["items"][0]["details"] == {"n": 1}
        by_actor = await events(client, url, org.admin, **{"filter[actor]": "ALICE"})
        assert {e[1] for e in by_actor} == {"alice"} and len(by_actor) == 3
        by_target = await events(
            client,
            url,
            org.admin,
            **{"filter[target_type]": "account", "filter[target_id]": "acct-7"},
        )
        assert [e[2] for e in by_target] == ["test.removed", "test.changed"]
        period = await events(
            client, url, org.admin, since="2020-01-02T10:00:00Z", until="2020-01-04T10:00:00Z"
        )
        assert [e[0] for e in period] == [PLANTED[2][0], PLANTED[1][0]]
        with_zone = await events(client, url, org.admin, since="2020-01-05T11:00:00+01:00", **tests)
        assert [e[0] for e in with_zone] == [PLANTED[4][0]]
        # The organisation's own life is in it too, and nothing of the system's.
        real = await events(client, url, org.admin, **{"filter[action]": "organisation."})
        assert [e[2] for e in real] == ["organisation.created"]
        bad = [
            ({"since": "2020-01-03T00:00:00Z", "until": "2020-01-02T00:00:00Z"}, "since"),
            ({"since": "yesterday"}, "since"),
            ({"sort": "action"}, "sort"),
            ({"filter[details]": "x"}, "filter"),
            ({"limit": 0}, "limit"),
        ]
        for params, field in bad:
            refused = await client.get(url, params=params, headers=org.admin)
            assert answer(refused, 422)["field"] == field, params


async def test_who_may_read_the_log(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "readers")
        other = await new_organisation(client, supervisor, "others")
        reporting = await add_account(running, client, org, "reporting", AccountKind.MANAGER)
        owner = await add_account(running, client, org, "owner", AccountKind.USER)
        url = f"{API}/organisations/{org.code}/audit"
        assert (await client.get(url, headers=reporting.auth)).status_code == 200
        assert (await client.get(url, headers=supervisor)).status_code == 200
        assert (await client.get(url, headers=owner.auth)).status_code == 403
        assert (await client.get(url, headers=other.admin)).status_code == 404
        # Exporting needs the audit right; the system-wide log is the supervisor's alone.
        assert (await client.get(f"{url}.csv", headers=reporting.auth)).status_code == 403
        assert (await client.get(f"{url}.csv", headers=owner.auth)).status_code == 403
        assert (await client.get(f"{url}.csv", headers=other.admin)).status_code == 404
        for path in ("/audit", "/audit.csv"):
            assert (await client.get(API + path, headers=org.admin)).status_code == 403
            assert (await client.get(API + path, headers=owner.auth)).status_code == 403
        system = answer(await client.get(f"{API}/audit", headers=supervisor), 200, EVENT_PAGE)
        actions = {e["action"] for e in system["items"]}
        assert "account.password_changed" in actions  # the supervisor's first sign-in
        assert "organisation.created" not in actions  # that is the organisation's
        assert {e["organisation_id"] for e in system["items"]} == {None}
        exported = await client.get(f"{API}/audit.csv", headers=supervisor)
        assert exported.status_code == 200
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert "account.password_changed" in {row["action"] for row in rows}
    assert not audit_rows(running, "audit.exported")[0]["organisation_id"]
    assert len(audit_rows(running, "audit.exported")) == 1  # refused exports left no trace


async def test_csv_export_is_rfc_4180_and_formula_safe(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "csv")
        plant(running, org, PLANTED + HOSTILE)
        response = await client.get(
            f"{API}/organisations/{org.code}/audit.csv",
            params={"filter[action]": "test.", "sort": "at", "until": "2020-02-03T00:00:00Z"},
            headers=org.admin,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].split(";")[0] == "text/csv"
        assert response.headers["content-disposition"].startswith(
            'attachment; filename="audit-csv-'
        )
        assert response.headers["x-export-rows"] == "7"
        assert response.headers["x-export-truncated"] == "false"
        assert response.content.endswith(b"\r\n") and b"\r\n" in response.content
        rows = list(csv.reader(io.StringIO(response.text, newline="")))
        assert rows[0] == list(audit_log.CSV_COLUMNS)
        assert [row[0] for row in rows[1:]] == [e[0] for e in PLANTED + HOSTILE]
        first, second = (dict(zip(rows[0], row, strict=True)) for row in rows[-2:])
        assert first["actor"] == '\'=HYPERLINK("http://evil.example","x")'
        assert (first["target_type"], first["target_id"]) == ("'+1", "'-2")
        assert second["actor"] == "'@SUM(A1)"
        assert (second["target_type"], second["target_id"]) == ("a,b", 'say "hi"\r\nbye')
        assert json.loads(second["details"]) == {"n": 1}
        # The same filters as the list: another action, another period.
        narrow = await client.get(
            f"{API}/organisations/{org.code}/audit.csv",
            params={"filter[actor]": "carol"},
            headers=org.admin,
        )
        assert [row[1] for row in csv.reader(io.StringIO(narrow.text))] == ["actor", "carol"]
        wrong = await client.get(
            f"{API}/organisations/{org.code}/audit.csv",
            params={"sort": "actor"},
            headers=org.admin,
        )
        assert wrong.status_code == 422
    exports = audit_rows(running, "audit.exported")
    assert [e["details"]["rows"] for e in exports] == [7, 1]
    assert exports[0]["details"]["filters"] == {"action": "test."}
    assert exports[0]["organisation_id"] == org.id


async def test_export_reads_in_pages_and_stops_at_the_cap(
    running: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_log, "_EXPORT_CHUNK", 2)  # the service runs in this process
    monkeypatch.setattr(audit_log, "MAX_EXPORT_ROWS", 4)
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "cap")
        same_moment = [
            ("2020-03-01T00:00:00.000Z", "x", "test.same", "t", str(n)) for n in range(3)
        ]
        plant(running, org, PLANTED + same_moment)
        url = f"{API}/organisations/{org.code}/audit.csv"
        params = {"filter[action]": "test."}
        capped = await client.get(url, params=params, headers=org.admin)
        assert capped.headers["x-export-rows"] == "4"
        assert capped.headers["x-export-truncated"] == "true"
        rows = list(csv.DictReader(io.StringIO(capped.text)))
        assert [row["at"] for row in rows] == [same_moment[0][0]] * 3 + [PLANTED[4][0]]
        monkeypatch.setattr(audit_log, "MAX_EXPORT_ROWS", 100)
        whole = await client.get(url, params={**params, "sort": "at"}, headers=org.admin)
        rows = list(csv.DictReader(io.StringIO(whole.text)))
        # Pages of two continue by key: every event once, in order, ties broken by id.
        assert len({row["id"] for row in rows}) == len(rows) == 8
        assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)
