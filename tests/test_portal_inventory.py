"""Admin portal: devices, bulk and single commands, device groups, installation codes.

The pages are driven as a browser would (session cookie, CSRF token from the page's HTML);
what they change is checked through the REST API, which shares the domain operations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from .conftest import RunningService, bearer, supervisor_token

API = "/api/v1"
PASSWORD = "a password for tests"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# --------------------------------------------------------------------------- helpers


@dataclass
class Org:
    code: str
    auth: dict[str, str]  # the first manager's REST headers (all rights)


def portal(running: RunningService) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=running.http_url, follow_redirects=False, timeout=30)


async def sign_in(client: httpx.AsyncClient, organisation: str, login: str) -> None:
    """Sign in through the portal's form; the client keeps the session cookie."""
    form = await client.get("/sign-in")
    assert form.status_code == 200
    answer = await client.post(
        "/sign-in",
        data={
            "organisation": organisation,
            "login": login,
            "password": PASSWORD,
            "csrf_token": client.cookies["emm_login_csrf"],
        },
    )
    assert answer.status_code == 302, answer.text
    assert client.cookies.get("emm_session")


class Html(str):
    """A page's HTML, which knows the CSRF token of each of its forms."""

    def token(self, action: str) -> str:
        """The token of the form that posts to ``action`` (the form must have one)."""
        for form in re.finditer(r"<form\b([^>]*)>(.*?)</form>", self, re.S):
            if f'action="{action}"' in form.group(1):
                token = CSRF.search(form.group(2))
                assert token and token.group(1), f"the form posting to {action} has no token"
                return token.group(1)
        raise AssertionError(f"no form posts to {action}")


