"""Who is asking: the principal every domain operation receives, and the scope checks.

Every domain operation takes the acting :class:`Principal` first and checks, before it reads
or writes anything, that this principal may act on the organisation concerned. Things of an
organisation the principal may not see are reported as :class:`~engine.errors.NotFound`, so
that ids of other organisations cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .errors import Forbidden, NotFound


class AccountKind(StrEnum):
    SUPERVISOR = "supervisor"  # runs the whole service
    VENDOR = "vendor"  # master/vendor admin: looks after a set of organisations
    MANAGER = "manager"  # manages one organisation, with rights set per manager
    USER = "user"  # device owner: self-service for own devices
    RESOURCE = "resource"  # shared address book or calendar; never logs in interactively


class Right(StrEnum):
    """What an organisation manager may change; every manager may see all of its organisation.

    Presets such as helpdesk-only (``commands``) or read-only (no rights) are account
    templates made of these. System accounts hold every right.
    """

    ACCOUNTS = "accounts"  # users, resources, managers (never beyond one's own rights)
    DEVICES = "devices"  # inventory, groups, installation codes
    COMMANDS = "commands"  # lock, unlock, locate, message, applications, inventory
    WIPE = "wipe"  # factory and enterprise wipe
    CONFIGURATION = "configuration"  # services, templates, name policy
    AUDIT = "audit"  # export the audit log


ALL_RIGHTS = frozenset(Right)


def parse_rights(values: object) -> frozenset[Right]:
    """Rights from stored or requested JSON; unknown names are refused, not dropped."""
    if not isinstance(values, list | tuple | set | frozenset):
        raise ValueError("rights must be a list")
    try:
        return frozenset(Right(value) for value in values)
    except ValueError:
        known = ", ".join(r.value for r in Right)
        raise ValueError(f"unknown right in {sorted(map(str, values))}; known: {known}") from None


@dataclass(frozen=True)
class Principal:
    account_id: str
    login: str
    kind: AccountKind
    organisation_id: str | None
    rights: frozenset[str] = field(default_factory=frozenset)
    token_id: str | None = None
    source: str | None = None  # where the request came from (client address)
    #: Signed in with a one-time password: may only change it.
    password_change_only: bool = False

    @property
    def is_system(self) -> bool:
        """Supervisor or vendor admin: accounts that stand above organisations."""
        return self.kind in (AccountKind.SUPERVISOR, AccountKind.VENDOR)

    @property
    def label(self) -> str:
        return self.login


def require_kind(principal: Principal, *kinds: AccountKind) -> None:
    if principal.kind not in kinds:
        raise Forbidden(f"{principal.kind} accounts may not do this")


def require_supervisor(principal: Principal) -> None:
    require_kind(principal, AccountKind.SUPERVISOR)


def require_organisation_access(
    principal: Principal, organisation_id: str, vendor_id: str | None
) -> None:
    """May ``principal`` see the organisation (``vendor_id``: the vendor that looks after it)?"""
    if principal.kind is AccountKind.SUPERVISOR:
        return
    if principal.kind is AccountKind.VENDOR and vendor_id == principal.account_id:
        return
    if principal.organisation_id == organisation_id:
        return
    raise NotFound("no such organisation")


def owner_scope(principal: Principal) -> str | None:
    """Whose devices (and their codes and commands) ``principal`` sees in its organisation.

    ``None``: all of them (managers, system accounts); an account id: only that device
    owner's own. Any other kind of account (resources) sees none.
    """
    if principal.is_system or principal.kind is AccountKind.MANAGER:
        return None
    if principal.kind is AccountKind.USER:
        return principal.account_id
    raise Forbidden(f"{principal.kind} accounts have no devices")


def require_organisation_view(principal: Principal) -> None:
    """Things of the whole organisation (accounts, groups...) are for managers and system
    accounts: device owners see only their own."""
    if owner_scope(principal) is not None:
        raise Forbidden("only managers see this")


def holds(principal: Principal, right: Right) -> bool:
    return principal.is_system or (
        principal.kind is AccountKind.MANAGER and right in principal.rights
    )


def require_right(principal: Principal, right: Right) -> None:
    """Managers need ``right``; system accounts hold every right; others hold none."""
    if not holds(principal, right):
        raise Forbidden(f"this needs the {right.value!r} right")
