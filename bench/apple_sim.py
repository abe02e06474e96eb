"""A simulated Apple device: enrols with an enrolment profile and answers MDM commands.

It does what Apple's documentation says a device does, over real HTTP:

* unwraps the signed profile (checking the signature), finds the MDM payload and the
  PKCS#12 identity it names (``IdentityCertificateUUID``), opens it with its password;
* sends ``Authenticate`` then ``TokenUpdate`` (push token, PushMagic, UnlockToken) to the
  ``CheckInURL``, and ``CheckOut`` on removal; every message is signed with the identity
  (``Mdm-Signature``: base64 CMS SignedData over the body, detached), as ``SignMessage``
  asks;
* when woken, reports ``Idle`` to the ``ServerURL`` and answers each command it gets
  (``Acknowledged`` with the results Apple documents for DeviceInformation, SecurityInfo,
  ProfileList, InstalledApplicationList; or ``NotNow`` for the request types it is told to
  postpone, as a locked device does), until the server answers with an empty body.

The profile's URLs name the service's public URL; ``base_url`` redirects them to where the
service really listens (tests and benches bind free loopback ports).
"""

from __future__ import annotations

import base64
import plistlib
import secrets
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from engine.protocols import cms
from engine.protocols.apple_mdm import CHECK_IN_CONTENT_TYPE, SERVER_CONTENT_TYPE


class Answer(Protocol):
    status_code: int
    content: bytes

    def raise_for_status(self) -> Any: ...


class Client(Protocol):
    """What a device sends its messages with: an ``httpx.AsyncClient`` or, in a bench, the
    leaner :class:`bench.http1.KeepAliveClient`."""

    async def put(self, url: str, *, content: bytes, headers: dict[str, str]) -> Any: ...


@dataclass(frozen=True)
class Enrolment:
    """What a device takes from an enrolment profile."""

    server_url: str
    check_in_url: str
    topic: str
    identity: x509.Certificate
    key: Any
    signer: x509.Certificate  # who signed the profile
    payload: dict[str, Any]


def read_profile(profile: bytes) -> Enrolment:
    content, signer = cms.signed_content(profile)
    document = plistlib.loads(content)
    payloads = {p["PayloadType"]: p for p in document["PayloadContent"]}
    mdm = payloads["com.apple.mdm"]
    identity = next(
        p for p in document["PayloadContent"] if p["PayloadUUID"] == mdm["IdentityCertificateUUID"]
    )
    key, certificate, _ = pkcs12.load_key_and_certificates(
        identity["PayloadContent"], identity["Password"].encode()
    )
    assert certificate is not None and key is not None
    return Enrolment(
        mdm["ServerURL"], mdm["CheckInURL"], mdm["Topic"], certificate, key, signer, document
    )


#: What the simulated device reports about itself.
DEVICE_INFORMATION = {
    "DeviceName": "Simulated iPhone",
    "Model": "MQ9T3",
    "ModelName": "iPhone",
    "ProductName": "iPhone15,2",
    "OSVersion": "17.4.1",
    "BuildVersion": "21E236",
    "DeviceCapacity": 128.0,
    "AvailableDeviceCapacity": 71.5,
    "BatteryLevel": 0.82,
    "IsSupervised": False,
}


