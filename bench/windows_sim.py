"""A Windows enrolment client simulator: discovery → policy → enrolment, as Windows does it.

It sends the SOAP messages Windows' enrolment client sends (the shapes of Microsoft's
published samples), with a real RSA key and PKCS#10 made with ``cryptography``, reads the
``wap-provisioningdoc`` it gets back, and checks the issued certificate chains to the root
the document installs. :meth:`SimulatedWindows.renew` renews the way ROBO does (a new
PKCS#10 in a PKCS#7 signed with the current certificate).

Used by the tests and the enrolment bench, and meant for the OMA DM session work: an
:class:`Enrolment` holds the key, certificate, management URL and provider id a session
needs.

The service tells devices its public URLs (``public_url`` in the bootstrap file); a test
service listens elsewhere (an ephemeral loopback port), so every URL the service hands out
is followed at ``base_url`` with its own path and query, as a DNS override would.
"""

from __future__ import annotations

import base64
import datetime as dt
import html.parser
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from lxml import etree

from engine.protocols import windows_enrolment as wire

SOAP_TYPE = "application/soap+xml; charset=utf-8"
APP_RETURN = "ms-app://windows.immersivecontrolpanel"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class EnrolmentFailed(Exception):
    """The service answered with a SOAP fault (``subcode``, ``reason``) or something odd."""

    def __init__(self, status: int, subcode: str | None, reason: str, error_type: str | None):
        super().__init__(f"{status} {subcode}: {reason}")
        self.status = status
        self.subcode = subcode
        self.reason = reason
        self.error_type = error_type


@dataclass
class Enrolment:
    """What a Windows device keeps after enrolling."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    root: x509.Certificate
    management_url: str
    provider_id: str
    device_id: str
    poll_minutes: int
    document: etree._Element = field(repr=False)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_request(key: rsa.RSAPrivateKey, subject: str = "") -> bytes:
    """A DER PKCS#10 like Windows' (its subject is replaced by the service anyway)."""
    name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]) if subject else x509.Name([])
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def _header(action: str, to: str, security: str = "") -> str:
    return (
        f'<s:Header><a:Action s:mustUnderstand="1">{action}</a:Action>'
        f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>"
        "<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address>"
        f'</a:ReplyTo><a:To s:mustUnderstand="1">{to}</a:To>{security}</s:Header>'
    )


_NAMESPACES = (
    f'xmlns:s="{wire.SOAP}" xmlns:a="{wire.ADDRESSING}" xmlns:u="{wire.WSU}"'
    f' xmlns:wsse="{wire.WSSE}" xmlns:wst="{wire.WST}" xmlns:ac="{wire.AUTHORIZATION}"'
)
_ENVELOPE = f"<s:Envelope {_NAMESPACES}>{{header}}<s:Body>{{body}}</s:Body></s:Envelope>"


def discover_message(email: str, to: str) -> bytes:
    body = (
        f'<Discover xmlns="{wire.DISCOVERY}/"><request'
        ' xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        f"<EmailAddress>{email}</EmailAddress><RequestVersion>4.0</RequestVersion>"
        "<DeviceType>CIMClient_Windows</DeviceType><ApplicationVersion>10.0.19045.0"
        "</ApplicationVersion><OSEdition>48</OSEdition><AuthPolicies>"
        "<AuthPolicy>OnPremise</AuthPolicy><AuthPolicy>Federated</AuthPolicy>"
        "</AuthPolicies></request></Discover>"
    )
    return _ENVELOPE.format(header=_header(wire.ACTION_DISCOVER, to), body=body).encode()


def security_header(username: str | None, password: str | None, token: str | None) -> str:
    if token is not None:
        encoded = base64.b64encode(token.encode()).decode()
        return (
            '<wsse:Security s:mustUnderstand="1"><wsse:BinarySecurityToken'
            f' ValueType="{wire.USER_TOKEN}" EncodingType="{wire.BASE64_BINARY}">'
            f"{encoded}</wsse:BinarySecurityToken></wsse:Security>"
        )
    if username is None:
        return ""
    return (
        '<wsse:Security s:mustUnderstand="1"><wsse:UsernameToken u:Id="uuid-1">'
        f"<wsse:Username>{username}</wsse:Username>"
        f'<wsse:Password wsse:Type="{wire.PASSWORD_TEXT}">{password or ""}</wsse:Password>'
        "</wsse:UsernameToken></wsse:Security>"
    )


def get_policies_message(to: str, security: str) -> bytes:
    body = (
        f'<GetPolicies xmlns="{wire.XCEP}"><client><lastUpdate xsi:nil="true"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><preferredLanguage'
        ' xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></client>'
        '<requestFilter xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
        "</GetPolicies>"
    )
    return _ENVELOPE.format(
        header=_header(wire.ACTION_GET_POLICIES, to, security), body=body
    ).encode()


