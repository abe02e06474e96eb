"""The SyncML 1.2 message model shared by OMA DS and OMA DM, in XML and in WBXML, sans-IO.

API
---
- ``parse_message(body: bytes, content_type: str, *, max_bytes=MAX_MESSAGE_BYTES) -> Message``
  reads a request in either encoding (chosen by the content type). A malformed message raises
  :class:`SyncmlError`, whose ``status`` is the SyncML status code to answer with; a malformed
  *command* inside an otherwise good message becomes a :class:`BadCommand` so the server can
  still answer a Status for every command.
- ``encode_message(message: Message, wbxml: bool = False) -> bytes`` writes a message with its
  elements in exactly the order the SyncML 1.2 DTD requires (strict clients reject any other).
- ``encoded_size(command: Command, wbxml: bool = False) -> int``: the bytes one command adds
  to a message (WBXML: plus 2 for a possible code page switch), to pack replies under the
  peer's MaxMsgSize without encoding the whole message again.
- ``content_type(wbxml: bool, dm: bool = False) -> str`` and ``is_wbxml(content_type)``.
- ``parse_tree`` / ``build_tree`` convert between :class:`Message` and the neutral
  :class:`~engine.protocols.wbxml.Element` tree; ``xml_to_tree`` / ``tree_to_xml`` convert
  between that tree and XML bytes (``wbxml.decode`` / ``wbxml.encode`` do the same for WBXML).

Model
-----
A :class:`Message` is a :class:`SyncHdr`, a list of commands and the ``final`` flag. Commands
are :class:`Status`, :class:`Alert`, :class:`Sync`, :class:`Add`, :class:`Replace`,
:class:`Delete`, :class:`Copy`, :class:`Move`, :class:`Get`, :class:`Put`, :class:`Results`,
:class:`Map`, :class:`Exec`, :class:`Atomic`, :class:`Sequence`, and :class:`BadCommand` for
anything unknown or malformed (``Search`` included). Identifiers (CmdID, MsgID, MsgRef,
CmdRef) and codes (Status/Alert ``data``) are kept as the strings on the wire.

:class:`Item` ``data`` is ``str`` (text), ``bytes`` (opaque data that is not UTF-8) or an
:class:`~engine.protocols.wbxml.Element` (an embedded document such as ``DevInf``, see
``engine.protocols.devinf``, or MetInf such as the ``Anchor`` a Status echoes). In WBXML,
item text is written as ``OPAQUE``, MetInf inline on its code page, and an embedded DevInf
as an opaque DevInf WBXML document, as SyncML implementations (SyncEvolution, libwbxml) do;
in XML, text is escaped (``\\r`` as ``&#13;`` so vCard line ends survive) and DevInf is
inline.

XML is parsed with lxml hardened (no DTD loading, no entities, no network, no huge trees);
a DOCTYPE is refused unless it is a bare SyncML public identifier (no internal subset), which
real phones send. Size, nesting depth and element count are bounded for both encodings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

from lxml import etree

from engine.protocols import wbxml
from engine.protocols.wbxml import Element, WbxmlError, encode_body
from engine.protocols.wbxml_tables import (
    DEVINF_1_2,
    DEVINF_LANGUAGES,
    DEVINF_NS,
    METINF_NS,
    SYNCML_1_2,
    SYNCML_LANGUAGES,
    SYNCML_NS,
)

CONTENT_TYPE_DS_XML = "application/vnd.syncml+xml"
CONTENT_TYPE_DS_WBXML = "application/vnd.syncml+wbxml"
CONTENT_TYPE_DM_XML = "application/vnd.syncml.dm+xml"
CONTENT_TYPE_DM_WBXML = "application/vnd.syncml.dm+wbxml"

#: DevInf's type in Meta. The model always says ``+xml``; a WBXML message says ``+wbxml``
#: (its DevInf is an embedded WBXML document), which the encoder writes and the parser reads.
DEVINF_TYPE_XML = "application/vnd.syncml-devinf+xml"
DEVINF_TYPE_WBXML = "application/vnd.syncml-devinf+wbxml"

#: Bounds on what a peer may send: bytes of one message, nesting depth, elements in all.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 40
MAX_ELEMENTS = 500_000

# SyncML status codes (SyncML Representation Protocol 1.2, 10.1) that the parser and both
# OMA DS and OMA DM answer with; each protocol adds its own beside them.
OK = 200
AUTHENTICATION_ACCEPTED = 212
CHUNK_ACCEPTED = 213
BAD_REQUEST = 400
INVALID_CREDENTIALS = 401
FORBIDDEN = 403
NOT_FOUND = 404
COMMAND_NOT_ALLOWED = 405
OPTIONAL_FEATURE_NOT_SUPPORTED = 406
MISSING_CREDENTIALS = 407
INCOMPLETE_COMMAND = 412
REQUEST_ENTITY_TOO_LARGE = 413
UNSUPPORTED_MEDIA_TYPE = 415
SIZE_MISMATCH = 424
COMMAND_FAILED = 500
DTD_VERSION_NOT_SUPPORTED = 505

#: Authentication types of ``Cred``/``Chal`` Meta both protocols take.
AUTH_BASIC = "syncml:auth-basic"
AUTH_MD5 = "syncml:auth-md5"

#: The order of child elements each element must have, from the SyncML 1.2 DTDs
#: (RepPro and MetInf). ``?`` optional, ``*`` any number, ``+`` at least one, ``!`` exactly one.
#: ``commands`` stands for any of the commands allowed there. The serialiser writes elements in
#: this order; tests check every encoded element against it.
DTD_ORDER: dict[str, tuple[tuple[str, str], ...]] = {
    "SyncML": (("SyncHdr", "!"), ("SyncBody", "!")),
    "SyncHdr": (
        ("VerDTD", "!"),
        ("VerProto", "!"),
        ("SessionID", "!"),
        ("MsgID", "!"),
        ("Target", "!"),
        ("Source", "!"),
        ("RespURI", "?"),
        ("NoResp", "?"),
        ("Cred", "?"),
        ("Meta", "?"),
    ),
    "SyncBody": (("commands", "*"), ("Final", "?")),
    "Status": (
        ("CmdID", "!"),
        ("MsgRef", "!"),
        ("CmdRef", "!"),
        ("Cmd", "!"),
        ("TargetRef", "*"),
        ("SourceRef", "*"),
        ("Cred", "?"),
        ("Chal", "?"),
        ("Data", "!"),
        ("Item", "*"),
    ),
    "Alert": (
        ("CmdID", "!"),
        ("NoResp", "?"),
        ("Cred", "?"),
        ("Data", "?"),
        ("Correlator", "?"),
        ("Item", "*"),
    ),
    "Sync": (
        ("CmdID", "!"),
        ("NoResp", "?"),
        ("Cred", "?"),
        ("Target", "?"),
        ("Source", "?"),
        ("Meta", "?"),
        ("NumberOfChanges", "?"),
        ("commands", "*"),
    ),
    "Add": (("CmdID", "!"), ("NoResp", "?"), ("Cred", "?"), ("Meta", "?"), ("Item", "+")),
    "Replace": (("CmdID", "!"), ("NoResp", "?"), ("Cred", "?"), ("Meta", "?"), ("Item", "+")),
    "Copy": (("CmdID", "!"), ("NoResp", "?"), ("Cred", "?"), ("Meta", "?"), ("Item", "+")),
    "Move": (("CmdID", "!"), ("NoResp", "?"), ("Cred", "?"), ("Meta", "?"), ("Item", "+")),
    "Delete": (
        ("CmdID", "!"),
        ("NoResp", "?"),
        ("Archive", "?"),
        ("SftDel", "?"),
        ("Cred", "?"),
        ("Meta", "?"),
        ("Item", "+"),
    ),
    "Get": (
        ("CmdID", "!"),
        ("NoResp", "?"),
        ("Lang", "?"),
        ("Cred", "?"),
        ("Meta", "?"),
        ("Item", "+"),
    ),
    "Put": (
        ("CmdID", "!"),
        ("NoResp", "?"),
        ("Lang", "?"),
        ("Cred", "?"),
        ("Meta", "?"),
        ("Item", "+"),
    ),
    "Results": (
        ("CmdID", "!"),
        ("MsgRef", "?"),
        ("CmdRef", "!"),
        ("Meta", "?"),
        ("TargetRef", "?"),
        ("SourceRef", "?"),
        ("Item", "+"),
    ),
    "Map": (
        ("CmdID", "!"),
        ("Target", "!"),
        ("Source", "!"),
        ("Cred", "?"),
        ("Meta", "?"),
        ("MapItem", "+"),
    ),
    "MapItem": (("Target", "!"), ("Source", "!")),
    "Exec": (
        ("CmdID", "!"),
        ("NoResp", "?"),
        ("Cred", "?"),
        ("Meta", "?"),
        ("Correlator", "?"),
        ("Item", "!"),
    ),
    "Atomic": (("CmdID", "!"), ("NoResp", "?"), ("Meta", "?"), ("commands", "+")),
    "Sequence": (("CmdID", "!"), ("NoResp", "?"), ("Meta", "?"), ("commands", "+")),
    "Item": (
        ("Target", "?"),
        ("Source", "?"),
        ("SourceParent", "?"),
        ("TargetParent", "?"),
        ("Meta", "?"),
        ("Data", "?"),
        ("MoreData", "?"),
    ),
    "Target": (("LocURI", "!"), ("LocName", "?")),
    "Source": (("LocURI", "!"), ("LocName", "?")),
    "SourceParent": (("LocURI", "!"),),
    "TargetParent": (("LocURI", "!"),),
    "Cred": (("Meta", "?"), ("Data", "!")),
    "Chal": (("Meta", "!"),),
    "Meta": (
        ("FieldLevel", "?"),
        ("Format", "?"),
        ("Type", "?"),
        ("Mark", "?"),
        ("Size", "?"),
        ("Anchor", "?"),
        ("Version", "?"),
        ("NextNonce", "?"),
        ("MaxMsgSize", "?"),
        ("MaxObjSize", "?"),
        ("EMI", "*"),
        ("Mem", "?"),
    ),
    "Anchor": (("Last", "?"), ("Next", "!")),
    "Mem": (("SharedMem", "?"), ("FreeMem", "!"), ("FreeID", "!")),
}

#: Which commands each container may hold (SyncML 1.2 DTD).
ALLOWED_COMMANDS: dict[str, frozenset[str]] = {
    "SyncBody": frozenset(
        [
            "Alert",
            "Atomic",
            "Copy",
            "Exec",
            "Get",
            "Map",
            "Move",
            "Put",
            "Results",
            "Search",
            "Sequence",
            "Status",
            "Sync",
            "Add",
            "Replace",
            "Delete",
        ]
    ),
    "Sync": frozenset(["Add", "Atomic", "Copy", "Delete", "Move", "Replace", "Sequence"]),
    "Atomic": frozenset(
        [
            "Add",
            "Delete",
            "Copy",
            "Atomic",
            "Map",
            "Move",
            "Replace",
            "Sequence",
            "Sync",
            "Get",
            "Exec",
            "Alert",
        ]
    ),
    "Sequence": frozenset(
        [
            "Add",
            "Replace",
            "Delete",
            "Copy",
            "Atomic",
            "Map",
            "Move",
            "Sync",
            "Get",
            "Alert",
            "Exec",
        ]
    ),
}


class SyncmlError(ValueError):
    """The message cannot be used; ``status`` is the SyncML status code to answer with."""

    def __init__(self, message: str, status: int = BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class _Missing(ValueError):
    """A required element is absent (becomes a SyncmlError or a BadCommand)."""


# -- the model -----------------------------------------------------------------------------


@dataclass(slots=True)
class Anchor:
    """Sync anchors of a datastore: ``last`` from the previous sync, ``next`` for this one."""

    next: str
    last: str | None = None


@dataclass(slots=True)
class Mem:
    """Free memory of a datastore (MetInf ``Mem``)."""

    free_mem: int
    free_id: int
    shared_mem: bool = False


@dataclass(slots=True)
class Meta:
    """Meta information (MetInf 1.2): type and format of data, sizes, anchors, nonce."""

    format: str | None = None
    type: str | None = None
    mark: str | None = None
    size: int | None = None
    anchor: Anchor | None = None
    version: str | None = None
    next_nonce: str | None = None
    max_msg_size: int | None = None
    max_obj_size: int | None = None
    emi: list[str] = field(default_factory=list)
    mem: Mem | None = None
    field_level: bool = False


@dataclass(slots=True)
class Target:
    """Where a command or item goes (``LocURI``, optional ``LocName``)."""

    loc_uri: str
    loc_name: str | None = None


@dataclass(slots=True)
class Source:
    """Where a command or item comes from (``LocURI``, optional ``LocName``)."""

    loc_uri: str
    loc_name: str | None = None


@dataclass(slots=True)
class Cred:
    """Credentials: ``data`` with its type/format in ``meta`` (e.g. b64 syncml:auth-md5)."""

    data: str
    meta: Meta | None = None


@dataclass(slots=True)
class Chal:
    """An authentication challenge: type, format and next nonce in ``meta``."""

    meta: Meta


@dataclass(slots=True)
class Item:
    """One item of a command: addresses, meta, data and the MoreData (large object) flag."""

    target: Target | None = None
    source: Source | None = None
    source_parent: str | None = None
    target_parent: str | None = None
    meta: Meta | None = None
    data: str | bytes | Element | None = None
    more_data: bool = False


@dataclass(slots=True)
class SyncHdr:
    """The message header: versions, session and message id, routing, credentials, meta."""

    session_id: str
    msg_id: str
    target: Target
    source: Source
    ver_dtd: str = "1.2"
    ver_proto: str = "SyncML/1.2"
    resp_uri: str | None = None
    no_resp: bool = False
    cred: Cred | None = None
    meta: Meta | None = None


@dataclass(slots=True)
class Status:
    """The status of a command (or of the header: ``cmd="SyncHdr"``, ``cmd_ref="0"``)."""

    name: ClassVar[str] = "Status"
    cmd_id: str
    msg_ref: str
    cmd_ref: str
    cmd: str
    data: str
    target_refs: list[str] = field(default_factory=list)
    source_refs: list[str] = field(default_factory=list)
    cred: Cred | None = None
    chal: Chal | None = None
    items: list[Item] = field(default_factory=list)


@dataclass(slots=True)
class Alert:
    """An alert: ``data`` is the alert code (200 two-way, 201 slow, 222 next message, ...)."""

    name: ClassVar[str] = "Alert"
    cmd_id: str
    data: str | None = None
    no_resp: bool = False
    cred: Cred | None = None
    correlator: str | None = None
    items: list[Item] = field(default_factory=list)


@dataclass(slots=True)
class _ItemCommand:
    """Shared shape of Add, Replace, Copy and Move."""

    cmd_id: str
    items: list[Item] = field(default_factory=list)
    no_resp: bool = False
    cred: Cred | None = None
    meta: Meta | None = None


@dataclass(slots=True)
class Add(_ItemCommand):
    name: ClassVar[str] = "Add"


@dataclass(slots=True)
class Replace(_ItemCommand):
    name: ClassVar[str] = "Replace"


@dataclass(slots=True)
class Copy(_ItemCommand):
    name: ClassVar[str] = "Copy"


@dataclass(slots=True)
class Move(_ItemCommand):
    name: ClassVar[str] = "Move"


@dataclass(slots=True)
class Delete(_ItemCommand):
    name: ClassVar[str] = "Delete"
    archive: bool = False
    sft_del: bool = False


@dataclass(slots=True)
class Get(_ItemCommand):
    name: ClassVar[str] = "Get"
    lang: str | None = None


@dataclass(slots=True)
class Put(_ItemCommand):
    name: ClassVar[str] = "Put"
    lang: str | None = None


@dataclass(slots=True)
class Results:
    """The answer to a Get."""

    name: ClassVar[str] = "Results"
    cmd_id: str
    cmd_ref: str
    items: list[Item] = field(default_factory=list)
    msg_ref: str | None = None
    meta: Meta | None = None
    target_ref: str | None = None
    source_ref: str | None = None


@dataclass(slots=True)
class MapItem:
    """One client id (``source``) to server id (``target``) mapping."""

    target: Target
    source: Source


@dataclass(slots=True)
class Map:
    """The client's id mappings for a datastore."""

    name: ClassVar[str] = "Map"
    cmd_id: str
    target: Target
    source: Source
    map_items: list[MapItem] = field(default_factory=list)
    cred: Cred | None = None
    meta: Meta | None = None


