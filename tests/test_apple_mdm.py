"""Apple MDM through the running service, with the device simulator and the APNs test server."""

from __future__ import annotations

import base64
import plistlib
from types import SimpleNamespace

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from bench.apple_sim import SimulatedDevice, read_profile
from engine import apple_mdm as domain
from engine.actors.offload import start_offload
from engine.pki import CertificateAuthority
from engine.principals import AccountKind
from engine.protocols import apple_mdm as protocol, cms

from .apple_support import AppleService, apple_fixture  # noqa: F401  (the fixture)
from .portal_client import Portal
from .test_api_commands import API, PASSWORD, add_account, database, new_organisation

pytestmark = pytest.mark.trio

INVENTORY = ["DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList"]


async def test_full_enrolment_push_poll_and_inventory(apple: AppleService) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    view = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}/apple-mdm",
        headers=apple.org.admin,
    )
    assert view.status_code == 200, view.text
    enrolment = view.json()["enrolment"]
    assert enrolment["state"] == "enrolled"
    assert enrolment["push_token_state"] == "good"
    assert enrolment["has_unlock_token"] is True
    assert apple.apns.pushes == []  # nothing waits yet: no push

    command_id = await apple.queue(device_id, "request_inventory")
    (push,) = await apple.apns.wait_for(1)
    assert push.token == device.push_token.hex()
    assert push.push_magic == device.push_magic
    assert push.topic == apple.pki.topic
    assert push.http_version == "2"

    assert await device.poll(apple.client) == [
        "DeviceInformation",
        "SecurityInfo",
        "ProfileList",
        "InstalledApplicationList",
    ]
    assert device.received[0][0] == command_id
    command = await apple.command(command_id)
    assert command["state"] == "acknowledged"
    assert command["result"] == {"status": "Acknowledged"}
    shown = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}", headers=apple.org.admin
    )
    detail = shown.json()
    assert (detail["state"], detail["model"], detail["os_version"]) == (
        "enrolled",
        "iPhone15,2",
        "17.4.1",
    )
    assert detail["serial_number"] == device.serial_number
    assert detail["udid"] == device.udid
    assert detail["inventory"]["hardware"]["battery_level"] == 0.82
    assert detail["inventory"]["hardware"]["capacity_gb"] == 128.0
    assert detail["inventory"]["security"]["PasscodePresent"] is True
    assert detail["inventory"]["applications"] == [
        {"identifier": "com.example.app", "name": "Example", "version": "1.2"}
    ]
    (profile,) = detail["inventory"]["profiles"]
    assert profile["identifier"] == device.enrolment.payload["PayloadIdentifier"]


async def test_not_now_is_not_offered_again_in_the_session_and_comes_after_a_push(
    apple: AppleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain, "NOT_NOW_RETRY", 0.05)
    device = await apple.device(not_now={"DeviceLock"})
    device_id = apple.device_id(device)
    lock = await apple.queue(device_id, "lock", message="Found? Call us")
    inventory = await apple.queue(device_id, "request_inventory")
    with trio.fail_after(5):
        await apple.apns.wait_for(1)
    # Locked: DeviceLock is postponed, DeviceInformation still done, DeviceLock not again.
    assert await device.poll(apple.client) == ["DeviceLock", *INVENTORY]
    assert (await apple.command(lock))["state"] == "sent"
    assert (await apple.command(inventory))["state"] == "acknowledged"
    # The session ended with a NotNow command waiting: the device is pushed again.
    with trio.fail_after(5):
        await apple.apns.wait_for(2)
    device.not_now.clear()
    assert await device.poll(apple.client) == ["DeviceLock"]
    delivered = await apple.command(lock)
    assert delivered["state"] == "acknowledged"
    (first, _, command), *_ = [r for r in device.received if r[1] == "DeviceLock"]
    assert first == lock and command["Message"] == "Found? Call us"


