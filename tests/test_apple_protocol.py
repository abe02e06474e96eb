"""Apple MDM sans-IO: messages as Apple's documentation shows them, CMS, profiles, commands.

The check-in and command-report vectors follow the examples of Apple's Device Management
documentation (XML property lists with Apple's DOCTYPE, ``<data>`` in base64), byte for
byte in their layout; the binary ones are the same messages as a device may send them.
"""

from __future__ import annotations

import base64
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from engine.pki import CertificateAuthority
from engine.protocols import apple_mdm as protocol, cms, mobileconfig

HEADER = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN"'
    b' "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
    b'<plist version="1.0">\n'
)

AUTHENTICATE = HEADER + (
    b"<dict>\n"
    b"    <key>BuildVersion</key>\n    <string>21E236</string>\n"
    b"    <key>MessageType</key>\n    <string>Authenticate</string>\n"
    b"    <key>OSVersion</key>\n    <string>17.4.1</string>\n"
    b"    <key>ProductName</key>\n    <string>iPhone15,2</string>\n"
    b"    <key>SerialNumber</key>\n    <string>F2LXK0Z8KPJ1</string>\n"
    b"    <key>Topic</key>\n    <string>com.apple.mgmt.External.2d2e9f5a</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"</dict>\n</plist>\n"
)

TOKEN_UPDATE = HEADER + (
    b"<dict>\n"
    b"    <key>AwaitingConfiguration</key>\n    <false/>\n"
    b"    <key>MessageType</key>\n    <string>TokenUpdate</string>\n"
    b"    <key>PushMagic</key>\n    <string>4A7F2C1E-9B3D-4E5F-8A6B-1C2D3E4F5A6B</string>\n"
    b"    <key>Token</key>\n"
    b"    <data>\n    3q2+78r+ur7erb7vyv66vt6tvu/K/rq+3q2+78r+ur4=\n    </data>\n"
    b"    <key>Topic</key>\n    <string>com.apple.mgmt.External.2d2e9f5a</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"    <key>UnlockToken</key>\n    <data>\n    VW5sb2NrVG9rZW4=\n    </data>\n"
    b"</dict>\n</plist>\n"
)

USER_TOKEN_UPDATE = HEADER + (
    b"<dict>\n"
    b"    <key>MessageType</key>\n    <string>TokenUpdate</string>\n"
    b"    <key>NotOnConsole</key>\n    <false/>\n"
    b"    <key>PushMagic</key>\n    <string>user-magic</string>\n"
    b"    <key>Token</key>\n    <data>\n    AQIDBA==\n    </data>\n"
    b"    <key>Topic</key>\n    <string>com.apple.mgmt.External.2d2e9f5a</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"    <key>UserID</key>\n    <string>3E8C1D4A-7B2F-4C6E-9D1A-5F3B2E8C7D6A</string>\n"
    b"    <key>UserLongName</key>\n    <string>Alice Example</string>\n"
    b"    <key>UserShortName</key>\n    <string>alice</string>\n"
    b"</dict>\n</plist>\n"
)

USER_ENROLMENT_CHECK_OUT = HEADER + (
    b"<dict>\n"
    b"    <key>EnrollmentID</key>\n    <string>5E1A7C2B-4D3F-4A8E-9B6C-2F1E3D4C5B6A</string>\n"
    b"    <key>MessageType</key>\n    <string>CheckOut</string>\n"
    b"    <key>Topic</key>\n    <string>com.apple.mgmt.External.2d2e9f5a</string>\n"
    b"</dict>\n</plist>\n"
)

IDLE = HEADER + (
    b"<dict>\n"
    b"    <key>Status</key>\n    <string>Idle</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"</dict>\n</plist>\n"
)

DEVICE_INFORMATION_RESULT = HEADER + (
    b"<dict>\n"
    b"    <key>CommandUUID</key>\n    <string>0001-DeviceInformation</string>\n"
    b"    <key>QueryResponses</key>\n    <dict>\n"
    b"        <key>AvailableDeviceCapacity</key>\n        <real>71.52</real>\n"
    b"        <key>BatteryLevel</key>\n        <real>0.81</real>\n"
    b"        <key>DeviceCapacity</key>\n        <real>128</real>\n"
    b"        <key>ModelName</key>\n        <string>iPhone</string>\n"
    b"        <key>OSVersion</key>\n        <string>17.4.1</string>\n"
    b"        <key>ProductName</key>\n        <string>iPhone15,2</string>\n"
    b"        <key>SerialNumber</key>\n        <string>F2LXK0Z8KPJ1</string>\n"
    b"    </dict>\n"
    b"    <key>Status</key>\n    <string>Acknowledged</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"</dict>\n</plist>\n"
)