@dataclass(slots=True)
class Exec:
    """Execute the item's target (OMA DM)."""

    name: ClassVar[str] = "Exec"
    cmd_id: str
    item: Item
    no_resp: bool = False
    cred: Cred | None = None
    meta: Meta | None = None
    correlator: str | None = None


@dataclass(slots=True)
class Sync:
    """The changes of one datastore: ``target``/``source`` name the databases."""

    name: ClassVar[str] = "Sync"
    cmd_id: str
    target: Target | None = None
    source: Source | None = None
    commands: list[Command] = field(default_factory=list)
    no_resp: bool = False
    cred: Cred | None = None
    meta: Meta | None = None
    number_of_changes: int | None = None


@dataclass(slots=True)
class Atomic:
    """Commands that succeed or fail together."""

    name: ClassVar[str] = "Atomic"
    cmd_id: str
    commands: list[Command] = field(default_factory=list)
    no_resp: bool = False
    meta: Meta | None = None


@dataclass(slots=True)
class Sequence:
    """Commands to run in order (OMA DM)."""

    name: ClassVar[str] = "Sequence"
    cmd_id: str
    commands: list[Command] = field(default_factory=list)
    no_resp: bool = False
    meta: Meta | None = None


@dataclass(slots=True)
class BadCommand:
    """A command that is unknown, not allowed where it stands, or malformed.

    ``name`` is its element name and ``cmd_id`` its CmdID when it had one, so the server can
    answer it with a Status (``status``: 406 for unsupported, 400 for malformed). Never
    encoded.
    """

    name: str
    cmd_id: str | None
    reason: str
    status: int = BAD_REQUEST