async def test_unlock_clears_the_passcode_with_the_stored_unlock_token(
    apple: AppleService,
) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    unlock = await apple.queue(device_id, "unlock")
    message = await apple.queue(device_id, "message", text="Hello", title="IT")
    assert await device.poll(apple.client) == ["ClearPasscode", "DeviceLock"]
    assert device.received[0][2]["UnlockToken"] == device.unlock_token
    assert device.received[1][2]["Message"] == "IT: Hello"
    assert (await apple.command(unlock))["state"] == "acknowledged"
    assert (await apple.command(message))["state"] == "acknowledged"
    with database(apple.running) as conn:
        stored = conn.execute(
            "SELECT unlock_token FROM apple_mdm_enrolments WHERE id = ?", (device.udid,)
        ).fetchone()[0]
    assert stored.startswith("v1:") and device.unlock_token.hex() not in stored  # sealed


async def test_a_device_error_fails_the_command_with_its_error_chain(
    apple: AppleService,
) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    unlock = await apple.queue(device_id, "unlock")
    device.unlock_token = b"another token"  # the device no longer accepts the stored one
    assert await device.poll(apple.client) == ["ClearPasscode"]
    failed = await apple.command(unlock)
    assert failed["state"] == "failed"
    assert failed["result"]["error_chain"][0]["code"] == 12021


async def test_bad_token_from_apns_marks_the_device_and_is_not_retried(
    apple: AppleService,
) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    apple.apns.permanent[device.push_token.hex()] = (410, "Unregistered")
    await apple.queue(device_id, "request_inventory")
    with trio.fail_after(5):
        await apple.apns.until(lambda: len(apple.apns.refused) == 1)
    url = f"{API}/organisations/{apple.org.code}/devices/{device_id}/apple-mdm"
    with trio.fail_after(5):
        while True:
            view = (await apple.client.get(url, headers=apple.org.admin)).json()["enrolment"]
            if view["push_token_state"] == "refused":
                break
            await trio.sleep(0.02)
    assert view["push_token_refused_reason"] == "Unregistered"
    # Another command: no push goes to the refused token.
    other = await apple.device()
    await apple.queue(device_id, "lock")
    await apple.queue(apple.device_id(other), "lock")
    with trio.fail_after(5):
        (push,) = await apple.apns.wait_for(1)
    assert push.token == other.push_token.hex()
    assert len(apple.apns.refused) == 1
    # A new token from the device (TokenUpdate) is pushed again.
    device.push_token = bytes(32)
    assert (await device.token_update(apple.client)).status_code == 200
    await apple.queue(device_id, "locate")
    with trio.fail_after(5):
        await apple.apns.wait_for(2)
    assert apple.apns.pushes[1].token == bytes(32).hex()


async def test_transient_apns_errors_are_retried(apple: AppleService) -> None:
    device = await apple.device()
    apple.apns.transient.append((503, "ServiceUnavailable"))
    await apple.queue(apple.device_id(device), "lock")
    with trio.fail_after(5):
        (push,) = await apple.apns.wait_for(1)
    assert push.token == device.push_token.hex()
    assert apple.apns.refused[0][1:] == (503, "ServiceUnavailable")


async def test_user_channels_bootstrap_token_and_user_authenticate(apple: AppleService) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    user = await device.check_in(
        apple.client,
        {
            "MessageType": "TokenUpdate",
            "Topic": device.enrolment.topic,
            "UserID": "A1B2-USER",
            "UserShortName": "alice",
            "Token": b"\x07" * 32,
            "PushMagic": "USER-MAGIC",
        },
    )
    assert user.status_code == 200, user.text
    declined = await device.check_in(
        apple.client, {"MessageType": "UserAuthenticate", "UserID": "A1B2-USER"}
    )
    assert declined.status_code == 410
    empty = await device.check_in(apple.client, {"MessageType": "GetBootstrapToken"})
    assert plistlib.loads(empty.content) == {}
    stored = await device.check_in(
        apple.client, {"MessageType": "SetBootstrapToken", "BootstrapToken": b"bootstrap"}
    )
    assert stored.status_code == 200
    got = await device.check_in(apple.client, {"MessageType": "GetBootstrapToken"})
    assert plistlib.loads(got.content) == {"BootstrapToken": b"bootstrap"}
    with database(apple.running) as conn:
        rows = conn.execute(
            "SELECT id, parent_id, user_id, push_token, bootstrap_token FROM apple_mdm_enrolments"
            " ORDER BY id"
        ).fetchall()
    by_id = {row[0]: row for row in rows}
    assert by_id[f"{device.udid}/A1B2-USER"][1:4] == (device.udid, "A1B2-USER", "07" * 32)
    assert by_id[device.udid][3] == device.push_token.hex()  # the device channel's own
    assert b"bootstrap".hex() not in (by_id[device.udid][4] or "")  # sealed
    view = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}/apple-mdm",
        headers=apple.org.admin,
    )
    enrolment = view.json()["enrolment"]
    assert enrolment["user_channels"] == [
        {"user_id": "A1B2-USER", "short_name": "alice", "state": "enrolled"}
    ]
    assert enrolment["has_bootstrap_token"] is True
    # The user channel polls apart from the device channel: device commands stay there.
    await apple.queue(device_id, "lock")
    assert await device.report(apple.client, {"Status": "Idle", "UserID": "A1B2-USER"}) is None
    unknown = await device.put(
        apple.client,
        device.enrolment.server_url,
        {"UDID": device.udid, "UserID": "B0B", "Status": "Idle"},
        "application/x-apple-aspen-mdm",
    )
    assert unknown.status_code == 400
    assert await device.poll(apple.client) == ["DeviceLock"]


