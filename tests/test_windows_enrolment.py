"""Windows enrolment (MS-MDE2) through the running service, driven by the Windows simulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.windows_sim import (
    EnrolmentFailed,
    SimulatedWindows,
    certificate_request,
    new_key,
    parse_answer,
    security_header,
    token_request_message,
)
from engine.principals import AccountKind, Principal, parse_rights
from engine.store import open_sqlite_store
from engine.windows_enrolment import (
    record_unenrolled,
    request_unenrolment,
    thumbprint,
    unenrolment_requested,
)

from .conftest import RunningService
from .test_api_commands import (
    API,
    PASSWORD,
    Org,
    add_account,
    database,
    new_organisation,
    sign_in_supervisor,
)

ENROLMENT_URL = "https://localhost:8443/EnrollmentServer/Enrollment.svc"
TABLES = ("devices", "windows_enrolments", "audit_events")


@dataclass
class World:
    running: RunningService
    client: httpx.AsyncClient
    supervisor: dict[str, str]
    org: Org
    email: str


@pytest.fixture
async def world(running: RunningService) -> AsyncIterator[World]:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "contoso")
        await add_account(running, client, org, "alice", AccountKind.USER)
        yield World(running, client, supervisor, org, "alice@contoso")


def counts(running: RunningService) -> dict[str, int]:
    with database(running) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def windows(w: World, **kwargs: Any) -> SimulatedWindows:
    return SimulatedWindows(w.client, w.running.http_url, **kwargs)


async def test_discovery_policy_enrolment_gives_a_certificate_of_the_service_ca(
    world: World,
) -> None:
    device = windows(world, device_name="LAPTOP-42")
    enrolment = await device.enrol(world.email, PASSWORD, subject="alice@contoso")
    ca = x509.load_pem_x509_certificate(world.running.bootstrap.tls.ca_certificate.read_bytes())
    assert enrolment.root == ca
    enrolment.certificate.verify_directly_issued_by(ca)
    assert enrolment.management_url == "https://localhost:8443/omadm"
    assert enrolment.poll_minutes == 60
    assert enrolment.certificate.subject.rfc4514_string() == f"CN={enrolment.device_id}"
    listed = await world.client.get(
        f"{API}/organisations/contoso/devices/{enrolment.device_id}", headers=world.org.admin
    )
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert (body["platform"], body["protocol"], body["state"]) == ("windows", "oma_dm", "enrolled")
    assert body["name"] == "LAPTOP-42" and body["owner"]["login"] == "alice"
    with database(world.running) as conn:
        event = conn.execute(
            "SELECT * FROM audit_events WHERE action = 'device.enrolled'"
        ).fetchone()
    assert json.loads(event["details"])["auth_policy"] == "OnPremise"


async def test_poll_schedule_follows_the_organisations_oma_dm_interval(world: World) -> None:
    changed = await world.client.patch(
        f"{API}/organisations/contoso/config/services/oma_dm",
        json={"use_system_wide": False, "overrides": {"connection_interval": 240}},
        headers=world.org.admin,
    )
    assert changed.status_code == 200, changed.text
    enrolment = await windows(world).enrol(world.email, PASSWORD)
    assert enrolment.poll_minutes == 240


async def test_the_same_hardware_enrols_again_as_the_same_device(world: World) -> None:
    device = windows(world)
    first = await device.enrol(world.email, PASSWORD)
    second = await device.enrol(world.email, PASSWORD, wrap_in_pkcs7=True)
    assert first.device_id == second.device_id
    assert counts(world.running)["windows_enrolments"] == 1


async def test_wrong_password_is_an_authentication_fault_and_changes_nothing(
    world: World,
) -> None:
    before = counts(world.running)
    with pytest.raises(EnrolmentFailed) as refused:
        await windows(world).enrol(world.email, "not the password")
    assert refused.value.status == 500
    assert refused.value.subcode == "s:Authentication"
    after = counts(world.running)
    assert after["devices"] == before["devices"]
    assert after["windows_enrolments"] == before["windows_enrolments"]


async def test_malformed_soap_is_a_message_format_fault_and_changes_nothing(
    world: World,
) -> None:
    before = counts(world.running)
    bad_bodies = [
        b"<s:Envelope",  # not well-formed
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
        b"<Envelope/>",
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/>'
        b"<s:Body><x/></s:Body></s:Envelope>",
    ]
    for path in ("Discovery.svc", "Policy.svc", "Enrollment.svc"):
        for body in bad_bodies:
            response = await world.client.post(
                f"/EnrollmentServer/{path}",
                content=body,
                headers={"Content-Type": "application/soap+xml; charset=utf-8"},
            )
            with pytest.raises(EnrolmentFailed) as fault:
                parse_answer(response)
            assert fault.value.subcode == "s:MessageFormat", (path, body)
    wrong_type = await world.client.post(
        "/EnrollmentServer/Enrollment.svc", content=b"{}", headers={"Content-Type": "text/json"}
    )
    assert wrong_type.headers["content-type"].startswith("application/soap+xml")
    huge = await world.client.post(
        "/EnrollmentServer/Enrollment.svc",
        content=b"<a>" + b"x" * 300_000 + b"</a>",
        headers={"Content-Type": "application/soap+xml"},
    )
    with pytest.raises(EnrolmentFailed):
        parse_answer(huge)
    assert counts(world.running) == before


async def test_a_bad_certificate_request_is_a_certificate_request_fault(world: World) -> None:
    before = counts(world.running)
    key = new_key()
    csr = bytearray(certificate_request(key))
    csr[-3] ^= 0x40  # the signature no longer proves the key
    message = token_request_message(
        ENROLMENT_URL, security_header(world.email, PASSWORD, None), bytes(csr)
    )
    response = await world.client.post(
        "/EnrollmentServer/Enrollment.svc",
        content=message,
        headers={"Content-Type": "application/soap+xml"},
    )
    with pytest.raises(EnrolmentFailed) as fault:
        parse_answer(response)
    assert fault.value.subcode == "s:CertificateRequest"
    assert counts(world.running)["devices"] == before["devices"]


async def test_managers_and_other_organisations_users_do_not_enrol(world: World) -> None:
    other = await new_organisation(world.client, world.supervisor, "fabrikam")
    await add_account(world.running, world.client, other, "bob", AccountKind.USER)
    before = counts(world.running)
    # The first manager of contoso is no device owner.
    with pytest.raises(EnrolmentFailed) as manager:
        await windows(world).enrol("admin@contoso", PASSWORD)
    assert manager.value.subcode == "s:Authorization"
    # bob exists, but in fabrikam: as a contoso user he is unknown.
    with pytest.raises(EnrolmentFailed) as stranger:
        await windows(world).enrol("bob@contoso", PASSWORD)
    assert stranger.value.subcode == "s:Authentication"
    after = counts(world.running)
    assert after["devices"] == before["devices"]
    # bob enrols in his own organisation; alice's device is not his.
    bobs = await windows(world).enrol("fabrikam\\bob", PASSWORD)
    seen = await world.client.get(
        f"{API}/organisations/contoso/devices/{bobs.device_id}", headers=world.org.admin
    )
    assert seen.status_code == 404


async def test_licences_are_checked(world: World) -> None:
    with database(world.running) as conn:
        conn.execute("UPDATE organisations SET licences = 1 WHERE code = 'contoso'")
    await windows(world).enrol(world.email, PASSWORD)
    before = counts(world.running)
    with pytest.raises(EnrolmentFailed) as full:
        await windows(world).enrol(world.email, PASSWORD)
    assert (full.value.subcode, full.value.error_type) == ("s:Authorization", "UserLicense")
    assert counts(world.running)["devices"] == before["devices"]


async def test_a_device_entered_by_a_manager_is_bound(world: World) -> None:
    with database(world.running) as conn:
        alice = conn.execute("SELECT id FROM accounts WHERE login = 'alice'").fetchone()[0]
    created = await world.client.post(
        f"{API}/organisations/contoso/devices",
        json={"name": "Alice's PC", "platform": "windows", "protocol": "oma_dm", "owner": alice},
        headers=world.org.admin,
    )
    assert created.status_code == 201, created.text
    enrolment = await windows(world).enrol(world.email, PASSWORD)
    assert enrolment.device_id == created.json()["id"]


async def test_federated_sign_in_page_gives_a_one_time_token(world: World) -> None:
    changed = await world.client.patch(
        f"{API}/organisations/contoso/config/services/microsoft_edm",
        json={"use_system_wide": False, "overrides": {"auth_policy": "Federated"}},
        headers=world.org.admin,
    )
    assert changed.status_code == 200, changed.text
    device = windows(world)
    enrolment = await device.enrol(world.email, PASSWORD)
    with database(world.running) as conn:
        event = conn.execute(
            "SELECT details FROM audit_events WHERE action = 'device.enrolled'"
        ).fetchone()
        assert conn.execute("SELECT count(*) FROM windows_enrolment_tokens").fetchone()[0] == 0
    assert json.loads(event[0])["auth_policy"] == "Federated"
    assert enrolment.device_id
    # A wrong password on the page: no token, the form again.
    page = await world.client.post(
        "/EnrollmentServer/Login",
        data={
            "appru": "ms-app://windows.immersivecontrolpanel",
            "username": world.email,
            "password": "wrong",
        },
    )
    assert page.status_code == 401 and "wresult" not in page.text
    # The token goes to Windows' ms-app:// address only.
    elsewhere = await world.client.post(
        "/EnrollmentServer/Login",
        data={"appru": "https://attacker.example/", "username": world.email, "password": PASSWORD},
    )
    assert elsewhere.status_code == 400 and "wresult" not in elsewhere.text


async def test_renewal_with_the_current_certificate(world: World) -> None:
    device = windows(world)
    enrolment = await device.enrol(world.email, PASSWORD)
    renewed = await device.renew(enrolment, ENROLMENT_URL)
    assert renewed.certificate.subject == enrolment.certificate.subject
    assert renewed.certificate.serial_number != enrolment.certificate.serial_number
    # The replaced certificate renews nothing any more.
    with pytest.raises(EnrolmentFailed) as stale:
        await device.renew(enrolment, ENROLMENT_URL)
    assert stale.value.subcode == "s:Authentication"
    assert stale.value.error_type == "NotEligibleToRenew"
    with database(world.running) as conn:
        row = conn.execute("SELECT certificate_thumbprint FROM windows_enrolments").fetchone()
    assert row[0] == thumbprint(renewed.certificate)


async def test_unenrolment_is_recorded_for_the_oma_dm_session(world: World) -> None:
    enrolment = await windows(world).enrol(world.email, PASSWORD)
    with database(world.running) as conn:
        admin = conn.execute(
            "SELECT * FROM accounts WHERE login = 'admin' AND organisation_id = ?",
            (world.org.id,),
        ).fetchone()
    principal = Principal(
        account_id=admin["id"],
        login="admin",
        kind=AccountKind(admin["kind"]),
        organisation_id=world.org.id,
        rights=parse_rights(json.loads(admin["rights"])),
    )
    async with open_sqlite_store(world.running.bootstrap.database.path) as store:
        row = await request_unenrolment(store, principal, "contoso", enrolment.device_id)
        assert row["state"] == "unenrolment_requested"
        assert await unenrolment_requested(store, enrolment.device_id)
        assert await record_unenrolled(store, enrolment.device_id, by_device=False)
        assert not await record_unenrolled(store, enrolment.device_id, by_device=False)
    device = await world.client.get(
        f"{API}/organisations/contoso/devices/{enrolment.device_id}", headers=world.org.admin
    )
    assert device.json()["state"] == "created"
    # Its certificate no longer renews (nor, for OMA DM, identifies) the device.
    with pytest.raises(EnrolmentFailed):
        await windows(world).renew(enrolment, ENROLMENT_URL)
    der = enrolment.certificate.public_bytes(serialization.Encoding.DER)
    assert der  # the simulator keeps what a device keeps
