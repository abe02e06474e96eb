"""The MS-MDE2 codec and the PKCS#10/PKCS#7 reader, with Microsoft's published samples.

The request samples are those of Microsoft's "On-premises authentication device enrollment"
and "Certificate renewal" pages (whitespace, prefixes and the odd ``urn:uuid: `` kept as
published); where a sample has a placeholder for the request, a real one is put in.
"""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from lxml import etree

from engine.pki import CertificateAuthority
from engine.protocols import windows_enrolment as wire
from engine.protocols.pkcs10 import RequestError, open_signed_data, parse_certificate_request

DISCOVER_SAMPLE = b"""<?xml version="1.0"?>
<s:Envelope xmlns:a="http://www.w3.org/2005/08/addressing"
   xmlns:s="http://www.w3.org/2003/05/soap-envelope">
  <s:Header>
    <a:Action s:mustUnderstand="1">
      http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover
    </a:Action>
    <a:MessageID>urn:uuid: 748132ec-a575-4329-b01b-6171a9cf8478</a:MessageID>
    <a:ReplyTo>
      <a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address>
    </a:ReplyTo>
    <a:To s:mustUnderstand="1">
      https://ENROLLTEST.CONTOSO.COM/EnrollmentServer/Discovery.svc
    </a:To>
  </s:Header>
  <s:Body>
    <Discover xmlns="http://schemas.microsoft.com/windows/management/2012/01/enrollment/">
      <request xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
        <EmailAddress>user@contoso.com</EmailAddress>
        <OSEdition>3</OSEdition> <!--New -->
        <RequestVersion>3.0</RequestVersion> <!-- Updated -->
        <DeviceType>WindowsPhone</DeviceType> <!--Updated -->
        <ApplicationVersion>10.0.0.0</ApplicationVersion>
        <AuthPolicies>
           <AuthPolicy>OnPremise</AuthPolicy>
        </AuthPolicies>
      </request>
    </Discover>
  </s:Body>
</s:Envelope>"""

GET_POLICIES_SAMPLE = b"""<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
   xmlns:a="http://www.w3.org/2005/08/addressing"
   xmlns:u="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
   xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
   xmlns:wst="http://docs.oasis-open.org/ws-sx/ws-trust/200512"
   xmlns:ac="http://schemas.xmlsoap.org/ws/2006/12/authorization">
  <s:Header>
    <a:Action s:mustUnderstand="1">
      http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies
    </a:Action>
    <a:MessageID>urn:uuid:72048B64-0F19-448F-8C2E-B4C661860AA0</a:MessageID>
    <a:ReplyTo>
      <a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address>
    </a:ReplyTo>
    <a:To s:mustUnderstand="1">
      https://enrolltest.contoso.com/ENROLLMENTSERVER/DEVICEENROLLMENTWEBSERVICE.SVC
    </a:To>
    <wsse:Security s:mustUnderstand="1">
      <wsse:UsernameToken u:Id="uuid-cc1ccc1f-2fba-4bcf-b063-ffc0cac77917-4">
        <wsse:Username>user@contoso.com</wsse:Username>
        <wsse:Password wsse:Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">mypassword</wsse:Password>
      </wsse:UsernameToken>
    </wsse:Security>
  </s:Header>
  <s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:xsd="http://www.w3.org/2001/XMLSchema">
    <GetPolicies
       xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy">
      <client>
        <lastUpdate xsi:nil="true"/>
        <preferredLanguage xsi:nil="true"/>
      </client>
      <requestFilter xsi:nil="true"/>
    </GetPolicies>
  </s:Body>
</s:Envelope>"""

