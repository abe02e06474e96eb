"""The APNS certificate upload: what is accepted, what is refused and why, and its effect.

Certificates are made here with ``cryptography``: self-signed stand-ins for Apple's push
certificates (subject UID ``com.apple.mgmt.External.<uuid>``), and the wrong kinds.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import sqlite3
import uuid

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from engine import service_settings
from engine.principals import AccountKind
from engine.store import Conflict
from web.api.certificates import APNS_CERTIFICATE, CURRENT

from .conftest import RunningService
from .test_api_commands import (
    API,
    add_account,
    answer,
    audit_rows,
    count,
    database,
    new_organisation,
    sign_in_supervisor,
)

PEM = serialization.Encoding.PEM
NOW = dt.datetime.now(dt.UTC)


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    """Apple's push certificates carry RSA 2048 keys; one is made per test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # microseconds: for the many other cases


def push_topic() -> str:
    return f"com.apple.mgmt.External.{uuid.uuid4()}"


def certificate(
    key: CertificateIssuerPrivateKeyTypes,
    uid: str | None,
    *,
    start: dt.datetime = NOW - dt.timedelta(days=1),
    days: int = 365,
) -> x509.Certificate:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, "APSP:test")]
    if uid is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.USER_ID, uid))
    name = x509.Name(attributes)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def pem(
    cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes | None, password: str = ""
) -> str:
    text = cert.public_bytes(PEM)
    if key is not None:
        protection = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        text += key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, protection)
    return text.decode()


def p12(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, password: str) -> str:
    data = pkcs12.serialize_key_and_certificates(
        b"push", key, cert, None, serialization.BestAvailableEncryption(password.encode())
    )
    return base64.b64encode(data).decode()


def settings_apple_mdm(view: httpx.Response) -> dict[str, object]:
    assert view.status_code == 200, view.text
    return view.json()["services"]["apple_mdm"]


async def test_supervisor_uploads_the_system_certificate(running: RunningService) -> None:
    topic = push_topic()
    cert = certificate(rsa_key(), topic)
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "follows")
        empty = answer(
            await client.get(f"{API}/config/apns-certificate", headers=supervisor), 200, CURRENT
        )
        assert empty == {"certificate": None}
        uploaded = answer(
            await client.post(
                f"{API}/config/apns-certificate",
                json={"pem": pem(cert, rsa_key())},
                headers=supervisor,
            ),
            201,
            APNS_CERTIFICATE,
        )
        assert uploaded["topic"] == topic and f"UID={topic}" in uploaded["subject"]
        assert uploaded["not_after"].startswith(cert.not_valid_after_utc.strftime("%Y-%m-%dT%H"))
        assert uploaded["source"] == "system" and 362 <= uploaded["days_left"] <= 364
        current = await client.get(f"{API}/config/apns-certificate", headers=supervisor)
        assert answer(current, 200, CURRENT)["certificate"] == uploaded
        assert "PRIVATE" not in current.text
        system = await client.get(f"{API}/config/services", headers=supervisor)
        assert settings_apple_mdm(system)["values"]["apns_certificate"] == uploaded["id"]
        # An organisation on system-wide settings uses it; its managers see which it is.
        own = await client.get(
            f"{API}/organisations/{org.code}/config/apns-certificate", headers=org.admin
        )
        assert answer(own, 200, CURRENT)["certificate"] == uploaded
        assert (
            await client.post(
                f"{API}/config/apns-certificate",
                json={"pem": pem(cert, rsa_key())},
                headers=org.admin,
            )
        ).status_code == 403
        assert (
            await client.get(f"{API}/config/apns-certificate", headers=org.admin)
        ).status_code == 403
    with database(running) as conn:
        row = conn.execute("SELECT * FROM certificates").fetchone()
    assert (row["purpose"], row["organisation_id"], row["topic"]) == ("apns", None, topic)
    assert "PRIVATE KEY" in row["private_key_pem"]
    (event,) = audit_rows(running, "certificate.uploaded")
    assert event["target_id"] == uploaded["id"] and event["details"]["topic"] == topic
    assert "PRIVATE" not in str(event["details"])
    assert audit_rows(running, "settings.system_changed")[0]["target_id"] == "apple_mdm"


