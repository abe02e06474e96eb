"""The OMA DM server's own credentials on each device (OMA DM Security 1.2, DMAcc SRVCRED).

A DM client authenticates the server too: with the server's name, a password and the
*server nonce* its DM account keeps (``./DMAcc/<x>/AppAuth/<y>`` with ``AAuthLevel``
``SRVCRED``), it checks the server's ``Cred`` (MD5) or ``x-syncml-hmac`` header in a session
and the digest of a package 0 notification before it calls back. The password differs per
device, so one device's secret opens no other: it is derived from the service CA's key
(HKDF once, then HMAC-SHA256 over the device id), hence never stored and the same after a
restart. The same password is the ``APPSRV`` secret of a Windows enrolment's provisioning
document, so the service holds one server credential per device whatever the enrolment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from .pki import CertificateAuthority
from .protocols import omadm as dm

#: The server identifier (DMAcc ``ServerID``, the notification's server-identifier, the
#: server's ``AAuthName``).
SERVER_ID = "EMM"
_INFO = b"emm oma dm server password v1"


@dataclass(frozen=True)
class ServerSecrets:
    """Derives the server password of each device from one key."""

    key: bytes

    @classmethod
    def of(cls, authority: CertificateAuthority) -> ServerSecrets:
        return cls(authority.derived_secret(_INFO))

    def password(self, device_id: str) -> str:
        """The server password on ``device_id`` (24 URL-safe characters, 144 bits)."""
        mac = hmac.new(self.key, device_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def digest(self, device_id: str) -> str:
        """``B64(H(server-id:password))``: what the server's MD5, HMAC and package 0 use."""
        return dm.user_digest(SERVER_ID, self.password(device_id))

    def credential(self, device_id: str, nonce: str | None) -> dm.ServerCredential:
        return dm.ServerCredential(SERVER_ID, self.digest(device_id), nonce)