Command = (
    Status
    | Alert
    | Sync
    | Add
    | Replace
    | Delete
    | Copy
    | Move
    | Get
    | Put
    | Results
    | Map
    | Exec
    | Atomic
    | Sequence
    | BadCommand
)


@dataclass(slots=True)
class Message:
    """One SyncML message: header, commands of the body, and whether it ends the package."""

    header: SyncHdr
    commands: list[Command] = field(default_factory=list)
    final: bool = False


def header_only_answer(header: SyncHdr, code: int, ver_proto: str = "SyncML/1.2") -> Message:
    """A reply that only answers the client's header with ``code`` (an unknown or finished
    session, a refused identity): OMA DS and OMA DM answer so alike, in their ``ver_proto``."""
    return Message(
        SyncHdr(
            session_id=header.session_id,
            msg_id="1",
            target=Target(header.source.loc_uri),
            source=Source(header.target.loc_uri),
            ver_proto=ver_proto,
        ),
        [
            Status(
                cmd_id="1",
                msg_ref=header.msg_id,
                cmd_ref="0",
                cmd="SyncHdr",
                data=str(code),
                target_refs=[header.target.loc_uri],
                source_refs=[header.source.loc_uri],
            )
        ],
        final=True,
    )


# -- content types -------------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_wbxml(content_type: str) -> bool:
    """Whether ``content_type`` is a SyncML WBXML type (DS or DM); raises for non-SyncML."""
    media = _media_type(content_type)
    if media in (CONTENT_TYPE_DS_WBXML, CONTENT_TYPE_DM_WBXML):
        return True
    if media in (CONTENT_TYPE_DS_XML, CONTENT_TYPE_DM_XML):
        return False
    raise SyncmlError(f"unsupported content type {content_type!r}", UNSUPPORTED_MEDIA_TYPE)


