"""Apple MDM refuses what it must, with 400 (never 401), and changes nothing when it does."""

from __future__ import annotations

import base64
import datetime as dt
import plistlib
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.apple_sim import SimulatedDevice, read_profile
from engine.pki import CertificateAuthority
from engine.protocols.apple_mdm import CHECK_IN_CONTENT_TYPE, SERVER_CONTENT_TYPE
from engine.protocols.cms import sign_detached

from .apple_support import AppleService, apple_fixture, upload_push_certificate  # noqa: F401
from .test_api_commands import API, database, new_organisation

pytestmark = pytest.mark.trio

TABLES = ("devices", "apple_mdm_enrolments", "apple_mdm_identities", "commands", "audit_events")


def snapshot(apple: AppleService) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables Apple MDM touches (a refusal must leave them as they were)."""
    with database(apple.running) as conn:
        return {
            table: [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]
            for table in TABLES
        }


def foreign_identity() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate of another CA, with everything else like ours."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apple-mdm forged")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


async def put(
    apple: AppleService,
    path: str,
    body: bytes,
    *,
    signer: tuple[x509.Certificate, Any] | None = None,
    signature: str | None = None,
    content_type: str = CHECK_IN_CONTENT_TYPE,
) -> int:
    headers = {"Content-Type": content_type}
    if signer is not None:
        signature = base64.b64encode(sign_detached(body, *signer)).decode()
    if signature is not None:
        headers["Mdm-Signature"] = signature
    response = await apple.client.put(path, content=body, headers=headers)
    return response.status_code


def authenticate(device: SimulatedDevice, **changes: Any) -> bytes:
    message = {
        "MessageType": "Authenticate",
        "Topic": device.enrolment.topic,
        "UDID": device.udid,
        "ProductName": "iPhone15,2",
    }
    return plistlib.dumps({**message, **changes})


async def test_bad_check_ins_are_400_and_change_nothing(apple: AppleService) -> None:
    enrolled = await apple.device()
    fresh = SimulatedDevice(read_profile(await apple.profile()), apple.running.http_url)
    identity = (fresh.enrolment.identity, fresh.enrolment.key)
    before = snapshot(apple)
    body = authenticate(fresh)
    ca = CertificateAuthority.load(
        apple.running.bootstrap.tls.ca_certificate, apple.running.bootstrap.tls.ca_private_key
    )
    stray, stray_key = ca.issue_client_certificate("apple-mdm stray")  # ours, never handed out
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("no signature", body, {}),
        ("signature over another body", body, {"signature": _signature(b"other", identity)}),
        ("signature not base64", body, {"signature": "%%%"}),
        ("signature garbage", body, {"signature": base64.b64encode(b"0" * 40).decode()}),
        ("another CA", body, {"signer": foreign_identity()}),
        ("our CA, never issued in a profile", body, {"signer": (stray, stray_key)}),
        ("wrong topic", authenticate(fresh, Topic="com.apple.mgmt.other"), {"signer": identity}),
        (
            "identity of another device",
            authenticate(fresh),
            {"signer": (enrolled.enrolment.identity, enrolled.enrolment.key)},
        ),
        ("truncated plist", body[:-20], {"signer": identity}),
        ("not a plist", b"\x00\x01binary junk", {"signer": identity}),
        ("empty body", b"", {"signer": identity}),
        ("array at the top", plistlib.dumps(["Authenticate"]), {"signer": identity}),
        ("unknown message type", authenticate(fresh, MessageType="Hello"), {"signer": identity}),
        (
            "message type of the wrong type",
            authenticate(fresh, MessageType=1),
            {"signer": identity},
        ),
        ("UDID of the wrong type", authenticate(fresh, UDID=b"1234"), {"signer": identity}),
        (
            "both UDID and EnrollmentID",
            authenticate(fresh, EnrollmentID="E1"),
            {"signer": identity},
        ),
        (
            "XML entities",
            b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "Authenticate">]>'
            b"<plist><dict><key>MessageType</key><string>&a;</string></dict></plist>",
            {"signer": identity},
        ),
        ("wrong content type", body, {"signer": identity, "content_type": "application/xml"}),
        (
            "TokenUpdate before Authenticate",
            plistlib.dumps(
                {
                    "MessageType": "TokenUpdate",
                    "Topic": fresh.enrolment.topic,
                    "UDID": fresh.udid,
                    "Token": b"\x01" * 32,
                    "PushMagic": "magic",
                }
            ),
            {"signer": identity},
        ),
        (
            "TokenUpdate with a string token",
            plistlib.dumps(
                {
                    "MessageType": "TokenUpdate",
                    "Topic": enrolled.enrolment.topic,
                    "UDID": enrolled.udid,
                    "Token": "01" * 32,
                    "PushMagic": "magic",
                }
            ),
            {"signer": (enrolled.enrolment.identity, enrolled.enrolment.key)},
        ),
    ]
    for name, message, options in cases:
        status = await put(apple, "/mdm/checkin", message, **options)
        assert status == 400, name
        assert snapshot(apple) == before, name


def _signature(body: bytes, identity: tuple[x509.Certificate, Any]) -> str:
    return base64.b64encode(sign_detached(body, *identity)).decode()


async def pushed(apple: AppleService, device: SimulatedDevice) -> None:
    """Wait until the push for a queued command is recorded (before a snapshot is taken)."""
    with trio.fail_after(5):
        while True:
            with database(apple.running) as conn:
                at = conn.execute(
                    "SELECT last_push_at FROM apple_mdm_enrolments WHERE id = ?", (device.udid,)
                ).fetchone()[0]
            if at is not None:
                return
            await trio.sleep(0.01)


async def test_bad_command_reports_are_400_and_change_nothing(apple: AppleService) -> None:
    device = await apple.device()
    other = await apple.device()
    command = await apple.queue(apple.device_id(other), "lock")
    assert await other.report(apple.client, {"Status": "Idle"}) is not None  # now sent
    await pushed(apple, other)
    unknown = SimulatedDevice(read_profile(await apple.profile()), apple.running.http_url)
    before = snapshot(apple)
    mine = (device.enrolment.identity, device.enrolment.key)
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("unknown device", {"Status": "Idle", "UDID": unknown.udid}, {"signer": mine}),
        (
            "unknown device with its own identity",
            {"Status": "Idle", "UDID": unknown.udid},
            {"signer": (unknown.enrolment.identity, unknown.enrolment.key)},
        ),
        ("another device's channel", {"Status": "Idle", "UDID": other.udid}, {"signer": mine}),
        (
            "another device's command",
            {"Status": "Acknowledged", "UDID": device.udid, "CommandUUID": command},
            {"signer": mine},
        ),
        ("unknown status", {"Status": "Busy", "UDID": device.udid}, {"signer": mine}),
        (
            "result without CommandUUID",
            {"Status": "Acknowledged", "UDID": device.udid},
            {"signer": mine},
        ),
        ("no signature", {"Status": "Idle", "UDID": device.udid}, {}),
        ("another CA", {"Status": "Idle", "UDID": device.udid}, {"signer": foreign_identity()}),
    ]
    for name, message, options in cases:
        status = await put(
            apple,
            "/mdm/server",
            plistlib.dumps(message),
            content_type=SERVER_CONTENT_TYPE,
            **options,
        )
        assert status == 400, name
        after = snapshot(apple)
        for table in TABLES:
            assert after[table] == before[table], (
                name,
                table,
                set(after[table]) ^ set(before[table]),
            )
    assert (await apple.command(command))["state"] == "sent"


async def test_a_removed_device_and_an_oversized_message_are_refused(
    apple: AppleService,
) -> None:
    device = await apple.device()
    identity = (device.enrolment.identity, device.enrolment.key)
    idle = plistlib.dumps({"Status": "Idle", "UDID": device.udid})
    huge = plistlib.dumps({"Status": "Idle", "UDID": device.udid, "Pad": "x" * 5_000_000})
    status = await put(
        apple, "/mdm/server", huge, signer=identity, content_type=SERVER_CONTENT_TYPE
    )
    assert status == 400
    removed = await apple.client.delete(
        f"/api/v1/organisations/{apple.org.code}/devices/{apple.device_id(device)}",
        headers=apple.org.admin,
    )
    assert removed.status_code == 204, removed.text
    before = snapshot(apple)
    for path, body, content_type in (
        ("/mdm/server", idle, SERVER_CONTENT_TYPE),
        ("/mdm/checkin", authenticate(device), CHECK_IN_CONTENT_TYPE),
    ):
        status = await put(apple, path, body, signer=identity, content_type=content_type)
        assert status == 400, path
    assert snapshot(apple) == before
    # With a new profile the same hardware enrols again, as a new inventory entry.
    old = apple.device_id(device)
    device.enrolment = read_profile(await apple.profile())
    await device.enrol(apple.client)
    assert apple.device_id(device) != old


async def test_a_device_of_an_inactive_organisation_or_without_its_row_may_not_connect(
    apple: AppleService,
) -> None:
    """Reports and check-ins of such a channel are refused as any device that may not connect
    (the channel, its device and organisation are read together), and change nothing."""
    orphan = await apple.device()
    device = await apple.device()
    command = await apple.queue(apple.device_id(device), "lock")
    await pushed(apple, device)
    with database(apple.running) as conn:  # a row only a database without foreign keys loses
        conn.execute("DELETE FROM devices WHERE id = ?", (apple.device_id(orphan),))
    off = await apple.client.patch(
        f"{API}/organisations/{apple.org.code}", json={"active": False}, headers=apple.supervisor
    )
    assert off.status_code == 200, off.text
    before = snapshot(apple)
    for enrolled in (orphan, device):
        identity = (enrolled.enrolment.identity, enrolled.enrolment.key)
        idle = plistlib.dumps({"Status": "Idle", "UDID": enrolled.udid})
        token = plistlib.dumps(
            {
                "MessageType": "TokenUpdate",
                "Topic": enrolled.enrolment.topic,
                "UDID": enrolled.udid,
                "Token": b"\x02" * 32,
                "PushMagic": "magic",
            }
        )
        for path, body, content_type in (
            ("/mdm/server", idle, SERVER_CONTENT_TYPE),
            ("/mdm/checkin", token, CHECK_IN_CONTENT_TYPE),
        ):
            response = await apple.client.put(
                path,
                content=body,
                headers={"Content-Type": content_type, "Mdm-Signature": _signature(body, identity)},
            )
            assert response.status_code == 400, path
            assert response.text == "the device may not connect\n", path
    assert snapshot(apple) == before
    with database(apple.running) as conn:
        state = conn.execute("SELECT state FROM commands WHERE id = ?", (command,)).fetchone()[0]
    assert state == "queued"


async def test_a_fresh_profile_cannot_take_over_an_enrolled_device(apple: AppleService) -> None:
    """Anyone with a profile could name another device's UDID: that device keeps its channel,
    until it checks out, is removed, or was erased (then it enrols again, as after a wipe)."""
    victim = await apple.device()
    victim_id = apple.device_id(victim)
    lock = await apple.queue(victim_id, "lock")
    intruder = SimulatedDevice(read_profile(await apple.profile()), apple.running.http_url)
    intruder.udid = victim.udid
    before = snapshot(apple)
    identity = (intruder.enrolment.identity, intruder.enrolment.key)
    assert await put(apple, "/mdm/checkin", authenticate(intruder), signer=identity) == 400
    assert snapshot(apple) == before
    assert await victim.poll(apple.client) == ["DeviceLock"]  # still the victim's channel
    assert (await apple.command(lock))["state"] == "acknowledged"

    other = await new_organisation(apple.client, apple.supervisor, "applex")
    await upload_push_certificate(apple.client, other, apple.pki)
    stranger = SimulatedDevice(read_profile(await apple.profile(other)), apple.running.http_url)
    stranger.udid = victim.udid
    before = snapshot(apple)
    signer = (stranger.enrolment.identity, stranger.enrolment.key)
    assert await put(apple, "/mdm/checkin", authenticate(stranger), signer=signer) == 400
    assert snapshot(apple) == before

    # Erased: the same hardware installs a new profile and is the same inventory device.
    await apple.queue(victim_id, "wipe", pin="123456")
    assert await victim.poll(apple.client) == ["EraseDevice"]
    reborn = SimulatedDevice(read_profile(await apple.profile()), apple.running.http_url)
    reborn.udid = victim.udid
    await reborn.enrol(apple.client)
    assert apple.device_id(reborn) == victim_id