ERROR_RESULT = HEADER + (
    b"<dict>\n"
    b"    <key>CommandUUID</key>\n    <string>0002</string>\n"
    b"    <key>ErrorChain</key>\n    <array>\n        <dict>\n"
    b"            <key>ErrorCode</key>\n            <integer>12021</integer>\n"
    b"            <key>ErrorDomain</key>\n            <string>MCMDMErrorDomain</string>\n"
    b"            <key>LocalizedDescription</key>\n"
    b"            <string>Invalid unlock token</string>\n"
    b"        </dict>\n    </array>\n"
    b"    <key>Status</key>\n    <string>Error</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"</dict>\n</plist>\n"
)


def test_authenticate_as_documented() -> None:
    message = protocol.parse_check_in(AUTHENTICATE)
    assert message.message_type is protocol.MessageType.AUTHENTICATE
    assert message.channel == protocol.Channel("00008120-001A2D3E0C12801E")
    assert message.channel.key == "00008120-001A2D3E0C12801E"
    assert message.topic == "com.apple.mgmt.External.2d2e9f5a"
    assert message.values == {
        "BuildVersion": "21E236",
        "OSVersion": "17.4.1",
        "ProductName": "iPhone15,2",
        "SerialNumber": "F2LXK0Z8KPJ1",
    }


def test_the_binary_form_reads_the_same() -> None:
    binary = plistlib.dumps(plistlib.loads(TOKEN_UPDATE), fmt=plistlib.FMT_BINARY)
    assert binary.startswith(b"bplist00")
    assert protocol.parse_check_in(binary) == protocol.parse_check_in(TOKEN_UPDATE)


def test_token_update_as_documented() -> None:
    message = protocol.parse_check_in(TOKEN_UPDATE)
    assert message.message_type is protocol.MessageType.TOKEN_UPDATE
    assert message.values["Token"] == bytes.fromhex("deadbeefcafebabe" * 4)
    assert message.values["PushMagic"] == "4A7F2C1E-9B3D-4E5F-8A6B-1C2D3E4F5A6B"
    assert message.values["UnlockToken"] == b"UnlockToken"
    assert message.values["AwaitingConfiguration"] is False


def test_user_channels_are_kept_apart_from_device_channels() -> None:
    user = protocol.parse_check_in(USER_TOKEN_UPDATE)
    assert user.channel.device == "00008120-001A2D3E0C12801E"
    assert user.channel.user == "3E8C1D4A-7B2F-4C6E-9D1A-5F3B2E8C7D6A"
    assert user.channel.key == f"{user.channel.device}/{user.channel.user}"
    assert user.values["UserShortName"] == "alice"
    user_enrolment = protocol.parse_check_in(USER_ENROLMENT_CHECK_OUT)
    assert user_enrolment.channel == protocol.Channel(
        "5E1A7C2B-4D3F-4A8E-9B6C-2F1E3D4C5B6A", None, user_enrolment=True
    )