async def page(client: httpx.AsyncClient, path: str) -> Html:
    answer = await client.get(path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
    return Html(answer.text)


async def submit(
    client: httpx.AsyncClient, path: str, data: dict[str, Any], *, referrer: str | None = None
) -> httpx.Response:
    headers = {"Referer": f"{client.base_url}{referrer}"} if referrer else {}
    return await client.post(path, data=data, headers=headers)


async def organisation(api: httpx.AsyncClient, supervisor: dict[str, str], code: str) -> Org:
    created = await api.post(
        f"{API}/organisations",
        json={"code": code, "short_name": code.title(), "first_manager_password": PASSWORD},
        headers=supervisor,
    )
    assert created.status_code == 201, created.text
    token = await api.post(
        f"{API}/auth/token", json={"organisation": code, "login": "admin", "password": PASSWORD}
    )
    assert token.status_code == 201, token.text
    return Org(code, bearer(token.json()["token"]))


async def rest(api: httpx.AsyncClient, org: Org, method: str, path: str, body: Any = None) -> Any:
    answer = await api.request(
        method, f"{API}/organisations/{org.code}{path}", json=body, headers=org.auth
    )
    assert answer.status_code in (200, 201, 204), (method, path, answer.text)
    return answer.json() if answer.content else None


async def account(api: httpx.AsyncClient, org: Org, login: str, **values: Any) -> str:
    created = await rest(
        api, org, "POST", "/accounts", {"login": login, "password": PASSWORD, **values}
    )
    return created["id"]


async def device(api: httpx.AsyncClient, org: Org, name: str, **values: Any) -> str:
    body = {"name": name, "platform": "android", "protocol": "wsdm", **values}
    return (await rest(api, org, "POST", "/devices", body))["id"]


async def commands_of(api: httpx.AsyncClient, org: Org) -> list[dict[str, Any]]:
    return (await rest(api, org, "GET", "/commands"))["items"]


def flash_of(html: str) -> str:
    found = re.search(r'<p class="flash (\w+)"[^>]*>(.*?)</p>', html, re.S)
    assert found, "no message on the page"
    return f"{found.group(1)}: {found.group(2)}"


# --------------------------------------------------------------------------- tests


async def test_manager_creates_lists_commands_groups_and_codes(running: RunningService) -> None:
    async with running.client() as api, portal(running) as browser:
        supervisor = bearer(await supervisor_token(api, running.supervisor_password))
        org = await organisation(api, supervisor, "north")
        jane = await account(api, org, "jane", display_name="Jane Doe")
        await sign_in(browser, "north", "admin")
        base = "/admin/o/north"

        # "New device": the owner is picked from the organisation's user accounts.
        html = await page(browser, f"{base}/devices/new")
        assert f'<option value="{jane}">jane (Jane Doe)</option>' in html
        created = await submit(
            browser,
            f"{base}/devices",
            {
                "csrf_token": html.token(f"{base}/devices"),
                "name": "Jane's phone",
                "platform": "android",
                "protocol": "wsdm",
                "owner": jane,
                "imei": "356938035643809",
                "phone_number": "+44 20 7946 0018",
                "serial_number": "",
            },
            referrer=f"{base}/devices/new",
        )
        assert created.status_code == 302, created.text
        listed = (await rest(api, org, "GET", "/devices"))["items"]
        assert [(d["name"], d["owner"]["login"], d["imei"]) for d in listed] == [
            ("Jane's phone", "jane", "356938035643809")
        ]
        phone = listed[0]["id"]
        # ...and the page it leads to shows the installation code made with the device.
        codes = (await rest(api, org, "GET", "/installation-codes"))["items"]
        assert [c["device"] for c in codes] == [phone]
        shown = await page(browser, created.headers["location"])
        assert codes[0]["code"] in shown and "<svg" in shown
        assert "Jane&#39;s phone created" in flash_of(shown)

        # The list: sorted by a column header, filtered by a column's search string.
        tablet = await device(api, org, "Alpha tablet", platform="ios", protocol="apple_mdm")
        await device(api, org, "Zulu phone")
        html = await page(browser, f"{base}/devices?sort=-name")
        names = re.findall(r'<a href="/admin/o/north/devices/[^"]+">([^<]+)</a>', html)
        assert names == ["Zulu phone", "Jane&#39;s phone", "Alpha tablet"]
        assert 'aria-sort="descending"' in html
        filtered = await page(browser, f"{base}/devices?filter[platform]=io")
        assert "Alpha tablet" in filtered and "Zulu phone" not in filtered

        # Two devices selected, one bulk lock: two queued locks of one batch.
        locked = await submit(
            browser,
            f"{base}/devices/commands",
            {
                "csrf_token": html.token(f"{base}/devices/commands"),
                "kind": "lock",
                "device_ids": [phone, tablet],
            },
            referrer=f"{base}/devices",
        )
        assert locked.status_code == 302
        queued = await commands_of(api, org)
        assert sorted(c["device_id"] for c in queued) == sorted([phone, tablet])
        assert {(c["kind"], c["state"]) for c in queued} == {("lock", "queued")}
        assert len({c["batch_id"] for c in queued}) == 1 and queued[0]["batch_id"]
        html = await page(browser, locked.headers["location"])
        assert "lock queued for 2 device(s)" in flash_of(html)

        # The device page shows the queued lock; cancelling it is what the REST API reports.
        lock = next(c for c in queued if c["device_id"] == phone)
        html = await page(browser, f"{base}/devices/{phone}")
        assert "Jane&#39;s phone" in html and "356938035643809" in html
        assert '<span class="badge queued">queued</span>' in html
        cancel = f"{base}/devices/{phone}/commands/{lock['id']}/cancel"
        assert (
            await submit(browser, cancel, {"csrf_token": html.token(cancel)})
        ).status_code == 302
        assert (await rest(api, org, "GET", f"/commands/{lock['id']}"))["state"] == "cancelled"
        html = await page(browser, f"{base}/devices/{phone}")
        assert '<span class="badge cancelled">cancelled</span>' in html

        # A single command with parameters, from the device page's form.
        track = await submit(
            browser,
            f"{base}/devices/{phone}/commands",
            {
                "csrf_token": html.token(f"{base}/devices/{phone}/commands"),
                "kind": "track",
                "track.duration_minutes": "60",
                "track.interval_minutes": "5",
                "message.text": "ignored: another kind's field",
            },
        )
        assert track.status_code == 302
        newest = (await rest(api, org, "GET", f"/devices/{phone}/commands"))["items"][0]
        assert (newest["kind"], newest["parameters"]) == (
            "track",
            {"duration_minutes": 60, "interval_minutes": 5},
        )

        # A group, and the device in it.
        html = await page(browser, f"{base}/groups")
        made = await submit(
            browser, f"{base}/groups", {"csrf_token": html.token(f"{base}/groups"), "name": "Field"}
        )
        assert made.status_code == 302
        group = (await rest(api, org, "GET", "/device-groups"))["items"][0]
        assert group["name"] == "Field"
        html = await page(browser, f"{base}/devices/{phone}")
        assert f'<option value="{group["id"]}">Field</option>' in html
        add = f"{base}/devices/{phone}/groups"
        added = await submit(browser, add, {"csrf_token": html.token(add), "group": group["id"]})
        assert added.status_code == 302
        members = (await rest(api, org, "GET", f"/device-groups/{group['id']}/devices"))["items"]
        assert [m["id"] for m in members] == [phone]
        html = await page(browser, f"{base}/groups/{group['id']}")
        assert "Jane&#39;s phone" in html

        # An installation code made on demand, with its QR code.
        html = await page(browser, f"{base}/codes")
        made = await submit(
            browser,
            f"{base}/codes",
            {
                "csrf_token": html.token(f"{base}/codes"),
                "purpose": "new_device_for_account",
                "account": jane,
                "device": phone,  # not for this purpose: left out
                "usage_limit": "3",
                "expires_at": "",
            },
        )
        assert made.status_code == 302, made.text
        code = next(
            c
            for c in (await rest(api, org, "GET", "/installation-codes"))["items"]
            if c["purpose"] == "new_device_for_account"
        )
        assert (code["account"], code["device"], code["usage_limit"]) == (jane, None, 3)
        html = await page(browser, made.headers["location"])
        assert code["code"] in html and '<svg role="img"' in html
        image = await browser.get(f"{base}/codes/{code['id']}/qr.svg")
        assert image.headers["content-type"].startswith("image/svg+xml")
        twin = await api.get(
            f"{API}/organisations/north/installation-codes/{code['id']}/qr.svg", headers=org.auth
        )
        assert image.text == twin.text
        html = await page(browser, f"{base}/codes")
        assert code["code"] in html and ">jane<" in html


async def test_helpdesk_without_wipe_right_is_refused_and_nothing_is_queued(
    running: RunningService,
) -> None:
    async with running.client() as api, portal(running) as browser:
        supervisor = bearer(await supervisor_token(api, running.supervisor_password))
        org = await organisation(api, supervisor, "help")
        await account(api, org, "desk", kind="manager", rights=["commands"])
        first = await device(api, org, "First phone")
        second = await device(api, org, "Second phone")
        await sign_in(browser, "help", "desk")
        base = "/admin/o/help"

        # From the device page (the form names the device in its confirmation).
        html = await page(browser, f"{base}/devices/{first}")
        assert 'data-confirm="Wipe (factory reset) of First phone?' in html
        refused = await submit(
            browser,
            f"{base}/devices/{first}/commands",
            {"csrf_token": html.token(f"{base}/devices/{first}/commands"), "kind": "wipe"},
            referrer=f"{base}/devices/{first}",
        )
        assert refused.headers["location"] == f"{base}/devices/{first}"
        html = await page(browser, refused.headers["location"])
        assert flash_of(html) == "error: this needs the &#39;wipe&#39; right"

        # From the list: a wipe of the selection first asks, naming how many devices.
        html = await page(browser, f"{base}/devices")
        bulk = f"{base}/devices/commands"
        asked = await submit(
            browser,
            bulk,
            {
                "csrf_token": html.token(bulk),
                "kind": "enterprise_wipe",
                "device_ids": [first, second],
            },
        )
        assert asked.status_code == 302
        assert (await commands_of(api, org)) == []
        confirm = await page(browser, asked.headers["location"])
        assert "Enterprise wipe of 2 devices?" in confirm
        assert 'data-confirm="Enterprise wipe 2 devices: First phone, Second phone?"' in confirm
        refused = await submit(
            browser,
            f"{base}/devices/commands",
            {
                "csrf_token": confirm.token(bulk),
                "kind": "enterprise_wipe",
                "device_ids": [first, second],
                "confirmed": "2",
            },
            referrer=asked.headers["location"],
        )
        html = await page(browser, refused.headers["location"])
        assert flash_of(html) == "error: this needs the &#39;wipe&#39; right"
        assert (await commands_of(api, org)) == []

        # What the helpdesk may do, it does.
        locked = await submit(
            browser,
            f"{base}/devices/commands",
            {"csrf_token": html.token(bulk), "kind": "lock", "device_ids": [first]},
        )
        assert locked.status_code == 302
        assert [c["kind"] for c in await commands_of(api, org)] == ["lock"]


async def test_forms_without_the_csrf_token_are_refused(running: RunningService) -> None:
    async with running.client() as api, portal(running) as browser:
        supervisor = bearer(await supervisor_token(api, running.supervisor_password))
        org = await organisation(api, supervisor, "safe")
        phone = await device(api, org, "Phone")
        await sign_in(browser, "safe", "admin")
        base = "/admin/o/safe"
        csrf = (await page(browser, f"{base}/devices/{phone}")).token(
            f"{base}/devices/{phone}/edit"
        )
        attempts = [
            (f"{base}/devices", {"name": "Forged", "platform": "android", "protocol": "wsdm"}),
            (f"{base}/devices/commands", {"kind": "lock", "device_ids": [phone]}),
            (f"{base}/devices/{phone}/commands", {"kind": "lock"}),
            (f"{base}/devices/{phone}/edit", {"name": "Renamed"}),
            (f"{base}/devices/{phone}/remove", {}),
            (f"{base}/groups", {"name": "Forged"}),
            (f"{base}/codes", {"purpose": "new_account_and_device"}),
        ]
        for path, data in attempts:
            for token in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf[:-1]}):
                answer = await submit(browser, path, data | token, referrer=f"{base}/devices")
                assert answer.status_code == 403, (path, token, answer.status_code)
        devices = (await rest(api, org, "GET", "/devices"))["items"]
        assert [(d["name"], d["state"]) for d in devices] == [("Phone", "created")]
        assert await commands_of(api, org) == []
        assert (await rest(api, org, "GET", "/device-groups"))["total"] == 0
        # Only the code made with the device.
        assert (await rest(api, org, "GET", "/installation-codes"))["total"] == 1