RST_SAMPLE = """<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
   xmlns:a="http://www.w3.org/2005/08/addressing"
   xmlns:u="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
   xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
   xmlns:wst="http://docs.oasis-open.org/ws-sx/ws-trust/200512"
   xmlns:ac="http://schemas.xmlsoap.org/ws/2006/12/authorization">
   <s:Header>
      <a:Action s:mustUnderstand="1">
         http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep
      </a:Action>
      <a:MessageID>urn:uuid:0d5a1441-5891-453b-becf-a2e5f6ea3749</a:MessageID>
      <a:ReplyTo>
         <a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address>
      </a:ReplyTo>
      <a:To s:mustUnderstand="1">
         https://enrolltest.contoso.com:443/ENROLLMENTSERVER/DEVICEENROLLMENTWEBSERVICE.SVC
      </a:To>
      <wsse:Security s:mustUnderstand="1">
         <wsse:UsernameToken u:Id="uuid-cc1ccc1f-2fba-4bcf-b063-ffc0cac77917-4">
            <wsse:Username>user@contoso.com</wsse:Username>
            <wsse:Password wsse:Type=
              "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">mypassword
            </wsse:Password>
         </wsse:UsernameToken>
      </wsse:Security>
   </s:Header>
   <s:Body>
      <wst:RequestSecurityToken>
         <wst:TokenType>
    http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken
         </wst:TokenType>
         <wst:RequestType>
            http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue</wst:RequestType>
         <wsse:BinarySecurityToken
            ValueType="http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10"
            EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary">
            {request}
         </wsse:BinarySecurityToken>
         <ac:AdditionalContext xmlns="http://schemas.xmlsoap.org/ws/2006/12/authorization">
            <ac:ContextItem Name="OSEdition">
               <ac:Value> 4</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="OSVersion">
               <ac:Value>10.0.9999.0</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="DeviceName">
               <ac:Value>MY_WINDOWS_DEVICE</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="MAC">
               <ac:Value>FF:FF:FF:FF:FF:FF</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="MAC">
               <ac:Value>CC:CC:CC:CC:CC:CC</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="IMEI">
               <ac:Value>49015420323756</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="IMEI">
               <ac:Value>30215420323756</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="EnrollmentType">
               <ac:Value>Full</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="DeviceType">
               <ac:Value>CIMClient_Windows</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="ApplicationVersion">
               <ac:Value>10.0.9999.0</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="DeviceID">
               <ac:Value>7BA748C8-703E-4DF2-A74A-92984117346A</ac:Value>
            </ac:ContextItem>
            <ac:ContextItem Name="TargetedUserLoggedIn">
               <ac:Value>True</ac:Value>
            </ac:ContextItem>
         </ac:AdditionalContext>
      </wst:RequestSecurityToken>
   </s:Body>
</s:Envelope>"""

RENEW_SAMPLE = """<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
   xmlns:a="http://www.w3.org/2005/08/addressing" xmlns:u=
   "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">
   <s:Header>
      <a:Action s:mustUnderstand="1">
         http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep</a:Action>
      <a:MessageID>urn:uuid:61a17f2c-42e9-4a45-9c85-f15c1c8baee8</a:MessageID>
      <a:ReplyTo>
         <a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address>
      </a:ReplyTo>
      <a:To s:mustUnderstand="1">
         https://dm.contoso.com/EnrollmentService/DeviceEnrollmentService.svc</a:To>
      <o:Security s:mustUnderstand="1" xmlns:o=
         "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">
         <u:Timestamp u:Id="_0">
            <u:Created>2011-07-11T19:49:08.579Z</u:Created>
            <u:Expires>2011-07-11T19:54:08.579Z</u:Expires>
         </u:Timestamp>
         <o:UsernameToken u:Id="uuid-2a734df6-b227-4e60-82a8-ed53c574b718-5">
            <o:Username>user@contoso.com</o:Username>
            <o:Password o:Type=
               "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">
            </o:Password>
         </o:UsernameToken>
      </o:Security>
   </s:Header>
   <s:Body>
      <RequestSecurityToken xmlns="http://docs.oasis-open.org/ws-sx/ws-trust/200512">
         <TokenType>
    http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken
         </TokenType>
         <RequestType>http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew</RequestType>
         <BinarySecurityToken
            ValueType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7"
            EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary"
            xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">
            {request}
         </BinarySecurityToken>
         <AdditionalContext xmlns="http://schemas.xmlsoap.org/ws/2006/12/authorization">
            <ContextItem Name="DeviceType">
               <Value>WindowsPhone</Value>
            </ContextItem>
            <ContextItem Name="ApplicationVersion">
               <Value>5.0.7616.0</Value>
            </ContextItem>
         </AdditionalContext>
      </RequestSecurityToken>
   </s:Body>
</s:Envelope>"""


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _csr(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "B1C43CD0-1624-5FBB")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.DER)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- requests


