"""Admin portal: organisations, dashboard, Configuration → Services and the audit log,
driven through the real forms; what they change is checked through the REST API."""

from __future__ import annotations

import base64
import csv
import io
import re
from typing import Any

import httpx

from engine.principals import AccountKind

from .conftest import NEW_PASSWORD, RunningService, bearer, supervisor_token
from .portal_client import flash_kind, flash_of, signed_in
from .test_api_commands import API, PASSWORD, Org, add_account, database, new_organisation
from .test_apns_certificates import certificate, ec_key, p12, pem, push_topic


async def _supervisor(running: RunningService, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await supervisor_token(client, running.supervisor_password))


async def _rest(client: httpx.AsyncClient, path: str, auth: dict[str, str]) -> Any:
    answer = await client.get(f"{API}{path}", headers=auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _section(html: str, name: str) -> str:
    """The part of a services page about one service."""
    start = html.index(f'<section id="{name}"')
    return html[start : html.index("</section>", start)]


def _source(html: str, service: str, field: str) -> str:
    found = re.search(rf'data-source="{field}">(\w+)<', _section(html, service))
    assert found, f"{service}.{field} shows no source"
    return found.group(1)


def _refused(answer: httpx.Response) -> None:
    """A form refused for its CSRF token: a 403 page, no redirect to a confirmation."""
    assert answer.status_code == 403, (answer.status_code, answer.headers.get("location"))
    assert "did not come from this site" in answer.text


async def test_supervisor_creates_edits_deactivates_and_removes(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        vendor = await client.post(
            f"{API}/vendors",
            json={"login": "reseller", "password": "a vendor secret!"},
            headers=supervisor,
        )
        assert vendor.status_code == 201, vendor.text
        async with signed_in(running, "supervisor", NEW_PASSWORD) as admin:
            created = await admin.submit(
                "/admin/organisations",
                {
                    "code": "acme",
                    "short_name": "Acme",
                    "long_name": "Acme Widgets Ltd",
                    "licences": "5",
                    "devices_per_user": "2",
                    "subscription_expires": "2031-01-31",
                    "first_manager_login": "boss",
                    "first_manager_password": PASSWORD,
                },
                page="/admin/organisations/new",
            )
            assert "acme" in flash_of(await admin.follow(created))
            org = await _rest(client, "/organisations/acme", supervisor)
            assert (org["long_name"], org["licences"], org["devices_per_user"]) == (
                "Acme Widgets Ltd",
                5,
                2,
            )
            assert org["subscription_expires"].startswith("2031-01-31T")
            listed = await admin.page("/admin/organisations", **{"filter[code]": "acm"})
            assert "/admin/organisations/acme/edit" in listed and "Acme Widgets Ltd" in listed

            # Edit: names, licences, an unlimited allowance, one feature switched off.
            features = [f"feature.{name}" for name, on in org["features"].items() if on]
            edited = await admin.submit(
                "/admin/organisations/acme/edit",
                [
                    ("short_name", "ACME"),
                    ("long_name", "Acme Widgets Plc"),
                    ("licences", "10"),
                    ("devices_per_user", ""),
                    ("subscription_expires", "2031-01-31"),
                ]
                + [(name, "on") for name in features if name != "feature.mail_sync"],
                page="/admin/organisations/acme/edit",
            )
            assert flash_kind(await admin.follow(edited)) == "ok"
            org = await _rest(client, "/organisations/acme", supervisor)
            assert (org["short_name"], org["licences"], org["devices_per_user"]) == (
                "ACME",
                10,
                None,
            )
            assert org["features"]["mail_sync"] is False and org["features"]["contacts_sync"]
            assert org["subscription_expires"].startswith("2031-01-31T")  # unchanged

            # The supervisor hands it to a vendor admin.
            assigned = await admin.submit(
                "/admin/organisations/acme/vendor", {"vendor": vendor.json()["id"]}
            )
            assert flash_kind(await admin.follow(assigned)) == "ok"
            assert (await _rest(client, "/organisations/acme", supervisor))["vendor"] == (
                vendor.json()["id"]
            )
            other = await client.post(
                f"{API}/organisations",
                json={"code": "zeta", "short_name": "Zeta"},
                headers=supervisor,
            )
            assert other.status_code == 201
            by_vendor = await admin.page("/admin/organisations", sort="-vendor")
            assert by_vendor.index("reseller") < by_vendor.index("Zeta")
            by_vendor = await admin.page("/admin/organisations", sort="vendor")
            assert by_vendor.index("Zeta") < by_vendor.index("reseller")
            # The vendor admin now sees it among its organisations, and manages it.
            async with signed_in(running, "reseller", "a vendor secret!") as reseller:
                mine = await reseller.page("/admin/organisations")
                assert "Acme Widgets Plc" in mine and "Zeta" not in mine
                edit_page = await reseller.page("/admin/organisations/acme/edit")
                assert "/admin/organisations/acme/vendor" not in edit_page  # the supervisor's
                assert (await reseller.get("/admin/organisations/zeta/edit")).status_code == 404

            async with signed_in(running, "boss", PASSWORD, organisation="acme") as manager:
                dashboard = await manager.page("/admin/o/acme")
                assert "Acme Widgets Plc" in dashboard
                edit_page = await admin.page("/admin/organisations/acme/edit")
                assert 'data-confirm="Deactivate the organisation ACME (acme)' in edit_page
                off = await admin.submit("/admin/organisations/acme/active", {"active": "false"})
                assert flash_kind(await admin.follow(off)) == "ok"
                assert (await _rest(client, "/organisations/acme", supervisor))["active"] is False
                # The manager's session ended with the deactivation.
                after = await manager.get("/admin/o/acme")
                assert after.status_code == 302
                assert after.headers["location"].startswith("/sign-in")
                again = await manager.sign_in("boss", PASSWORD, "acme")
                assert "emm_session" not in again.headers.get("set-cookie", "")  # refused

            # Removing an active organisation is refused; an inactive one goes.
            on = await admin.submit("/admin/organisations/acme/active", {"active": "true"})
            assert flash_kind(await admin.follow(on)) == "ok"
            assert (await _rest(client, "/organisations/acme", supervisor))["active"] is True
            async with signed_in(running, "boss", PASSWORD, organisation="acme") as manager:
                await manager.page("/admin/o/acme")
            # (the page offers no remove button then; a stale page could still post)
            refused = await admin.post_form(
                "/admin/organisations/acme/remove", page="/admin/organisations/acme/edit"
            )
            assert flash_kind(await admin.follow(refused)) == "error"
            await admin.submit("/admin/organisations/acme/active", {"active": "false"})
            edit_page = await admin.page("/admin/organisations/acme/edit")
            assert 'data-confirm="Remove the organisation ACME (acme)' in edit_page
            removed = await admin.submit("/admin/organisations/acme/remove")
            assert "acme removed" in flash_of(await admin.follow(removed))
            gone = await client.get(f"{API}/organisations/acme", headers=supervisor)
            assert gone.status_code == 404


async def test_system_and_organisation_service_settings(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        org = await new_organisation(client, supervisor, "svc")
        async with signed_in(running, "supervisor", NEW_PASSWORD) as admin:
            system = await admin.page("/admin/config/services")
            assert "Default connection interval" in system and "How often a device" in system
            url = re.search(r'id="oma_dm-service_url"[^>]*value="([^"]+)"', system).group(1)
            saved = await admin.submit(
                "/admin/config/services/oma_dm",
                {
                    "revision": "0",
                    "value.service_url": url,
                    "value.connection_interval": "90",
                },
            )
            assert flash_kind(await admin.follow(saved)) == "ok"
            view = await _rest(client, "/config/services", supervisor)
            assert view["services"]["oma_dm"]["values"]["connection_interval"] == 90
            wrong = await admin.submit(
                "/admin/config/services/oma_dm",
                {"value.service_url": url, "value.connection_interval": "often"},
                page="/admin/config/services",
            )
            assert "whole number" in flash_of(await admin.follow(wrong))

            # The system-wide APNS certificate, as a PKCS#12 file with its password.
            topic = push_topic()
            key = ec_key()
            upload = await admin.submit(
                "/admin/config/apns-certificate",
                {"password": "p12 secret"},
                files={"pkcs12": ("push.p12", _p12_bytes(certificate(key, topic), key))},
            )
            assert topic in flash_of(await admin.follow(upload))
            assert topic in await admin.page("/admin/config/services")

        async with signed_in(running, "admin", PASSWORD, organisation=org.code) as manager:
            page = await manager.page(f"/admin/o/{org.code}/config/services")
            assert "90" in _section(page, "oma_dm")
            assert _source(page, "oma_dm", "connection_interval") == "system"
            assert 'id="oma_dm-connection_interval"' in page and "disabled" in _section(
                page, "oma_dm"
            )
            form = f"/admin/o/{org.code}/config/services/oma_dm"
            # Switch Use system-wide settings off (the inputs are then enabled)…
            off = await manager.submit(form, {"revision": "0"})
            page = await manager.follow(off)
            assert "disabled" not in _section(page, "oma_dm").split("Default connection")[1]
            # …and override one value; the other keeps following the system.
            overridden = await manager.submit(
                form,
                [
                    ("field", "service_url"),
                    ("field", "connection_interval"),
                    ("value.service_url", url),
                    ("value.connection_interval", "30"),
                ],
            )
            page = await manager.follow(overridden)
            assert _source(page, "oma_dm", "connection_interval") == "organisation"
            assert _source(page, "oma_dm", "service_url") == "system"
            effective = (
                await _rest(client, f"/organisations/{org.code}/config/services", org.admin)
            )["services"]["oma_dm"]
            assert effective["use_system_wide"] is False
            assert effective["effective"]["connection_interval"] == {
                "value": 30,
                "source": "organisation",
            }
            assert effective["effective"]["service_url"]["source"] == "system"
            # Clear the override: the value follows the system again.
            cleared = await manager.submit(
                form,
                [
                    ("field", "service_url"),
                    ("field", "connection_interval"),
                    ("value.service_url", url),
                    ("value.connection_interval", "30"),
                    ("clear", "connection_interval"),
                ],
            )
            assert flash_kind(await manager.follow(cleared)) == "ok"
            effective = (
                await _rest(client, f"/organisations/{org.code}/config/services", org.admin)
            )["services"]["oma_dm"]["effective"]
            assert effective["connection_interval"] == {"value": 90, "source": "system"}

            # The organisation's own APNS certificate, as PEM.
            own = push_topic()
            key = ec_key()
            upload = await manager.submit(
                f"/admin/o/{org.code}/config/apns-certificate",
                {"pem": pem(certificate(key, own), key), "allow_topic_change": "on"},
            )
            assert own in flash_of(await manager.follow(upload))
            current = await _rest(
                client, f"/organisations/{org.code}/config/apns-certificate", org.admin
            )
            assert current["certificate"]["topic"] == own
            assert current["certificate"]["source"] == "organisation"


def _p12_bytes(cert: Any, key: Any) -> bytes:
    return base64.b64decode(p12(cert, key, "p12 secret"))


async def _device(
    client: httpx.AsyncClient, org: Org, name: str, platform: str, protocol: str
) -> str:
    created = await client.post(
        f"{API}/organisations/{org.code}/devices",
        json={"name": name, "platform": platform, "protocol": protocol},
        headers=org.admin,
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def test_dashboard_counts_what_the_rest_api_made(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        org = await new_organisation(client, supervisor, "dash")
        patched = await client.patch(
            f"{API}/organisations/dash", json={"licences": 10}, headers=supervisor
        )
        assert patched.status_code == 200
        first = await _device(client, org, "ipad one", "ios", "apple_mdm")
        second = await _device(client, org, "ipad two", "ios", "apple_mdm")
        third = await _device(client, org, "android three", "android", "wsdm")
        off = await client.patch(
            f"{API}/organisations/dash/devices/{third}",
            json={"state": "inactive"},
            headers=org.admin,
        )
        assert off.status_code == 200, off.text
        with database(running) as conn:  # what a device reports over its protocol
            conn.execute("UPDATE devices SET compliant = 0 WHERE id = ?", (first,))
            conn.execute(
                "UPDATE devices SET compliant = 1, state = 'enrolled', last_seen_at = ?"
                " WHERE id = ?",
                ("2999-01-01T00:00:00.000Z", second),
            )
        async with signed_in(running, "admin", PASSWORD, organisation="dash") as manager:
            page = await manager.page("/admin/o/dash")
        numbers = dict(re.findall(r'data-(?:state|platform)="(\w+)">(\d+)<', page))
        assert numbers == {
            "created": "1",
            "enrolled": "1",
            "inactive": "1",
            "all": "3",
            "ios": "2",
            "android": "1",
        }
        assert re.search(r'id="licences">2 used of 10<', page)
        assert re.search(r'data-count="non-compliant">1<', page)
        non_compliant = page[page.index('id="non-compliant"') : page.index('id="silent"')]
        assert "ipad one" in non_compliant and "ipad two" not in non_compliant
        silent = page[page.index('id="silent"') : page.index('id="recent"')]
        # Never seen and active: ipad one; ipad two was seen, android three is inactive.
        assert re.search(r'data-count="silent">1<', page)
        assert "ipad one" in silent and "ipad two" not in silent and "android three" not in silent
        assert "device.created" in page[page.index('id="recent"') :]


async def test_audit_page_filters_and_downloads_csv(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        org = await new_organisation(client, supervisor, "aud")
        for licences in (3, 4):
            patched = await client.patch(
                f"{API}/organisations/aud", json={"licences": licences}, headers=supervisor
            )
            assert patched.status_code == 200
        await _device(client, org, "tablet", "android", "wsdm")
        reader = await add_account(running, client, org, "reader", AccountKind.MANAGER)
        assert reader
        async with signed_in(running, "admin", PASSWORD, organisation="aud") as manager:
            page = await manager.page("/admin/o/aud/audit")
            assert "organisation.changed" in page and "device.created" in page
            assert page.index("device.created") < page.index("organisation.created")  # newest first
            only = await manager.page("/admin/o/aud/audit", **{"filter[action]": "organisation.ch"})
            assert only.count("organisation.changed") >= 2 and "device.created" not in only
            assert "/admin/o/aud/audit.csv?filter%5Baction%5D=organisation.ch" in only
            later = await manager.page("/admin/o/aud/audit", since="2999-01-01T00:00")
            assert "Nothing here" in later
            bad = await manager.page("/admin/o/aud/audit", since="yesterday")
            assert "RFC 3339" in bad

            download = await manager.get(
                "/admin/o/aud/audit.csv", **{"filter[action]": "organisation.ch"}
            )
            assert download.status_code == 200, download.text
            assert download.headers["content-type"].startswith("text/csv")
            assert "attachment" in download.headers["content-disposition"]
            rows = list(csv.reader(io.StringIO(download.text)))
            assert rows[0][:3] == ["at", "actor", "action"]
            assert [row[2] for row in rows[1:]] == ["organisation.changed"] * 2
            assert download.headers["x-export-rows"] == "2"
        exported = await _rest(
            client, "/organisations/aud/audit?filter[action]=audit.exported", org.admin
        )
        assert exported["total"] == 1
        async with signed_in(running, "reader", PASSWORD, organisation="aud") as without_right:
            assert "Export CSV" not in await without_right.page("/admin/o/aud/audit")
            assert (await without_right.get("/admin/o/aud/audit.csv")).status_code == 403


async def test_forms_without_the_csrf_token_change_nothing(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        org = await new_organisation(client, supervisor, "csrf")
        async with signed_in(running, "supervisor", NEW_PASSWORD) as admin:
            await admin.page("/admin/organisations/csrf/edit")
            for token in ("", "forged" * 8):
                for path, data in (
                    ("/admin/organisations/csrf/edit", {"short_name": "Changed"}),
                    ("/admin/organisations/csrf/active", {"active": "false"}),
                    ("/admin/organisations", {"code": "sneaky", "short_name": "Sneaky"}),
                    (
                        "/admin/config/services/oma_dm",
                        {
                            "value.service_url": "https://x.example/",
                            "value.connection_interval": "5",
                        },
                    ),
                ):
                    answer = await admin.post_form(path, data, csrf_token=token)
                    _refused(answer)
        async with signed_in(running, "admin", PASSWORD, organisation="csrf") as manager:
            answer = await manager.post_form(
                "/admin/o/csrf/config/services/oma_dm", {}, csrf_token=""
            )
            _refused(answer)
        now = await _rest(client, "/organisations/csrf", supervisor)
        assert (now["short_name"], now["active"]) == ("Csrf", True)
        assert (
            await client.get(f"{API}/organisations/sneaky", headers=supervisor)
        ).status_code == 404
        settings = await _rest(client, "/config/services", supervisor)
        assert settings["revision"] == 0
        own = await _rest(client, "/organisations/csrf/config/services", org.admin)
        assert own["services"]["oma_dm"]["use_system_wide"] is True


async def test_another_organisations_pages_and_actions_are_not_found(
    running: RunningService,
) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        await new_organisation(client, supervisor, "alpha")
        beta = await new_organisation(client, supervisor, "beta")
        async with signed_in(running, "admin", PASSWORD, organisation="alpha") as manager:
            await manager.page("/admin/o/alpha")
            for path in (
                "/admin/o/beta",
                f"/admin/o/{beta.id}",
                "/admin/o/beta/config/services",
                "/admin/o/beta/audit",
                "/admin/o/beta/audit.csv",
            ):
                answer = await manager.get(path)
                assert answer.status_code == 404, path
            for path, data in (
                ("/admin/o/beta/config/services/oma_dm", {"revision": "0"}),
                ("/admin/o/beta/config/apns-certificate", {"pem": "x"}),
                ("/admin/organisations/beta/edit", {"short_name": "Mine"}),
                ("/admin/organisations/beta/active", {"active": "false"}),
                ("/admin/organisations/beta/remove", {}),
            ):
                answer = await manager.post_form(path, data)
                assert answer.status_code == 404, path
            # Organisation management is for the supervisor and vendor admins.
            for path in ("/admin/organisations", "/admin/organisations/alpha/edit"):
                assert (await manager.get(path)).status_code == 403, path
            own = await manager.post_form("/admin/organisations/alpha/edit", {"short_name": "X"})
            assert flash_kind(await manager.follow(own)) == "error"
        beta_now = await _rest(client, "/organisations/beta", supervisor)
        assert (beta_now["short_name"], beta_now["active"]) == ("Beta", True)
        assert (await _rest(client, "/organisations/alpha", supervisor))["short_name"] == "Alpha"
        own = await _rest(client, "/organisations/beta/config/services", beta.admin)
        assert own["revision"] == 0


async def test_the_supervisor_reads_and_exports_the_system_wide_audit_log(
    running: RunningService,
) -> None:
    async with running.client() as client:
        supervisor = await _supervisor(running, client)
        changed = await client.patch(
            f"{API}/config/services/oma_dm", json={"connection_interval": 90}, headers=supervisor
        )
        assert changed.status_code == 200
        created = await client.post(
            f"{API}/organisations",
            json={"code": "acme", "short_name": "Acme", "first_manager_password": PASSWORD},
            headers=supervisor,
        )
        assert created.status_code == 201
        async with signed_in(running, "supervisor", NEW_PASSWORD) as admin:
            html = await admin.page("/admin/audit")
            assert "settings.system_changed" in html
            assert "organisation.created" not in html  # that one is the organisation's
            export = await admin.get("/admin/audit.csv", **{"filter[action]": "settings"})
            assert export.status_code == 200
            rows = list(csv.DictReader(io.StringIO(export.text)))
            assert [row["action"] for row in rows] == ["settings.system_changed"]
        async with signed_in(running, "admin", PASSWORD, organisation="acme") as manager:
            for path in ("/admin/audit", "/admin/audit.csv"):
                assert (await manager.get(path)).status_code == 403
