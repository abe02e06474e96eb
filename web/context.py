"""What the web layer needs of the running service, handed to the app at creation."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from quart import current_app

from engine.actors import Listener
from engine.pki import CertificateAuthority
from engine.service_settings import Deployment
from engine.store import Store
from engine.wakeups import Wakeups

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
    #: The service's own CA (issues device certificates); loaded by the protocols needing it.
    certificate_authority: CertificateAuthority | None = None


def service() -> ServiceContext:
    return current_app.extensions["emm"]