def test_discover_sample() -> None:
    envelope = wire.parse_envelope(DISCOVER_SAMPLE)
    assert envelope.message_id == "urn:uuid: 748132ec-a575-4329-b01b-6171a9cf8478"
    assert envelope.to == "https://ENROLLTEST.CONTOSO.COM/EnrollmentServer/Discovery.svc"
    request = wire.parse_discover(envelope)
    assert request.email_address == "user@contoso.com"
    assert request.auth_policies == ("OnPremise",)
    assert (request.os_edition, request.request_version) == ("3", "3.0")
    assert request.device_type == "WindowsPhone"


def test_get_policies_sample_carries_the_username_token() -> None:
    envelope = wire.parse_envelope(GET_POLICIES_SAMPLE)
    wire.parse_get_policies(envelope)
    assert envelope.credentials == wire.Credentials(
        username="user@contoso.com", password="mypassword"
    )
    with pytest.raises(wire.Fault) as wrong:
        wire.parse_discover(envelope)
    assert wrong.value.subcode is wire.Subcode.MESSAGE_FORMAT


def test_request_security_token_sample(key: rsa.RSAPrivateKey) -> None:
    csr = _csr(key)
    envelope = wire.parse_envelope(RST_SAMPLE.format(request=_b64(csr)).encode())
    request = wire.parse_token_request(envelope)
    assert not request.renewal and not request.wrapped
    assert request.request == csr
    assert request.context["MAC"] == ("FF:FF:FF:FF:FF:FF", "CC:CC:CC:CC:CC:CC")
    assert request.first("OSEdition") == "4"
    assert request.first("DeviceID") == "7BA748C8-703E-4DF2-A74A-92984117346A"
    parsed = parse_certificate_request(request.request)
    assert parsed.key_size == 2048


