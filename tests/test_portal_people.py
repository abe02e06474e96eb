"""The portal's accounts, templates and name policy pages, and the self-service portal.

Against the real service: each form is driven as a browser would (session cookie, CSRF
token taken from the page), and what it changed is checked through the REST API.
"""

from __future__ import annotations

import html
import re
from contextlib import AsyncExitStack
from typing import Any

import httpx

from web.portal.people import locations

from .conftest import RunningService, bearer, supervisor_token
from .portal_client import FormData, Portal, flash_of, signed_in

API = "/api/v1"
MANAGER_PASSWORD = "manager password 1"
USER_PASSWORD = "user password 12"
NEW_PASSWORD = "my own new password"


def _client(running: RunningService) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=running.http_url, follow_redirects=False, timeout=30)


async def submit(
    portal: Portal, page: str, action: str, data: FormData, *, csrf_token: str | None = None
) -> httpx.Response:
    """Post the form of ``page`` that posts to ``action``, with the page's CSRF token and
    Referer; ``csrf_token`` sends that token instead ("": none), whatever the page has."""
    if csrf_token is None:
        return await portal.submit(action, data, page=page)
    return await portal.post_form(action, data, page=page, csrf_token=csrf_token)


class Setup:
    """An organisation (and a second one) made through the REST API."""

    def __init__(self, client: httpx.AsyncClient, supervisor: dict[str, str]) -> None:
        self.client = client
        self.supervisor = supervisor
        self.managers: dict[str, dict[str, str]] = {}

    async def organisation(self, code: str) -> dict[str, str]:
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
        token = await self.client.post(
            f"{API}/auth/token",
            json={"organisation": code, "login": "admin", "password": MANAGER_PASSWORD},
        )
        assert token.status_code == 201, token.text
        self.managers[code] = bearer(token.json()["token"])
        return self.managers[code]

    async def account(self, code: str, **body: Any) -> dict[str, Any]:
        created = await self.client.post(
            f"{API}/organisations/{code}/accounts", json=body, headers=self.managers[code]
        )
        assert created.status_code == 201, created.text
        return created.json()

    async def device(self, code: str, owner: str, name: str) -> dict[str, Any]:
        created = await self.client.post(
            f"{API}/organisations/{code}/devices",
            json={"name": name, "platform": "android", "protocol": "wsdm", "owner": owner},
            headers=self.managers[code],
        )
        assert created.status_code == 201, created.text
        return created.json()

    async def rest(self, code: str, path: str) -> httpx.Response:
        return await self.client.get(f"{API}/organisations/{code}{path}", headers=self.supervisor)

    async def commands(self, code: str, device: str) -> list[dict[str, Any]]:
        response = await self.rest(code, f"/devices/{device}/commands")
        assert response.status_code == 200, response.text
        return response.json()["items"]

    async def account_named(self, code: str, login: str) -> dict[str, Any] | None:
        response = await self.rest(code, f"/accounts?filter[login]={login}")
        assert response.status_code == 200, response.text
        return next((a for a in response.json()["items"] if a["login"] == login), None)


async def _signed_in(
    browsers: AsyncExitStack, running: RunningService, login: str, password: str
) -> Portal:
    """A browser signed in to organisation acme, closed with ``browsers``."""
    return await browsers.enter_async_context(
        signed_in(running, login, password, organisation="acme")
    )


async def _sent_to(portal: Portal, path: str) -> str:
    """Where an account that ``path`` is not for is sent: redirected to its start page, or
    refused with a page that links there. Either way it sees nothing of ``path``."""
    answer = await portal.get(path)
    if answer.status_code in (302, 303):
        return answer.headers["Location"]
    assert answer.status_code == 403, (path, answer.status_code)
    found = re.search(r'<a href="([^"]+)">Back to', answer.text)
    assert found, answer.text
    return found.group(1)


async def _setup(running: RunningService, client: httpx.AsyncClient) -> Setup:
    setup = Setup(client, bearer(await supervisor_token(client, running.supervisor_password)))
    await setup.organisation("acme")
    return setup