async def test_an_organisation_uploads_its_own_as_pkcs12(running: RunningService) -> None:
    topic = push_topic()
    key = ec_key()
    body = {"pkcs12": p12(certificate(key, topic), key, "p12 secret"), "password": "p12 secret"}
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "own")
        other = await new_organisation(client, supervisor, "other")
        helpdesk = await add_account(
            running, client, org, "helpdesk", AccountKind.MANAGER, ("commands",)
        )
        owner = await add_account(running, client, org, "owner", AccountKind.USER)
        url = f"{API}/organisations/{org.code}/config/apns-certificate"
        assert (await client.post(url, json=body, headers=helpdesk.auth)).status_code == 403
        assert (await client.post(url, json=body, headers=owner.auth)).status_code == 403
        assert (await client.post(url, json=body, headers=other.admin)).status_code == 404
        assert (await client.get(url, headers=owner.auth)).status_code == 403
        assert (await client.get(url, headers=other.admin)).status_code == 404
        assert count(running, "certificates") == 0
        uploaded = answer(await client.post(url, json=body, headers=org.admin), 201)
        assert (uploaded["topic"], uploaded["source"]) == (topic, "organisation")
        shown = answer(await client.get(url, headers=helpdesk.auth), 200, CURRENT)
        assert shown["certificate"]["id"] == uploaded["id"]
        apple = settings_apple_mdm(
            await client.get(f"{API}/organisations/{org.code}/config/services", headers=org.admin)
        )
        assert apple["use_system_wide"] is False
        assert apple["effective"]["apns_certificate"] == {
            "value": uploaded["id"],
            "source": "organisation",
        }
        assert apple["effective"]["service_url"]["source"] == "system"
        # The other organisation is untouched.
        theirs = await client.get(
            f"{API}/organisations/{other.code}/config/apns-certificate", headers=other.admin
        )
        assert answer(theirs, 200, CURRENT) == {"certificate": None}
    (event,) = audit_rows(running, "certificate.uploaded")
    assert event["organisation_id"] == org.id and event["actor"] == "admin"
    assert "p12 secret" not in str(audit_rows(running, "settings.organisation_changed"))
    assert len(audit_rows(running, "settings.organisation_changed")) == 1


async def test_anything_but_a_valid_push_certificate_is_refused(running: RunningService) -> None:
    key = ec_key()
    topic = push_topic()
    good = certificate(key, topic)
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"pem": pem(certificate(key, None), key)}, "pem", "not an Apple push certificate"),
        (
            {"pem": pem(certificate(key, "com.example.push"), key)},
            "pem",
            "not an Apple push certificate",
        ),
        ({"pem": pem(good, ec_key())}, "pem", "does not belong"),
        ({"pem": pem(good, None)}, "pem", "private key is missing"),
        (
            {"pem": pem(certificate(key, topic, start=NOW - dt.timedelta(days=400)), key)},
            "pem",
            "expired",
        ),
        (
            {"pem": pem(certificate(key, topic, start=NOW + dt.timedelta(days=2)), key)},
            "pem",
            "not valid before",
        ),
        ({"pem": "hello"}, "pem", "no PEM blocks"),
        (
            {"pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "pem",
            "malformed",
        ),
        ({"pem": pem(good, key, "pem secret")}, "password", "encrypted"),
        ({"pem": pem(good, key, "pem secret"), "password": "wrong"}, "password", "wrong"),
        ({"pkcs12": p12(good, key, "right"), "password": "wrong"}, "password", "wrong"),
        ({"pkcs12": p12(good, key, "right")}, "password", "wrong"),
        ({"pkcs12": "not base64!"}, "pkcs12", "not base64"),
        ({"pkcs12": base64.b64encode(b"garbage").decode()}, "pkcs12", "PKCS#12"),
        ({"pem": pem(good, key), "pkcs12": p12(good, key, "x")}, "pem", "either"),
        ({}, "pem", "either"),
        ({"pem": pem(good, key), "colour": "red"}, "colour", "unknown"),
    ]
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        events_before = count(running, "audit_events")
        for body, field, words in cases:
            refused = await client.post(
                f"{API}/config/apns-certificate", json=body, headers=supervisor
            )
            problem = answer(refused, 422)
            assert problem["field"] == field and words in problem["detail"], (body, problem)
        system = await client.get(f"{API}/config/services", headers=supervisor)
        assert settings_apple_mdm(system)["values"]["apns_certificate"] is None
        # An encrypted key with its password, after a chain certificate, is fine.
        chain = certificate(ec_key(), None)
        accepted = await client.post(
            f"{API}/config/apns-certificate",
            json={"pem": pem(chain, None) + pem(good, key, "pem secret"), "password": "pem secret"},
            headers=supervisor,
        )
        assert answer(accepted, 201)["topic"] == topic
    assert count(running, "certificates") == 1
    assert count(running, "audit_events") == events_before + 2  # uploaded, settings changed


