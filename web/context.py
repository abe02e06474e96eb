"""What the web layer needs of the running service, handed to the app at creation."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from quart import current_app

from engine.actors import Listener
from engine.apple_mdm import AppleMdm
from engine.pim import PimChanges
from engine.pki import CertificateAuthority
from engine.service_settings import Deployment
from engine.store import Store
from engine.wakeups import Wakeups
from engine.wsdm import PushAccounts

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ServiceContext:
    store: Store
    deployment: Deployment
    version: str
    started_at: float
    trusted_proxies: Sequence[Network] = ()
    listeners: dict[str, Listener] = field(default_factory=dict)
    #: Told after a command is queued; the protocols' push notifiers subscribe.
    wakeups: Wakeups = field(default_factory=Wakeups)
    #: Told after a sync client's changes to a PIM collection are committed (OMA DS tells,
    #: ActiveSync's Ping board listens).
    pim_changes: PimChanges = field(default_factory=PimChanges)
    #: The service's own CA (issues and recognises device certificates), loaded at start.
    certificate_authority: CertificateAuthority | None = None
    #: Apple MDM's keys and store access, once its starter ran.
    apple_mdm: AppleMdm | None = None
    #: The XMPP notifier, which also creates devices' push accounts (None: push is off).
    xmpp: PushAccounts | None = None


def authority(context: ServiceContext) -> CertificateAuthority:
    if context.certificate_authority is None:
        raise RuntimeError("the service CA is not loaded")
    return context.certificate_authority


def service() -> ServiceContext:
    return current_app.extensions["emm"]