def token_request_message(
    to: str,
    security: str,
    request: bytes,
    *,
    value_type: str = wire.PKCS10,
    renew: bool = False,
    context: dict[str, str] | None = None,
) -> bytes:
    items = "".join(
        f'<ac:ContextItem Name="{name}"><ac:Value>{value}</ac:Value></ac:ContextItem>'
        for name, value in (context or {}).items()
    )
    body = (
        f"<wst:RequestSecurityToken><wst:TokenType>{wire.TOKEN_TYPE}</wst:TokenType>"
        f"<wst:RequestType>{wire.RENEW if renew else wire.ISSUE}</wst:RequestType>"
        f'<wsse:BinarySecurityToken ValueType="{value_type}"'
        f' EncodingType="{wire.BASE64_BINARY}">{base64.b64encode(request).decode()}'
        f"</wsse:BinarySecurityToken><ac:AdditionalContext>{items}</ac:AdditionalContext>"
        "</wst:RequestSecurityToken>"
    )
    return _ENVELOPE.format(header=_header(wire.ACTION_RST, to, security), body=body).encode()


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def parse_answer(response: httpx.Response) -> etree._Element:
    """The body element of a SOAP answer; :class:`EnrolmentFailed` for a fault."""
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("application/soap+xml"):
        raise EnrolmentFailed(response.status_code, None, f"not SOAP: {content_type}", None)
    root = etree.fromstring(response.content, _PARSER)
    body = root.find(_q(wire.SOAP, "Body"))
    assert body is not None and len(body) == 1
    answer = body[0]
    if answer.tag == _q(wire.SOAP, "Fault"):
        subcode = answer.findtext(
            f"{_q(wire.SOAP, 'Code')}/{_q(wire.SOAP, 'Subcode')}/{_q(wire.SOAP, 'Value')}"
        )
        reason = answer.findtext(f"{_q(wire.SOAP, 'Reason')}/{_q(wire.SOAP, 'Text')}") or ""
        error_type = answer.findtext(f".//{_q(wire.WSTEP, 'ErrorType')}")
        raise EnrolmentFailed(response.status_code, subcode, reason, error_type)
    return answer