def test_reports_as_documented() -> None:
    idle = protocol.parse_report(IDLE)
    assert (idle.status, idle.command_uuid) == (protocol.Status.IDLE, None)
    result = protocol.parse_report(DEVICE_INFORMATION_RESULT)
    assert result.status is protocol.Status.ACKNOWLEDGED
    found = protocol.inventory_from("DeviceInformation", result)
    assert found.columns == {
        "model": "iPhone15,2",
        "os_version": "17.4.1",
        "serial_number": "F2LXK0Z8KPJ1",
    }
    assert found.sections["hardware"] == {
        "model_name": "iPhone",
        "capacity_gb": 128.0,
        "available_gb": 71.52,
        "battery_level": 0.81,
    }
    error = protocol.parse_report(ERROR_RESULT)
    assert protocol.result_summary(error) == {
        "status": "Error",
        "error_chain": [
            {"code": 12021, "domain": "MCMDMErrorDomain", "description": "Invalid unlock token"}
        ],
    }


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "empty"),
        (AUTHENTICATE[:-30], "not a property list"),
        (b"bplist00\x00\x01", "not a property list"),
        (HEADER + b"<array><string>x</string></array></plist>", "not a dictionary"),
        (AUTHENTICATE.replace(b"Authenticate", b"Authenticated"), "unknown MessageType"),
        (AUTHENTICATE.replace(b"<string>Authenticate</string>", b"<true/>"), "wrong type"),
        (AUTHENTICATE.replace(b"<key>Topic</key>", b"<key>Topics</key>"), "Topic"),
        (AUTHENTICATE.replace(b"UDID", b"UUID"), "UDID"),
        (TOKEN_UPDATE.replace(b"<key>PushMagic</key>", b"<key>Magic</key>"), "PushMagic"),
        (TOKEN_UPDATE.replace(b"<false/>", b"<integer>0</integer>"), "wrong type"),
        (
            HEADER.replace(b">\n<plist", b' [<!ENTITY x "TokenUpdate">]>\n<plist')
            + b"<dict><key>MessageType</key><string>&x;</string></dict></plist>",
            "not a property list",
        ),
    ],
)
def test_malformed_check_ins(body: bytes, problem: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.parse_check_in(body)


def test_malformed_reports() -> None:
    with pytest.raises(protocol.ProtocolError, match="CommandUUID"):
        protocol.parse_report(DEVICE_INFORMATION_RESULT.replace(b"CommandUUID", b"CommandID"))
    with pytest.raises(protocol.ProtocolError, match="unknown Status"):
        protocol.parse_report(IDLE.replace(b"Idle", b"Sleeping"))
    with pytest.raises(protocol.ProtocolError, match="ErrorChain"):
        protocol.parse_report(
            ERROR_RESULT.replace(b"<dict>\n            ", b"<string>x</string><dict>", 1)
        )
    with pytest.raises(protocol.ProtocolError, match="QueryResponses"):
        protocol.inventory_from("DeviceInformation", protocol.parse_report(ERROR_RESULT))


def test_commands_carry_their_uuid_and_request_type() -> None:
    body = protocol.build_command("C-1", "DeviceLock", {"Message": "Call us"})
    assert plistlib.loads(body) == {
        "CommandUUID": "C-1",
        "Command": {"RequestType": "DeviceLock", "Message": "Call us"},
    }
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


@pytest.mark.parametrize(
    ("kind", "parameters", "request_type", "values"),
    [
        ("lock", {"message": "m", "phone_number": "+1 555"}, "DeviceLock",
         {"Message": "m", "PhoneNumber": "+1 555"}),
        ("message", {"text": "hi"}, "DeviceLock", {"Message": "hi"}),
        ("unlock", {}, "ClearPasscode", {"UnlockToken": b"t"}),
        ("wipe", {"pin": "123456", "preserve_data_plan": True}, "EraseDevice",
         {"PIN": "123456", "PreserveDataPlan": True}),
        ("enterprise_wipe", {}, "RemoveProfile", {"Identifier": "com.example.emm.acme"}),
        ("locate", {}, "DeviceLocation", {}),
        ("install_application", {"url": "https://apps.example.com/a.plist"},
         "InstallApplication", {"ManifestURL": "https://apps.example.com/a.plist"}),
        ("install_application", {"application_id": "361309726"}, "InstallApplication",
         {"iTunesStoreID": 361309726}),
        ("install_application", {"application_id": "com.example.app"}, "InstallApplication",
         {"Identifier": "com.example.app"}),
        ("remove_application", {"application_id": "com.example.app"}, "RemoveApplication",
         {"Identifier": "com.example.app"}),
    ],
)  # fmt: skip
def test_generic_commands_map_to_apple_commands(
    kind: str, parameters: dict[str, object], request_type: str, values: dict[str, object]
) -> None:
    command = protocol.command_for(
        kind, parameters, unlock_token=b"t", profile_identifier="com.example.emm.acme"
    )
    assert (command.request_type, command.values) == (request_type, values)


def test_commands_a_device_cannot_take() -> None:
    with pytest.raises(protocol.Unsupported):
        protocol.command_for("unlock", {})  # no UnlockToken was sent
    with pytest.raises(protocol.Unsupported):
        protocol.command_for("track", {"duration_minutes": 5, "interval_minutes": 1})


def test_inventory_parts_have_their_own_command_uuids() -> None:
    assert protocol.part_uuid("C", "DeviceInformation") == "C"
    assert protocol.part_uuid("C", "ProfileList") == "C.ProfileList"
    assert protocol.split_uuid("C.ProfileList") == ("C", "ProfileList")
    assert protocol.split_uuid("C") == ("C", None)


@pytest.mark.parametrize(
    ("product", "platform"),
    [("iPhone15,2", "ios"), ("iPad13,4", "ipados"), ("Mac14,2", "macos"), ("AppleTV6,2", "tvos")],
)
def test_platforms(product: str, platform: str) -> None:
    assert protocol.platform_of(product) == platform


# --------------------------------------------------------------------------- CMS


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test CA", key_size=2048)


def test_detached_signatures_verify_and_name_their_signer(ca: CertificateAuthority) -> None:
    certificate, key = ca.issue_client_certificate("device")
    assert key is not None
    signature = cms.sign_detached(IDLE, certificate, key)
    assert cms.verify_detached(signature, IDLE) == certificate
    header = base64.b64encode(signature).decode()
    assert cms.verify_header(header, IDLE) == certificate
    with pytest.raises(cms.SignatureError, match="not over this body"):
        cms.verify_detached(signature, IDLE + b" ")
    tampered = bytearray(signature)
    tampered[-10] ^= 1  # inside the signature value
    with pytest.raises(cms.SignatureError):
        cms.verify_detached(bytes(tampered), IDLE)
    with pytest.raises(cms.SignatureError, match="not detached"):
        cms.verify_detached(cms.sign(IDLE, certificate, key), IDLE)
    for junk in (b"", b"\x30\x80\x00\x00", signature[:-1], signature + b"\x00"):
        with pytest.raises(cms.SignatureError):
            cms.verify_detached(junk, IDLE)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize(
    "options", [["-md", "sha1"], ["-md", "sha256"], ["-noattr"], ["-keyid"], ["-keyid", "-noattr"]]
)
def test_signatures_made_by_openssl(
    tmp_path: Path, ca: CertificateAuthority, options: list[str]
) -> None:
    """Another implementation's SignedData (devices sign with SHA-1 or SHA-256; a signer
    named by its issuer and serial number or by its key identifier)."""
    certificate, key = ca.issue_client_certificate("device")
    assert key is not None
    (tmp_path / "c.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "body").write_bytes(TOKEN_UPDATE)
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-outform", "DER", "-signer", "c.pem",
         "-inkey", "k.pem", "-in", "body", "-out", "sig.der", *options],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    signature = (tmp_path / "sig.der").read_bytes()
    assert cms.verify_detached(signature, TOKEN_UPDATE) == certificate
    with pytest.raises(cms.SignatureError):
        cms.verify_detached(signature, TOKEN_UPDATE.replace(b"alice", b"mallory") + b"x")


# --------------------------------------------------------------------------- profiles


def test_a_profile_openssl_can_verify(tmp_path: Path, ca: CertificateAuthority) -> None:
    server, server_key = ca.issue_server_certificate(["localhost"], [])
    identity, identity_key = ca.issue_client_certificate("device")
    assert identity_key is not None
    profile = mobileconfig.build_profile(
        mobileconfig.EnrolmentProfile(
            identifier="localhost.emm.acme",
            organisation_name="Acme",
            server_url="https://mdm.example.com/mdm/server",
            check_in_url="https://mdm.example.com/mdm/checkin",
            topic="com.apple.mgmt.External.1",
            root=ca.certificate,
            identity=identity,
            identity_key=identity_key,
            identity_password="secret",
        )
    )
    signed = cms.sign(profile, server, server_key)
    content, signer = cms.signed_content(signed)
    assert (content, signer) == (profile, server)
    document = plistlib.loads(content)
    pkcs12_payload = next(
        p for p in document["PayloadContent"] if p["PayloadType"] == "com.apple.security.pkcs12"
    )
    _, certificate, _ = pkcs12.load_key_and_certificates(
        pkcs12_payload["PayloadContent"], b"secret"
    )
    assert certificate == identity
    if shutil.which("openssl"):
        (tmp_path / "p.der").write_bytes(signed)
        (tmp_path / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
        out = subprocess.run(
            ["openssl", "cms", "-verify", "-inform", "DER", "-in", "p.der", "-CAfile", "ca.pem",
             "-purpose", "any"],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip
        assert out.stdout == profile
    payloads = {p["PayloadType"]: p for p in document["PayloadContent"]}
    root = payloads["com.apple.security.root"]["PayloadContent"]
    assert x509.load_der_x509_certificate(root) == ca.certificate


def test_a_plist_nested_too_deep_is_refused() -> None:
    """Far deeper than any device message: refused before anything walks or copies it."""
    inner = "<array>" * (protocol.MAX_PLIST_DEPTH + 1) + "</array>" * (protocol.MAX_PLIST_DEPTH + 1)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
        "<key>UDID</key><string>0000</string><key>Status</key><string>Idle</string>"
        f"<key>Deep</key>{inner}</dict></plist>"
    ).encode()
    with pytest.raises(protocol.ProtocolError, match="nests deeper"):
        protocol.parse_report(body)
    shallow = body.replace(b"<array>", b"", 2).replace(b"</array>", b"", 2)
    assert protocol.parse_report(shallow).status is protocol.Status.IDLE