async def test_check_out_then_enrolling_again_clears_what_was_left(apple: AppleService) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    await device.check_in(
        apple.client,
        {
            "MessageType": "TokenUpdate",
            "Topic": device.enrolment.topic,
            "UserID": "U1",
            "Token": b"\x07" * 32,
            "PushMagic": "M",
        },
    )
    assert (await device.check_out(apple.client)).status_code == 200
    refused = await device.put(
        apple.client,
        device.enrolment.server_url,
        {"UDID": device.udid, "Status": "Idle"},
        "application/x-apple-aspen-mdm",
    )
    assert refused.status_code == 400  # checked out: no more commands
    await apple.queue(device_id, "lock")
    # The same device installs the profile again: same inventory entry, a clean enrolment.
    device.push_token = b"\x09" * 32
    await device.enrol(apple.client)
    assert apple.device_id(device) == device_id
    with database(apple.running) as conn:
        rows = conn.execute(
            "SELECT id, state, push_token FROM apple_mdm_enrolments ORDER BY id"
        ).fetchall()
        devices = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
    assert [tuple(row) for row in rows] == [(device.udid, "enrolled", "09" * 32)]
    assert devices == 1
    assert await device.poll(apple.client) == ["DeviceLock"]


async def test_an_installation_code_enrols_its_own_inventory_device(apple: AppleService) -> None:
    created = await apple.client.post(
        f"{API}/organisations/{apple.org.code}/devices",
        json={"name": "Alice's iPad", "platform": "ipados", "protocol": "apple_mdm"},
        headers=apple.org.admin,
    )
    assert created.status_code == 201, created.text
    device_id = created.json()["id"]
    code = created.json()["installation_code"]["code"]
    page = await apple.client.get("/mdm/enrol")
    assert page.status_code == 200 and "installation code" in page.text.lower()
    response = await apple.client.post("/mdm/enrol", data={"code": code.lower()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-apple-aspen-config"
    device = SimulatedDevice(read_profile(response.content), apple.running.http_url)
    await device.enrol(apple.client)
    assert apple.device_id(device) == device_id
    shown = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}", headers=apple.org.admin
    )
    assert (shown.json()["state"], shown.json()["name"]) == ("enrolled", "Alice's iPad")
    again = await apple.client.post("/mdm/enrol", data={"code": code})
    assert again.status_code == 400 and "used up" in again.text


async def test_the_profile_is_signed_and_carries_what_apple_requires(apple: AppleService) -> None:
    profile = await apple.profile()
    content, signer = cms.signed_content(profile)
    server = x509.load_pem_x509_certificate(apple.running.bootstrap.tls.certificate.read_bytes())
    assert signer == server
    document = plistlib.loads(content)
    assert document["PayloadType"] == "Configuration"
    payloads = {p["PayloadType"]: p for p in document["PayloadContent"]}
    mdm = payloads["com.apple.mdm"]
    assert mdm["Topic"] == apple.pki.topic
    assert mdm["ServerURL"] == "https://localhost:8443/mdm/server"
    assert mdm["CheckInURL"] == "https://localhost:8443/mdm/checkin"
    assert mdm["SignMessage"] is True and mdm["CheckOutWhenRemoved"] is True
    assert mdm["AccessRights"] == 8191
    assert mdm["IdentityCertificateUUID"] == payloads["com.apple.security.pkcs12"]["PayloadUUID"]
    root = x509.load_der_x509_certificate(payloads["com.apple.security.root"]["PayloadContent"])
    assert root.public_bytes(serialization.Encoding.PEM) == (
        apple.running.bootstrap.tls.ca_certificate.read_bytes()
    )
    enrolment = read_profile(profile)
    ca = CertificateAuthority.load(
        apple.running.bootstrap.tls.ca_certificate, apple.running.bootstrap.tls.ca_private_key
    )
    assert ca.is_issued_by(enrolment.identity, purpose=ExtendedKeyUsageOID.CLIENT_AUTH)
    # Each download has its own identity.
    assert read_profile(await apple.profile()).identity != enrolment.identity


