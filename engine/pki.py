"""The service's own certificate authority.

The EMM service needs certificates it can mint itself, without an external PKI:

* a TLS server certificate for a fresh install (``emm init``), so devices and browsers can
  talk HTTPS to it from the first minute;
* device identities: Apple MDM and Windows enrolment hand each device a client certificate,
  and later requests authenticate by presenting it (see ``web/client_cert.py``).

Key choice: the root and the issued keys are RSA (3072-bit root, 2048-bit leaves), not
EC P-256. EC would be smaller and faster, but the devices this service manages include old
Android builds, Windows 10 EDM enrolment and Apple MDM identities delivered in PKCS#12
payloads, where RSA is the one algorithm every client accepts. The root is long-lived
(10 years), so it gets 3072 bits (NIST's recommendation beyond 2030); leaves live at most
825 days, where 2048 bits is ample and keeps device-side key handling fast.

Everything here is synchronous and CPU-bound (RSA key generation takes tens to hundreds of
milliseconds): call it from Trio through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_KEY_SIZE",
    "LEAF_KEY_SIZE",
    "CertificateAuthority",
    "PKIError",
    "TLSFiles",
    "ensure_tls_files",
    "write_pem",
]

log = logging.getLogger(__name__)

CA_KEY_SIZE = 3072
LEAF_KEY_SIZE = 2048

# Devices' clocks are often a few minutes off (and a freshly enrolled phone may not have
# synced yet); backdating notBefore keeps a brand-new certificate from being "not yet valid".
_CLOCK_SKEW = dt.timedelta(minutes=5)

# Short names accepted in ``subject_extra``; anything else must be given as an OID so a
# typo cannot silently become an unknown attribute in a device identity.
_NAME_ATTRIBUTES: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "UID": NameOID.USER_ID,
    "DC": NameOID.DOMAIN_COMPONENT,
}

SubjectExtra = Mapping[str | x509.ObjectIdentifier, str]


class PKIError(Exception):
    """A certificate, key or file is unusable for the operation asked (mismatch, half a pair)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign the message itself; cryptography requires None for them.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _key_matches(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half.

    The temporary file is created by ``mkstemp`` (mode 0600 from the start), so a private key
    is never world-readable, not even for the instant between create and chmod.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _private_key_pem(key: CertificateIssuerPrivateKeyTypes, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_pem(
    path: str | os.PathLike[str],
    cert: x509.Certificate | Sequence[x509.Certificate],
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    password: bytes | None = None,
) -> Path:
    """Write certificate(s), and optionally their private key, to one PEM file atomically.

    A file holding a key gets mode 0600, one holding only certificates 0644: certificates are
    public, and tools (and devices' profile builders) must be able to read them. A combined
    file is what ``ssl.SSLContext.load_cert_chain(certfile)`` accepts without a key file.
    """
    certs = [cert] if isinstance(cert, x509.Certificate) else list(cert)
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    if key is not None:
        data += _private_key_pem(key, password)
    target = Path(path)
    _atomic_write(target, data, 0o600 if key is not None else 0o644)
    return target


def _name(common_name: str, extra: SubjectExtra | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    for attr, value in (extra or {}).items():
        if isinstance(attr, x509.ObjectIdentifier):
            oid = attr
        elif attr in _NAME_ATTRIBUTES:
            oid = _NAME_ATTRIBUTES[attr]
        else:
            raise ValueError(
                f"unknown subject attribute {attr!r}; use one of {sorted(_NAME_ATTRIBUTES)} "
                "or an x509.ObjectIdentifier"
            )
        attributes.append(x509.NameAttribute(oid, value))
    return x509.Name(attributes)


def _dns_name(hostname: str) -> str:
    # SAN dNSName is IA5String: internationalised names must go in as A-labels.
    return hostname.strip().rstrip(".").lower().encode("idna").decode("ascii")


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A root CA: its self-signed certificate and private key, able to issue leaves.

    Instances are immutable and hold the key in memory; persist with :meth:`save`.
    """

    _certificate: x509.Certificate
    _private_key: CertificateIssuerPrivateKeyTypes = field(repr=False)

    def __post_init__(self) -> None:
        if not _key_matches(self._certificate, self._private_key):
            raise PKIError("the CA private key does not belong to the CA certificate")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, common_name: str, *, valid_days: int = 3650, key_size: int = CA_KEY_SIZE
    ) -> CertificateAuthority:
        """Create a new self-signed root.

        ``path_length=0``: this CA signs end-entity certificates only, so a leaked device or
        server key can never be used to mint further certificates that chain to it.
        """
        if key_size < 2048:
            raise ValueError("RSA keys below 2048 bits are refused by current clients")
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = _name(common_name)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(
        cls,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        *,
        password: bytes | None = None,
    ) -> CertificateAuthority:
        """Load a CA saved by :meth:`save` (or any PEM certificate + PEM private key pair)."""
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password)
        if not isinstance(
            key,
            rsa.RSAPrivateKey
            | ec.EllipticCurvePrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            raise PKIError(f"{type(key).__name__} keys cannot sign certificates")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise PKIError(f"{cert_path} is not a CA certificate")
        return cls(cert, key)

    def save(
        self,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        *,
        password: bytes | None = None,
    ) -> None:
        """Write the certificate (0644) and the private key (0600), each atomically.

        The key is unencrypted unless ``password`` is given: the service must start
        unattended, so its protection is the file mode and the data directory's owner.
        """
        _atomic_write(Path(key_path), _private_key_pem(self._private_key, password), 0o600)
        _atomic_write(Path(cert_path), self.certificate_pem.encode("ascii"), 0o644)

    # -- accessors -------------------------------------------------------------------------

    @property
    def certificate(self) -> x509.Certificate:
        """The root certificate (public): what devices and clients must trust."""
        return self._certificate

    @property
    def certificate_pem(self) -> str:
        """The root certificate as PEM text, e.g. for an enrolment profile's trust payload."""
        return self._certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def derived_secret(self, info: bytes, length: int = 32) -> bytes:
        """A secret derived from the CA key (HKDF-SHA256), distinct per ``info``: keys the
        service needs across restarts without storing them, and without the CA key itself
        leaving this object."""
        der = self._private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return HKDF(hashes.SHA256(), length, None, info).derive(der)

    # -- issuing ---------------------------------------------------------------------------

    def _issue(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        *,
        valid_days: int,
        usage: x509.ObjectIdentifier,
        san: Sequence[x509.GeneralName] = (),
    ) -> x509.Certificate:
        now = _now()
        not_after = now + dt.timedelta(days=valid_days)
        # A leaf outliving its issuer fails validation on many clients anyway; better to
        # issue what will actually work.
        not_after = min(not_after, self._certificate.not_valid_after_utc)
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        try:
            ski = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
        except x509.ExtensionNotFound:  # an imported root without SKI
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._certificate.public_key()  # type: ignore[arg-type]
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key transport (TLS 1.2 RSA kx, CMS envelopes to Apple devices)
                    # needs keyEncipherment; for EC keys it would be meaningless.
                    key_encipherment=is_rsa,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        return builder.sign(self._private_key, _signature_hash(self._private_key))

    def issue_server_certificate(
        self,
        hostnames: Sequence[str],
        ip_addresses: Sequence[str],
        *,
        valid_days: int = 825,
        key_size: int = LEAF_KEY_SIZE,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """Issue a TLS server certificate with a fresh key.

        825 days is the longest validity Apple platforms accept for TLS server certificates,
        even from a privately trusted root; a longer one makes iOS/macOS refuse the server.
        Clients match names only against the SAN, so every name and address goes there; the
        CN repeats the first for humans reading logs.
        """
        names = [_dns_name(h) for h in hostnames]
        ips = [ipaddress.ip_address(a) for a in ip_addresses]
        if not names and not ips:
            raise ValueError("a server certificate needs at least one hostname or IP address")
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        san += [x509.IPAddress(ip) for ip in ips]
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        cert = self._issue(
            _name(names[0] if names else str(ips[0])),
            key.public_key(),
            valid_days=valid_days,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            san=san,
        )
        return cert, key

    def issue_client_certificate(
        self,
        common_name: str,
        *,
        subject_extra: SubjectExtra | None = None,
        public_key: CertificatePublicKeyTypes | None = None,
        valid_days: int = 365,
        key_size: int = LEAF_KEY_SIZE,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey | None]:
        """Issue a client (device identity) certificate.

        With ``public_key`` (taken from a CSR or an enrolment request) no key is generated and
        the second element is None: the private key stays on the device, which is the
        stronger arrangement. Without it, a key is generated here for delivery in a
        PKCS#12 payload.
        """
        key = None
        if public_key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
            public_key = key.public_key()
        cert = self._issue(
            _name(common_name, subject_extra),
            public_key,
            valid_days=valid_days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return cert, key

    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        common_name: str | None = None,
        subject_extra: SubjectExtra | None = None,
        valid_days: int = 365,
    ) -> x509.Certificate:
        """Issue a client certificate for the key in a CSR.

        The CSR's signature proves possession of the key and is checked first. Its requested
        extensions are never copied: the CA alone decides what the certificate allows (a CSR
        asking for ``CA:TRUE`` gets a leaf). The subject is the CSR's own unless
        ``common_name`` is given; either way the caller must have authorised it, because
        whatever subject is signed here is what devices will be identified by.
        """
        if common_name is None and subject_extra:
            raise ValueError("subject_extra needs common_name: the CSR subject is used as is")
        if not csr.is_signature_valid:
            raise PKIError("the CSR signature is invalid: it does not prove key possession")
        subject = csr.subject if common_name is None else _name(common_name, subject_extra)
        return self._issue(
            subject,
            csr.public_key(),
            valid_days=valid_days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )

    # -- checking --------------------------------------------------------------------------

    def is_issued_by(
        self,
        cert: x509.Certificate,
        *,
        at: dt.datetime | None = None,
        purpose: x509.ObjectIdentifier | None = None,
    ) -> bool:
        """Whether ``cert`` is a currently valid end-entity certificate signed by this CA.

        Used to authenticate devices, so it answers False (never raises) for anything else:
        a foreign issuer, a bad signature, an expired or not-yet-valid certificate, a CA
        certificate (including this root itself, which is self-signed and would otherwise
        "verify"), or, with ``purpose``, a certificate lacking that extended key usage
        (e.g. ``ExtendedKeyUsageOID.CLIENT_AUTH`` so a server certificate is no device).
        """
        return issued_by(self._certificate, cert, at=at, purpose=purpose)


def issued_by(
    issuer: x509.Certificate,
    cert: x509.Certificate,
    *,
    at: dt.datetime | None = None,
    purpose: x509.ObjectIdentifier | None = None,
) -> bool:
    """:meth:`CertificateAuthority.is_issued_by` with only the CA's certificate at hand (a
    worker process gets the certificate, never the CA's private key)."""
    when = at or _now()
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if not (cert.not_valid_before_utc <= when <= cert.not_valid_after_utc):
        return False
    if not (issuer.not_valid_before_utc <= when and when <= issuer.not_valid_after_utc):
        return False
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        pass
    if purpose is not None:
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return False
        if purpose not in usages:
            return False
    return True


# -- files for a fresh install ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Where the CA and the HTTPS server certificate live (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_directory(cls, directory: str | os.PathLike[str]) -> TLSFiles:
        """The default layout: all four files in one directory (``<data dir>/tls``)."""
        base = Path(directory)
        return cls(
            ca_cert=base / "ca.pem",
            ca_key=base / "ca-key.pem",
            server_cert=base / "server.pem",
            server_key=base / "server-key.pem",
        )


def _pair_state(cert: Path, key: Path) -> bool:
    """True if both files exist, False if neither; half a pair is an operator error."""
    if cert.exists() != key.exists():
        present, missing = (cert, key) if cert.exists() else (key, cert)
        raise PKIError(
            f"{present} exists but {missing} does not; refusing to guess: restore the "
            "missing file or remove both"
        )
    return cert.exists()


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def ensure_tls_files(
    files: TLSFiles,
    *,
    public_url: str | None = None,
    hostnames: Sequence[str] | None = None,
    ip_addresses: Sequence[str] | None = None,
    ca_common_name: str = "EMM Root CA",
) -> TLSFiles:
    """Create the CA and the HTTPS server certificate if (and only if) they are missing.

    Idempotent by design, for ``emm init`` run twice: existing files are never rewritten. A
    CA regenerated behind the operator's back would orphan every enrolled device, and a
    server certificate at ``files.server_*`` may be one the operator installed from a public
    CA. So each pair is created independently when absent; half a pair raises
    :class:`PKIError`.

    Names default to ``localhost`` plus the host of ``public_url`` (an IP-literal host goes
    into the IP list), addresses to 127.0.0.1 and ::1.
    """
    names = list(hostnames) if hostnames is not None else ["localhost"]
    ips = list(ip_addresses) if ip_addresses is not None else ["127.0.0.1", "::1"]
    if public_url:
        host = urlsplit(public_url).hostname
        if host:
            try:
                ips.append(str(ipaddress.ip_address(host)))
            except ValueError:
                names.append(host)

    if _pair_state(files.ca_cert, files.ca_key):
        ca = None  # loaded only if a server certificate must be issued
    else:
        ca = CertificateAuthority.create(ca_common_name)
        ca.save(files.ca_cert, files.ca_key)
        log.info("created CA %s in %s", ca_common_name, files.ca_cert)

    if not _pair_state(files.server_cert, files.server_key):
        ca = ca or CertificateAuthority.load(files.ca_cert, files.ca_key)
        cert, key = ca.issue_server_certificate(_unique(names), _unique(ips))
        # Key first: a certificate without its key is useless, the reverse is harmless.
        _atomic_write(files.server_key, _private_key_pem(key), 0o600)
        write_pem(files.server_cert, cert)
        log.info("issued TLS server certificate for %s in %s", names + ips, files.server_cert)
    return files
