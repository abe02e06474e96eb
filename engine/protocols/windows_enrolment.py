"""Microsoft's Windows enrolment protocols (MS-MDE2 with MS-XCEP and MS-WSTEP), sans-IO.

A Windows device enrols in three SOAP 1.2 round trips, each answered here as bytes:

1. **Discovery** (MS-MDE2 3.1): ``Discover`` with the user's e-mail address and the auth
   policies the client supports → ``DiscoverResponse`` with the auth policy chosen
   (``OnPremise``: user name and password in a WS-Security ``UsernameToken``; ``Federated``:
   a token from the service's login page in a ``BinarySecurityToken``), the enrolment
   policy service URL (MS-XCEP) and the enrolment service URL (MS-WSTEP).
2. **Policy** (MS-XCEP ``GetPolicies``) → one certificate policy: minimum key length,
   hash algorithm, validity and renewal period.
3. **Enrolment** (MS-WSTEP ``RequestSecurityToken`` with a PKCS#10, or for renewal a PKCS#7
   wrapping one) → ``RequestSecurityTokenResponseCollection`` whose token is a
   ``wap-provisioningdoc``: the CA certificate for the root store, the client certificate,
   the w7 APPLICATION CSP (management server address) and the DMClient CSP (poll schedule).

Errors are SOAP faults with the subcodes of MS-MDE2 2.2.10 (:class:`Fault`).

Parsing is hardened: the body is size-bounded, a DOCTYPE is refused before parsing, and lxml
resolves no entities, loads no DTD and touches no network. Element names are matched by
namespace, never by prefix, because clients choose their prefixes freely.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from lxml import etree

__all__ = [
    "MAX_ENVELOPE",
    "AuthPolicy",
    "Credentials",
    "DiscoverRequest",
    "Envelope",
    "ErrorType",
    "Fault",
    "Provisioning",
    "Subcode",
    "TokenRequest",
    "discover_response",
    "fault_response",
    "get_policies_response",
    "parse_discover",
    "parse_envelope",
    "parse_get_policies",
    "parse_token_request",
    "provisioning_document",
    "token_response",
]

# --------------------------------------------------------------------------- vocabulary

SOAP = "http://www.w3.org/2003/05/soap-envelope"
ADDRESSING = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
WST = "http://docs.oasis-open.org/ws-sx/ws-trust/200512"
AUTHORIZATION = "http://schemas.xmlsoap.org/ws/2006/12/authorization"
DISCOVERY = "http://schemas.microsoft.com/windows/management/2012/01/enrollment"
XCEP = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"
WSTEP = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

ACTION_DISCOVER = f"{DISCOVERY}/IDiscoveryService/Discover"
ACTION_DISCOVER_RESPONSE = f"{DISCOVERY}/IDiscoveryService/DiscoverResponse"
ACTION_GET_POLICIES = f"{XCEP}/IPolicy/GetPolicies"
ACTION_GET_POLICIES_RESPONSE = f"{XCEP}/IPolicy/GetPoliciesResponse"
ACTION_RST = f"{WSTEP}/RST/wstep"
ACTION_RSTRC = f"{WSTEP}/RSTRC/wstep"
ACTION_FAULT = f"{ADDRESSING}/soap/fault"

TOKEN_TYPE = (
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken"
)
PROVISION_DOC = "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc"
USER_TOKEN = (
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken"
)
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
BASE64_BINARY = f"{WSSE}#base64binary"
#: ValueTypes of the certificate request: a bare PKCS#10 (MS-WSTEP) or one inside a PKCS#7.
PKCS10 = f"{WSTEP}#PKCS10"
PKCS7_VALUE_TYPES = frozenset({f"{WSSE}#PKCS7", f"{WSTEP}#PKCS7"})
ISSUE = f"{WST}/Issue"
RENEW = f"{WST}/Renew"

#: Generous for a SOAP envelope with a 4096-bit PKCS#7 renewal request (a few KiB).
MAX_ENVELOPE = 256 * 1024

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    huge_tree=False,
    load_dtd=False,
    dtd_validation=False,
    remove_comments=True,
    remove_pis=True,
)


class AuthPolicy(StrEnum):
    ON_PREMISE = "OnPremise"
    FEDERATED = "Federated"
    CERTIFICATE = "Certificate"


class Subcode(StrEnum):
    """MS-MDE2 2.2.10 fault subcodes; the prefix is the namespace the spec puts them in."""

    MESSAGE_FORMAT = "s:MessageFormat"
    AUTHENTICATION = "s:Authentication"
    AUTHORIZATION = "s:Authorization"
    CERTIFICATE_REQUEST = "s:CertificateRequest"
    ENROLLMENT_SERVER = "s:EnrollmentServer"
    INTERNAL_SERVICE_FAULT = "a:InternalServiceFault"
    INVALID_SECURITY = "a:InvalidSecurity"


class ErrorType(StrEnum):
    """MS-MDE2 2.2.10 ``DeviceEnrollmentServiceError`` error types (detail of a fault)."""

    DEVICE_CAP_REACHED = "DeviceCapReached"
    DEVICE_NOT_SUPPORTED = "DeviceNotSupported"
    NOT_SUPPORTED = "NotSupported"
    NOT_ELIGIBLE_TO_RENEW = "NotEligibleToRenew"
    IN_MAINTENANCE = "InMaintenance"
    USER_LICENSE = "UserLicense"
    INVALID_ENROLLMENT_DATA = "InvalidEnrollmentData"


class Fault(Exception):
    """A request the service declines; :func:`fault_response` turns it into a SOAP fault."""

    def __init__(
        self, subcode: Subcode, reason: str, *, error_type: ErrorType | None = None
    ) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.error_type = error_type


def _malformed(reason: str) -> Fault:
    return Fault(Subcode.MESSAGE_FORMAT, reason)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Credentials:
    """What the WS-Security header carried: a user name and password, or a token."""

    username: str | None = None
    password: str | None = None
    token: bytes | None = None
    token_type: str | None = None


@dataclass(frozen=True)
class Envelope:
    action: str
    message_id: str | None
    to: str | None
    credentials: Credentials
    body: etree._Element = field(repr=False)


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip()


def parse_envelope(data: bytes) -> Envelope:
    """Parse a SOAP 1.2 envelope: WS-Addressing headers, WS-Security credentials, body."""
    if len(data) > MAX_ENVELOPE:
        raise _malformed(f"the message exceeds {MAX_ENVELOPE} bytes")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise _malformed("document type declarations are not accepted")
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise _malformed(f"not well-formed XML: {exc}") from None
    if root.tag != _q(SOAP, "Envelope"):
        raise _malformed("not a SOAP 1.2 envelope")
    header = root.find(_q(SOAP, "Header"))
    body = root.find(_q(SOAP, "Body"))
    if header is None or body is None or len(body) != 1:
        raise _malformed("the envelope needs a header and a body with one element")
    action = _text(header.find(_q(ADDRESSING, "Action")))
    if not action:
        raise _malformed("no WS-Addressing Action")
    return Envelope(
        action=action,
        message_id=_text(header.find(_q(ADDRESSING, "MessageID"))),
        to=_text(header.find(_q(ADDRESSING, "To"))),
        credentials=_credentials(header.find(_q(WSSE, "Security"))),
        body=body[0],
    )


def _credentials(security: etree._Element | None) -> Credentials:
    if security is None:
        return Credentials()
    username_token = security.find(_q(WSSE, "UsernameToken"))
    if username_token is not None:
        password = username_token.find(_q(WSSE, "Password"))
        if password is not None and password.get("Type", PASSWORD_TEXT) != PASSWORD_TEXT:
            raise Fault(Subcode.INVALID_SECURITY, "only PasswordText passwords are supported")
        return Credentials(
            username=_text(username_token.find(_q(WSSE, "Username"))),
            # A password is taken as sent: leading or trailing blanks may be part of it.
            password=password.text if password is not None and password.text else None,
        )
    token = security.find(_q(WSSE, "BinarySecurityToken"))
    if token is not None:
        return Credentials(token=_base64(token), token_type=token.get("ValueType"))
    return Credentials()


def _base64(element: etree._Element) -> bytes:
    encoding = element.get("EncodingType", BASE64_BINARY)
    if encoding.lower() != BASE64_BINARY.lower():
        raise _malformed(f"unsupported EncodingType {encoding}")
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("a BinarySecurityToken is not valid base64") from None


def _require_action(envelope: Envelope, action: str) -> None:
    if envelope.action != action:
        raise _malformed(f"this service answers {action}, not {envelope.action}")


@dataclass(frozen=True)
class DiscoverRequest:
    email_address: str
    request_version: str | None
    device_type: str | None
    application_version: str | None
    os_edition: str | None
    auth_policies: tuple[str, ...]


def parse_discover(envelope: Envelope) -> DiscoverRequest:
    """MS-MDE2 3.1.4.1.1.1 ``Discover``; the namespace is accepted with or without the
    trailing slash Microsoft's own samples carry."""
    _require_action(envelope, ACTION_DISCOVER)
    body = envelope.body
    namespace = etree.QName(body).namespace or ""
    if etree.QName(body).localname != "Discover" or namespace.rstrip("/") != DISCOVERY:
        raise _malformed("the body is not a Discover request")
    request = body.find(_q(namespace, "request"))
    if request is None:
        raise _malformed("Discover has no request")

    def value(name: str) -> str | None:
        return _text(request.find(_q(namespace, name)))

    email = value("EmailAddress")
    if not email:
        raise _malformed("Discover has no EmailAddress")
    policies = request.find(_q(namespace, "AuthPolicies"))
    names = (
        tuple(t for p in policies.findall(_q(namespace, "AuthPolicy")) if (t := _text(p)))
        if policies is not None
        else ()
    )
    return DiscoverRequest(
        email_address=email,
        request_version=value("RequestVersion"),
        device_type=value("DeviceType"),
        application_version=value("ApplicationVersion"),
        os_edition=value("OSEdition"),
        auth_policies=names,
    )