def content_type(wbxml: bool, dm: bool = False) -> str:
    """The content type of a SyncML message of OMA DS (or OMA DM) in the given encoding."""
    if dm:
        return CONTENT_TYPE_DM_WBXML if wbxml else CONTENT_TYPE_DM_XML
    return CONTENT_TYPE_DS_WBXML if wbxml else CONTENT_TYPE_DS_XML


# -- parsing -------------------------------------------------------------------------------

#: One hardened parser per thread (an lxml parser must not be used by two threads at once).
_PARSERS = threading.local()


def _xml_parser() -> etree.XMLParser:
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            load_dtd=False,
            dtd_validation=False,
            remove_comments=True,
            remove_pis=True,
            strip_cdata=True,
        )
    return parser


_SYNCML_PUBLIC_IDS = frozenset(
    {
        "-//syncml//dtd syncml 1.2//en",
        "-//syncml//dtd syncml 1.1//en",
        "-//syncml//dtd syncml 1.0//en",
    }
)


def parse_message(body: bytes, content_type: str, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse a SyncML message (XML or WBXML, chosen by ``content_type``) into the model.

    Raises :class:`SyncmlError` (with the status to answer) when the message as a whole is
    unusable: wrong content type (415), too large (413), not well-formed, not SyncML, a
    header missing required elements (400) or an unsupported VerDTD (505).
    """
    wbxml_encoded = is_wbxml(content_type)
    if len(body) > max_bytes:
        raise SyncmlError(
            f"message of {len(body)} bytes exceeds {max_bytes}", REQUEST_ENTITY_TOO_LARGE
        )
    if wbxml_encoded:
        try:
            root = wbxml.decode(
                body,
                SYNCML_LANGUAGES,
                max_bytes=max_bytes,
                max_depth=MAX_DEPTH,
                max_elements=MAX_ELEMENTS,
            ).root
        except WbxmlError as exc:
            raise SyncmlError(f"malformed WBXML: {exc}") from exc
    else:
        root = xml_to_tree(body)
    return parse_tree(root)


def xml_to_tree(body: bytes) -> Element:
    """Parse XML bytes (hardened) into the neutral element tree; raises SyncmlError."""
    try:
        document = etree.fromstring(body, _xml_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise SyncmlError(f"malformed XML: {exc}") from exc
    docinfo = document.docinfo
    if docinfo.doctype and not _bare_syncml_doctype(body, docinfo.public_id):
        raise SyncmlError("DOCTYPE refused: only a bare SyncML public identifier is accepted")
    return _from_lxml(document.getroot(), 1, [MAX_ELEMENTS])


def _bare_syncml_doctype(body: bytes, public_id: str | None) -> bool:
    """A DOCTYPE naming the SyncML DTD by public id, without an internal subset (where
    entities or attribute defaults could be declared)."""
    if (public_id or "").lower() not in _SYNCML_PUBLIC_IDS:
        return False
    start = body.find(b"<!DOCTYPE")
    end = body.find(b">", start)
    return start >= 0 and end > start and b"[" not in body[start:end]


#: ``{namespace}local`` → ``(local, namespace)``: the few SyncML names, split once.
_SPLIT_TAGS: dict[str, tuple[str, str]] = {}


def _split_tag(tag: str) -> tuple[str, str]:
    ns, _, local = tag[1:].rpartition("}") if tag[:1] == "{" else ("", "", tag)
    if len(_SPLIT_TAGS) < 4096:  # bounded: peers choose the names
        _SPLIT_TAGS[tag] = (local, ns)
    return local, ns


def _from_lxml(node: etree._Element, depth: int, budget: list[int]) -> Element:
    if depth > MAX_DEPTH:
        raise SyncmlError(f"elements nested deeper than {MAX_DEPTH}")
    budget[0] -= 1
    if budget[0] < 0:
        raise SyncmlError(f"more than {MAX_ELEMENTS} elements")
    tag = node.tag
    if type(tag) is not str:
        raise SyncmlError("entity references are not allowed")
    local, ns = _SPLIT_TAGS.get(tag) or _split_tag(tag)
    text = node.text
    if not len(node):  # a leaf, most SyncML elements
        return Element(local, ns, [text] if text else [])
    children: list[Element | str | bytes] = [text] if text else []
    depth += 1
    for child in node:
        children.append(_from_lxml(child, depth, budget))
        tail = child.tail
        if tail:
            children.append(tail)
    return Element(local, ns, children)


def parse_tree(root: Element) -> Message:
    """Turn a decoded SyncML element tree into a :class:`Message` (raises SyncmlError)."""
    if root.tag != "SyncML":
        raise SyncmlError(f"root element is <{root.tag}>, not <SyncML>")
    hdr = root.find("SyncHdr")
    body = root.find("SyncBody")
    if hdr is None or body is None:
        raise SyncmlError("SyncML needs SyncHdr and SyncBody")
    try:
        header = _parse_header(hdr)
    except _Missing as exc:
        raise SyncmlError(f"SyncHdr: {exc}") from exc
    if header.ver_dtd not in ("1.2", "1.1"):
        raise SyncmlError(f"VerDTD {header.ver_dtd} is not supported", DTD_VERSION_NOT_SUPPORTED)
    message = Message(header)
    for child in body.elements():
        if child.tag == "Final":
            message.final = True
        else:
            message.commands.append(_parse_command(child, "SyncBody"))
    return message


def _text(element: Element) -> str:
    try:
        return element.text.strip()
    except WbxmlError as exc:
        raise _Missing(str(exc)) from exc


def _required(value: object, what: str) -> None:
    if value is None:
        raise _Missing(f"{what} is missing")


def _int(element: Element) -> int:
    text = _text(element)
    if not text.isdigit() or len(text) > 12:
        raise _Missing(f"<{element.tag}> must be a number, not {text[:20]!r}")
    return int(text)


def _parse_header(element: Element) -> SyncHdr:
    values: dict[str, object] = {}
    for child in element.elements():
        tag = child.tag
        if tag in ("VerDTD", "VerProto", "SessionID", "MsgID", "RespURI"):
            values[tag] = _text(child)
        elif tag == "Target":
            values[tag] = _parse_target(child)
        elif tag == "Source":
            values[tag] = _parse_source(child)
        elif tag == "NoResp":
            values[tag] = True
        elif tag == "Cred":
            values[tag] = _parse_cred(child)
        elif tag == "Meta":
            values[tag] = _parse_meta(child)
    for tag in ("VerDTD", "VerProto", "SessionID", "MsgID", "Target", "Source"):
        _required(values.get(tag), f"<{tag}>")
    return SyncHdr(
        session_id=values["SessionID"],  # type: ignore[arg-type]
        msg_id=values["MsgID"],  # type: ignore[arg-type]
        target=values["Target"],  # type: ignore[arg-type]
        source=values["Source"],  # type: ignore[arg-type]
        ver_dtd=values["VerDTD"],  # type: ignore[arg-type]
        ver_proto=values["VerProto"],  # type: ignore[arg-type]
        resp_uri=values.get("RespURI"),  # type: ignore[arg-type]
        no_resp=bool(values.get("NoResp")),
        cred=values.get("Cred"),  # type: ignore[arg-type]
        meta=values.get("Meta"),  # type: ignore[arg-type]
    )


def _loc(element: Element) -> tuple[str, str | None]:
    loc_uri = loc_name = None
    for child in element.elements():
        if child.tag == "LocURI":
            loc_uri = _text(child)
        elif child.tag == "LocName":
            loc_name = _text(child)
    if loc_uri is None:
        raise _Missing(f"<{element.tag}> has no <LocURI>")
    return loc_uri, loc_name


def _parse_target(element: Element) -> Target:
    return Target(*_loc(element))


def _parse_source(element: Element) -> Source:
    return Source(*_loc(element))


def _parse_cred(element: Element) -> Cred:
    meta = data = None
    for child in element.elements():
        if child.tag == "Meta":
            meta = _parse_meta(child)
        elif child.tag == "Data":
            data = _text(child)
    _required(data, "<Cred> <Data>")
    return Cred(data, meta)  # type: ignore[arg-type]


def _parse_meta(element: Element) -> Meta:
    meta = Meta()
    _fill_meta(meta, element)
    return meta


def _fill_meta(meta: Meta, element: Element) -> None:
    for child in element.elements():
        tag = child.tag
        if tag == "Type":
            meta.type = _text(child)
            if meta.type == DEVINF_TYPE_WBXML:
                meta.type = DEVINF_TYPE_XML  # one name for DevInf whatever the encoding
        elif tag == "Format":
            meta.format = _text(child)
        elif tag == "MaxMsgSize":
            meta.max_msg_size = _int(child)
        elif tag == "MaxObjSize":
            meta.max_obj_size = _int(child)
        elif tag == "Size":
            meta.size = _int(child)
        elif tag == "Anchor":
            last = next_ = None
            for part in child.elements():
                if part.tag == "Last":
                    last = _text(part)
                elif part.tag == "Next":
                    next_ = _text(part)
            _required(next_, "<Anchor> <Next>")
            meta.anchor = Anchor(next_, last)  # type: ignore[arg-type]
        elif tag == "NextNonce":
            meta.next_nonce = _text(child)
        elif tag == "Mark":
            meta.mark = _text(child)
        elif tag == "Version":
            meta.version = _text(child)
        elif tag == "EMI":
            meta.emi.append(_text(child))
        elif tag == "FieldLevel":
            meta.field_level = True
        elif tag == "Mem":
            free_mem = free_id = None
            shared = False
            for part in child.elements():
                if part.tag == "FreeMem":
                    free_mem = _int(part)
                elif part.tag == "FreeID":
                    free_id = _int(part)
                elif part.tag == "SharedMem":
                    shared = True
            _required(free_mem, "<Mem> <FreeMem>")
            _required(free_id, "<Mem> <FreeID>")
            meta.mem = Mem(free_mem, free_id, shared)  # type: ignore[arg-type]
        elif tag == "MetInf":  # some peers wrap the meta information
            _fill_meta(meta, child)


def _parse_item(element: Element) -> Item:
    item = Item()
    for child in element.elements():
        tag = child.tag
        if tag == "Target":
            item.target = _parse_target(child)
        elif tag == "Source":
            item.source = _parse_source(child)
        elif tag == "Data":
            item.data = _item_data(child)
        elif tag == "Meta":
            item.meta = _parse_meta(child)
        elif tag == "MoreData":
            item.more_data = True
        elif tag == "SourceParent":
            item.source_parent = _loc(child)[0]
        elif tag == "TargetParent":
            item.target_parent = _loc(child)[0]
    return item


def _item_data(element: Element) -> str | bytes | Element:
    """Item data: text kept exactly, an embedded element, or opaque bytes (maybe DevInf)."""
    children = element.children
    nested = element.elements()
    if nested:
        return nested[0]
    if len(children) == 1 and isinstance(children[0], bytes):
        raw = children[0]
        language = wbxml.language_of(raw, DEVINF_LANGUAGES)
        if language is not None:
            try:
                # Its text is bounded by its own size: the documents a message embeds
                # together decode to a few times the message at most.
                limit = 4 * len(raw) + 4096
                return wbxml.decode(
                    raw, language=language, max_bytes=limit, max_depth=MAX_DEPTH
                ).root
            except WbxmlError as exc:
                raise _Missing(f"embedded DevInf: {exc}") from exc
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if any(isinstance(child, bytes) for child in children):
        parts = [c if isinstance(c, bytes) else c.encode("utf-8") for c in children]
        joined = b"".join(parts)  # type: ignore[arg-type]
        try:
            return joined.decode("utf-8")
        except UnicodeDecodeError:
            return joined
    return "".join(children)  # type: ignore[arg-type]


def _parse_command(element: Element, container: str) -> Command:
    name = element.tag
    cmd_id_element = element.find("CmdID")
    try:
        cmd_id = _text(cmd_id_element) if cmd_id_element is not None else None
    except _Missing as exc:
        return BadCommand(name, None, f"<{name}>: {exc}")
    parser = _COMMAND_PARSERS.get(name)
    if parser is None or name not in ALLOWED_COMMANDS[container]:
        where = "unknown" if parser is None else f"not allowed in <{container}>"
        return BadCommand(name, cmd_id, f"<{name}> is {where}", OPTIONAL_FEATURE_NOT_SUPPORTED)
    if not cmd_id:
        return BadCommand(name, None, f"<{name}> has no <CmdID>")
    try:
        return parser(element, cmd_id)
    except _Missing as exc:
        return BadCommand(name, cmd_id, f"<{name}>: {exc}")


def _common(element: Element, command: object) -> list[Element]:
    """Fill NoResp, Cred and Meta of ``command``; return the other children."""
    rest = []
    for child in element.elements():
        tag = child.tag
        if tag == "NoResp":
            command.no_resp = True  # type: ignore[attr-defined]
        elif tag == "Cred":
            command.cred = _parse_cred(child)  # type: ignore[attr-defined]
        elif tag == "Meta":
            command.meta = _parse_meta(child)  # type: ignore[attr-defined]
        elif tag != "CmdID":
            rest.append(child)
    return rest


def _parse_status(element: Element, cmd_id: str) -> Status:
    values: dict[str, str] = {}
    status = Status(cmd_id, "", "", "", "")
    for child in element.elements():
        tag = child.tag
        if tag in ("MsgRef", "CmdRef", "Cmd", "Data"):
            values[tag] = _text(child)
        elif tag == "TargetRef":
            status.target_refs.append(_text(child))
        elif tag == "SourceRef":
            status.source_refs.append(_text(child))
        elif tag == "Item":
            status.items.append(_parse_item(child))
        elif tag == "Chal":
            meta = child.find("Meta")
            _required(meta, "<Chal> <Meta>")
            status.chal = Chal(_parse_meta(meta))  # type: ignore[arg-type]
        elif tag == "Cred":
            status.cred = _parse_cred(child)
    for tag in ("MsgRef", "CmdRef", "Cmd", "Data"):
        _required(values.get(tag), f"<{tag}>")
    status.msg_ref = values["MsgRef"]
    status.cmd_ref = values["CmdRef"]
    status.cmd = values["Cmd"]
    status.data = values["Data"]
    return status


def _parse_alert(element: Element, cmd_id: str) -> Alert:
    alert = Alert(cmd_id)
    for child in _common(element, alert):
        if child.tag == "Data":
            alert.data = _text(child)
        elif child.tag == "Item":
            alert.items.append(_parse_item(child))
        elif child.tag == "Correlator":
            alert.correlator = _text(child)
    return alert


def _item_command(cls: type[_ItemCommand]):  # type: ignore[no-untyped-def]
    def parse(element: Element, cmd_id: str) -> _ItemCommand:
        command = cls(cmd_id)
        for child in _common(element, command):
            tag = child.tag
            if tag == "Item":
                command.items.append(_parse_item(child))
            elif tag == "Archive":
                command.archive = True  # type: ignore[attr-defined]
            elif tag == "SftDel":
                command.sft_del = True  # type: ignore[attr-defined]
            elif tag == "Lang":
                command.lang = _text(child)  # type: ignore[attr-defined]
        if not command.items:
            raise _Missing("no <Item>")
        return command

    return parse


def _parse_results(element: Element, cmd_id: str) -> Results:
    results = Results(cmd_id, "")
    cmd_ref = None
    for child in element.elements():
        tag = child.tag
        if tag == "Item":
            results.items.append(_parse_item(child))
        elif tag == "CmdRef":
            cmd_ref = _text(child)
        elif tag == "MsgRef":
            results.msg_ref = _text(child)
        elif tag == "Meta":
            results.meta = _parse_meta(child)
        elif tag == "TargetRef":
            results.target_ref = _text(child)
        elif tag == "SourceRef":
            results.source_ref = _text(child)
    _required(cmd_ref, "<CmdRef>")
    results.cmd_ref = cmd_ref  # type: ignore[assignment]
    return results


def _parse_map(element: Element, cmd_id: str) -> Map:
    target = source = None
    items: list[MapItem] = []
    cred = meta = None
    for child in element.elements():
        tag = child.tag
        if tag == "MapItem":
            item_target = child.find("Target")
            item_source = child.find("Source")
            _required(item_target, "<MapItem> <Target>")
            _required(item_source, "<MapItem> <Source>")
            items.append(MapItem(_parse_target(item_target), _parse_source(item_source)))  # type: ignore[arg-type]
        elif tag == "Target":
            target = _parse_target(child)
        elif tag == "Source":
            source = _parse_source(child)
        elif tag == "Cred":
            cred = _parse_cred(child)
        elif tag == "Meta":
            meta = _parse_meta(child)
    _required(target, "<Target>")
    _required(source, "<Source>")
    if not items:
        raise _Missing("no <MapItem>")
    return Map(cmd_id, target, source, items, cred, meta)  # type: ignore[arg-type]


def _parse_exec(element: Element, cmd_id: str) -> Exec:
    item_element = element.find("Item")
    _required(item_element, "<Item>")
    command = Exec(cmd_id, _parse_item(item_element))  # type: ignore[arg-type]
    for child in _common(element, command):
        if child.tag == "Correlator":
            command.correlator = _text(child)
    return command


def _parse_sync(element: Element, cmd_id: str) -> Sync:
    sync = Sync(cmd_id)
    for child in _common(element, sync):
        tag = child.tag
        if tag == "Target":
            sync.target = _parse_target(child)
        elif tag == "Source":
            sync.source = _parse_source(child)
        elif tag == "NumberOfChanges":
            sync.number_of_changes = _int(child)
        else:
            sync.commands.append(_parse_command(child, "Sync"))
    return sync


def _container(cls: type[Atomic] | type[Sequence]):  # type: ignore[no-untyped-def]
    def parse(element: Element, cmd_id: str) -> Atomic | Sequence:
        command = cls(cmd_id)
        for child in _common(element, command):
            command.commands.append(_parse_command(child, cls.name))
        if not command.commands:
            raise _Missing("no commands")
        return command

    return parse


_COMMAND_PARSERS = {
    "Status": _parse_status,
    "Alert": _parse_alert,
    "Sync": _parse_sync,
    "Add": _item_command(Add),
    "Replace": _item_command(Replace),
    "Delete": _item_command(Delete),
    "Copy": _item_command(Copy),
    "Move": _item_command(Move),
    "Get": _item_command(Get),
    "Put": _item_command(Put),
    "Results": _parse_results,
    "Map": _parse_map,
    "Exec": _parse_exec,
    "Atomic": _container(Atomic),
    "Sequence": _container(Sequence),
}


# -- building ------------------------------------------------------------------------------


def _leaf(tag: str, text: str, ns: str = SYNCML_NS) -> Element:
    return Element(tag, ns, [text])


def _empty(tag: str, ns: str = SYNCML_NS) -> Element:
    return Element(tag, ns)


def _loc_element(tag: str, loc_uri: str, loc_name: str | None) -> Element:
    children: list[Element | str | bytes] = [_leaf("LocURI", loc_uri)]
    if loc_name is not None:
        children.append(_leaf("LocName", loc_name))
    return Element(tag, SYNCML_NS, children)


def _meta_element(meta: Meta, wbxml_encoded: bool = False) -> Element:
    children: list[Element | str | bytes] = []
    add = children.append
    if meta.field_level:
        add(_empty("FieldLevel", METINF_NS))
    if meta.format is not None:
        add(_leaf("Format", meta.format, METINF_NS))
    if meta.type is not None:
        meta_type = meta.type
        if wbxml_encoded and meta_type == DEVINF_TYPE_XML:
            meta_type = DEVINF_TYPE_WBXML  # the embedded DevInf is a WBXML document
        add(_leaf("Type", meta_type, METINF_NS))
    if meta.mark is not None:
        add(_leaf("Mark", meta.mark, METINF_NS))
    if meta.size is not None:
        add(_leaf("Size", str(meta.size), METINF_NS))
    if meta.anchor is not None:
        parts: list[Element | str | bytes] = []
        if meta.anchor.last is not None:
            parts.append(_leaf("Last", meta.anchor.last, METINF_NS))
        parts.append(_leaf("Next", meta.anchor.next, METINF_NS))
        add(Element("Anchor", METINF_NS, parts))
    if meta.version is not None:
        add(_leaf("Version", meta.version, METINF_NS))
    if meta.next_nonce is not None:
        add(_leaf("NextNonce", meta.next_nonce, METINF_NS))
    if meta.max_msg_size is not None:
        add(_leaf("MaxMsgSize", str(meta.max_msg_size), METINF_NS))
    if meta.max_obj_size is not None:
        add(_leaf("MaxObjSize", str(meta.max_obj_size), METINF_NS))
    for emi in meta.emi:
        add(_leaf("EMI", emi, METINF_NS))
    if meta.mem is not None:
        mem: list[Element | str | bytes] = []
        if meta.mem.shared_mem:
            mem.append(_empty("SharedMem", METINF_NS))
        mem.append(_leaf("FreeMem", str(meta.mem.free_mem), METINF_NS))
        mem.append(_leaf("FreeID", str(meta.mem.free_id), METINF_NS))
        add(Element("Mem", METINF_NS, mem))
    return Element("Meta", SYNCML_NS, children)


def _cred_element(cred: Cred) -> Element:
    children: list[Element | str | bytes] = []
    if cred.meta is not None:
        children.append(_meta_element(cred.meta))
    children.append(_leaf("Data", cred.data))
    return Element("Cred", SYNCML_NS, children)


def _item_element(item: Item, wbxml_encoded: bool) -> Element:
    children: list[Element | str | bytes] = []
    add = children.append
    if item.target is not None:
        add(_loc_element("Target", item.target.loc_uri, item.target.loc_name))
    if item.source is not None:
        add(_loc_element("Source", item.source.loc_uri, item.source.loc_name))
    if item.source_parent is not None:
        add(_loc_element("SourceParent", item.source_parent, None))
    if item.target_parent is not None:
        add(_loc_element("TargetParent", item.target_parent, None))
    if item.meta is not None:
        add(_meta_element(item.meta, wbxml_encoded))
    data = item.data
    if data is not None:
        if isinstance(data, Element):
            if wbxml_encoded and data.ns == DEVINF_NS:
                # DevInf has no code page of its own in SyncML: it travels as an embedded
                # DevInf WBXML document. MetInf (e.g. the Anchor a Status echoes) is inline.
                content: Element | str | bytes = wbxml.encode(data, DEVINF_1_2)
            else:
                content = data
        elif wbxml_encoded and isinstance(data, str):
            content = data.encode("utf-8")
        else:
            content = data
        add(Element("Data", SYNCML_NS, [content] if content != "" else []))
    if item.more_data:
        add(_empty("MoreData"))
    return Element("Item", SYNCML_NS, children)


def _head(command: object, *, lang: bool = False, cred: bool = True) -> list[Element | str | bytes]:
    """CmdID, NoResp?, [Lang?], Cred? in DTD order."""
    children: list[Element | str | bytes] = [_leaf("CmdID", command.cmd_id)]  # type: ignore[attr-defined]
    if command.no_resp:  # type: ignore[attr-defined]
        children.append(_empty("NoResp"))
    if lang and command.lang is not None:  # type: ignore[attr-defined]
        children.append(_leaf("Lang", command.lang))  # type: ignore[attr-defined]
    if cred and command.cred is not None:  # type: ignore[attr-defined]
        children.append(_cred_element(command.cred))  # type: ignore[attr-defined]
    return children


def _command_element(command: Command, wbxml_encoded: bool) -> Element:
    name = command.name
    if isinstance(command, Status):
        children: list[Element | str | bytes] = [
            _leaf("CmdID", command.cmd_id),
            _leaf("MsgRef", command.msg_ref),
            _leaf("CmdRef", command.cmd_ref),
            _leaf("Cmd", command.cmd),
        ]
        children += [_leaf("TargetRef", ref) for ref in command.target_refs]
        children += [_leaf("SourceRef", ref) for ref in command.source_refs]
        if command.cred is not None:
            children.append(_cred_element(command.cred))
        if command.chal is not None:
            children.append(Element("Chal", SYNCML_NS, [_meta_element(command.chal.meta)]))
        children.append(_leaf("Data", command.data))
        children += [_item_element(item, wbxml_encoded) for item in command.items]
    elif isinstance(command, _ItemCommand):
        if not command.items:
            raise ValueError(f"<{name}> needs at least one item")
        children = _head(command, lang=isinstance(command, Get | Put), cred=False)
        if isinstance(command, Delete):
            if command.archive:
                children.append(_empty("Archive"))
            if command.sft_del:
                children.append(_empty("SftDel"))
        if command.cred is not None:
            children.append(_cred_element(command.cred))
        if command.meta is not None:
            children.append(_meta_element(command.meta, wbxml_encoded))
        children += [_item_element(item, wbxml_encoded) for item in command.items]
    elif isinstance(command, Alert):
        children = _head(command)
        if command.data is not None:
            children.append(_leaf("Data", command.data))
        if command.correlator is not None:
            children.append(_leaf("Correlator", command.correlator))
        children += [_item_element(item, wbxml_encoded) for item in command.items]
    elif isinstance(command, Sync):
        children = _head(command)
        if command.target is not None:
            children.append(_loc_element("Target", command.target.loc_uri, command.target.loc_name))
        if command.source is not None:
            children.append(_loc_element("Source", command.source.loc_uri, command.source.loc_name))
        if command.meta is not None:
            children.append(_meta_element(command.meta, wbxml_encoded))
        if command.number_of_changes is not None:
            children.append(_leaf("NumberOfChanges", str(command.number_of_changes)))
        children += [_command_element(inner, wbxml_encoded) for inner in command.commands]
    elif isinstance(command, Results):
        children = [_leaf("CmdID", command.cmd_id)]
        if command.msg_ref is not None:
            children.append(_leaf("MsgRef", command.msg_ref))
        children.append(_leaf("CmdRef", command.cmd_ref))
        if command.meta is not None:
            children.append(_meta_element(command.meta, wbxml_encoded))
        if command.target_ref is not None:
            children.append(_leaf("TargetRef", command.target_ref))
        if command.source_ref is not None:
            children.append(_leaf("SourceRef", command.source_ref))
        children += [_item_element(item, wbxml_encoded) for item in command.items]
    elif isinstance(command, Map):
        children = [
            _leaf("CmdID", command.cmd_id),
            _loc_element("Target", command.target.loc_uri, command.target.loc_name),
            _loc_element("Source", command.source.loc_uri, command.source.loc_name),
        ]
        if command.cred is not None:
            children.append(_cred_element(command.cred))
        if command.meta is not None:
            children.append(_meta_element(command.meta, wbxml_encoded))
        for map_item in command.map_items:
            children.append(
                Element(
                    "MapItem",
                    SYNCML_NS,
                    [
                        _loc_element("Target", map_item.target.loc_uri, map_item.target.loc_name),
                        _loc_element("Source", map_item.source.loc_uri, map_item.source.loc_name),
                    ],
                )
            )
    elif isinstance(command, Exec):
        children = _head(command)
        if command.meta is not None:
            children.append(_meta_element(command.meta, wbxml_encoded))
        if command.correlator is not None:
            children.append(_leaf("Correlator", command.correlator))
        children.append(_item_element(command.item, wbxml_encoded))
    elif isinstance(command, Atomic | Sequence):
        children = _head(command, cred=False)
        if command.meta is not None:
            children.append(_meta_element(command.meta, wbxml_encoded))
        children += [_command_element(inner, wbxml_encoded) for inner in command.commands]
    else:
        raise ValueError(f"{name} cannot be encoded")
    return Element(name, SYNCML_NS, children)


def build_tree(message: Message, wbxml_encoded: bool = False) -> Element:
    """The element tree of ``message`` in DTD order (item data as opaque bytes for WBXML)."""
    header = message.header
    hdr: list[Element | str | bytes] = [
        _leaf("VerDTD", header.ver_dtd),
        _leaf("VerProto", header.ver_proto),
        _leaf("SessionID", header.session_id),
        _leaf("MsgID", header.msg_id),
        _loc_element("Target", header.target.loc_uri, header.target.loc_name),
        _loc_element("Source", header.source.loc_uri, header.source.loc_name),
    ]
    if header.resp_uri is not None:
        hdr.append(_leaf("RespURI", header.resp_uri))
    if header.no_resp:
        hdr.append(_empty("NoResp"))
    if header.cred is not None:
        hdr.append(_cred_element(header.cred))
    if header.meta is not None:
        hdr.append(_meta_element(header.meta))
    body: list[Element | str | bytes] = [
        _command_element(command, wbxml_encoded) for command in message.commands
    ]
    if message.final:
        body.append(_empty("Final"))
    return Element(
        "SyncML",
        SYNCML_NS,
        [Element("SyncHdr", SYNCML_NS, hdr), Element("SyncBody", SYNCML_NS, body)],
    )


def encode_message(message: Message, wbxml: bool = False) -> bytes:
    """Serialise ``message`` as SyncML XML (UTF-8) or WBXML, elements in DTD order."""
    tree = build_tree(message, wbxml)
    if wbxml:
        return _wbxml_encode(tree)
    return tree_to_xml(tree)


def encoded_size(command: Command, wbxml: bool = False) -> int:
    """The bytes ``command`` adds to a message in the given encoding.

    In WBXML the figure includes 2 bytes for a code page switch that may precede it, so it
    is never less than the real cost; in XML it is exact.
    """
    element = _command_element(command, wbxml)
    if wbxml:
        return len(encode_body(element, SYNCML_1_2)) + 2
    out: list[str] = []
    _write(element, SYNCML_NS, out)
    return sum(len(part.encode("utf-8")) if not part.isascii() else len(part) for part in out)


def _wbxml_encode(tree: Element) -> bytes:
    # WBXML 1.2 with the registered public id, as SyncML clients write it themselves.
    return wbxml.encode(tree, SYNCML_1_2)


# -- XML writing ---------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Escape character data; ``\r`` as a reference so the parser on the other side keeps it
    (XML would otherwise turn CRLF into LF, and vCard lines end in CRLF)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def tree_to_xml(root: Element) -> bytes:
    """Write an element tree as compact UTF-8 XML; a child whose namespace differs from its
    parent's declares it (``xmlns="syncml:metinf"``), as SyncML peers expect."""
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
    _write(root, "", out)
    return "".join(out).encode("utf-8")


def _write(element: Element, parent_ns: str, out: list[str]) -> None:
    tag = element.tag
    ns = element.ns
    start = f'<{tag} xmlns="{ns}"' if ns != parent_ns else "<" + tag
    children = element.children
    if not children:
        out.append(start + "/>")
        return
    if len(children) == 1 and type(children[0]) is str:  # the common leaf: one text
        out.append(f"{start}>{_escape(children[0])}</{tag}>")
        return
    out.append(start + ">")
    for child in children:
        if type(child) is str:
            out.append(_escape(child))
        elif type(child) is bytes:
            try:
                out.append(_escape(child.decode("utf-8")))
            except UnicodeDecodeError as exc:
                raise ValueError(f"<{tag}> holds binary data that XML cannot carry") from exc
        else:
            _write(child, ns, out)  # type: ignore[arg-type]
    out.append(f"</{tag}>")
