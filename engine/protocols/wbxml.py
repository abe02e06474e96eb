"""WBXML 1.0 to 1.3 (WAP-192-WBXML) decoding and encoding, sans-IO.

WBXML is XML with every tag name replaced by a one-byte token from a language table
(``engine.protocols.wbxml_tables``). A document is: version byte, public id, charset,
string table, then the body of tags, inline strings (``STR_I``), string-table references
(``STR_T``), character entities (``ENTITY``) and opaque bytes (``OPAQUE``). Tokens live on
code pages of 64; ``SWITCH_PAGE`` changes the page for the tags that follow.

The decoded document is a small tree of :class:`Element` whose children are elements, text
(``str``) and opaque data (``bytes``). The same tree is what ``engine.protocols.syncml`` builds
from XML, so both encodings share one model parser.

Everything read from the wire is bounded: the body length, the nesting depth, the number of
elements, every multi-byte integer and every string-table reference are checked, and any
malformed input raises :class:`WbxmlError` (never ``IndexError`` or ``UnicodeError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Global tokens (WAP-192-WBXML section 7.1), the same on every code page.
SWITCH_PAGE = 0x00
END = 0x01
ENTITY = 0x02
STR_I = 0x03
LITERAL = 0x04
EXT_I_0, EXT_I_1, EXT_I_2 = 0x40, 0x41, 0x42
PI = 0x43
LITERAL_C = 0x44
EXT_T_0, EXT_T_1, EXT_T_2 = 0x80, 0x81, 0x82
STR_T = 0x83
LITERAL_A = 0x84
EXT_0, EXT_1, EXT_2 = 0xC0, 0xC1, 0xC2
OPAQUE = 0xC3
LITERAL_AC = 0xC4

#: Tag bits: the low six bits are the token, 0x40 says content follows, 0x80 attributes.
HAS_CONTENT = 0x40
HAS_ATTRIBUTES = 0x80

#: IANA MIB enum numbers of the charsets a document may declare.
CHARSETS = {0: "utf-8", 3: "ascii", 4: "latin-1", 106: "utf-8"}
UTF_8 = 106

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 40
MAX_ELEMENTS = 500_000


class WbxmlError(ValueError):
    """The bytes are not a WBXML document this codec can read (says where and why)."""


class Element:
    """One element of a decoded (or to-be-encoded) document.

    ``ns`` is the XML namespace of the element's code page (``SYNCML:SYNCML1.2``,
    ``syncml:metinf``, ...), ``children`` holds elements, text (``str``) and opaque data
    (``bytes``) in document order. Attributes are rare in the languages this service speaks
    and are kept as a plain dict.
    """

    __slots__ = ("attrs", "children", "ns", "tag")

    def __init__(
        self,
        tag: str,
        ns: str = "",
        children: list[Element | str | bytes] | None = None,
        attrs: dict[str, str] | None = None,
    ) -> None:
        self.tag = tag
        self.ns = ns
        self.children: list[Element | str | bytes] = [] if children is None else children
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"Element({self.tag!r}, {self.ns!r}, {self.children!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (
            self.tag == other.tag
            and self.ns == other.ns
            and self.children == other.children
            and (self.attrs or None) == (other.attrs or None)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def elements(self) -> list[Element]:
        """The child elements, skipping text and opaque data."""
        return [child for child in self.children if type(child) is Element]

    def find(self, tag: str) -> Element | None:
        """The first child element called ``tag``, or ``None``."""
        for child in self.children:
            if isinstance(child, Element) and child.tag == tag:
                return child
        return None

    @property
    def text(self) -> str:
        """The element's character content (text children joined; opaque data as UTF-8)."""
        children = self.children
        if len(children) == 1 and isinstance(children[0], str):
            return children[0]
        parts: list[str] = []
        for child in children:
            if isinstance(child, str):
                parts.append(child)
            elif isinstance(child, bytes):
                try:
                    parts.append(child.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise WbxmlError(f"<{self.tag}> holds opaque data that is not UTF-8") from exc
        return "".join(parts)


@dataclass(frozen=True)
class Language:
    """A WBXML language: its public id (number and text) and its code pages.

    ``pages`` maps a code page number to ``(namespace, {token: tag name})``. The reverse map
    used by the encoder is computed once, so encoding a tag is one dict look-up.
    """

    name: str
    public_id: int
    public_text: str
    root: str
    pages: dict[int, tuple[str, dict[int, str]]]
    #: Other numeric public ids documents of this language carry (older registrations).
    aliases: tuple[int, ...] = ()
    #: ``(namespace, tag) -> (page, token)``, derived from ``pages``.
    tokens: dict[tuple[str, str], tuple[int, int]] = field(init=False, repr=False)
    #: ``namespace -> {tag: (page, token)}``, the same for the encoder's hot path.
    tokens_by_ns: dict[str, dict[str, tuple[int, int]]] = field(init=False, repr=False)
    #: ``page -> namespace``, derived from ``pages``.
    namespaces: dict[int, str] = field(init=False, repr=False)
    #: ``page -> 64 entries of (tag, namespace) or None``, indexed by token, for the decoder.
    decode_pages: dict[int, list[tuple[str, str] | None]] = field(init=False, repr=False)

    def is_named_by(self, public_id: int, public_text: str | None) -> bool:
        """Whether a document header's public id (number, or text when the number is 0)
        names this language."""
        if public_text is not None:
            return public_text.lower() == self.public_text.lower()
        return public_id == self.public_id or public_id in self.aliases

    def __post_init__(self) -> None:
        tokens: dict[tuple[str, str], tuple[int, int]] = {}
        for page, (ns, table) in self.pages.items():
            for token, tag in table.items():
                if not 0x05 <= token <= 0x3F:
                    raise ValueError(f"{self.name}: token {token:#x} of {tag} is out of range")
                tokens[(ns, tag)] = (page, token)
        object.__setattr__(self, "tokens", tokens)
        by_ns: dict[str, dict[str, tuple[int, int]]] = {}
        for (ns, tag), value in tokens.items():
            by_ns.setdefault(ns, {})[tag] = value
        object.__setattr__(self, "tokens_by_ns", by_ns)
        object.__setattr__(self, "namespaces", {p: ns for p, (ns, _) in self.pages.items()})
        decode_pages: dict[int, list[tuple[str, str] | None]] = {}
        for page, (ns, table) in self.pages.items():
            entries: list[tuple[str, str] | None] = [None] * 64
            for token, tag in table.items():
                entries[token] = (tag, ns)
            decode_pages[page] = entries
        object.__setattr__(self, "decode_pages", decode_pages)


@dataclass(slots=True)
class Document:
    """A decoded WBXML document: header fields and the root element."""

    version: int
    public_id: int
    public_text: str | None
    charset: int
    root: Element
    language: Language | None


# -- decoding ------------------------------------------------------------------------------


class _Reader:
    """Cursor over the body; every read checks the bounds."""

    __slots__ = ("data", "end", "pos", "text_left")

    def __init__(self, data: bytes, text_limit: int = MAX_BODY_BYTES) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        #: Characters of text the document may still decode to. A two-byte ``STR_T``
        #: reference stands for a whole string-table entry, so without this bound a small
        #: document could decode to gigabytes.
        self.text_left = text_limit

    def spend(self, text: str) -> str:
        self.text_left -= len(text)
        if self.text_left < 0:
            raise WbxmlError("the document decodes to more text than allowed")
        return text

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WbxmlError(f"document ends early at byte {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def mb_u_int32(self) -> int:
        """A WBXML multi-byte integer: 7 bits a byte, high bit set on all but the last."""
        value = 0
        for _ in range(5):
            octet = self.byte()
            value = (value << 7) | (octet & 0x7F)
            if not octet & 0x80:
                if value > 0xFFFFFFFF:
                    break
                return value
        raise WbxmlError(f"multi-byte integer too long at byte {self.pos}")

    def take(self, length: int) -> bytes:
        if length > self.end - self.pos:
            raise WbxmlError(f"{length} bytes announced at byte {self.pos}, fewer remain")
        chunk = self.data[self.pos : self.pos + length]
        self.pos += length
        return chunk

    def cstring(self) -> bytes:
        """A NUL-terminated inline string (UTF-8, ASCII and Latin-1 have one-byte NULs)."""
        stop = self.data.find(b"\x00", self.pos)
        if stop < 0:
            raise WbxmlError(f"inline string at byte {self.pos} has no terminator")
        chunk = self.data[self.pos : stop]
        self.pos = stop + 1
        return chunk


def _table_string(table: bytes, offset: int, encoding: str) -> str:
    """The string-table entry starting at ``offset`` (checked: inside the table, terminated)."""
    if offset >= len(table):
        raise WbxmlError(f"string table reference {offset} outside a table of {len(table)}")
    stop = table.find(b"\x00", offset)
    if stop < 0:
        raise WbxmlError(f"string table entry at {offset} has no terminator")
    return _text(table[offset:stop], encoding)


def _text(raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise WbxmlError(f"text is not valid {encoding}") from exc


def _read_header(reader: _Reader) -> tuple[int, int, str | None, int, str, bytes]:
    """Version, public id, public id text (when given in the string table), charset MIB,
    Python encoding and string table."""
    version = reader.byte()
    if version > 0x03:
        raise WbxmlError(f"unsupported WBXML version {version >> 4}.{version & 0x0F}")
    public_id = reader.mb_u_int32()
    public_index = reader.mb_u_int32() if public_id == 0 else None
    charset = reader.mb_u_int32() if version >= 0x01 else UTF_8
    encoding = CHARSETS.get(charset)
    if encoding is None:
        raise WbxmlError(f"unsupported charset MIB {charset}")
    table = reader.take(reader.mb_u_int32())
    public_text = None if public_index is None else _table_string(table, public_index, encoding)
    return version, public_id, public_text, charset, encoding, table


def language_of(data: bytes, languages: Iterable[Language]) -> Language | None:
    """The language of ``languages`` a WBXML document's header names, or ``None`` when the
    bytes do not start with a WBXML header naming one of them (never raises)."""
    try:
        _, public_id, public_text, _, _, _ = _read_header(_Reader(data))
    except WbxmlError:
        return None
    for candidate in languages:
        if candidate.is_named_by(public_id, public_text):
            return candidate
    return None


def decode(
    data: bytes,
    languages: Iterable[Language] = (),
    *,
    language: Language | None = None,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> Document:
    """Decode a WBXML document into an :class:`Element` tree.

    The language is the one of ``languages`` whose public id (number or text) the header
    names, or ``language`` when given (for documents with an unknown or absent public id).
    Raises :class:`WbxmlError` for anything malformed, unknown or over a bound.
    """
    if len(data) > max_bytes:
        raise WbxmlError(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    reader = _Reader(data, max_bytes)
    version, public_id, public_text, charset, encoding, table = _read_header(reader)
    if language is None:
        for candidate in languages:
            if candidate.is_named_by(public_id, public_text):
                language = candidate
                break
        else:
            named = public_text if public_text is not None else f"{public_id:#x}"
            raise WbxmlError(f"unknown WBXML language (public id {named})")

    root = _decode_body(reader, table, encoding, language, max_depth, max_elements)
    return Document(version, public_id, public_text, charset, root, language)


def _decode_body(
    reader: _Reader,
    table: bytes,
    encoding: str,
    language: Language,
    max_depth: int,
    max_elements: int,
) -> Element:
    """Decode the body iteratively (an explicit stack of open elements, no recursion).

    Hot loop: bytes are read from locals and tags resolved through per-page lists of 64
    entries, so one element costs a handful of index operations.
    """
    data = reader.data
    pos = reader.pos
    end = reader.end
    pages = language.decode_pages
    page = 0
    tags = pages.get(0)
    stack: list[Element] = []
    root: Element | None = None
    budget = max_elements
    #: Elements with adjacent text pieces, joined once at the end (joining as they come
    #: would copy the growing text again for every piece).
    pieced: dict[int, Element] = {}
    while pos < end:
        token = data[pos]
        pos += 1
        if token == SWITCH_PAGE:
            if pos >= end:
                raise WbxmlError(f"document ends early at byte {pos}")
            page = data[pos]
            pos += 1
            tags = pages.get(page)
            continue
        if token == END:
            if not stack:
                raise WbxmlError(f"END without an open element at byte {pos - 1}")
            stack.pop()
            continue
        if token == PI:
            reader.pos = pos
            _attributes(reader, table, encoding)
            pos = reader.pos
            continue
        if token in (STR_I, STR_T, ENTITY, OPAQUE):
            if not stack:
                raise WbxmlError(f"content outside the root element at byte {pos - 1}")
            children = stack[-1].children
            reader.pos = pos
            if token == STR_I:
                stop = data.find(b"\x00", pos)
                if stop < 0:
                    raise WbxmlError(f"inline string at byte {pos} has no terminator")
                text = _text(data[pos:stop], encoding)
                pos = stop + 1
            elif token == STR_T:
                text = _table_string(table, reader.mb_u_int32(), encoding)
                pos = reader.pos
            elif token == ENTITY:
                code = reader.mb_u_int32()
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise WbxmlError(f"entity {code} is not a character")
                text = chr(code)
                pos = reader.pos
            else:
                children.append(reader.take(reader.mb_u_int32()))
                pos = reader.pos
                continue
            reader.spend(text)
            if children and type(children[-1]) is str:
                pieced[id(stack[-1])] = stack[-1]
            children.append(text)
            continue
        if token in _EXTENSIONS:
            raise WbxmlError(f"extension token {token:#04x} is not used by this language")
        # a tag
        if root is not None and not stack:
            raise WbxmlError(f"bytes after the root element at {pos - 1}")
        budget -= 1
        if budget < 0:
            raise WbxmlError("too many elements")
        ident = token & 0x3F
        if ident == LITERAL:
            reader.pos = pos
            name = _table_string(table, reader.mb_u_int32(), encoding)
            pos = reader.pos
            element = Element(name, language.namespaces.get(page, ""))
        else:
            if tags is None:
                raise WbxmlError(f"unknown code page {page} at byte {pos - 1}")
            entry = tags[ident]
            if entry is None:
                raise WbxmlError(f"unknown tag token {ident:#04x} on page {page} at byte {pos - 1}")
            element = Element(entry[0], entry[1])
        if token & HAS_ATTRIBUTES:
            reader.pos = pos
            element.attrs = _attributes(reader, table, encoding)
            pos = reader.pos
        if stack:
            stack[-1].children.append(element)
        else:
            root = element
        if token & HAS_CONTENT:
            if len(stack) >= max_depth:
                raise WbxmlError(f"elements nested deeper than {max_depth}")
            stack.append(element)
    if stack:
        raise WbxmlError(f"document ends early at byte {pos}: <{stack[-1].tag}> is not closed")
    if root is None:
        raise WbxmlError("document has no root element")
    for element in pieced.values():
        _join_text(element)
    return root


def _join_text(element: Element) -> None:
    """Adjacent STR_I, STR_T and ENTITY pieces form one text node, as in XML."""
    joined: list[Element | str | bytes] = []
    run: list[str] = []
    for child in element.children:
        if type(child) is str:
            run.append(child)
            continue
        if run:
            joined.append("".join(run))
            run = []
        joined.append(child)
    if run:
        joined.append("".join(run))
    element.children = joined


def _attributes(reader: _Reader, table: bytes, encoding: str) -> dict[str, str]:
    """Attributes (or a PI) up to END. Only literal names are known: no language here has an
    attribute table."""
    attrs: dict[str, str] = {}
    name: str | None = None
    value: list[str] = []
    while True:
        token = reader.byte()
        if token == END:
            if name is not None:
                attrs[name] = "".join(value)
            return attrs
        if token == LITERAL:
            if name is not None:
                attrs[name] = "".join(value)
            name = _table_string(table, reader.mb_u_int32(), encoding)
            value = []
        elif token == STR_I and name is not None:
            value.append(reader.spend(_text(reader.cstring(), encoding)))
        elif token == STR_T and name is not None:
            value.append(reader.spend(_table_string(table, reader.mb_u_int32(), encoding)))
        elif token == ENTITY and name is not None:
            code = reader.mb_u_int32()
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise WbxmlError(f"entity {code} is not a character")
            value.append(chr(code))
        elif token == SWITCH_PAGE:
            reader.byte()
        else:
            raise WbxmlError(f"attribute token {token:#04x} unknown to this language")


#: Extension tokens; no language here defines them. (LITERAL_A/_C/_AC are literal tags.)
_EXTENSIONS = frozenset({EXT_I_0, EXT_I_1, EXT_I_2, EXT_T_0, EXT_T_1, EXT_T_2, EXT_0, EXT_1, EXT_2})


# -- encoding ------------------------------------------------------------------------------


def mb_u_int32(value: int) -> bytes:
    """Encode ``value`` as a WBXML multi-byte integer."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise WbxmlError(f"{value} does not fit a multi-byte integer")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def encode(
    root: Element,
    language: Language,
    *,
    version: int = 0x02,
    literal_public_id: bool = False,
) -> bytes:
    """Encode an element tree as a UTF-8 WBXML document of ``language``.

    ``literal_public_id`` writes the public id as text in the string table (public id 0),
    which is how SyncML implementations identify their documents; otherwise the registered
    number is written. Text becomes ``STR_I``, ``bytes`` become ``OPAQUE``. Tags missing from
    the language raise :class:`WbxmlError`.
    """
    out = bytearray((version,))
    if literal_public_id:
        text = language.public_text.encode("utf-8") + b"\x00"
        out += b"\x00\x00" + mb_u_int32(UTF_8) + mb_u_int32(len(text)) + text
    else:
        out += mb_u_int32(language.public_id) + mb_u_int32(UTF_8) + b"\x00"
    _Writer(out, language).element(root)
    return bytes(out)


def encode_body(element: Element, language: Language) -> bytes:
    """The body bytes of ``element`` alone (no header), starting on code page 0: what it
    adds to a document being built."""
    out = bytearray()
    _Writer(out, language).element(element)
    return bytes(out)


class _Writer:
    """Writes elements depth-first; switches code page only when a tag needs another one."""

    __slots__ = ("by_ns", "out", "page")

    def __init__(self, out: bytearray, language: Language) -> None:
        self.out = out
        self.by_ns = language.tokens_by_ns
        self.page = 0

    def element(self, element: Element) -> None:
        out = self.out
        table = self.by_ns.get(element.ns)
        found = table.get(element.tag) if table is not None else None
        if found is None:
            raise WbxmlError(f"<{element.tag}> ({element.ns or 'no namespace'}) has no token")
        page, token = found
        if page != self.page:
            out.append(SWITCH_PAGE)
            out.append(page)
            self.page = page
        if element.attrs:
            raise WbxmlError(f"<{element.tag}>: attributes are not encoded by this language")
        children = element.children
        if not children:
            out.append(token)
            return
        out.append(token | HAS_CONTENT)
        for child in children:
            kind = type(child)
            if kind is str:
                if "\x00" in child:  # type: ignore[operator]
                    raise WbxmlError(f"<{element.tag}> text contains NUL")
                out.append(STR_I)
                out += child.encode("utf-8")  # type: ignore[union-attr]
                out.append(0)
            elif kind is bytes:
                out.append(OPAQUE)
                out += mb_u_int32(len(child))
                out += child  # type: ignore[operator]
            else:
                self.element(child)  # type: ignore[arg-type]
        out.append(END)
