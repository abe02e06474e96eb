"""ValidateCert (MS-ASCMD 2.2.1.22): a device asks whether S/MIME certificates are valid.

The trust anchors are the service's own CA and the system's roots
(``/etc/ssl/certs/ca-certificates.crt``, read once, off the event loop); each certificate of
``Certificates`` is checked with the intermediates of ``CertificateChain``
(:mod:`engine.protocols.eas_certificates`). The command's Status is 1 when the request could
be read (each certificate then has its own), 2 for a request without certificates.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from cryptography import x509

from .activesync_mail import Answer
from .protocols import activesync as eas, eas_certificates
from .protocols.activesync import EasError, el
from .protocols.activesync_tables import VALIDATE_CERT
from .protocols.wbxml import Element

if TYPE_CHECKING:
    from .activesync import Backend, Caller, EasCall

SYSTEM_ROOTS = Path("/etc/ssl/certs/ca-certificates.crt")
#: The most certificates one request may ask about.
MAX_CERTIFICATES = 100
_system_roots: list[x509.Certificate] | None = None


def _read_system_roots() -> list[x509.Certificate]:
    try:
        with warnings.catch_warnings():  # a few old roots have non-positive serial numbers
            warnings.simplefilter("ignore")
            return x509.load_pem_x509_certificates(SYSTEM_ROOTS.read_bytes())
    except (OSError, ValueError):
        return []


async def system_roots() -> list[x509.Certificate]:
    """The system's trusted roots, read the first time they are needed."""
    global _system_roots
    if _system_roots is None:
        _system_roots = await trio.to_thread.run_sync(_read_system_roots)
    return _system_roots


def _texts(parent: Element | None) -> list[str]:
    if parent is None:
        return []
    return [c.text for c in parent.elements() if c.tag == "Certificate"]


async def validate_cert(backend: Backend, call: EasCall, caller: Caller) -> Answer:
    if call.body is None:
        raise EasError("ValidateCert needs a body", eas.INVALID_XML)
    root = eas.expect_root(call.body, VALIDATE_CERT, "ValidateCert")
    asked = _texts(root.find("Certificates"))
    if not asked or len(asked) > MAX_CERTIFICATES:
        return el(VALIDATE_CERT, "ValidateCert", el(VALIDATE_CERT, "Status", "2"))
    chain = [
        c for c in map(eas_certificates.certificate_of, _texts(root.find("CertificateChain"))) if c
    ]
    own = backend.authority.certificate if backend.authority is not None else None
    anchors = ([own] if own is not None else []) + await system_roots()
    check_crl = (eas.child_text(root, "CheckCRL", "0") or "0").strip() == "1"
    at = dt.datetime.now(dt.UTC)
    answers = []
    for text in asked:
        leaf = eas_certificates.certificate_of(text)
        status = (
            eas_certificates.UNREADABLE
            if leaf is None
            else await trio.to_thread.run_sync(
                eas_certificates.status_of, leaf, chain, anchors, at, check_crl, own
            )
        )
        answers.append(el(VALIDATE_CERT, "Certificate", el(VALIDATE_CERT, "Status", str(status))))
    return el(VALIDATE_CERT, "ValidateCert", el(VALIDATE_CERT, "Status", "1"), *answers)
