"""The OMA DM 1.2 DM account (DMAcc management object), as data, for both ends.

A DM client keeps one account per server under ``./DMAcc/<x>`` (OMA DM Standardized Objects
1.2, DMAcc MO ``urn:oma:mo:oma-dm-dmacc:1.0``, DDF type ``org.openmobilealliance/1.0/w7``):
``AppID`` (``w7``), ``ServerID``, ``Name``, ``AppAddr/<x>/Addr`` and ``AddrType``,
``AAuthPref`` and, under ``AppAuth/<x>``, one entry per credential: ``AAuthLevel``
(``SRVCRED``: the server's credentials, with which the client authenticates the server and
its package 0 notifications; ``CLCRED``: the client's own), ``AAuthType`` (``DIGEST``,
``HMAC``, ``BASIC``), ``AAuthName``, ``AAuthSecret`` and ``AAuthData`` (the nonce).

:func:`bootstrap` is what the server sends to provision its own account in a session (the
"plain profile" of OMA DM Bootstrap as ``Add`` commands, in an ``Atomic`` so the device takes
all or nothing); where the account exists already (418 for its node: set up by hand, or by
an earlier bootstrap whose ``SRVCRED`` the device lost), :func:`server_credentials` puts a new
``SRVCRED`` entry in it; :func:`read_account` is how a client finds an account's
credentials in its tree (used by the client simulator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .syncml import Add, Atomic, Command, Delete, Item, Meta, Sequence, Target

DMACC = "./DMAcc"
ACCOUNT_TYPE = "org.openmobilealliance/1.0/w7"
APP_ID = "w7"
SRVCRED = "SRVCRED"
CLCRED = "CLCRED"
DIGEST = "DIGEST"
HMAC = "HMAC"
BASIC = "BASIC"
#: The Status of an ``Add`` whose node exists already (OMA DM Protocol 1.2).
ALREADY_EXISTS = 418


@dataclass(frozen=True)
class Provisioned:
    """The account the server provisions on a device: where the device calls, the server's
    credentials (password and the first server nonce, base64) and the client's name."""

    account: str  # the <x> node name under ./DMAcc
    server_id: str
    name: str
    address: str
    server_password: str
    server_nonce: str
    client_name: str
    auth_pref: str = DIGEST


def _node(uri: str) -> Add:
    return Add(cmd_id="", items=[Item(target=Target(uri), meta=Meta(format="node"))])


def _leaf(uri: str, value: str, fmt: str = "chr") -> Add:
    return Add(cmd_id="", items=[Item(target=Target(uri), meta=Meta(format=fmt), data=value)])


def bootstrap(p: Provisioned) -> Command:
    """The ``Atomic`` of ``Add`` commands that creates the server's DM account on the device.

    ``CLCRED`` names the client's user and the digest type; it carries no secret (the
    device keeps the password its user set, and the server holds only its digest)."""
    root = account_uri(p.account)
    account = Add(
        cmd_id="",
        items=[Item(target=Target(root), meta=Meta(format="node", type=ACCOUNT_TYPE))],
    )
    client = f"{root}/AppAuth/{CLCRED}"
    commands: list[Command] = [
        account,
        _leaf(f"{root}/AppID", APP_ID),
        _leaf(f"{root}/ServerID", p.server_id),
        _leaf(f"{root}/Name", p.name),
        _node(f"{root}/AppAddr"),
        _node(f"{root}/AppAddr/1"),
        _leaf(f"{root}/AppAddr/1/Addr", p.address),
        _leaf(f"{root}/AppAddr/1/AddrType", "URI"),
        _leaf(f"{root}/AAuthPref", p.auth_pref),
        _node(f"{root}/AppAuth"),
        *_server_entry(p),
        _node(client),
        _leaf(f"{client}/AAuthLevel", CLCRED),
        _leaf(f"{client}/AAuthType", p.auth_pref),
        _leaf(f"{client}/AAuthName", p.client_name),
    ]
    return Atomic(cmd_id="", commands=commands)


def account_uri(account: str) -> str:
    return f"{DMACC}/{account}"


def _server_entry(p: Provisioned) -> list[Command]:
    server = f"{account_uri(p.account)}/AppAuth/{SRVCRED}"
    return [
        _node(server),
        _leaf(f"{server}/AAuthLevel", SRVCRED),
        _leaf(f"{server}/AAuthType", DIGEST),
        _leaf(f"{server}/AAuthName", p.server_id),
        _leaf(f"{server}/AAuthSecret", p.server_password),
        _leaf(f"{server}/AAuthData", p.server_nonce, "b64"),
    ]


def server_credentials(p: Provisioned) -> Command:
    """The ``SRVCRED`` entry of an existing account, anew: a ``Sequence`` whose ``Delete`` of
    an earlier entry and ``Add`` of ``AppAuth`` may fail (404: there was no entry; 418: the
    account has its ``AppAuth``) while the ``Add`` commands of the entry must not
    (:func:`provisioned`)."""
    root = account_uri(p.account)
    delete = Delete(cmd_id="", items=[Item(target=Target(f"{root}/AppAuth/{SRVCRED}"))])
    return Sequence(cmd_id="", commands=[delete, _node(f"{root}/AppAuth"), *_server_entry(p)])


def provisioned(account: str, outcomes: list[tuple[str, list[str], int]]) -> bool:
    """Whether the device took :func:`server_credentials` (outcomes: command name, target
    URIs, status): every ``Add`` of the ``SRVCRED`` entry succeeded."""
    entry = f"{account_uri(account)}/AppAuth/{SRVCRED}"
    adds = [
        status
        for name, uris, status in outcomes
        if name == "Add" and any(uri == entry or uri.startswith(entry + "/") for uri in uris)
    ]
    return bool(adds) and all(200 <= status < 300 for status in adds)


@dataclass(frozen=True)
class AppAuth:
    """One ``AppAuth`` entry of an account, as the device keeps it (``uri``: its node)."""

    uri: str
    level: str
    type: str
    name: str
    secret: str
    data: str | None


@dataclass(frozen=True)
class Account:
    uri: str
    server_id: str
    credentials: dict[str, AppAuth]  # by AAuthLevel


def read_account(tree: Mapping[str, str], server_id: str | None = None) -> Account | None:
    """The DM account of ``server_id`` (or the first one) in a flat node tree."""
    for uri, value in sorted(tree.items()):
        parts = uri.split("/")
        if len(parts) != 4 or parts[:2] != [".", "DMAcc"] or parts[3] != "ServerID":
            continue
        if server_id is not None and value != server_id:
            continue
        root = "/".join(parts[:3])
        found: dict[str, AppAuth] = {}
        prefix = f"{root}/AppAuth/"
        for entry in {u[len(prefix) :].split("/")[0] for u in tree if u.startswith(prefix)}:
            base = prefix + entry
            level = tree.get(f"{base}/AAuthLevel")
            if level:
                found[level] = AppAuth(
                    base,
                    level,
                    tree.get(f"{base}/AAuthType", DIGEST),
                    tree.get(f"{base}/AAuthName", ""),
                    tree.get(f"{base}/AAuthSecret", ""),
                    tree.get(f"{base}/AAuthData"),
                )
        return Account(root, value, found)
    return None