async def test_without_an_apns_certificate_there_is_no_profile(apple: AppleService) -> None:
    other = await new_organisation(apple.client, apple.supervisor, "no-push")
    response = await apple.client.get(
        f"{API}/organisations/{other.code}/apple-mdm/enrolment-profile", headers=other.admin
    )
    assert response.status_code == 422
    assert "APNS certificate" in response.json()["detail"]


async def test_portals_serve_the_profile_to_managers_and_device_owners(
    apple: AppleService,
) -> None:
    owner = await add_account(apple.running, apple.client, apple.org, "alice", AccountKind.USER)
    async with apple.running.client() as browser:
        portal = Portal(browser)
        await portal.sign_in("admin", PASSWORD, apple.org.code)
        url = f"/admin/o/{apple.org.code}/apple-mdm/enrol.mobileconfig"
        profile = await portal.get(url)
        assert profile.status_code == 200, profile.text
        assert profile.headers["content-type"] == "application/x-apple-aspen-config"
        assert read_profile(profile.content).topic == apple.pki.topic
    async with apple.running.client() as browser:
        portal = Portal(browser)
        await portal.sign_in("alice", PASSWORD, apple.org.code)
        page = await portal.page("/my/devices")
        assert 'href="/my/apple-mdm/enrol.mobileconfig"' in page
        profile = await portal.get("/my/apple-mdm/enrol.mobileconfig")
        assert profile.status_code == 200, profile.text
        assert (await portal.get(url)).status_code in (403, 404)  # not the admin's download
    device = SimulatedDevice(read_profile(profile.content), apple.running.http_url)
    await device.enrol(apple.client)
    shown = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{apple.device_id(device)}",
        headers=apple.org.admin,
    )
    assert shown.json()["owner"]["id"] == owner.id


async def test_a_device_may_prove_its_identity_with_its_tls_client_certificate(
    apple: AppleService,
) -> None:
    device = SimulatedDevice(read_profile(await apple.profile()), apple.running.https_url)
    device.sign_messages = False
    context = device.tls_context(apple.running.ca_file)
    async with httpx.AsyncClient(verify=context, timeout=30) as tls:
        await device.enrol(tls)
        await apple.queue(apple.device_id(device), "locate")
        assert await device.poll(tls) == ["DeviceLocation"]
    # Without the certificate (and unsigned) the same device is refused.
    async with httpx.AsyncClient(verify=apple.running.tls_context(), timeout=30) as anonymous:
        refused = await device.token_update(anonymous)
    assert refused.status_code == 400


async def test_no_push_before_the_first_token_update_then_one_for_what_waits(
    apple: AppleService,
) -> None:
    device = SimulatedDevice(read_profile(await apple.profile()), apple.running.http_url)
    answer = await device.check_in(
        apple.client,
        {"MessageType": "Authenticate", "Topic": device.enrolment.topic, "ProductName": "Mac14,2"},
    )
    assert answer.status_code == 200, answer.text
    device_id = apple.device_id(device)
    await apple.queue(device_id, "request_inventory")
    with trio.move_on_after(0.3):
        await apple.apns.wait_for(1)
    assert apple.apns.pushes == []  # no token yet: nothing to push to
    assert (await device.token_update(apple.client)).status_code == 200
    with trio.fail_after(5):
        (push,) = await apple.apns.wait_for(1)
    assert push.token == device.push_token.hex()
    shown = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}", headers=apple.org.admin
    )
    assert (shown.json()["platform"], shown.json()["state"]) == ("macos", "enrolled")