@dataclass
class SimulatedDevice:
    enrolment: Enrolment
    base_url: str
    udid: str = field(default_factory=lambda: secrets.token_hex(20).upper())
    serial_number: str = field(default_factory=lambda: "F" + secrets.token_hex(5).upper())
    push_token: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    push_magic: str = field(default_factory=lambda: secrets.token_hex(16).upper())
    unlock_token: bytes = field(default_factory=lambda: secrets.token_bytes(64))
    #: Request types answered with NotNow (a locked device postpones some commands).
    not_now: set[str] = field(default_factory=set)
    #: False: no Mdm-Signature; the TLS client certificate proves the identity instead
    #: (``SignMessage`` false; the client must then present ``identity_files``).
    sign_messages: bool = True
    #: Every command received, in order: (CommandUUID, RequestType, Command).
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _url(self, url: str) -> str:
        return self.base_url.rstrip("/") + urlsplit(url).path

    def signed(self, body: bytes) -> dict[str, str]:
        signature = cms.sign_detached(body, self.enrolment.identity, self.enrolment.key)
        return {"Mdm-Signature": base64.b64encode(signature).decode()}

    async def put(
        self, client: Client, url: str, message: dict[str, Any], content_type: str
    ) -> Any:
        body = plistlib.dumps(message)
        headers = {"Content-Type": content_type}
        if self.sign_messages:
            headers.update(self.signed(body))
        return await client.put(self._url(url), content=body, headers=headers)

    def tls_context(self, ca_file: str) -> ssl.SSLContext:
        """TLS with the identity as client certificate (for devices that do not sign)."""
        context = ssl.create_default_context(cafile=ca_file)
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
            pem.write(self.enrolment.identity.public_bytes(serialization.Encoding.PEM))
            pem.write(
                self.enrolment.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            pem.flush()
            context.load_cert_chain(pem.name)
        return context

    async def check_in(self, client: httpx.AsyncClient, message: dict[str, Any]) -> httpx.Response:
        return await self.put(
            client,
            self.enrolment.check_in_url,
            {"UDID": self.udid, **message},
            CHECK_IN_CONTENT_TYPE,
        )

    async def enrol(self, client: httpx.AsyncClient) -> None:
        """Authenticate, then the first TokenUpdate, as a device installing the profile."""
        answer = await self.check_in(
            client,
            {
                "MessageType": "Authenticate",
                "Topic": self.enrolment.topic,
                "BuildVersion": DEVICE_INFORMATION["BuildVersion"],
                "OSVersion": DEVICE_INFORMATION["OSVersion"],
                "ProductName": DEVICE_INFORMATION["ProductName"],
                "SerialNumber": self.serial_number,
                "DeviceName": DEVICE_INFORMATION["DeviceName"],
            },
        )
        answer.raise_for_status()
        answer = await self.token_update(client)
        answer.raise_for_status()

    async def token_update(self, client: httpx.AsyncClient) -> httpx.Response:
        return await self.check_in(
            client,
            {
                "MessageType": "TokenUpdate",
                "Topic": self.enrolment.topic,
                "Token": self.push_token,
                "PushMagic": self.push_magic,
                "UnlockToken": self.unlock_token,
                "AwaitingConfiguration": False,
            },
        )

    async def check_out(self, client: httpx.AsyncClient) -> httpx.Response:
        return await self.check_in(
            client, {"MessageType": "CheckOut", "Topic": self.enrolment.topic}
        )

    async def report(self, client: Client, message: dict[str, Any]) -> dict | None:
        """One report to the server URL; the command it answers with, or None."""
        response = await self.put(
            client, self.enrolment.server_url, {"UDID": self.udid, **message}, SERVER_CONTENT_TYPE
        )
        response.raise_for_status()
        if not response.content:
            return None
        command = plistlib.loads(response.content)
        self.received.append(
            (command["CommandUUID"], command["Command"]["RequestType"], command["Command"])
        )
        return command

    def answer(self, command: dict[str, Any]) -> dict[str, Any]:
        """The report a device sends for ``command``, as Apple documents the results."""
        uuid = command["CommandUUID"]
        body = command["Command"]
        request_type = body["RequestType"]
        if request_type in self.not_now:
            return {"Status": "NotNow", "CommandUUID": uuid}
        result: dict[str, Any] = {"Status": "Acknowledged", "CommandUUID": uuid}
        if request_type == "DeviceInformation":
            known = {**DEVICE_INFORMATION, "SerialNumber": self.serial_number, "UDID": self.udid}
            result["QueryResponses"] = {q: known[q] for q in body["Queries"] if q in known}
        elif request_type == "SecurityInfo":
            result["SecurityInfo"] = {
                "HardwareEncryptionCaps": 3,
                "PasscodePresent": True,
                "PasscodeCompliant": True,
            }
        elif request_type == "ProfileList":
            result["ProfileList"] = [
                {
                    "PayloadIdentifier": self.enrolment.payload["PayloadIdentifier"],
                    "PayloadDisplayName": self.enrolment.payload["PayloadDisplayName"],
                    "PayloadRemovalDisallowed": False,
                }
            ]
        elif request_type == "InstalledApplicationList":
            result["InstalledApplicationList"] = [
                {"Identifier": "com.example.app", "Name": "Example", "ShortVersion": "1.2"}
            ]
        elif request_type == "ClearPasscode" and body.get("UnlockToken") != self.unlock_token:
            return {
                "Status": "Error",
                "CommandUUID": uuid,
                "ErrorChain": [
                    {
                        "ErrorCode": 12021,
                        "ErrorDomain": "MCMDMErrorDomain",
                        "LocalizedDescription": "Invalid unlock token",
                    }
                ],
            }
        return result

    async def poll(self, client: Client) -> list[str]:
        """What a device does when pushed: Idle, then answer commands until none is left.

        Returns the RequestTypes received in this session.
        """
        seen: list[str] = []
        command = await self.report(client, {"Status": "Idle"})
        while command is not None:
            seen.append(command["Command"]["RequestType"])
            command = await self.report(client, self.answer(command))
        return seen


async def enrol_devices(
    client: httpx.AsyncClient, profiles: Iterable[bytes], base_url: str
) -> list[SimulatedDevice]:
    devices = [SimulatedDevice(read_profile(profile), base_url) for profile in profiles]
    for device in devices:
        await device.enrol(client)
    return devices