def test_renewal_sample_with_a_signed_pkcs7(key: rsa.RSAPrivateKey) -> None:
    ca = CertificateAuthority.create("Test CA", key_size=2048)
    current, _ = ca.issue_client_certificate("device", public_key=key.public_key())
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(_csr(new_key))
        .add_signer(current, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    for encoded in (_b64(signed), _b64(_b64(signed).encode())):  # ROBO, and manual renewal
        envelope = wire.parse_envelope(RENEW_SAMPLE.format(request=encoded).encode())
        # The sample's empty password is taken as no password.
        assert envelope.credentials.password is None or not envelope.credentials.password.strip()
        request = wire.parse_token_request(envelope)
        assert request.renewal and request.wrapped
        opened = open_signed_data(request.request)
        assert opened.signer == current
        assert opened.request.public_key.public_numbers() == new_key.public_key().public_numbers()  # type: ignore[union-attr]
    # A signature that does not verify: refused.
    forged = bytearray(
        pkcs7.PKCS7SignatureBuilder()
        .set_data(_csr(new_key))
        .add_signer(current, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    forged[-10] ^= 1
    with pytest.raises(RequestError):
        open_signed_data(bytes(forged))


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><s>&x;</s>',
        b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'>",
        b"<Envelope xmlns='http://schemas.xmlsoap.org/soap/envelope/'><Body/></Envelope>",
        b"x" * (wire.MAX_ENVELOPE + 1),
        b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Header/><s:Body>"
        b"<a/></s:Body></s:Envelope>",
    ],
)
def test_malformed_envelopes_are_message_format_faults(body: bytes) -> None:
    with pytest.raises(wire.Fault) as fault:
        wire.parse_envelope(body)
    assert fault.value.subcode is wire.Subcode.MESSAGE_FORMAT


def test_broken_base64_and_unknown_value_types(key: rsa.RSAPrivateKey) -> None:
    broken = RST_SAMPLE.format(request="%%% not base64 %%%").encode()
    with pytest.raises(wire.Fault):
        wire.parse_token_request(wire.parse_envelope(broken))
    other = RST_SAMPLE.format(request=_b64(_csr(key))).replace("#PKCS10", "#X509v3").encode()
    with pytest.raises(wire.Fault):
        wire.parse_token_request(wire.parse_envelope(other))


# --------------------------------------------------------------------------- PKCS#10


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def test_a_subject_strict_parsers_reject_is_tolerated(key: rsa.RSAPrivateKey) -> None:
    """A PrintableString holding '@' and '_' (not in its alphabet), as some clients send."""
    cn_oid = bytes.fromhex("0603550403")
    bad_name = _der(0x30, _der(0x31, _der(0x30, cn_oid + _der(0x13, b"user@contoso_1"))))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = _der(0x30, _der(0x02, b"\x00") + bad_name + spki + _der(0xA0, b""))
    signature = key.sign(info, padding.PKCS1v15(), hashes.SHA256())
    algorithm = _der(0x30, bytes.fromhex("06092a864886f70d01010b0500"))
    csr = _der(0x30, info + algorithm + _der(0x03, b"\x00" + signature))
    with pytest.raises(ValueError):
        strict = x509.load_der_x509_csr(csr)
        _ = strict.subject, strict.is_signature_valid
    parsed = parse_certificate_request(csr)
    assert parsed.public_key.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    # The same bytes with the signature spoiled are refused: the key is not proven.
    spoiled = csr[:-1] + bytes([csr[-1] ^ 1])
    with pytest.raises(RequestError):
        parse_certificate_request(spoiled)


def test_not_a_request() -> None:
    for junk in (b"", b"\x30\x03\x02\x01\x00", b"\x30\x82\xff\xff", b"hello"):
        with pytest.raises(RequestError):
            parse_certificate_request(junk)
        with pytest.raises(RequestError):
            open_signed_data(junk)


# --------------------------------------------------------------------------- answers

NS = {
    "s": wire.SOAP,
    "a": wire.ADDRESSING,
    "d": wire.DISCOVERY,
    "x": wire.XCEP,
    "t": wire.WST,
    "e": wire.WSTEP,
    "w": wire.WSSE,
}


def test_discover_response_echoes_the_message_id() -> None:
    body = wire.discover_response(
        "urn:uuid: 748132ec-a575-4329-b01b-6171a9cf8478",
        auth_policy=wire.AuthPolicy.FEDERATED,
        policy_service_url="https://e.example/EnrollmentServer/Policy.svc",
        enrolment_service_url="https://e.example/EnrollmentServer/Enrollment.svc",
        authentication_service_url="https://e.example/EnrollmentServer/Login",
    )
    root = etree.fromstring(body)
    assert root.findtext("s:Header/a:RelatesTo", namespaces=NS) == (
        "urn:uuid: 748132ec-a575-4329-b01b-6171a9cf8478"
    )
    assert root.findtext("s:Header/a:Action", namespaces=NS) == wire.ACTION_DISCOVER_RESPONSE
    result = root.find("s:Body/d:DiscoverResponse/d:DiscoverResult", namespaces=NS)
    assert result is not None
    assert result.findtext("d:AuthPolicy", namespaces=NS) == "Federated"
    assert result.findtext("d:AuthenticationServiceUrl", namespaces=NS).endswith("/Login")


def test_get_policies_response_names_key_length_and_hash() -> None:
    body = wire.get_policies_response(
        "urn:uuid:1",
        policy_id="p",
        name="n",
        minimal_key_length=2048,
        validity=dt.timedelta(days=365),
        renewal=dt.timedelta(days=42),
    )
    root = etree.fromstring(body)
    response = root.find("s:Body/x:GetPoliciesResponse", namespaces=NS)
    assert response is not None
    assert response.findtext(".//x:minimalKeyLength", namespaces=NS) == "2048"
    assert response.findtext(".//x:validityPeriodSeconds", namespaces=NS) == str(365 * 86400)
    assert response.findtext("x:oIDs/x:oID/x:value", namespaces=NS) == "2.16.840.1.101.3.4.2.1"
    assert response.findtext(".//x:hashAlgorithmOIDReference", namespaces=NS) == "0"


def test_faults_carry_the_ms_mde2_subcode_and_error_type() -> None:
    fault = wire.Fault(
        wire.Subcode.AUTHORIZATION, "not allowed", error_type=wire.ErrorType.DEVICE_CAP_REACHED
    )
    root = etree.fromstring(wire.fault_response("urn:uuid:9", fault, action=wire.ACTION_RSTRC))
    code = root.find("s:Body/s:Fault/s:Code", namespaces=NS)
    assert code is not None
    assert code.findtext("s:Value", namespaces=NS) == "s:Receiver"
    assert code.findtext("s:Subcode/s:Value", namespaces=NS) == "s:Authorization"
    assert root.findtext(".//e:ErrorType", namespaces=NS) == "DeviceCapReached"
    assert root.findtext("s:Header/a:RelatesTo", namespaces=NS) == "urn:uuid:9"


def _provisioning(**changes: object) -> wire.Provisioning:
    values: dict[str, object] = {
        "root_der": b"root",
        "client_der": b"client",
        "root_thumbprint": "AA",
        "client_thumbprint": "BB",
        "client_subject": "CN=0190-device",
        "provider_id": "EMM",
        "server_name": "Contoso",
        "management_url": "https://dm.example/omadm",
        "device_id": "0190-device",
        "device_name": "PC",
        "poll_minutes": 240,
    }
    return wire.Provisioning(**(values | changes))  # type: ignore[arg-type]


def test_the_provisioning_document() -> None:
    doc = etree.fromstring(wire.provisioning_document(_provisioning()))
    assert doc.tag == "wap-provisioningdoc" and doc.get("version") == "1.1"

    def parm(path: str, name: str) -> str | None:
        element = doc.find(f"{path}/parm[@name='{name}']")
        return None if element is None else element.get("value")

    root = "characteristic[@type='CertificateStore']/characteristic[@type='Root']"
    assert (
        parm(
            f"{root}/characteristic[@type='System']/characteristic[@type='AA']",
            "EncodedCertificate",
        )
        == base64.b64encode(b"root").decode()
    )
    my = "characteristic[@type='CertificateStore']/characteristic[@type='My']"
    assert (
        parm(f"{my}/characteristic[@type='User']/characteristic[@type='BB']", "EncodedCertificate")
        == base64.b64encode(b"client").decode()
    )
    assert (
        parm(f"{my}/characteristic[@type='WSTEP']/characteristic[@type='Renew']", "ROBOSupport")
        == "true"
    )
    app = "characteristic[@type='APPLICATION']"
    assert parm(app, "APPID") == "w7" and parm(app, "ADDR") == "https://dm.example/omadm"
    assert parm(app, "SSLCLIENTCERTSEARCHCRITERIA") == ("Subject=CN%3d0190-device&Stores=My%5CUser")
    poll = (
        "characteristic[@type='DMClient']/characteristic[@type='Provider']"
        "/characteristic[@type='EMM']/characteristic[@type='Poll']"
    )
    assert parm(poll, "IntervalForRemainingScheduledRetries") == "240"
    assert parm(poll, "NumberOfRemainingScheduledRetries") == "0"
    # A device enrolment keeps its certificate in the machine's store.
    system = etree.fromstring(wire.provisioning_document(_provisioning(store="System")))
    assert system.find(f"{my}/characteristic[@type='System']") is not None
    # A renewal's document holds the certificates and the provider id only.
    renewal = etree.fromstring(wire.provisioning_document(_provisioning(renewal=True)))
    assert renewal.find("characteristic[@type='DMClient']") is None
    assert [p.get("name") for p in renewal.findall(f"{app}/parm")] == ["PROVIDER-ID"]
