"""The service's own CA: what it issues must chain, carry the right extensions, and persist."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.pki import CertificateAuthority, PKIError, TLSFiles, ensure_tls_files, write_pem


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Root CA")


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Root CA")  # same name, different key


def _verify_rsa_signature(issuer: x509.Certificate, cert: x509.Certificate) -> None:
    """Check the signature by hand, not through the module under test."""
    public_key = issuer.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    public_key.verify(
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_root_is_a_constrained_rsa_ca(ca: CertificateAuthority) -> None:
    cert = ca.certificate
    assert cert.subject == cert.issuer
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    _verify_rsa_signature(cert, cert)
    assert ca.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=3649)


def test_save_load_round_trip_and_key_mode(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert_path = tmp_path / "nested" / "dir" / "ca.pem"
    key_path = tmp_path / "nested" / "dir" / "ca-key.pem"
    ca.save(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert not [p for p in key_path.parent.iterdir() if p.name.endswith(".tmp")]

    loaded = CertificateAuthority.load(cert_path, key_path)
    assert loaded.certificate == ca.certificate
    # The loaded key must really be the CA's key: what it signs verifies against the root.
    cert, _ = loaded.issue_client_certificate("device-1")
    _verify_rsa_signature(ca.certificate, cert)
    assert ca.is_issued_by(cert)


def test_save_with_password(ca: CertificateAuthority, tmp_path: Path) -> None:
    ca.save(tmp_path / "ca.pem", tmp_path / "ca-key.pem", password=b"s3cret")
    assert b"ENCRYPTED" in (tmp_path / "ca-key.pem").read_bytes()
    with pytest.raises(TypeError):
        CertificateAuthority.load(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    loaded = CertificateAuthority.load(
        tmp_path / "ca.pem", tmp_path / "ca-key.pem", password=b"s3cret"
    )
    assert loaded.certificate == ca.certificate


def test_load_refuses_mismatched_key(
    ca: CertificateAuthority, other_ca: CertificateAuthority, tmp_path: Path
) -> None:
    ca.save(tmp_path / "a.pem", tmp_path / "a-key.pem")
    other_ca.save(tmp_path / "b.pem", tmp_path / "b-key.pem")
    with pytest.raises(PKIError, match="does not belong"):
        CertificateAuthority.load(tmp_path / "a.pem", tmp_path / "b-key.pem")


def test_server_certificate(ca: CertificateAuthority) -> None:
    cert, key = ca.issue_server_certificate(["emm.example.org", "localhost"], ["127.0.0.1", "::1"])
    _verify_rsa_signature(ca.certificate, cert)
    assert cert.issuer == ca.certificate.subject
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["emm.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=825, minutes=5)
    assert ca.is_issued_by(cert, purpose=ExtendedKeyUsageOID.SERVER_AUTH)
    # A server certificate is not a device identity.
    assert not ca.is_issued_by(cert, purpose=ExtendedKeyUsageOID.CLIENT_AUTH)


def test_client_certificate_with_generated_key(ca: CertificateAuthority) -> None:
    cert, key = ca.issue_client_certificate(
        "device-42", subject_extra={"O": "Org 7", "OU": "Sales"}
    )
    assert key is not None
    _verify_rsa_signature(ca.certificate, cert)
    assert _cn(cert) == "device-42"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Org 7"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.is_issued_by(cert, purpose=ExtendedKeyUsageOID.CLIENT_AUTH)


def test_client_certificate_for_given_public_key(ca: CertificateAuthority) -> None:
    device_key = ec.generate_private_key(ec.SECP256R1())
    cert, key = ca.issue_client_certificate("device-ec", public_key=device_key.public_key())
    assert key is None
    assert cert.public_key() == device_key.public_key()
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment  # EC keys encipher nothing
    assert ca.is_issued_by(cert)


def test_unknown_subject_attribute_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="unknown subject attribute"):
        ca.issue_client_certificate("x", subject_extra={"Organisation": "typo"})


def _csr(
    common_name: str, *, ask_for_ca: bool = False
) -> tuple[x509.CertificateSigningRequest, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if ask_for_ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(key, hashes.SHA256()), key


def test_sign_csr_keeps_key_and_ignores_requested_extensions(ca: CertificateAuthority) -> None:
    csr, key = _csr("csr-device", ask_for_ca=True)
    cert = ca.sign_csr(csr)
    _verify_rsa_signature(ca.certificate, cert)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert _cn(cert) == "csr-device"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.is_issued_by(cert, purpose=ExtendedKeyUsageOID.CLIENT_AUTH)

    renamed = ca.sign_csr(csr, common_name="assigned-by-server", subject_extra={"O": "Org"})
    assert _cn(renamed) == "assigned-by-server"


def test_sign_csr_refuses_bad_signature(ca: CertificateAuthority) -> None:
    csr, _ = _csr("victim")
    forged = bytearray(csr.public_bytes(serialization.Encoding.DER))
    forged[-10] ^= 0xFF  # inside the signature: the request no longer proves key possession
    bad = x509.load_der_x509_csr(bytes(forged))
    with pytest.raises(PKIError, match="signature"):
        ca.sign_csr(bad)


def test_is_issued_by_rejects_foreign_expired_and_ca_certificates(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    foreign, _ = other_ca.issue_client_certificate("device-elsewhere")
    assert foreign.issuer == ca.certificate.subject  # same name: only the signature differs
    assert not ca.is_issued_by(foreign)
    assert other_ca.is_issued_by(foreign)

    expiring, _ = ca.issue_client_certificate("device-old", valid_days=1)
    assert ca.is_issued_by(expiring)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert not ca.is_issued_by(expiring, at=later)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert not ca.is_issued_by(expiring, at=earlier)

    # The root verifies against itself, but it is no device identity.
    assert not ca.is_issued_by(ca.certificate)


def test_write_pem_modes(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, key = ca.issue_client_certificate("device-pem")
    assert key is not None
    public = write_pem(tmp_path / "cert.pem", cert)
    combined = write_pem(tmp_path / "sub" / "identity.pem", [cert, ca.certificate], key)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(combined.stat().st_mode) == 0o600
    assert x509.load_pem_x509_certificates(combined.read_bytes()) == [cert, ca.certificate]
    loaded_key = serialization.load_pem_private_key(combined.read_bytes(), None)
    assert isinstance(loaded_key, rsa.RSAPrivateKey)
    assert loaded_key.private_numbers() == key.private_numbers()


def _snapshot(files: TLSFiles) -> dict[str, tuple[bytes, int]]:
    paths = {
        "ca_cert": files.ca_cert,
        "ca_key": files.ca_key,
        "server_cert": files.server_cert,
        "server_key": files.server_key,
    }
    return {name: (p.read_bytes(), p.stat().st_mtime_ns) for name, p in paths.items()}


def test_ensure_tls_files_creates_once(tmp_path: Path) -> None:
    files = TLSFiles.in_directory(tmp_path / "data" / "tls")
    returned = ensure_tls_files(files, public_url="https://mdm.example.net:8443/")
    assert returned == files
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600

    ca = CertificateAuthority.load(files.ca_cert, files.ca_key)
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert ca.is_issued_by(server, purpose=ExtendedKeyUsageOID.SERVER_AUTH)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "mdm.example.net"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    server_key = serialization.load_pem_private_key(files.server_key.read_bytes(), None)
    assert isinstance(server_key, rsa.RSAPrivateKey)
    assert server_key.public_key().public_numbers() == server.public_key().public_numbers()

    before = _snapshot(files)
    ensure_tls_files(files, public_url="https://other.example.net/")
    assert _snapshot(files) == before


def test_ensure_tls_files_ip_literal_url_and_missing_server_pair(tmp_path: Path) -> None:
    files = TLSFiles.in_directory(tmp_path)
    ensure_tls_files(files, public_url="https://192.0.2.10/")
    ca_before = files.ca_cert.read_bytes()
    files.server_cert.unlink()
    files.server_key.unlink()

    ensure_tls_files(files, public_url="https://192.0.2.10/")
    assert files.ca_cert.read_bytes() == ca_before  # the CA is kept; only the server pair is new
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.0.2.10") in san.get_values_for_type(x509.IPAddress)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ca = CertificateAuthority.load(files.ca_cert, files.ca_key)
    assert ca.is_issued_by(server)


def test_ensure_tls_files_refuses_half_a_pair(tmp_path: Path) -> None:
    files = TLSFiles.in_directory(tmp_path)
    ensure_tls_files(files)
    files.ca_key.unlink()
    with pytest.raises(PKIError, match="refusing to guess"):
        ensure_tls_files(files)
    assert not files.ca_key.exists()  # nothing regenerated behind the operator's back


def test_derived_secrets_follow_the_key_and_the_purpose(
    ca: CertificateAuthority, other_ca: CertificateAuthority, tmp_path: Path
) -> None:
    ca.save(tmp_path / "ca.pem", tmp_path / "ca.key")
    again = CertificateAuthority.load(tmp_path / "ca.pem", tmp_path / "ca.key")
    secret = ca.derived_secret(b"purpose one")
    assert len(secret) == 32 and again.derived_secret(b"purpose one") == secret  # survives
    assert ca.derived_secret(b"purpose two") != secret
    assert other_ca.derived_secret(b"purpose one") != secret
