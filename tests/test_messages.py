"""Messages an organisation broadcasts to its device owners: REST, portal and the function
the client protocol (WSDM) will call, against the real service."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

import httpx

from engine.messages import current_messages_for
from engine.store import open_sqlite_store

from .conftest import RunningService, bearer, supervisor_token
from .portal_client import flash_of, signed_in

API = "/api/v1"
MANAGER_PASSWORD = "manager password 1"
OWNER_PASSWORD = "owner password 12"
Headers = dict[str, str]


class Acme:
    """Organisations, accounts, devices and groups made through the REST API."""

    def __init__(self, client: httpx.AsyncClient, supervisor: Headers) -> None:
        self.client = client
        self.supervisor = supervisor
        self.managers: dict[str, Headers] = {}
        self.ids: dict[str, str] = {}

    async def organisation(self, code: str) -> Headers:
        created = await self.client.post(
            f"{API}/organisations",
            json={
                "code": code,
                "short_name": code.title(),
                "first_manager_password": MANAGER_PASSWORD,
            },
            headers=self.supervisor,
        )
        assert created.status_code == 201, created.text
        self.ids[code] = created.json()["id"]
        self.managers[code] = await self.sign_in(code, "admin", MANAGER_PASSWORD)
        return self.managers[code]

    async def sign_in(self, code: str, login: str, password: str) -> Headers:
        token = await self.client.post(
            f"{API}/auth/token", json={"organisation": code, "login": login, "password": password}
        )
        assert token.status_code == 201, token.text
        return bearer(token.json()["token"])

    async def post(self, code: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = await self.client.post(
            f"{API}/organisations/{code}{path}", json=body, headers=self.managers[code]
        )
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    async def owner(self, code: str, login: str, device: bool = True) -> dict[str, Any]:
        """A device owner (with one device, unless not ``device``) and their token."""
        account = await self.post(
            code, "/accounts", {"login": login, "kind": "user", "password": OWNER_PASSWORD}
        )
        if device:
            made = await self.post(
                code,
                "/devices",
                {
                    "name": f"{login}'s phone",
                    "platform": "android",
                    "protocol": "wsdm",
                    "owner": account["id"],
                },
            )
            account["device"] = made["id"]
        account["auth"] = await self.sign_in(code, login, OWNER_PASSWORD)
        return account

    async def group(self, code: str, name: str, *devices: str) -> str:
        group = await self.post(code, "/device-groups", {"name": name})
        for device in devices:
            answer = await self.client.put(
                f"{API}/organisations/{code}/device-groups/{group['id']}/devices/{device}",
                headers=self.managers[code],
            )
            assert answer.status_code < 300, answer.text
        return group["id"]

    async def message(self, code: str, **body: Any) -> dict[str, Any]:
        return await self.post(code, "/messages", {"title": "A message", **body})

    async def mine(self, auth: Headers) -> list[str]:
        """Titles of the messages ``auth`` is shown now, in the order shown."""
        answer = await self.client.get(f"{API}/me/messages", headers=auth)
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        assert answer.json()["total"] == len(items)
        return [item["title"] for item in items]


async def _acme(running: RunningService, client: httpx.AsyncClient) -> Acme:
    world = Acme(client, bearer(await supervisor_token(client, running.supervisor_password)))
    await world.organisation("acme")
    return world


def _rows(running: RunningService, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        return conn.execute(sql, args).fetchall()


def _counts(running: RunningService) -> tuple[int, int, int]:
    """Messages, their group audiences and audit events: what a refused request leaves."""
    return (
        _rows(running, "SELECT count(*) FROM messages")[0][0],
        _rows(running, "SELECT count(*) FROM message_groups")[0][0],
        _rows(running, "SELECT count(*) FROM audit_events")[0][0],
    )


def _events(running: RunningService, prefix: str = "message.") -> list[tuple[Any, ...]]:
    return _rows(
        running,
        "SELECT action, actor, organisation_id, target_type, target_id, details"
        " FROM audit_events WHERE action LIKE ? ORDER BY rowid",
        prefix + "%",
    )


async def test_managers_post_list_and_withdraw_messages(running: RunningService) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        auth = acme.managers["acme"]
        url = f"{API}/organisations/acme/messages"
        posted = await client.post(
            url,
            json={
                "title": " Outage ",
                "body": "Mail is down.\r\nWe are on it.",
                "severity": "warning",
            },
            headers=auth,
        )
        assert posted.status_code == 201, posted.text
        outage = posted.json()
        assert posted.headers["Location"] == f"{url}/{outage['id']}"
        assert outage["title"] == "Outage" and outage["body"] == "Mail is down.\nWe are on it."
        assert (outage["audience"], outage["groups"], outage["state"]) == ("all", [], "current")
        assert outage["created_by"]["login"] == "admin" and outage["withdrawn_at"] is None
        assert outage["valid_from"] == outage["created_at"] and outage["valid_until"] is None
        later = await acme.message(
            "acme",
            title="Later",
            valid_from="2099-01-01T10:00:00+02:00",
            valid_until="2099-01-02",
        )
        assert later["state"] == "scheduled"
        assert (later["valid_from"], later["valid_until"]) == (
            "2099-01-01T08:00:00.000Z",
            "2099-01-02T00:00:00.000Z",
        )

        async def titles(query: str) -> list[str]:
            listed = await client.get(f"{url}?{query}", headers=auth)
            assert listed.status_code == 200, listed.text
            return [item["title"] for item in listed.json()["items"]]

        assert await titles("") == ["Later", "Outage"]  # newest first
        assert await titles("sort=created_at") == ["Outage", "Later"]
        assert await titles("filter[severity]=warn") == ["Outage"]
        assert await titles("filter[title]=LAT") == ["Later"]
        assert await titles("limit=1&offset=1") == ["Outage"]
        refused = await client.get(f"{url}?sort=body", headers=auth)
        assert refused.status_code == 422
        one = await client.get(f"{url}/{outage['id']}", headers=auth)
        assert one.status_code == 200 and one.json() == outage

        withdrawn = await client.post(f"{url}/{outage['id']}/withdraw", headers=auth)
        assert withdrawn.status_code == 200, withdrawn.text
        assert withdrawn.json()["state"] == "withdrawn" and withdrawn.json()["withdrawn_at"]
        again = await client.post(f"{url}/{outage['id']}/withdraw", headers=auth)
        assert again.status_code == 200 and again.json() == withdrawn.json()  # no change
        listed = await client.get(url, headers=auth)
        assert [item["state"] for item in listed.json()["items"]] == ["scheduled", "withdrawn"]

    events = _events(running)
    assert [(action, actor, target) for action, actor, _, _, target, _ in events] == [
        ("message.posted", "admin", outage["id"]),
        ("message.posted", "admin", later["id"]),
        ("message.withdrawn", "admin", outage["id"]),  # once: withdrawing again changed nothing
    ]
    assert {(org, kind) for _, _, org, kind, _, _ in events} == {(acme.ids["acme"], "message")}
    details = json.loads(events[0][5])
    assert details == {
        "title": "Outage",
        "severity": "warning",
        "audience": "all",
        "groups": [],
        "valid_from": outage["valid_from"],
        "valid_until": None,
    }


async def test_bad_messages_are_refused_and_change_nothing(running: RunningService) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        await acme.organisation("other")
        theirs = await acme.group("other", "Their group")
        ours = await acme.group("acme", "Our group")
        before = _counts(running)
        for body, field in [
            ({"title": ""}, "title"),
            ({"title": "   "}, "title"),
            ({"title": "x" * 121}, "title"),
            ({"title": "two\nlines"}, "title"),
            ({"title": "t", "body": "b" * 4001}, "body"),
            ({"title": "t", "severity": "critical"}, "severity"),
            ({"title": "t", "audience": "groups"}, "groups"),
            ({"title": "t", "audience": "groups", "groups": []}, "groups"),
            ({"title": "t", "groups": [ours]}, "groups"),  # audience all, groups named
            ({"title": "t", "audience": "groups", "groups": [theirs]}, "groups"),
            ({"title": "t", "audience": "groups", "groups": [ours, "nope"]}, "groups"),
            ({"title": "t", "valid_from": "tomorrow"}, "valid_from"),
            ({"title": "t", "valid_from": "1999-12-31T00:00:00Z"}, "valid_from"),
            ({"title": "t", "valid_until": "9999-12-31T23:00:00-02:00"}, "valid_until"),
            ({"title": "t", "valid_until": "2020-01-01T00:00:00Z"}, "valid_until"),
            (
                {"title": "t", "valid_from": "2099-02-01", "valid_until": "2099-01-01"},
                "valid_until",
            ),
            ({"title": "t", "colour": "red"}, "colour"),
        ]:
            answer = await client.post(
                f"{API}/organisations/acme/messages", json=body, headers=acme.managers["acme"]
            )
            assert answer.status_code == 422, (body, answer.text)
            assert field in answer.text, (body, answer.text)
        assert _counts(running) == before


async def test_owners_see_only_what_is_current_for_them(running: RunningService) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        grouped = await acme.owner("acme", "grouped.owner")
        other = await acme.owner("acme", "other.owner")
        deviceless = await acme.owner("acme", "no.device", device=False)
        group = await acme.group("acme", "Field staff", grouped["device"])
        await acme.message("acme", title="For everyone", body="Hello <b>all</b>")
        await acme.message("acme", title="For the field", audience="groups", groups=[group])
        await acme.message("acme", title="Next year", valid_from="2099-01-01T00:00:00Z")
        gone = await acme.message("acme", title="Withdrawn")
        await acme.post("acme", f"/messages/{gone['id']}/withdraw")
        await acme.organisation("other")
        stranger = await acme.owner("other", "stranger")
        await acme.message("other", title="Other organisation's")

        assert await acme.mine(grouped["auth"]) == ["For the field", "For everyone"]
        assert await acme.mine(other["auth"]) == ["For everyone"]
        assert await acme.mine(deviceless["auth"]) == ["For everyone"]
        assert await acme.mine(stranger["auth"]) == ["Other organisation's"]
        assert await acme.mine(acme.managers["acme"]) == []  # managers own no devices
        assert await acme.mine(acme.supervisor) == []
        shown = (await client.get(f"{API}/me/messages", headers=grouped["auth"])).json()
        assert set(shown["items"][1]) == {
            "id", "title", "body", "severity", "valid_from", "valid_until", "created_at"
        }  # fmt: skip
        assert shown["items"][1]["body"] == "Hello <b>all</b>"  # plain text, kept as typed

        # The audience is the group as it stands when the message is read.
        put = await client.put(
            f"{API}/organisations/acme/device-groups/{group}/devices/{other['device']}",
            headers=acme.managers["acme"],
        )
        assert put.status_code < 300
        assert await acme.mine(other["auth"]) == ["For the field", "For everyone"]
        removed = await client.delete(
            f"{API}/organisations/acme/device-groups/{group}", headers=acme.managers["acme"]
        )
        assert removed.status_code == 204, removed.text
        assert await acme.mine(grouped["auth"]) == ["For everyone"]
        listed = await client.get(
            f"{API}/organisations/acme/messages?filter[title]=field",
            headers=acme.managers["acme"],
        )
        (field,) = listed.json()["items"]
        assert (field["audience"], field["groups"]) == ("groups", [])


async def test_the_protocols_get_the_messages_valid_at_any_moment(
    running: RunningService,
) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        owner = await acme.owner("acme", "app.user", device=False)
        january = await acme.message(
            "acme",
            title="January",
            valid_from="2090-01-01T00:00:00Z",
            valid_until="2090-02-01T00:00:00Z",
        )
        await acme.organisation("other")
        org = acme.ids["acme"]
        async with open_sqlite_store(running.bootstrap.database.path, readers=1) as store:

            async def at(moment: str, owner_id: str = owner["id"], org_id: str = org) -> list[str]:
                shown = await current_messages_for(store, org_id, owner_id, moment)
                return [message["title"] for message in shown]

            assert await at("2089-12-31T23:59:59.999Z") == []
            assert await at("2090-01-01T00:00:00Z") == ["January"]
            assert await at("2090-01-31T23:00:00-02:00") == []  # 01:00 UTC on 1 February
            assert await at("2090-01-31T23:59:59.999Z") == ["January"]
            assert await at("2090-02-01T00:00:00Z") == []  # valid_until is exclusive
            assert await at("2090-01-15T00:00:00Z", org_id=acme.ids["other"]) == []
            manager = _rows(running, "SELECT id FROM accounts WHERE login = 'admin'")[0][0]
            assert await at("2090-01-15T00:00:00Z", owner_id=manager) == []
            await acme.post("acme", f"/messages/{january['id']}/withdraw")
            assert await at("2090-01-15T00:00:00Z") == []


async def test_rights_and_tenancy(running: RunningService) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        owner = await acme.owner("acme", "an.owner", device=False)
        notice = await acme.message("acme", title="Notice")
        await acme.post(
            "acme",
            "/accounts",
            {"login": "inventory", "kind": "manager", "rights": ["devices"], "password": "p" * 12},
        )
        await acme.post(
            "acme",
            "/accounts",
            {"login": "helpdesk", "kind": "manager", "rights": ["commands"], "password": "p" * 12},
        )
        inventory = await acme.sign_in("acme", "inventory", "p" * 12)
        helpdesk = await acme.sign_in("acme", "helpdesk", "p" * 12)
        stranger = await acme.organisation("other")
        url = f"{API}/organisations/acme/messages"
        before = _counts(running)
        for auth, status in ((owner["auth"], 403), (inventory, 403), (stranger, 404)):
            posted = await client.post(url, json={"title": "Mine"}, headers=auth)
            assert posted.status_code == status, posted.text
            withdrawn = await client.post(f"{url}/{notice['id']}/withdraw", headers=auth)
            assert withdrawn.status_code == status, withdrawn.text
        for path in ("", f"/{notice['id']}"):
            assert (await client.get(url + path, headers=owner["auth"])).status_code == 403
            assert (await client.get(url + path, headers=stranger)).status_code == 404
            assert (await client.get(url + path, headers=inventory)).status_code == 200
        # Acme's message id in the other organisation's own path: not found there either.
        theirs = f"{API}/organisations/other/messages/{notice['id']}"
        assert (await client.get(theirs, headers=stranger)).status_code == 404
        assert (await client.post(f"{theirs}/withdraw", headers=stranger)).status_code == 404
        assert _counts(running) == before

        # The commands right posts; an author's removal keeps the message, without author.
        posted = await client.post(url, json={"title": "From the helpdesk"}, headers=helpdesk)
        assert posted.status_code == 201, posted.text
        assert posted.json()["created_by"]["login"] == "helpdesk"
        helpdesk_id = posted.json()["created_by"]["id"]
        removed = await client.delete(
            f"{API}/organisations/acme/accounts/{helpdesk_id}", headers=acme.managers["acme"]
        )
        assert removed.status_code == 204, removed.text
        kept = await client.get(f"{url}/{posted.json()['id']}", headers=acme.managers["acme"])
        assert kept.status_code == 200 and kept.json()["created_by"] is None


async def test_removing_an_organisation_removes_its_messages(running: RunningService) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        owner = await acme.owner("acme", "an.owner")
        group = await acme.group("acme", "Everyone", owner["device"])
        await acme.message("acme", title="Group", audience="groups", groups=[group])
        await acme.message("acme", title="All")
        org = f"{API}/organisations/acme"
        off = await client.patch(org, json={"active": False}, headers=acme.supervisor)
        assert off.status_code == 200, off.text
        removed = await client.delete(org, headers=acme.supervisor)
        assert removed.status_code == 204, removed.text
    assert _counts(running)[:2] == (0, 0)


def _body_html(page: str) -> str:
    found = re.search(r'<div class="[^"]*message-body"[^>]*>(.*?)</div>', page, re.DOTALL)
    assert found, page
    return found.group(1)


async def test_the_portals_post_show_and_withdraw_messages(running: RunningService) -> None:
    async with running.client() as client:
        acme = await _acme(running, client)
        owner = await acme.owner("acme", "jane")
        group = await acme.group("acme", "Sales", owner["device"])
        await acme.post(
            "acme",
            "/accounts",
            {"login": "viewer", "kind": "manager", "rights": [], "password": "v" * 12},
        )
    async with signed_in(running, "admin", MANAGER_PASSWORD, organisation="acme") as admin:
        listing = await admin.page("/admin/o/acme/messages")
        assert 'href="/admin/o/acme/messages">Messages</a>' in listing  # the navigation
        answer = await admin.submit(
            "/admin/o/acme/messages",
            {
                "title": "Fire <drill>",
                "body": "<script>alert(1)</script>\r\nLine two",
                "severity": "urgent",
                "audience": "all",
                "groups": group,  # ticked, but "all" was chosen: left out
                "valid_until": "2099-06-30T12:00",
            },
        )
        page = await admin.follow(answer)
        assert flash_of(page) == "Message Fire <drill> posted."
        assert _body_html(page) == "&lt;script&gt;alert(1)&lt;/script&gt;\nLine two"
        assert "<script>alert(1)" not in page
        assert 'data-confirm="Withdraw the message Fire &lt;drill&gt;?' in page
        message_url = admin.url.split(running.http_url, 1)[1]
        message_id = message_url.rsplit("/", 1)[1]

        async with running.client() as client:
            shown = await client.get(
                f"{API}/organisations/acme/messages/{message_id}", headers=acme.managers["acme"]
            )
        posted = shown.json()
        assert (posted["severity"], posted["audience"], posted["groups"]) == ("urgent", "all", [])
        assert posted["valid_until"] == "2099-06-30T12:00:00.000Z"
        assert posted["body"] == "<script>alert(1)</script>\nLine two"

        grouped = await admin.submit(
            "/admin/o/acme/messages",
            {"title": "Sales only", "audience": "groups", "groups": group, "severity": "info"},
            page="/admin/o/acme/messages",
        )
        assert "Owners of devices in Sales" in await admin.follow(grouped)
        listing = await admin.page("/admin/o/acme/messages")
        assert "Fire &lt;drill&gt;" in listing and "Sales only" in listing

        before = _counts(running)
        refused = await admin.submit(
            "/admin/o/acme/messages",
            {"title": " ", "audience": "all"},
            page="/admin/o/acme/messages",
        )
        assert flash_of(await admin.follow(refused)) == "title: 1 to 120 characters"
        assert _counts(running) == before

        async with signed_in(running, "jane", OWNER_PASSWORD, organisation="acme") as jane:
            mine = await jane.page("/my/devices")
            assert "Messages from Acme" in mine
            assert mine.index("Sales only") < mine.index("Fire &lt;drill&gt;")  # newest first
            assert "&lt;script&gt;alert(1)&lt;/script&gt;\nLine two" in mine
            assert "<script>alert(1)" not in mine

            withdraw = f"{message_url}/withdraw"
            before = _counts(running)  # signing in is audited too
            forged = await admin.post_form(withdraw, {}, page=message_url, csrf_token="forged")
            assert forged.status_code == 403
            assert _counts(running) == before
            done = await admin.submit(withdraw, {}, page=message_url)
            page = await admin.follow(done)
            assert flash_of(page) == "Message Fire <drill> withdrawn."
            assert withdraw not in page  # nothing left to withdraw
            assert "Fire &lt;drill&gt;" not in await jane.page("/my/devices")
            assert (await jane.get("/admin/o/acme/messages")).status_code in (302, 403)

        async with running.client() as client:
            shown = await client.get(
                f"{API}/organisations/acme/messages/{message_id}", headers=acme.managers["acme"]
            )
        assert shown.json()["state"] == "withdrawn"
        assert [row[0] for row in _events(running)] == [
            "message.posted",
            "message.posted",
            "message.withdrawn",
        ]

    async with signed_in(running, "viewer", "v" * 12, organisation="acme") as viewer:
        listing = await viewer.page("/admin/o/acme/messages")
        assert "Sales only" in listing and "needs the commands right" in listing
        assert 'action="/admin/o/acme/messages"' not in listing
        assert "/withdraw" not in await viewer.page(message_url)
