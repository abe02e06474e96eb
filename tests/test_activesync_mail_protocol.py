"""The sans-IO parts of ActiveSync mail: body shaping, composing replies and forwards,
meeting replies, and certificate validation, tested without the service."""

from __future__ import annotations

import base64
import datetime as dt
from email import message_from_string

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.pki import CertificateAuthority
from engine.protocols import eas_bodies, eas_certificates, eas_compose, eas_meetings, eas_pim
from engine.protocols.activesync import EasError, child_text, el
from engine.protocols.activesync_tables import AIRSYNC, AIRSYNCBASE

HTML_MAIL = (
    "From: a@x.test\r\nTo: b@x.test\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="q"\r\n\r\n'
    "--q\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhé there\r\n"
    "--q\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>h&eacute; there</p>\r\n--q--\r\n"
)


def options(*children: object) -> object:
    return el(AIRSYNC, "Options", *children)  # type: ignore[arg-type]


def pref(kind: int, size: int | None = None, **extra: str) -> object:
    parts = [el(AIRSYNCBASE, "Type", str(kind))]
    if size is not None:
        parts.append(el(AIRSYNCBASE, "TruncationSize", str(size)))
    parts += [el(AIRSYNCBASE, t, v) for t, v in extra.items()]
    return el(AIRSYNCBASE, "BodyPreference", *parts)


def body(kind: str, text: str, version: str, *children: object) -> object:
    prefs = eas_bodies.preferences_of(options(*children), version)  # type: ignore[arg-type]
    return eas_pim.application_data(kind, text, prefs).find("Body")


def test_native_html_and_cut_on_a_character_boundary() -> None:
    data = eas_pim.application_data("sent_mail", HTML_MAIL)
    assert child_text(data, "NativeBodyType") == "2"
    found = body("sent_mail", HTML_MAIL, "14.1", pref(1), pref(2))
    assert child_text(found, "Type") == "2" and "<p>h&eacute;" in child_text(found, "Data")  # type: ignore[arg-type,operator]
    cut = body("sent_mail", HTML_MAIL, "14.1", pref(1, 2, Preview="4"))
    assert child_text(cut, "Data") == "h" and child_text(cut, "Truncated") == "1"  # type: ignore[arg-type]
    whole = child_text(body("sent_mail", HTML_MAIL, "14.1", pref(1)), "Data") or ""  # type: ignore[arg-type]
    assert child_text(cut, "EstimatedDataSize") == str(len(whole.encode()))  # type: ignore[arg-type]
    assert child_text(cut, "Preview") == "hé t"  # type: ignore[arg-type]
    part = eas_pim.application_data(
        "sent_mail",
        HTML_MAIL,
        eas_bodies.preferences_of(
            options(el(AIRSYNCBASE, "BodyPartPreference", el(AIRSYNCBASE, "Type", "2"))),  # type: ignore[arg-type]
            "16.1",
        ),
    ).find("BodyPart")
    assert child_text(part, "Status") == "1" and child_text(part, "Type") == "2"  # type: ignore[arg-type]


def test_mime_needs_mime_support_and_only_for_mail() -> None:
    mime = body("sent_mail", HTML_MAIL, "16.1", el(AIRSYNC, "MIMESupport", "2"), pref(4))
    assert child_text(mime, "Type") == "4" and "\r\n" in child_text(mime, "Data")  # type: ignore[arg-type,operator]
    assert child_text(body("sent_mail", HTML_MAIL, "16.1", pref(4)), "Type") == "1"  # type: ignore[arg-type]
    note = body("notes", "Idea\nmore\n", "16.1", el(AIRSYNC, "MIMESupport", "2"), pref(4, 2))
    assert child_text(note, "Type") == "1" and child_text(note, "Data") == "Id"  # type: ignore[arg-type]
    with pytest.raises(EasError):
        eas_bodies.preferences_of(options(pref(7)), "14.0")  # type: ignore[arg-type]
    assert eas_bodies.preferences_of(options(), "14.0") is None  # type: ignore[arg-type]


