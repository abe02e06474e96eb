"""WSDM through the real running service: enrolment, check-in, results, unenrolment, and
every kind of bad input refused without changing anything."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from bench.wsdm_sim import SimulatedDevice, Simulator, WsdmError

from .portal_client import signed_in
from .test_isolation import table_counts
from .wsdm_world import API, MANAGER_PASSWORD, WsdmService, wsdm_service

WSDM = f"{API}/wsdm"


def db(service: WsdmService) -> sqlite3.Connection:
    conn = sqlite3.connect(service.running.bootstrap.database.path)
    conn.row_factory = sqlite3.Row
    return conn


async def enrolled(
    service: WsdmService, org: str = "acme"
) -> tuple[dict[str, str], str, SimulatedDevice]:
    manager = await service.organisation(org)
    device_id, code = await service.new_device(org, manager)
    device = await service.simulator.enrol(code)
    assert device.device_id == device_id
    return manager, device_id, device


async def test_enrol_check_in_lock_and_result(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, device_id, device = await enrolled(service)
        assert device.push is None  # no XMPP server configured
        config = device.configuration
        assert config["service_url"] == "https://localhost:8443/api/v1"
        assert config["connection_interval_seconds"] == 3600
        assert config["organisation"] == "acme"
        with db(service) as conn:
            row = conn.execute("SELECT * FROM wsdm_devices").fetchone()
            assert row["token_hash"] != device.token and len(row["token_hash"]) == 64
            assert conn.execute("SELECT state FROM devices").fetchone()[0] == "enrolled"

        first = await service.simulator.check_in(device)
        assert first["commands"] == [] and "configuration" not in first

        lock = await service.queue("acme", manager, device_id, "lock", {"message": "Found me?"})
        answer = await service.simulator.check_in(device)
        assert answer["commands"] == [
            {"command_id": lock, "type": "LockScreen", "parameters": {"message": "Found me?"}}
        ]
        command = await service.command("acme", manager, lock)
        assert command["state"] == "acknowledged"
        assert command["result"] == {"type": "LockScreen"}

        # The API shows the inventory the device reported and its WSDM status.
        shown = await service.client.get(
            f"{API}/organisations/acme/devices/{device_id}", headers=manager
        )
        assert shown.json()["inventory"]["battery_level"] == 80
        assert shown.json()["model"] == "Pixel 8" and shown.json()["compliant"] is True
        status = await service.client.get(
            f"{API}/organisations/acme/devices/{device_id}/wsdm", headers=manager
        )
        assert status.status_code == 200, status.text
        assert status.json()["checkins"] == 2 and status.json()["enrolled"] is True


async def test_locate_reports_a_location_once(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, device_id, device = await enrolled(service)
        locate = await service.queue("acme", manager, device_id, "locate")
        await service.simulator.check_in(device)
        command = await service.command("acme", manager, locate)
        assert command["state"] == "acknowledged"
        assert command["result"]["latitude"] == 52.52  # what the self-service portal reads
        again = {
            "version": 1,
            "results": [{"command_id": locate, "status": "done", "detail": command["result"]}],
        }
        repeated = await service.client.post(f"{WSDM}/results", json=again, headers=device.auth)
        assert repeated.json()["results"] == [{"command_id": locate, "outcome": "recorded"}]
        listed = await service.client.get(
            f"{API}/organisations/acme/devices/{device_id}/locations", headers=manager
        )
        assert listed.status_code == 200, listed.text
        (location,) = listed.json()["items"]
        assert location["latitude"] == 52.52 and location["command_id"] == locate


async def test_used_up_expired_and_unknown_codes_are_refused(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager = await service.organisation("acme")
        _, code = await service.new_device("acme", manager)
        await service.simulator.enrol(code)
        before = table_counts(service.running)
        for bad, reason in ((code, "used_up"), ("AAAA-BBBB-CCCC", "unknown"), ("x", "unknown")):
            try:
                await service.simulator.enrol(bad)
            except WsdmError as exc:
                assert exc.status == 403
                assert exc.body["error"] == {
                    "code": "code_refused",
                    "message": exc.body["error"]["message"],
                    "reason": reason,
                }
            else:
                raise AssertionError(f"{bad} was accepted")
        _, expiring = await service.new_device("acme", manager, "second")
        with db(service) as conn:
            conn.execute(
                "UPDATE installation_codes SET expires_at = '2000-01-01T00:00:00.000Z'"
                " WHERE code = ?",
                (expiring,),
            )
        before = table_counts(service.running)
        try:
            await service.simulator.enrol(expiring)
        except WsdmError as exc:
            assert exc.body["error"]["reason"] == "expired"
        else:
            raise AssertionError("an expired code was accepted")
        assert table_counts(service.running) == before


async def test_a_code_of_another_protocol_does_not_enrol_and_is_not_used(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager = await service.organisation("acme")
        _, code = await service.new_device("acme", manager, protocol="oma_dm")
        before = table_counts(service.running)
        try:
            await service.simulator.enrol(code)
        except WsdmError as exc:
            assert exc.body["error"]["reason"] == "wrong_protocol"
        else:
            raise AssertionError("a device of another protocol was enrolled")
        assert table_counts(service.running) == before
        with db(service) as conn:
            assert conn.execute("SELECT times_used FROM installation_codes").fetchone()[0] == 0


async def test_replayed_check_ins_and_results_change_nothing_twice(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, device_id, device = await enrolled(service)
        lock = await service.queue("acme", manager, device_id, "lock")
        body = service.simulator.check_in_body(device, "retry-1")
        body["locations"] = [
            {"latitude": 1.0, "longitude": 2.0, "recorded_at": "2026-01-01T10:00:00Z"}
        ]
        first = await service.client.post(f"{WSDM}/checkin", json=body, headers=device.auth)
        assert first.status_code == 200, first.text
        with db(service) as conn:
            seen = conn.execute("SELECT checkins, last_checkin_at FROM wsdm_devices").fetchone()
            sent_at = conn.execute("SELECT sent_at FROM commands").fetchone()[0]
        events = table_counts(service.running)
        again = await service.client.post(f"{WSDM}/checkin", json=body, headers=device.auth)
        assert again.json()["commands"] == first.json()["commands"]
        with db(service) as conn:
            assert tuple(
                conn.execute("SELECT checkins, last_checkin_at FROM wsdm_devices").fetchone()
            ) == tuple(seen)
            assert conn.execute("SELECT sent_at FROM commands").fetchone()[0] == sent_at
        assert table_counts(service.running) == events

        result = {"version": 1, "results": [{"command_id": lock, "status": "done"}]}
        done = await service.client.post(f"{WSDM}/results", json=result, headers=device.auth)
        assert done.json()["results"] == [{"command_id": lock, "outcome": "recorded"}]
        after = table_counts(service.running)
        repeated = await service.client.post(f"{WSDM}/results", json=result, headers=device.auth)
        assert repeated.json()["results"] == [{"command_id": lock, "outcome": "recorded"}]
        assert table_counts(service.running) == after
        contradicting = {"version": 1, "results": [{"command_id": lock, "status": "failed"}]}
        refused = await service.client.post(
            f"{WSDM}/results", json=contradicting, headers=device.auth
        )
        assert refused.json()["results"] == [{"command_id": lock, "outcome": "conflict"}]
        assert (await service.command("acme", manager, lock))["state"] == "acknowledged"
        assert table_counts(service.running) == after


async def test_bad_requests_get_json_errors_and_change_nothing(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, _device_id, device = await enrolled(service)
        good = service.simulator.check_in_body(device, "c-1")
        before = table_counts(service.running)
        with db(service) as conn:
            inventory = conn.execute("SELECT inventory FROM devices").fetchone()[0]
        cases = [
            ("checkin", b"{not json", device.auth, 400, "malformed"),
            ("checkin", b"[1, 2]", device.auth, 400, "malformed"),
            ("checkin", b'{"version": 2}', device.auth, 400, "unsupported_version"),
            ("checkin", good | {"colour": "red"}, device.auth, 400, "malformed"),
            ("checkin", good | {"state": {"battery_level": 101}}, device.auth, 400, "malformed"),
            ("checkin", good | {"state": {"rooted": "no"}}, device.auth, 400, "malformed"),
            ("checkin", good, {}, 401, "unauthenticated"),
            ("checkin", good, {"Authorization": "Bearer nonsense"}, 401, "unauthenticated"),
            ("checkin", good, manager, 401, "unauthenticated"),  # an account token is not one
            ("checkin", b"{" + b" " * 600_000 + b"}", device.auth, 413, "too_large"),
            ("checkin", b"[" * 100_000, device.auth, 400, "malformed"),  # nested too deep
            ("enrol", {"version": 1, "code": "ABCD-EFGH-JKLM"}, {}, 400, "malformed"),
            (
                "results",
                {"version": 1, "results": [{"command_id": "x"}]},
                device.auth,
                400,
                "malformed",
            ),
        ]
        for route, body, headers, status, code in cases:
            if isinstance(body, bytes):
                response = await service.client.post(
                    f"{WSDM}/{route}",
                    content=body,
                    headers=headers | {"Content-Type": "application/json"},
                )
            else:
                response = await service.client.post(f"{WSDM}/{route}", json=body, headers=headers)
            assert response.status_code == status, (route, body, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == code, response.text
        wrong_method = await service.client.get(f"{WSDM}/checkin", headers=device.auth)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "OPTIONS, POST"
        assert wrong_method.json()["error"]["code"] == "method_not_allowed"
        assert table_counts(service.running) == before
        with db(service) as conn:
            assert conn.execute("SELECT inventory FROM devices").fetchone()[0] == inventory


async def test_another_organisations_command_is_not_found_and_untouched(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        _, _, mine = await enrolled(service, "org-a")
        other_manager, other_id, _ = await enrolled(service, "org-b")
        theirs = await service.queue("org-b", other_manager, other_id, "wipe")
        before = table_counts(service.running)
        result = {"version": 1, "results": [{"command_id": theirs, "status": "done"}]}
        response = await service.client.post(f"{WSDM}/results", json=result, headers=mine.auth)
        assert response.json()["results"] == [{"command_id": theirs, "outcome": "not_found"}]
        answer = await service.simulator.check_in(mine)
        assert answer["commands"] == []  # nothing of org B's device comes to org A's
        assert (await service.command("org-b", other_manager, theirs))["state"] == "queued"
        with db(service) as conn:
            assert (
                conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
                == before["audit_events"]
            )


async def test_unenrolment_from_the_device_and_from_the_service(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, _device_id, device = await enrolled(service)
        left = await service.client.post(
            f"{WSDM}/unenrol", json={"version": 1, "reason": "user"}, headers=device.auth
        )
        assert left.status_code == 200, left.text
        refused = await service.client.post(
            f"{WSDM}/checkin",
            json=service.simulator.check_in_body(device, "x"),
            headers=device.auth,
        )
        assert refused.status_code == 410 and refused.json()["error"]["code"] == "unenrolled"
        with db(service) as conn:
            assert conn.execute("SELECT state FROM devices").fetchone()[0] == "created"

        # The service side: a removed device is told to unenrol at its next check-in.
        second_id, code = await service.new_device("acme", manager, "second")
        second = await service.simulator.enrol(code)
        removed = await service.client.delete(
            f"{API}/organisations/acme/devices/{second_id}", headers=manager
        )
        assert removed.status_code == 204, removed.text
        told = await service.client.post(
            f"{WSDM}/checkin",
            json=service.simulator.check_in_body(second, "y"),
            headers=second.auth,
        )
        assert told.status_code == 410 and told.json()["error"]["code"] == "unenrolled"


async def test_portal_lock_reaches_the_device_and_the_page_shows_the_result(
    tmp_path: Path,
) -> None:
    async with wsdm_service(tmp_path) as service:
        _, device_id, device = await enrolled(service)
        await service.simulator.check_in(device)
        page = f"/admin/o/acme/devices/{device_id}"
        async with signed_in(
            service.running, "admin", MANAGER_PASSWORD, organisation="acme"
        ) as portal:
            html = await portal.page(page)
            assert 'id="wsdm-heading"' in html and "No locations reported." in html
            queued = await portal.submit(f"{page}/commands", {"kind": "lock"})
            assert queued.status_code == 302, queued.text
            locate = await portal.submit(f"{page}/commands", {"kind": "locate"})
            assert locate.status_code == 302, locate.text
            answer = await service.simulator.check_in(device)
            assert [c["type"] for c in answer["commands"]] == ["LockScreen", "ReportLocation"]
            html = await portal.page(page)
        assert html.count('class="badge acknowledged"') == 2
        assert 'id="wsdm-locations"' in html and "52.52" in html
        assert "Pixel 8" in html  # the inventory the device reported


async def test_a_changed_connection_interval_reaches_the_device_at_its_next_check_in(
    tmp_path: Path,
) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, _, device = await enrolled(service)
        assert "configuration" not in await service.simulator.check_in(device)
        changed = await service.client.patch(
            f"{API}/organisations/acme/config/services/wsdm",
            json={"use_system_wide": False, "overrides": {"connection_interval": 15}},
            headers=manager,
        )
        assert changed.status_code == 200, changed.text
        answer = await service.simulator.check_in(device)
        assert answer["configuration"]["connection_interval_seconds"] == 900
        assert "configuration" not in await service.simulator.check_in(device)  # told once


async def test_enrolling_again_replaces_the_token_at_once(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, device_id, old = await enrolled(service)
        await service.simulator.check_in(old)  # the old token is now remembered
        code = await service.client.post(
            f"{API}/organisations/acme/installation-codes",
            json={"purpose": "bind_device", "device": device_id},
            headers=manager,
        )
        assert code.status_code == 201, code.text
        new = await service.simulator.enrol(code.json()["code"])
        assert new.device_id == device_id and new.token != old.token
        refused = await service.client.post(
            f"{WSDM}/checkin", json=service.simulator.check_in_body(old, "z"), headers=old.auth
        )
        assert refused.status_code == 401, refused.text
        assert (await service.simulator.check_in(new))["commands"] == []


async def test_enrolment_with_the_owners_login_where_the_organisation_allows_it(
    tmp_path: Path,
) -> None:
    async with wsdm_service(tmp_path) as service:
        manager = await service.organisation("acme")
        user = await service.client.post(
            f"{API}/organisations/acme/accounts",
            json={"login": "alice", "kind": "user", "password": "alice's password 1"},
            headers=manager,
        )
        assert user.status_code == 201, user.text
        body = {
            "version": 1,
            "login": {"organisation": "acme", "login": "alice", "password": "alice's password 1"},
            "device": {"platform": "android", "model": "Pixel 8"},
        }
        before = table_counts(service.running)
        off = await service.client.post(f"{WSDM}/enrol", json=body)
        assert off.status_code == 403 and off.json()["error"]["code"] == "login_refused"
        assert table_counts(service.running)["devices"] == before["devices"]
        allowed = await service.client.patch(
            f"{API}/organisations/acme/config/services/wsdm",
            json={"use_system_wide": False, "overrides": {"login_enrolment": True}},
            headers=manager,
        )
        assert allowed.status_code == 200, allowed.text
        wrong = body | {"login": body["login"] | {"password": "not it at all"}}
        refused = await service.client.post(f"{WSDM}/enrol", json=wrong)
        assert refused.status_code == 403, refused.text
        enrolled = await service.client.post(f"{WSDM}/enrol", json=body)
        assert enrolled.status_code == 201, enrolled.text
        device = await service.client.get(
            f"{API}/organisations/acme/devices/{enrolled.json()['device_id']}", headers=manager
        )
        assert device.json()["owner"]["login"] == "alice"
        assert device.json()["state"] == "enrolled" and device.json()["protocol"] == "wsdm"
        both = body | {"code": "ABCD-EFGH-JKLM"}
        assert (await service.client.post(f"{WSDM}/enrol", json=both)).status_code == 400


async def test_devices_speak_wsdm_over_https_too(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager = await service.organisation("acme")
        device_id, code = await service.new_device("acme", manager)
        running = service.running
        async with httpx.AsyncClient(
            base_url=running.https_url, verify=running.tls_context(), http2=True
        ) as client:
            simulator = Simulator(client)
            device = await simulator.enrol(code)
            lock = await service.queue("acme", manager, device_id, "lock")
            answer = await simulator.check_in(device)
        assert [c["command_id"] for c in answer["commands"]] == [lock]
        assert (await service.command("acme", manager, lock))["state"] == "acknowledged"


OWNER_PASSWORD = "alice's password 1"
ENROLMENT_ID = "9d7c0a5e-52f1-4c3b-8e6f-1a2b3c4d5e6f"


async def add_owner(service: WsdmService, manager: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The device owner alice: (account id, headers of her API token)."""
    user = await service.client.post(
        f"{API}/organisations/acme/accounts",
        json={"login": "alice", "kind": "user", "password": OWNER_PASSWORD},
        headers=manager,
    )
    assert user.status_code == 201, user.text
    token = await service.client.post(
        f"{API}/auth/token",
        json={"organisation": "acme", "login": "alice", "password": OWNER_PASSWORD},
    )
    assert token.status_code == 201, token.text
    return user.json()["id"], {"Authorization": f"Bearer {token.json()['token']}"}