async def _owner(setup: Setup, login: str, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A user with a chosen password and a device of theirs."""
    user = await setup.account("acme", login=login, password=USER_PASSWORD)
    return user, await setup.device("acme", user["id"], device)


async def test_user_made_in_the_portal_signs_in_and_sees_own_devices(
    running: RunningService,
) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        manager, jane = (
            await _signed_in(browsers, running, "admin", MANAGER_PASSWORD),
            Portal(await browsers.enter_async_context(_client(running))),
        )
        form = await manager.page("/admin/o/acme/accounts/new")
        assert "Login id" in form and "Login ids have 3 to 64 characters" in form
        assert form.count('name="rights"') == 6  # the first manager holds every right

        result = await submit(
            manager,
            "/admin/o/acme/accounts/new",
            "/admin/o/acme/accounts",
            {
                "kind": "user",
                "login": "jane",
                "display_name": "Jane Doe",
                "email": "jane@example.com",
                "template": "",
                "rights_from": "template",
                "password_from": "generated",
            },
        )
        assert result.status_code == 200, result.text
        assert result.headers["Cache-Control"] == "no-store"
        match = re.search(r'id="one-time-password">([^<]+)<', result.text)
        assert match
        one_time = html.unescape(match.group(1))
        made = await setup.account_named("acme", "jane")
        assert made is not None
        assert (made["kind"], made["display_name"], made["email"]) == (
            "user",
            "Jane Doe",
            "jane@example.com",
        )
        assert made["must_change_password"] is True

        pixel = await setup.device("acme", made["id"], "Jane's Pixel")
        bob = await setup.account("acme", login="bob", password=USER_PASSWORD)
        await setup.device("acme", bob["id"], "Bob's Phone")

        answer = await jane.sign_in("jane", one_time, "acme")
        assert answer.headers["Location"] == "/password"
        # Nothing but the password change until it is done.
        assert (await jane.get("/my/devices")).headers["Location"] == "/password"
        changed = await submit(
            jane,
            "/password",
            "/password",
            {
                "current_password": one_time,
                "new_password": NEW_PASSWORD,
                "repeat_password": NEW_PASSWORD,
            },
        )
        assert changed.headers["Location"] == "/my/devices"
        mine = html.unescape(await jane.follow(changed))
        assert "My devices" in mine and "Jane's Pixel" in mine and pixel["id"] in mine
        assert "Bob's Phone" not in mine
        assert f'href="/my/devices/{pixel["id"]}"' in mine

        # Owners are kept out of the admin portal, managers out of the self-service one.
        assert await _sent_to(jane, "/admin/o/acme/accounts") == "/my/devices"
        dashboard = await _sent_to(manager, "/my/devices")
        assert dashboard.startswith("/admin/o/") and dashboard.count("/") == 3, dashboard


async def test_owner_queues_a_lock_and_sees_it_queued(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        _, pixel = await _owner(setup, "jane", "Jane's Pixel")
        jane = await _signed_in(browsers, running, "jane", USER_PASSWORD)
        device_page = f"/my/devices/{pixel['id']}"
        shown = await jane.page(device_page)
        confirm = 'data-confirm="Factory wipe Jane\'s Pixel? This erases everything on it."'
        assert confirm in html.unescape(shown)
        assert "Enterprise wipe Jane's Pixel?" in html.unescape(shown)

        queued = await submit(
            jane,
            device_page,
            f"{device_page}/commands",
            {"kind": "lock", "message": "Please return me"},
        )
        after = html.unescape(await jane.follow(queued))
        assert "Lock queued for Jane's Pixel" in after
        assert re.search(r'<td data-col="kind">Lock</td>\s*<td data-col="state">queued</td>', after)
        rest = await setup.commands("acme", pixel["id"])
        assert [(c["kind"], c["state"], c["parameters"]) for c in rest] == [
            ("lock", "queued", {"message": "Please return me"})
        ]

        tracked = await submit(
            jane,
            device_page,
            f"{device_page}/commands",
            {"kind": "track", "duration_minutes": "30", "interval_minutes": "60"},
        )
        refused = html.unescape(await jane.follow(tracked))
        assert "interval_minutes: cannot be longer than duration_minutes" in refused
        assert len(await setup.commands("acme", pixel["id"])) == 1

        bulk = await submit(
            jane,
            "/my/devices",
            "/my/devices/commands",
            {"kind": "locate", "device_ids": pixel["id"]},
        )
        assert "Locate now queued for Jane's Pixel" in html.unescape(await jane.follow(bulk))
        kinds = sorted(c["kind"] for c in await setup.commands("acme", pixel["id"]))
        assert kinds == ["locate", "lock"]

        # The owner cancels what they gave; REST agrees.
        lock = next(c for c in await setup.commands("acme", pixel["id"]) if c["kind"] == "lock")
        cancelled = await submit(
            jane, device_page, f"{device_page}/commands/cancel", {"command_ids": lock["id"]}
        )
        await jane.follow(cancelled)
        states = {c["kind"]: c["state"] for c in await setup.commands("acme", pixel["id"])}
        assert states == {"lock": "cancelled", "locate": "queued"}


async def test_owner_gets_404_for_another_owners_device(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        await _owner(setup, "jane", "Jane's Pixel")
        _, phone = await _owner(setup, "bob", "Bob's Phone")
        jane = await _signed_in(browsers, running, "jane", USER_PASSWORD)
        await jane.page("/my/devices")
        token = jane.token
        theirs = f"/my/devices/{phone['id']}"
        assert (await jane.get(theirs)).status_code == 404
        for action, data in (
            (f"{theirs}/commands", {"kind": "wipe"}),
            (f"{theirs}/commands", {"kind": "lock"}),
            ("/my/devices/commands", {"kind": "lock", "device_ids": phone["id"]}),
            (f"{theirs}/commands/cancel", {"command_ids": "x"}),
        ):
            response = await submit(jane, "/my/devices", action, data, csrf_token=token)
            assert response.status_code == 404, (action, response.status_code)
            assert "Bob" not in response.text
        assert await setup.commands("acme", phone["id"]) == []


async def test_manager_without_the_accounts_right_is_refused(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        await setup.account(
            "acme", login="helpdesk", kind="manager", rights=["commands"], password=MANAGER_PASSWORD
        )
        helpdesk = await _signed_in(browsers, running, "helpdesk", MANAGER_PASSWORD)
        form = await helpdesk.page("/admin/o/acme/accounts/new")
        # Only the rights the acting manager holds are offered.
        assert re.findall(r'name="rights" value="(\w+)"', form) == ["commands"]
        refused = await submit(
            helpdesk,
            "/admin/o/acme/accounts/new",
            "/admin/o/acme/accounts",
            {"kind": "user", "login": "mallory", "password_from": "generated"},
        )
        assert refused.headers["Location"] == "/admin/o/acme/accounts/new"
        shown = html.unescape(await helpdesk.follow(refused))
        assert "this needs the 'accounts' right" in shown
        assert await setup.account_named("acme", "mallory") is None


async def test_forms_without_a_csrf_token_are_refused(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        _, pixel = await _owner(setup, "jane", "Jane's Pixel")
        manager = await _signed_in(browsers, running, "admin", MANAGER_PASSWORD)
        jane = await _signed_in(browsers, running, "jane", USER_PASSWORD)
        for csrf in ("", "forged"):  # none at all, or a wrong one
            made = await submit(
                manager,
                "/admin/o/acme/accounts/new",
                "/admin/o/acme/accounts",
                {"kind": "user", "login": "mallory", "password_from": "generated"},
                csrf_token=csrf,
            )
            assert made.status_code == 403, made.status_code
            policy = await submit(
                manager,
                "/admin/o/acme/name-policy",
                "/admin/o/acme/name-policy",
                {"min_length": "8", "max_length": "9", "allowed_characters": "a-z"},
                csrf_token=csrf,
            )
            assert policy.status_code == 403
            locked = await submit(
                jane,
                f"/my/devices/{pixel['id']}",
                f"/my/devices/{pixel['id']}/commands",
                {"kind": "wipe"},
                csrf_token=csrf,
            )
            assert locked.status_code == 403
        assert await setup.account_named("acme", "mallory") is None
        assert (await setup.rest("acme", "/name-policy")).json()["default"] is True
        assert await setup.commands("acme", pixel["id"]) == []


async def test_another_organisations_accounts_are_not_found(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        await setup.organisation("other")
        theirs = await setup.account("other", login="carol", password=USER_PASSWORD)
        template = await client.post(
            f"{API}/organisations/other/account-templates",
            json={"name": "Staff", "kind": "user"},
            headers=setup.managers["other"],
        )
        assert template.status_code == 201
        template_id = template.json()["id"]
        manager = await _signed_in(browsers, running, "admin", MANAGER_PASSWORD)
        await manager.page("/admin/o/acme/accounts/new")
        token = manager.token

        for path in (
            "/admin/o/other/accounts",
            "/admin/o/other/accounts/new",
            f"/admin/o/other/accounts/{theirs['id']}",
            f"/admin/o/acme/accounts/{theirs['id']}",
            "/admin/o/other/templates",
            f"/admin/o/acme/templates/{template_id}",
            "/admin/o/other/name-policy",
        ):
            response = await manager.get(path)
            assert response.status_code == 404, path
            assert "carol" not in response.text
        for org in ("other", "acme"):
            base = f"/admin/o/{org}/accounts/{theirs['id']}"
            for action, data in (
                (base, {"display_name": "Hacked"}),
                (f"{base}/active", {"active": "false"}),
                (f"{base}/password", {}),
                (f"{base}/remove", {}),
                (f"/admin/o/{org}/templates/{template_id}", {"name": "Hacked"}),
                (f"/admin/o/{org}/templates/{template_id}/remove", {}),
            ):
                response = await submit(
                    manager, "/admin/o/acme/accounts", action, data, csrf_token=token
                )
                assert response.status_code == 404, (action, response.status_code)
        for action, data in (
            ("/admin/o/other/accounts", {"login": "intruder", "password_from": "generated"}),
            ("/admin/o/other/templates", {"name": "Intruders", "kind": "user"}),
            (
                "/admin/o/other/name-policy",
                {"min_length": "8", "max_length": "9", "allowed_characters": "a-z"},
            ),
        ):
            response = await submit(
                manager, "/admin/o/acme/accounts", action, data, csrf_token=token
            )
            assert response.status_code == 404, action
        carol = await setup.account_named("other", "carol")
        assert carol is not None
        assert (carol["display_name"], carol["active"], carol["must_change_password"]) == (
            "",
            True,
            False,
        )
        assert await setup.account_named("other", "intruder") is None
        assert (await setup.rest("other", "/name-policy")).json()["default"] is True
        stored = await setup.rest("other", f"/account-templates/{template_id}")
        assert stored.json()["name"] == "Staff"


async def test_account_page_edit_deactivate_reset_and_remove(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        sam, phone = await _owner(setup, "sam", "Sam's Phone")
        manager = await _signed_in(browsers, running, "admin", MANAGER_PASSWORD)
        listed = await manager.page("/admin/o/acme/accounts?filter[kind]=user")
        assert f'href="/admin/o/acme/accounts/{sam["id"]}"' in listed and ">admin<" not in listed
        page = f"/admin/o/acme/accounts/{sam['id']}"
        shown = html.unescape(await manager.page(page))
        assert f'href="/admin/o/acme/devices/{phone["id"]}"' in shown and "Sam's Phone" in shown
        assert 'data-confirm="Remove the account sam?' in shown
        assert 'data-confirm="Deactivate sam?' in shown

        edited = await submit(
            manager,
            page,
            page,
            {"display_name": "Sam Smith", "email": "sam@example.com", "locale": ""},
        )
        assert "Account sam changed." in await manager.follow(edited)
        now = (await setup.rest("acme", f"/accounts/{sam['id']}")).json()
        assert (now["display_name"], now["email"]) == ("Sam Smith", "sam@example.com")
        bad = await submit(manager, page, page, {"display_name": "Sam", "email": "not-an-address"})
        assert "email: not a valid e-mail address" in await manager.follow(bad)

        off = await submit(manager, page, f"{page}/active", {"active": "false"})
        await manager.follow(off)
        assert (await setup.rest("acme", f"/accounts/{sam['id']}")).json()["active"] is False
        on = await submit(manager, page, f"{page}/active", {"active": "true"})
        await manager.follow(on)
        assert (await setup.rest("acme", f"/accounts/{sam['id']}")).json()["active"] is True

        reset = await submit(manager, page, f"{page}/password", {})
        assert reset.status_code == 200 and reset.headers["Cache-Control"] == "no-store"
        match = re.search(r'id="one-time-password">([^<]+)<', reset.text)
        assert match
        signed = await client.post(
            f"{API}/auth/token",
            json={"organisation": "acme", "login": "sam", "password": html.unescape(match[1])},
        )
        assert signed.status_code == 201 and signed.json()["password_change_required"] is True

        kept = await submit(manager, page, f"{page}/remove", {})
        assert "owns 1 device(s)" in html.unescape(await manager.follow(kept))
        removed_device = await client.delete(
            f"{API}/organisations/acme/devices/{phone['id']}", headers=setup.managers["acme"]
        )
        assert removed_device.status_code == 204
        gone = await submit(manager, page, f"{page}/remove", {})
        assert gone.headers["Location"] == "/admin/o/acme/accounts"
        assert "Account sam removed." in await manager.follow(gone)
        assert (await setup.rest("acme", f"/accounts/{sam['id']}")).status_code == 404


async def test_templates_and_name_policy(running: RunningService) -> None:
    async with running.client() as client, AsyncExitStack() as browsers:
        setup = await _setup(running, client)
        manager = await _signed_in(browsers, running, "admin", MANAGER_PASSWORD)
        policy_page = "/admin/o/acme/name-policy"
        assert "Login ids have 3 to 64 characters" in await manager.page(policy_page)
        saved = await submit(
            manager,
            policy_page,
            policy_page,
            {
                "min_length": "4",
                "max_length": "20",
                "allowed_characters": "a-z.",
                "forbidden_words": "admin\nroot, boss",
            },
        )
        rule = "Login ids have 4 to 20 characters: a-z or '.'; they must not contain"
        assert rule in html.unescape(await manager.follow(saved))
        stored = (await setup.rest("acme", "/name-policy")).json()
        assert stored["forbidden_words"] == ["admin", "root", "boss"]
        assert rule in html.unescape(await manager.page("/admin/o/acme/accounts/new"))
        wide = await submit(
            manager,
            policy_page,
            policy_page,
            {"min_length": "4", "max_length": "500", "allowed_characters": "a-z"},
        )
        assert "max_length: at most 128" in await manager.follow(wide)  # as REST says

        templates = "/admin/o/acme/templates"
        made = await submit(
            manager,
            templates,
            templates,
            [
                ("name", "Helpdesk"),
                ("kind", "manager"),
                ("rights", "commands"),
                ("locale", "en-GB"),
            ],
        )
        shown = await manager.follow(made)
        assert "Template Helpdesk created." in shown, flash_of(shown)
        listed = (await setup.rest("acme", "/account-templates")).json()["items"]
        helpdesk = next(t for t in listed if t["name"] == "Helpdesk")
        assert (helpdesk["kind"], helpdesk["rights"], helpdesk["locale"]) == (
            "manager",
            ["commands"],
            "en-GB",
        )
        page = f"{templates}/{helpdesk['id']}"
        edited = await submit(
            manager,
            page,
            page,
            [
                ("name", "Helpdesk"),
                ("locale", "en-GB"),
                ("description", "First line"),
                ("rights_shown", "1"),
                ("rights", "commands"),
                ("rights", "wipe"),
            ],
        )
        await manager.follow(edited)
        now = (await setup.rest("acme", f"/account-templates/{helpdesk['id']}")).json()
        assert (now["description"], now["rights"]) == ("First line", ["commands", "wipe"])

        # An account from the template, with a login the policy refuses, then one it takes.
        new = "/admin/o/acme/accounts/new"
        refused = await submit(
            manager,
            new,
            "/admin/o/acme/accounts",
            {"kind": "manager", "login": "bossman", "template": helpdesk["id"]},
        )
        assert "may not contain 'boss'" in html.unescape(await manager.follow(refused))
        made = await submit(
            manager,
            new,
            "/admin/o/acme/accounts",
            {
                "kind": "manager",
                "login": "help.desk",
                "template": helpdesk["id"],
                "rights_from": "template",
                "password_from": "chosen",
                "password": MANAGER_PASSWORD,
            },
        )
        assert "Account help.desk created." in await manager.follow(made)
        account = await setup.account_named("acme", "help.desk")
        assert account is not None
        assert (account["rights"], account["must_change_password"]) == (["commands", "wipe"], False)

        in_use = await submit(manager, page, f"{page}/remove", {})
        assert "in use by 1 account(s)" in await manager.follow(in_use)
        spare = await client.post(
            f"{API}/organisations/acme/account-templates",
            json={"name": "Spare", "kind": "user"},
            headers=setup.managers["acme"],
        )
        spare_page = f"{templates}/{spare.json()['id']}"
        assert 'data-confirm="Remove the account template Spare?"' in await manager.page(spare_page)
        removed = await submit(manager, spare_page, f"{spare_page}/remove", {})
        assert removed.headers["Location"] == templates
        assert (
            await setup.rest("acme", f"/account-templates/{spare.json()['id']}")
        ).status_code == 404


def test_locations_come_from_locate_and_track_results() -> None:
    found = locations(
        [
            {
                "kind": "locate",
                "result": {"latitude": 51.5, "longitude": -0.12, "accuracy": 8, "at": "t1"},
                "completed_at": "c1",
            },
            {
                "kind": "track",
                "result": {
                    "locations": [
                        {"latitude": 48.85, "longitude": 2.35, "at": "t3"},
                        {"latitude": "north", "longitude": 2},
                    ]
                },
                "completed_at": "c2",
            },
            {"kind": "lock", "result": {"latitude": 1, "longitude": 2}, "completed_at": "c3"},
            {"kind": "locate", "result": None, "completed_at": None},
        ]
    )
    assert [(f["latitude"], f["longitude"], f["accuracy"], f["at"]) for f in found] == [
        (48.85, 2.35, None, "t3"),
        (51.5, -0.12, 8.0, "t1"),
    ]