class _FormReader(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.inputs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action")
        if tag == "input" and "name" in values:
            self.inputs[values["name"]] = values.get("value", "")


@dataclass
class SimulatedWindows:
    """One Windows machine: its hardware id and name, talking to the service at base_url."""

    client: httpx.AsyncClient
    base_url: str
    hardware_id: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    device_name: str = "DESKTOP-SIM"
    enrolment_type: str = "Full"

    def _local(self, url: str) -> str:
        parts = urlsplit(url)
        return self.base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")

    async def _post(self, url: str, message: bytes) -> etree._Element:
        response = await self.client.post(
            self._local(url), content=message, headers={"Content-Type": SOAP_TYPE}
        )
        return parse_answer(response)

    async def discover(self, email: str) -> dict[str, str]:
        url = "https://enterpriseenrollment.example/EnrollmentServer/Discovery.svc"
        probe = await self.client.get(self._local(url))
        if probe.status_code != 200:
            raise EnrolmentFailed(probe.status_code, None, "discovery probe failed", None)
        answer = await self._post(url, discover_message(email, url))
        result = answer.find(_q(wire.DISCOVERY, "DiscoverResult"))
        assert result is not None
        return {etree.QName(child).localname: (child.text or "").strip() for child in result}

    async def federated_token(self, auth_url: str, email: str, password: str) -> str:
        query = urlencode({"appru": APP_RETURN, "login_hint": email})
        page = await self.client.get(self._local(f"{auth_url}?{query}"))
        form = _FormReader()
        form.feed(page.text)
        fields = form.inputs | {"username": email, "password": password}
        login_url = self._local(auth_url)
        answer = await self.client.post(login_url, data=fields)
        result = _FormReader()
        result.feed(answer.text)
        if (
            answer.status_code != 200
            or result.action != APP_RETURN
            or "wresult" not in result.inputs
        ):
            raise EnrolmentFailed(answer.status_code, "s:Authentication", "sign-in refused", None)
        return result.inputs["wresult"]

    def _context(self) -> dict[str, str]:
        return {
            "UXInitiated": "true",
            "HWDevID": self.hardware_id,
            "Locale": "en-US",
            "TargetedUserLoggedIn": "true",
            "OSEdition": "48",
            "DeviceName": self.device_name,
            "MAC": "00-15-5D-00-00-01",
            "DeviceID": self.hardware_id.replace("-", ""),
            "EnrollmentType": self.enrolment_type,
            "DeviceType": "CIMClient_Windows",
            "OSVersion": "10.0.19045.2006",
            "ApplicationVersion": "10.0.19045.2006",
        }

    async def enrol(
        self,
        email: str,
        password: str,
        *,
        key: rsa.RSAPrivateKey | None = None,
        subject: str = "",
        wrap_in_pkcs7: bool = False,
    ) -> Enrolment:
        """Discovery → GetPolicies → RequestSecurityToken; checks what comes back."""
        urls = await self.discover(email)
        token = None
        if urls["AuthPolicy"] == wire.AuthPolicy.FEDERATED:
            token = await self.federated_token(urls["AuthenticationServiceUrl"], email, password)
        security = security_header(email, password, token)
        policy_url, enrol_url = urls["EnrollmentPolicyServiceUrl"], urls["EnrollmentServiceUrl"]
        policies = await self._post(policy_url, get_policies_message(policy_url, security))
        length = policies.findtext(f".//{_q(wire.XCEP, 'minimalKeyLength')}")
        assert length is not None and int(length) <= 2048
        key = key or new_key()
        request = certificate_request(key, subject)
        value_type = wire.PKCS10
        if wrap_in_pkcs7:
            # Windows may wrap the request in a PKCS#7 signed by a self-signed certificate.
            request = _self_signed_pkcs7(key, request)
            value_type = next(iter(sorted(wire.PKCS7_VALUE_TYPES)))
        message = token_request_message(
            enrol_url, security, request, value_type=value_type, context=self._context()
        )
        answer = await self._post(enrol_url, message)
        return _read_token_response(answer, key)

    async def renew(self, enrolment: Enrolment, enrol_url: str) -> Enrolment:
        """ROBO renewal: a new key, its PKCS#10 signed into a PKCS#7 with the current pair."""
        key = new_key()
        signed = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(certificate_request(key))
            .add_signer(enrolment.certificate, enrolment.key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
        message = token_request_message(
            enrol_url,
            security_header("", "", None),
            signed,
            value_type=f"{wire.WSSE}#PKCS7",
            renew=True,
            context={"DeviceType": "CIMClient_Windows", "ApplicationVersion": "10.0.19045.0"},
        )
        answer = await self._post(enrol_url, message)
        renewed = _read_token_response(answer, key, renewal=True)
        renewed.management_url = enrolment.management_url
        renewed.provider_id = enrolment.provider_id
        renewed.device_id = enrolment.device_id
        renewed.poll_minutes = enrolment.poll_minutes
        return renewed


def _self_signed_pkcs7(key: rsa.RSAPrivateKey, request: bytes) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    moment = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - dt.timedelta(minutes=1))
        .not_valid_after(moment + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(request)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def _read_token_response(
    answer: etree._Element, key: rsa.RSAPrivateKey, *, renewal: bool = False
) -> Enrolment:
    assert answer.tag == _q(wire.WST, "RequestSecurityTokenResponseCollection")
    token = answer.find(f".//{_q(wire.WSSE, 'BinarySecurityToken')}")
    assert token is not None and token.get("ValueType") == wire.PROVISION_DOC
    document = etree.fromstring(base64.b64decode(token.text or ""), _PARSER)
    return read_provisioning(document, key, renewal=renewal)


def _characteristic(parent: etree._Element, kind: str) -> etree._Element | None:
    return next((c for c in parent.findall("characteristic") if c.get("type") == kind), None)


def _parms(element: etree._Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in element.findall("parm")}


def read_provisioning(
    document: etree._Element, key: rsa.RSAPrivateKey, *, renewal: bool = False
) -> Enrolment:
    """Read a ``wap-provisioningdoc`` as the CSPs would, checking it holds together."""
    assert document.tag == "wap-provisioningdoc"
    store = _characteristic(document, "CertificateStore")
    assert store is not None
    root_system = _characteristic(_characteristic(store, "Root"), "System")  # type: ignore[arg-type]
    assert root_system is not None and len(root_system) == 1
    root = x509.load_der_x509_certificate(
        base64.b64decode(_parms(root_system[0])["EncodedCertificate"])
    )
    assert root_system[0].get("type") == root.fingerprint(hashes.SHA1()).hex().upper()
    my = _characteristic(store, "My")
    assert my is not None
    mine = next(c for c in my if c.get("type") in ("User", "System"))
    holder = next(c for c in mine if c.get("type") != "PrivateKeyContainer")
    certificate = x509.load_der_x509_certificate(
        base64.b64decode(_parms(holder)["EncodedCertificate"])
    )
    assert holder.get("type") == certificate.fingerprint(hashes.SHA1()).hex().upper()
    certificate.verify_directly_issued_by(root)
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    application = _characteristic(document, "APPLICATION")
    assert application is not None
    app = _parms(application)
    if renewal:
        return Enrolment(key, certificate, root, "", app["PROVIDER-ID"], "", 0, document)
    assert app["APPID"] == "w7"
    dm_client = _characteristic(_characteristic(document, "DMClient"), "Provider")  # type: ignore[arg-type]
    assert dm_client is not None
    provider = _characteristic(dm_client, app["PROVIDER-ID"])
    assert provider is not None
    poll = _characteristic(provider, "Poll")
    assert poll is not None
    return Enrolment(
        key=key,
        certificate=certificate,
        root=root,
        management_url=app["ADDR"],
        provider_id=app["PROVIDER-ID"],
        device_id=_parms(provider)["EntDMID"],
        poll_minutes=int(_parms(poll)["IntervalForRemainingScheduledRetries"]),
        document=document,
    )


def timed_keys(count: int) -> tuple[list[rsa.RSAPrivateKey], float]:
    """``count`` fresh keys and the seconds their generation took (the device's share)."""
    started = time.perf_counter()
    keys = [new_key() for _ in range(count)]
    return keys, time.perf_counter() - started