def bearer_of(answer: httpx.Response) -> dict[str, str]:
    return {"Authorization": f"Bearer {answer.json()['device_token']}"}


async def test_a_retried_code_enrolment_gets_the_same_device_and_a_fresh_token(
    tmp_path: Path,
) -> None:
    async with wsdm_service(tmp_path) as service:
        manager = await service.organisation("acme")
        device_id, code = await service.new_device("acme", manager)
        body = {
            "version": 1,
            "code": code,
            "enrolment_id": ENROLMENT_ID,
            "device": {"platform": "android"},
        }
        lost = await service.client.post(f"{WSDM}/enrol", json=body)  # its answer never came
        assert lost.status_code == 201, lost.text
        devices = table_counts(service.running)["devices"]
        other = body | {"enrolment_id": "another-enrolment-id-0001"}
        spent = await service.client.post(f"{WSDM}/enrol", json=other)
        assert spent.status_code == 403 and spent.json()["error"]["reason"] == "used_up"
        again = await service.client.post(f"{WSDM}/enrol", json=body)
        assert again.status_code == 201, again.text
        assert again.json()["device_id"] == device_id
        assert again.json()["device_token"] != lost.json()["device_token"]
        assert table_counts(service.running)["devices"] == devices
        with db(service) as conn:
            assert conn.execute("SELECT times_used FROM installation_codes").fetchone()[0] == 1
        check_in = {"version": 1, "checkin_id": "c-1", "state": {}}
        revoked = await service.client.post(
            f"{WSDM}/checkin", json=check_in, headers=bearer_of(lost)
        )
        assert revoked.status_code == 401, revoked.text
        ok = await service.client.post(f"{WSDM}/checkin", json=check_in, headers=bearer_of(again))
        assert ok.status_code == 200, ok.text
        # The device has its token (it checked in): the same request is no replay any more.
        late = await service.client.post(f"{WSDM}/enrol", json=body)
        assert late.status_code == 403 and late.json()["error"]["reason"] == "used_up"