async def test_an_unreadable_unlock_token_fails_unlock_alone(apple: AppleService) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    with database(apple.running) as conn:  # damaged (or sealed under another CA key)
        conn.execute(
            "UPDATE apple_mdm_enrolments SET unlock_token = ? WHERE id = ?",
            ("v1:" + base64.b64encode(bytes(40)).decode(), device.udid),
        )
    unlock = await apple.queue(device_id, "unlock")
    lock = await apple.queue(device_id, "lock", message="Found?")
    assert await device.poll(apple.client) == ["DeviceLock"]
    failed = await apple.command(unlock)
    assert failed["state"] == "failed"
    assert "UnlockToken cannot be read" in failed["result"]["error"]  # type: ignore[index]
    assert (await apple.command(lock))["state"] == "acknowledged"


async def test_a_user_channel_token_update_asks_no_push(apple: AppleService) -> None:
    device = await apple.device()
    message = {
        "MessageType": "TokenUpdate",
        "UDID": device.udid,
        "Topic": device.enrolment.topic,
        "UserID": "A1B2-USER",
        "Token": b"\x07" * 32,
        "PushMagic": "USER-MAGIC",
    }
    request = domain.CheckInRequest(
        protocol.parse_check_in(plistlib.dumps(message)),
        fingerprint_of(device),
    )
    with database(apple.running) as conn:
        assert domain._token_update(conn, domain.Sealer(bytes(32)), request) is None


def fingerprint_of(device: SimulatedDevice) -> str:
    return domain.fingerprint(device.enrolment.identity)


class _SessionStore:
    """The reads a report makes, answered from ``state``; writes are not expected."""

    def __init__(self, state: object) -> None:
        self.state = state

    async def read(self, unit: object, *args: object) -> object:
        return self.state

    async def lookup(self, unit: object, *args: object) -> object:
        return self.state

    async def write(self, unit: object, *args: object) -> object:
        raise AssertionError(f"unexpected write {unit!r}")

    write_point = write


async def test_a_session_ended_with_not_now_asks_for_one_retry_push() -> None:
    pushes: list[tuple[list[str], float]] = []
    lock = {"id": "c-lock", "kind": "lock", "state": "sent"}
    channel = domain._Channel({"id": "UDID"}, {"id": "device-1", "organisation_code": "o"})
    mdm = SimpleNamespace(
        store=_SessionStore((channel, lock, [lock])),
        push=lambda ids, delay: pushes.append((list(ids), delay)),
    )
    session = domain.AppleSession(mdm, "UDID")  # type: ignore[arg-type]
    not_now = protocol.CommandReport(
        protocol.Status.NOT_NOW, protocol.Channel("UDID"), "c-lock", {}
    )
    answer = await session.handle(domain.ReportRequest(not_now, "fingerprint"))
    assert answer.body == b""  # nothing else to do: the session ends
    await session.close()  # the session actor goes idle later
    assert pushes == [(["device-1"], domain.NOT_NOW_RETRY)]


async def test_a_signed_message_is_checked_here_once_the_offload_worker_is_gone() -> None:
    """The offload worker is an optimisation: once it is gone for good (it crashed too
    often), a device's signed message is checked and read on the event loop instead."""
    ca = CertificateAuthority.create("fallback test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate, _ = ca.issue_client_certificate("device", public_key=key.public_key())
    body = plistlib.dumps({"UDID": "0000-FALLBACK", "Status": "Idle"})
    signature = base64.b64encode(cms.sign_detached(body, certificate, key)).decode()
    ca_der = ca.certificate.public_bytes(serialization.Encoding.DER)
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "fallback")
        offload.stop()
        mdm = SimpleNamespace(offload=offload, ca_der=ca_der)
        identity, report = await domain.checked_message(
            mdm,  # type: ignore[arg-type]
            signature,
            body,
            protocol.parse_report,
        )
        assert identity == domain.fingerprint(certificate)
        assert report.channel.device == "0000-FALLBACK"
        with pytest.raises(domain.Refused, match="Mdm-Signature"):
            await domain.checked_message(
                mdm,  # type: ignore[arg-type]
                signature,
                body + b" ",
                protocol.parse_report,
            )
        nursery.cancel_scope.cancel()