def parse_get_policies(envelope: Envelope) -> None:
    """MS-XCEP ``GetPolicies``: nothing in it changes the answer (one policy for all)."""
    _require_action(envelope, ACTION_GET_POLICIES)
    if envelope.body.tag != _q(XCEP, "GetPolicies"):
        raise _malformed("the body is not a GetPolicies request")


@dataclass(frozen=True)
class TokenRequest:
    """MS-WSTEP ``RequestSecurityToken``: the request, its kind, and the client's context."""

    renewal: bool
    value_type: str
    request: bytes  # DER: PKCS#10, or PKCS#7 per value_type
    context: Mapping[str, tuple[str, ...]]

    @property
    def wrapped(self) -> bool:
        return self.value_type in PKCS7_VALUE_TYPES

    def first(self, name: str) -> str | None:
        values = self.context.get(name)
        return values[0] if values else None


def parse_token_request(envelope: Envelope) -> TokenRequest:
    _require_action(envelope, ACTION_RST)
    body = envelope.body
    if body.tag != _q(WST, "RequestSecurityToken"):
        raise _malformed("the body is not a RequestSecurityToken")
    token_type = _text(body.find(_q(WST, "TokenType")))
    if token_type != TOKEN_TYPE:
        raise _malformed(f"unsupported TokenType {token_type}")
    request_type = _text(body.find(_q(WST, "RequestType")))
    if request_type not in (ISSUE, RENEW):
        raise _malformed(f"unsupported RequestType {request_type}")
    token = body.find(_q(WSSE, "BinarySecurityToken"))
    if token is None:
        raise _malformed("no BinarySecurityToken with a certificate request")
    value_type = token.get("ValueType", "")
    if value_type != PKCS10 and value_type not in PKCS7_VALUE_TYPES:
        raise _malformed(f"unsupported ValueType {value_type}")
    request = _base64(token)
    # Manual renewal base64-encodes the PKCS#7 once more ("Certificate renewal", Microsoft);
    # DER never starts with a base64 letter, so one more decoding is unambiguous.
    if request[:1] not in (b"\x30", b"") and value_type in PKCS7_VALUE_TYPES:
        try:
            request = base64.b64decode(b"".join(request.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("the PKCS#7 request is not DER") from None
    context: dict[str, list[str]] = {}
    additional = body.find(_q(AUTHORIZATION, "AdditionalContext"))
    if additional is not None:
        for item in additional.findall(_q(AUTHORIZATION, "ContextItem")):
            name = item.get("Name")
            if name:
                context.setdefault(name, []).append(
                    _text(item.find(_q(AUTHORIZATION, "Value"))) or ""
                )
    return TokenRequest(
        renewal=request_type == RENEW,
        value_type=value_type,
        request=request,
        context={name: tuple(values) for name, values in context.items()},
    )


# --------------------------------------------------------------------------- building


def _envelope(action: str, relates_to: str | None) -> tuple[etree._Element, etree._Element]:
    root = etree.Element(_q(SOAP, "Envelope"), nsmap={"s": SOAP, "a": ADDRESSING})
    header = etree.SubElement(root, _q(SOAP, "Header"))
    action_element = etree.SubElement(header, _q(ADDRESSING, "Action"))
    action_element.set(_q(SOAP, "mustUnderstand"), "1")
    action_element.text = action
    activity = etree.SubElement(header, "ActivityId")
    activity.text = str(uuid.uuid4())
    if relates_to:
        etree.SubElement(header, _q(ADDRESSING, "RelatesTo")).text = relates_to
    body = etree.SubElement(root, _q(SOAP, "Body"))
    return root, body


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def _nil(parent: etree._Element, tag: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.set(_q(XSI, "nil"), "true")
    return element


def discover_response(
    relates_to: str | None,
    *,
    auth_policy: AuthPolicy,
    policy_service_url: str,
    enrolment_service_url: str,
    authentication_service_url: str | None = None,
    enrolment_version: str = "4.0",
) -> bytes:
    """MS-MDE2 3.1.4.1.1.2 ``DiscoverResponse``."""
    root, body = _envelope(ACTION_DISCOVER_RESPONSE, relates_to)
    response = etree.SubElement(body, _q(DISCOVERY, "DiscoverResponse"), nsmap={None: DISCOVERY})
    result = _sub(response, _q(DISCOVERY, "DiscoverResult"))
    _sub(result, _q(DISCOVERY, "AuthPolicy"), auth_policy.value)
    _sub(result, _q(DISCOVERY, "EnrollmentVersion"), enrolment_version)
    _sub(result, _q(DISCOVERY, "EnrollmentPolicyServiceUrl"), policy_service_url)
    _sub(result, _q(DISCOVERY, "EnrollmentServiceUrl"), enrolment_service_url)
    if auth_policy is AuthPolicy.FEDERATED:
        if not authentication_service_url:
            raise ValueError("Federated needs an AuthenticationServiceUrl")
        _sub(result, _q(DISCOVERY, "AuthenticationServiceUrl"), authentication_service_url)
    return _serialise(root)


#: SHA-256 in MS-XCEP's OID table (group 1: hash algorithms).
_SHA256_OID = "2.16.840.1.101.3.4.2.1"


def get_policies_response(
    relates_to: str | None,
    *,
    policy_id: str,
    name: str,
    minimal_key_length: int,
    validity: dt.timedelta,
    renewal: dt.timedelta,
) -> bytes:
    """MS-XCEP 3.1.4.1.1.2 ``GetPoliciesResponse`` with the one policy the service issues."""
    root, body = _envelope(ACTION_GET_POLICIES_RESPONSE, relates_to)
    answer = etree.SubElement(body, _q(XCEP, "GetPoliciesResponse"), nsmap={None: XCEP, "xsi": XSI})
    response = _sub(answer, _q(XCEP, "response"))
    _sub(response, _q(XCEP, "policyID"), policy_id)
    _nil(response, _q(XCEP, "policyFriendlyName"))
    _nil(response, _q(XCEP, "nextUpdateHours"))
    _nil(response, _q(XCEP, "policiesNotChanged"))
    policy = _sub(_sub(response, _q(XCEP, "policies")), _q(XCEP, "policy"))
    _sub(policy, _q(XCEP, "policyOIDReference"), "0")
    _nil(policy, _q(XCEP, "cAs"))
    attributes = _sub(policy, _q(XCEP, "attributes"))
    _sub(attributes, _q(XCEP, "commonName"), name)
    _sub(attributes, _q(XCEP, "policySchema"), "3")
    validity_element = _sub(attributes, _q(XCEP, "certificateValidity"))
    _sub(validity_element, _q(XCEP, "validityPeriodSeconds"), str(int(validity.total_seconds())))
    _sub(validity_element, _q(XCEP, "renewalPeriodSeconds"), str(int(renewal.total_seconds())))
    permission = _sub(attributes, _q(XCEP, "permission"))
    _sub(permission, _q(XCEP, "enroll"), "true")
    _sub(permission, _q(XCEP, "autoEnroll"), "false")
    key = _sub(attributes, _q(XCEP, "privateKeyAttributes"))
    _sub(key, _q(XCEP, "minimalKeyLength"), str(minimal_key_length))
    for nil in ("keySpec", "keyUsageProperty", "permissions", "algorithmOIDReference"):
        _nil(key, _q(XCEP, nil))
    _nil(key, _q(XCEP, "cryptoProviders"))
    revision = _sub(attributes, _q(XCEP, "revision"))
    _sub(revision, _q(XCEP, "majorRevision"), "101")
    _sub(revision, _q(XCEP, "minorRevision"), "0")
    for nil in ("supersededPolicies", "privateKeyFlags", "subjectNameFlags"):
        _nil(attributes, _q(XCEP, nil))
    _nil(attributes, _q(XCEP, "enrollmentFlags"))
    _nil(attributes, _q(XCEP, "generalFlags"))
    _sub(attributes, _q(XCEP, "hashAlgorithmOIDReference"), "0")
    for nil in ("rARequirements", "keyArchivalAttributes", "extensions"):
        _nil(attributes, _q(XCEP, nil))
    _nil(answer, _q(XCEP, "cAs"))
    oid = _sub(_sub(answer, _q(XCEP, "oIDs")), _q(XCEP, "oID"))
    _sub(oid, _q(XCEP, "value"), _SHA256_OID)
    _sub(oid, _q(XCEP, "group"), "1")
    _sub(oid, _q(XCEP, "oIDReferenceID"), "0")
    _sub(oid, _q(XCEP, "defaultName"), "szOID_NIST_sha256")
    return _serialise(root)


def token_response(
    relates_to: str | None, provisioning: bytes, *, at: dt.datetime | None = None
) -> bytes:
    """MS-WSTEP ``RequestSecurityTokenResponseCollection`` carrying the provisioning doc."""
    root, body = _envelope(ACTION_RSTRC, relates_to)
    header = root.find(_q(SOAP, "Header"))
    assert header is not None
    security = etree.SubElement(header, _q(WSSE, "Security"), nsmap={"o": WSSE, "u": WSU})
    security.set(_q(SOAP, "mustUnderstand"), "1")
    timestamp = etree.SubElement(security, _q(WSU, "Timestamp"))
    timestamp.set(_q(WSU, "Id"), "_0")
    created = at or dt.datetime.now(dt.UTC)
    _sub(timestamp, _q(WSU, "Created"), _xml_time(created))
    _sub(timestamp, _q(WSU, "Expires"), _xml_time(created + dt.timedelta(minutes=5)))
    collection = etree.SubElement(
        body, _q(WST, "RequestSecurityTokenResponseCollection"), nsmap={None: WST}
    )
    response = _sub(collection, _q(WST, "RequestSecurityTokenResponse"))
    _sub(response, _q(WST, "TokenType"), TOKEN_TYPE)
    etree.SubElement(response, _q(WSTEP, "DispositionMessage"), nsmap={None: WSTEP})
    requested = _sub(response, _q(WST, "RequestedSecurityToken"))
    token = etree.SubElement(requested, _q(WSSE, "BinarySecurityToken"), nsmap={None: WSSE})
    token.set("ValueType", PROVISION_DOC)
    token.set("EncodingType", BASE64_BINARY)
    token.text = base64.b64encode(provisioning).decode("ascii")
    etree.SubElement(response, _q(WSTEP, "RequestID"), nsmap={None: WSTEP}).text = "0"
    return _serialise(root)


def _xml_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def fault_response(relates_to: str | None, fault: Fault, *, action: str = ACTION_FAULT) -> bytes:
    """A SOAP 1.2 fault as MS-MDE2 2.2.10 shows it: ``s:Receiver`` with the subcode, and the
    ``DeviceEnrollmentServiceError`` detail when there is an error type to tell."""
    root = etree.Element(_q(SOAP, "Envelope"), nsmap={"s": SOAP, "a": ADDRESSING})
    header = etree.SubElement(root, _q(SOAP, "Header"))
    action_element = _sub(header, _q(ADDRESSING, "Action"), action)
    action_element.set(_q(SOAP, "mustUnderstand"), "1")
    if relates_to:
        _sub(header, _q(ADDRESSING, "RelatesTo"), relates_to)
    body = etree.SubElement(root, _q(SOAP, "Body"))
    fault_element = _sub(body, _q(SOAP, "Fault"))
    code = _sub(fault_element, _q(SOAP, "Code"))
    _sub(code, _q(SOAP, "Value"), "s:Receiver")
    _sub(_sub(code, _q(SOAP, "Subcode")), _q(SOAP, "Value"), fault.subcode.value)
    reason = _sub(_sub(fault_element, _q(SOAP, "Reason")), _q(SOAP, "Text"), fault.reason)
    reason.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    if fault.error_type is not None:
        detail = _sub(fault_element, _q(SOAP, "Detail"))
        error = etree.SubElement(
            detail, _q(WSTEP, "DeviceEnrollmentServiceError"), nsmap={None: WSTEP}
        )
        _sub(error, _q(WSTEP, "ErrorType"), fault.error_type.value)
        _sub(error, _q(WSTEP, "Message"), fault.reason)
        _sub(error, _q(WSTEP, "TraceId"), str(uuid.uuid4()))
    return _serialise(root)


# --------------------------------------------------------------------------- provisioning


@dataclass(frozen=True)
class Provisioning:
    """What the device is told in its ``wap-provisioningdoc``.

    ``store``: ``User`` for a user's enrolment, ``System`` for a device enrolment (MS-MDE2
    ``EnrollmentType`` Device); the client certificate goes to ``My/<store>``.
    ``poll_minutes``: the organisation's connection interval, the DMClient long-term poll.
    """

    root_der: bytes
    client_der: bytes
    root_thumbprint: str
    client_thumbprint: str
    client_subject: str
    provider_id: str
    server_name: str
    management_url: str
    device_id: str
    device_name: str
    poll_minutes: int
    store: str = "User"
    renew_period_days: int = 42
    renew_retry_days: int = 4
    client_secret: str = ""
    server_secret: str = ""
    client_nonce: str = ""
    renewal: bool = False


def _characteristic(parent: etree._Element, kind: str) -> etree._Element:
    element = etree.SubElement(parent, "characteristic")
    element.set("type", kind)
    return element


def _parm(
    parent: etree._Element, name: str, value: str | None, datatype: str | None = None
) -> etree._Element:
    element = etree.SubElement(parent, "parm")
    element.set("name", name)
    if value is not None:
        element.set("value", value)
    if datatype is not None:
        element.set("datatype", datatype)
    return element


def provisioning_document(p: Provisioning) -> bytes:
    """The ``wap-provisioningdoc`` of an enrolment (or, with ``renewal``, of a renewal:
    certificates and the provider id only, as "Certificate renewal" prescribes)."""
    doc = etree.Element("wap-provisioningdoc")
    doc.set("version", "1.1")
    stores = _characteristic(doc, "CertificateStore")
    root = _characteristic(
        _characteristic(_characteristic(stores, "Root"), "System"), p.root_thumbprint
    )
    _parm(root, "EncodedCertificate", base64.b64encode(p.root_der).decode("ascii"))
    my = _characteristic(stores, "My")
    mine = _characteristic(my, p.store)
    client = _characteristic(mine, p.client_thumbprint)
    _parm(client, "EncodedCertificate", base64.b64encode(p.client_der).decode("ascii"))
    _characteristic(mine, "PrivateKeyContainer")
    if not p.renewal:
        renew = _characteristic(_characteristic(my, "WSTEP"), "Renew")
        _parm(renew, "ROBOSupport", "true", "boolean")
        _parm(renew, "RenewPeriod", str(p.renew_period_days), "integer")
        _parm(renew, "RetryInterval", str(p.renew_retry_days), "integer")
    application = _characteristic(doc, "APPLICATION")
    if p.renewal:
        _parm(application, "PROVIDER-ID", p.provider_id)
        return etree.tostring(doc, encoding="utf-8")
    _parm(application, "APPID", "w7")
    _parm(application, "PROVIDER-ID", p.provider_id)
    _parm(application, "NAME", p.server_name)
    _parm(application, "ADDR", p.management_url)
    _parm(application, "CONNRETRYFREQ", "6")
    _parm(application, "INITIALBACKOFFTIME", "30000")
    _parm(application, "MAXBACKOFFTIME", "120000")
    _parm(application, "BACKCOMPATRETRYDISABLED", None)
    _parm(application, "DEFAULTENCODING", "application/vnd.syncml.dm+xml")
    store_path = f"My%5C{p.store}"
    criteria = f"Subject={_percent(p.client_subject)}&Stores={store_path}"
    _parm(application, "SSLCLIENTCERTSEARCHCRITERIA", criteria)
    client_auth = _characteristic(application, "APPAUTH")
    _parm(client_auth, "AAUTHLEVEL", "CLIENT")
    _parm(client_auth, "AAUTHTYPE", "DIGEST")
    _parm(client_auth, "AAUTHSECRET", p.client_secret)
    _parm(client_auth, "AAUTHDATA", p.client_nonce)
    server_auth = _characteristic(application, "APPAUTH")
    _parm(server_auth, "AAUTHLEVEL", "APPSRV")
    _parm(server_auth, "AAUTHTYPE", "BASIC")
    _parm(server_auth, "AAUTHNAME", p.device_id)
    _parm(server_auth, "AAUTHSECRET", p.server_secret)
    provider = _characteristic(
        _characteristic(_characteristic(doc, "DMClient"), "Provider"), p.provider_id
    )
    _parm(provider, "EntDMID", p.device_id, "string")
    _parm(provider, "EntDeviceName", p.device_name, "string")
    poll = _characteristic(provider, "Poll")
    interval = p.poll_minutes
    # Soon after enrolment the device should come back quickly (its first configuration is
    # waiting), then settle on the organisation's interval; 0 remaining retries = forever.
    _parm(poll, "IntervalForFirstSetOfRetries", str(min(3, interval)), "integer")
    _parm(poll, "NumberOfFirstRetries", "5", "integer")
    _parm(poll, "IntervalForSecondSetOfRetries", str(min(15, interval)), "integer")
    _parm(poll, "NumberOfSecondRetries", "8", "integer")
    _parm(poll, "IntervalForRemainingScheduledRetries", str(interval), "integer")
    _parm(poll, "NumberOfRemainingScheduledRetries", "0", "integer")
    _parm(poll, "PollOnLogin", "true", "boolean")
    return etree.tostring(doc, encoding="utf-8")


def _percent(subject: str) -> str:
    """SSLCLIENTCERTSEARCHCRITERIA escapes ``=``, ``,`` and ``\\`` (w7 APPLICATION CSP)."""
    return subject.replace("%", "%25").replace("=", "%3d").replace(",", "%2c")