async def test_a_retried_login_enrolment_makes_one_device(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager = await service.organisation("acme")
        await add_owner(service, manager)
        allowed = await service.client.patch(
            f"{API}/organisations/acme/config/services/wsdm",
            json={"use_system_wide": False, "overrides": {"login_enrolment": True}},
            headers=manager,
        )
        assert allowed.status_code == 200, allowed.text
        login = {"organisation": "acme", "login": "alice", "password": OWNER_PASSWORD}
        body = {
            "version": 1,
            "login": login,
            "enrolment_id": ENROLMENT_ID,
            "device": {"platform": "android"},
        }
        lost = await service.client.post(f"{WSDM}/enrol", json=body)
        assert lost.status_code == 201, lost.text
        before = table_counts(service.running)
        wrong = body | {"login": login | {"password": "not alice's password"}}
        refused = await service.client.post(f"{WSDM}/enrol", json=wrong)
        assert refused.status_code == 403, refused.text  # the replay checks the login again
        again = await service.client.post(f"{WSDM}/enrol", json=body)
        assert again.status_code == 201, again.text
        assert again.json()["device_id"] == lost.json()["device_id"]
        assert table_counts(service.running)["devices"] == before["devices"]
        fresh = await service.client.post(
            f"{WSDM}/enrol", json=body | {"enrolment_id": "another-enrolment-id-0001"}
        )
        assert fresh.json()["device_id"] != lost.json()["device_id"]  # a second device


async def test_an_owner_pages_through_the_locations_of_their_commands(tmp_path: Path) -> None:
    async with wsdm_service(tmp_path) as service:
        manager, device_id, device = await enrolled(service)
        before_owner = await service.queue("acme", manager, device_id, "locate")
        alice, owner = await add_owner(service, manager)
        given = await service.client.patch(
            f"{API}/organisations/acme/devices/{device_id}", json={"owner": alice}, headers=manager
        )
        assert given.status_code == 200, given.text
        first = await service.queue("acme", manager, device_id, "locate")
        second = await service.queue("acme", manager, device_id, "locate")
        body = service.simulator.check_in_body(device, "c-1")
        handed = await service.client.post(f"{WSDM}/checkin", json=body, headers=device.auth)
        assert len(handed.json()["commands"]) == 3, handed.text
        results = [
            {
                "command_id": command_id,
                "status": "done",
                "detail": {"latitude": 1.0, "longitude": 2.0, "at": f"2026-01-01T10:0{n}:00Z"},
            }
            for n, command_id in enumerate((first, second, before_owner))
        ]
        recorded = await service.client.post(
            f"{WSDM}/results", json={"version": 1, "results": results}, headers=device.auth
        )
        assert recorded.status_code == 200, recorded.text
        url = f"{API}/organisations/acme/devices/{device_id}/locations"
        pages = [
            (await service.client.get(f"{url}?limit=1&offset={n}", headers=owner)).json()
            for n in range(3)
        ]
        assert [page["total"] for page in pages] == [2, 2, 2]
        assert [[i["command_id"] for i in page["items"]] for page in pages] == [
            [second],
            [first],
            [],
        ]
        everything = (await service.client.get(url, headers=manager)).json()
        assert everything["total"] == 3 and everything["items"][0]["command_id"] == before_owner