def test_reply_forward_and_meeting_reply() -> None:
    original = "From: b@x.test\r\nSubject: Q\r\nMessage-ID: <q@x>\r\n\r\nline\r\n"
    reply = message_from_string(
        eas_compose.reply("To: b@x.test\r\nSubject: Re: Q\r\n\r\nok\r\n", original, False)
    )
    assert reply["References"] == "<q@x>" and "> line" in reply.get_payload()
    assert "> line" not in eas_compose.reply("To: b@x.test\r\n\r\nok\r\n", original, True)
    forward = message_from_string(
        eas_compose.forward("Subject: F\r\n\r\nfyi\r\n", original, False, (("C", "c@x.test"),))
    )
    assert forward["To"] == '"C" <c@x.test>'
    assert [p.get_content_type() for p in forward.walk()][2] == "message/rfc822"
    with pytest.raises(EasError):
        eas_compose.parse("")
    calendar = (
        "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u\r\nSUMMARY:S\r\n"
        "ORGANIZER:mailto:b@x.test\r\nATTENDEE:mailto:c@x.test\r\n"
        "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:A@x.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    invitation = (
        'Subject: I\r\nMIME-Version: 1.0\r\nContent-Type: text/calendar; method="REQUEST"\r\n'
        f"\r\n{calendar}"
    )
    assert eas_compose.meeting_request(invitation) == calendar
    forwarded = eas_compose.forward("To: d@x.test\r\n\r\nfyi\r\n", invitation, False)
    assert eas_compose.meeting_request(forwarded) is None  # attached, not addressed to us
    kept = eas_compose.with_response(calendar, "a@x.test", 2)
    assert "METHOD" not in kept and "ATTENDEE;PARTSTAT=TENTATIVE:mailto:A@x.test" in kept
    answer = eas_compose.meeting_reply(calendar, "a@x.test", 3) or ""
    assert "METHOD:REPLY" in answer and "c@x.test" not in answer.split("BEGIN:VEVENT")[1]


def _leaf(issuer: CertificateAuthority, usage: x509.ObjectIdentifier) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    at = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(days=1))
        .not_valid_after(at + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(issuer._private_key, hashes.SHA256())
    )


def test_certificate_statuses() -> None:
    ours = CertificateAuthority.create("Ours", key_size=2048)
    twin = CertificateAuthority.create("Ours", key_size=2048)  # same name, other key
    email = ExtendedKeyUsageOID.EMAIL_PROTECTION
    now = dt.datetime.now(dt.UTC)
    anchors = [ours.certificate]

    def status(leaf: x509.Certificate, check_crl: bool = False) -> int:
        return eas_certificates.validate(leaf, [], anchors, now, check_crl, ours.certificate)

    assert status(_leaf(ours, email)) == eas_certificates.VALID
    assert status(_leaf(ours, email), check_crl=True) == eas_certificates.VALID
    assert status(_leaf(twin, email)) == eas_certificates.BAD_SIGNATURE
    assert status(_leaf(ours, ExtendedKeyUsageOID.SERVER_AUTH)) == eas_certificates.NOT_FOR_EMAIL
    later = now + dt.timedelta(days=3)
    leaf = _leaf(ours, email)
    assert (
        eas_certificates.validate(leaf, [], anchors, later, False, None) == eas_certificates.EXPIRED
    )
    assert eas_certificates.certificate_of("!!") is None


def test_global_object_id_wraps_the_uid() -> None:
    blob = base64.b64decode(eas_meetings.global_object_id("abc"))
    assert blob[:16] == bytes.fromhex("040000008200E00074C5B7101A82E008")
    assert blob[36:40] == (len(b"vCal-Uid") + 4 + 4).to_bytes(4, "little")
    assert blob[40:] == b"vCal-Uid\x01\x00\x00\x00abc\x00"