async def test_a_new_topic_must_be_asked_for(running: RunningService) -> None:
    """Devices enrolled with one topic ignore pushes for another: changing it is explicit."""
    key = ec_key()
    topic = push_topic()
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "topics")
        system_url = f"{API}/config/apns-certificate"
        first = await client.post(
            system_url, json={"pem": pem(certificate(key, topic), key)}, headers=supervisor
        )
        assert first.status_code == 201
        renewed = await client.post(
            system_url,
            json={"pem": pem(certificate(key, topic, days=700), key)},
            headers=supervisor,
        )
        assert answer(renewed, 201)["days_left"] > 600
        other_topic = {"pem": pem(certificate(key, push_topic()), key)}
        org_url = f"{API}/organisations/{org.code}/config/apns-certificate"
        for url, auth in ((system_url, supervisor), (org_url, org.admin)):
            refused = await client.post(url, json=other_topic, headers=auth)
            assert answer(refused, 422)["field"] == "allow_topic_change"
        assert count(running, "certificates") == 2
        changed = await client.post(
            org_url, json={**other_topic, "allow_topic_change": True}, headers=org.admin
        )
        assert answer(changed, 201)["source"] == "organisation"
        shown = answer(await client.get(org_url, headers=org.admin), 200, CURRENT)
        assert shown["certificate"]["id"] == changed.json()["id"]
    replaced = [e["details"]["replaces"] for e in audit_rows(running, "certificate.uploaded")]
    assert replaced[0] is None and replaced[1] == first.json()["id"]
    assert replaced[2] == renewed.json()["id"]  # the organisation used the system's


async def test_an_upload_whose_settings_change_fails_leaves_nothing(
    running: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Certificate, setting and audit events are one write: all of them or none."""

    def moved_on(conn: sqlite3.Connection, owner: str, *args: object) -> int:
        raise Conflict(f"settings of {owner} changed meanwhile")  # another writer won

    key = ec_key()
    body = {"pem": pem(certificate(key, push_topic()), key)}
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "atomic")
        org_url = f"{API}/organisations/{org.code}/config/apns-certificate"
        events = count(running, "audit_events")
        with monkeypatch.context() as patched:
            patched.setattr(service_settings, "put_settings", moved_on)
            for url, auth in ((f"{API}/config/apns-certificate", supervisor), (org_url, org.admin)):
                assert (await client.post(url, json=body, headers=auth)).status_code == 412
        assert count(running, "certificates") == 0
        assert count(running, "service_settings") == 0
        assert count(running, "audit_events") == events
        # Nothing was left half done: the same upload goes through once settings can change.
        uploaded = answer(await client.post(org_url, json=body, headers=org.admin), 201)
        shown = answer(await client.get(org_url, headers=org.admin), 200, CURRENT)
        assert shown["certificate"]["id"] == uploaded["id"]
    assert count(running, "certificates") == 1
    assert [e["details"]["replaces"] for e in audit_rows(running, "certificate.uploaded")] == [None]


async def test_of_two_uploads_at_once_the_second_meets_the_first_topic(
    running: RunningService,
) -> None:
    """The topic check and the change are one write, so two uploads cannot both pass it."""
    key = ec_key()
    bodies = [{"pem": pem(certificate(key, push_topic()), key)} for _ in range(2)]
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "racing")
        url = f"{API}/organisations/{org.code}/config/apns-certificate"
        statuses: list[int] = []

        async def upload(body: dict[str, object]) -> None:
            statuses.append((await client.post(url, json=body, headers=org.admin)).status_code)

        async with trio.open_nursery() as nursery:
            for body in bodies:
                nursery.start_soon(upload, body)
        assert sorted(statuses) == [201, 422]
    assert count(running, "certificates") == 1
    assert len(audit_rows(running, "settings.organisation_changed")) == 1