async def test_another_organisations_things_are_not_found(running: RunningService) -> None:
    async with running.client() as api, portal(running) as browser:
        supervisor = bearer(await supervisor_token(api, running.supervisor_password))
        await organisation(api, supervisor, "alpha")
        beta = await organisation(api, supervisor, "beta")
        phone = await device(api, beta, "Beta phone")
        group = (await rest(api, beta, "POST", "/device-groups", {"name": "Beta group"}))["id"]
        code = (await rest(api, beta, "GET", "/installation-codes"))["items"][0]["id"]
        lock = await rest(api, beta, "POST", f"/devices/{phone}/commands", {"kind": "lock"})
        await sign_in(browser, "alpha", "admin")
        csrf = (await page(browser, "/admin/o/alpha/devices")).token(
            "/admin/o/alpha/devices/commands"
        )

        for base in ("/admin/o/alpha", "/admin/o/beta"):
            for path in (
                f"{base}/devices/{phone}",
                f"{base}/groups/{group}",
                f"{base}/codes/{code}",
                f"{base}/codes/{code}/qr.svg",
            ):
                answer = await browser.get(path)
                assert answer.status_code == 404, (path, answer.status_code)
                assert "Beta" not in answer.text
        for path in ("devices", "devices/new", "groups", "codes"):
            assert (await browser.get(f"/admin/o/beta/{path}")).status_code == 404

        actions = [
            (f"devices/{phone}/commands", {"kind": "lock"}),
            (f"devices/{phone}/commands/{lock['id']}/cancel", {}),
            (f"devices/{phone}/edit", {"name": "Taken", "state": "inactive"}),
            (f"devices/{phone}/remove", {}),
            (f"devices/{phone}/groups/{group}/remove", {}),
            (f"groups/{group}/edit", {"name": "Taken"}),
            (f"groups/{group}/remove", {}),
            (f"codes/{code}/revoke", {}),
        ]
        for base in ("/admin/o/alpha", "/admin/o/beta"):
            for path, data in actions:
                answer = await submit(browser, f"{base}/{path}", data | {"csrf_token": csrf})
                assert answer.status_code == 404, (base, path, answer.status_code)
        bulk = [
            ("devices/commands", {"kind": "lock", "device_ids": [phone]}),
            ("devices/group-members", {"group": group, "device_ids": [phone]}),
        ]
        for path, data in bulk:
            answer = await submit(browser, f"/admin/o/beta/{path}", data | {"csrf_token": csrf})
            assert answer.status_code == 404, (path, answer.status_code)
        # In its own organisation's bulk form, another's device id is unknown (as in REST).
        answer = await submit(
            browser,
            "/admin/o/alpha/devices/commands",
            bulk[0][1] | {"csrf_token": csrf},
            referrer="/admin/o/alpha/devices",
        )
        html = await page(browser, answer.headers["location"])
        assert flash_of(html) == f"error: device_ids: no such device {phone}"
        answer = await submit(
            browser, "/admin/o/alpha/devices/group-members", bulk[1][1] | {"csrf_token": csrf}
        )
        assert answer.status_code == 404

        # Nothing of beta changed.
        assert (await rest(api, beta, "GET", f"/devices/{phone}"))["name"] == "Beta phone"
        assert (await rest(api, beta, "GET", f"/devices/{phone}"))["state"] == "created"
        assert (await rest(api, beta, "GET", f"/device-groups/{group}"))["devices"] == 0
        assert (await rest(api, beta, "GET", f"/installation-codes/{code}"))["id"] == code
        assert [(c["kind"], c["state"]) for c in await commands_of(api, beta)] == [
            ("lock", "queued")
        ]
