"""Content lines, the text form vCard (2.1, 3.0) and iCalendar/vCalendar share (RFC 2425,
RFC 5545 section 3.1): ``NAME;PARAM=VALUE;...:value`` lines, folded at 75 octets.

Only what the PIM store needs: unfolding, splitting into name, parameters and value, and a
normalised *fingerprint* that is equal for two items with the same meaning, whatever the
property order, line endings, folding or the volatile properties clients rewrite
(revision stamps, product ids). Item bytes are stored as received; the fingerprint only
decides whether two items are the same (slow sync, conflicts).
"""

from __future__ import annotations

import hashlib
import quopri
import re
from dataclasses import dataclass

#: Folding: a line break followed by one space or tab continues the line (RFC 5545 3.1).
_FOLD = re.compile(r"\r?\n[ \t]")
#: vCard 2.1 quoted-printable soft line breaks (``=`` at the end of a line).
_QP_SOFT = re.compile(r"=\r?\n")


@dataclass(frozen=True, slots=True)
class ContentLine:
    name: str
    params: tuple[tuple[str, str], ...]
    value: str

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


def unfold(text: str) -> list[str]:
    """Logical lines of ``text``; quoted-printable soft breaks are joined as well."""
    text = _FOLD.sub("", text)
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if lines and lines[-1].endswith("=") and "QUOTED-PRINTABLE" in lines[-1].upper():
            lines[-1] = lines[-1][:-1] + line
            continue
        if line:
            lines.append(line)
    return lines


def _split_params(head: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = head.split(";")
    name = parts[0].strip().upper()
    if "." in name:  # vCard grouping (item1.TEL): the group is no part of the meaning
        name = name.rsplit(".", 1)[1]
    params: list[tuple[str, str]] = []
    for part in parts[1:]:
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:  # vCard 2.1 bare parameter (TEL;CELL): a TYPE
            key, value = "TYPE", key
        params.append((key.strip().upper(), value.strip().strip('"')))
    return name, tuple(params)


def parse(text: str) -> list[ContentLine]:
    """The content lines of ``text``; lines without a colon are ignored."""
    result: list[ContentLine] = []
    for line in unfold(text):
        head, sep, value = _split_value(line)
        if not sep:
            continue
        name, params = _split_params(head)
        result.append(ContentLine(name, params, value))
    return result


def _split_value(line: str) -> tuple[str, str, str]:
    """Split at the first colon outside a quoted parameter value."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            return line[:index], ":", line[index + 1 :]
    return line, "", ""


def decoded_value(line: ContentLine) -> str:
    """The value with vCard 2.1 quoted-printable undone (3.0 has no such encoding)."""
    encoding = (line.param("ENCODING") or "").upper()
    if encoding == "QUOTED-PRINTABLE":
        charset = line.param("CHARSET") or "utf-8"
        raw = quopri.decodestring(_QP_SOFT.sub("", line.value).encode("latin-1", "replace"))
        try:
            return raw.decode(charset, "replace")
        except LookupError:
            return raw.decode("utf-8", "replace")
    return line.value


def normalised(
    lines: list[ContentLine], *, ignore: frozenset[str], value_only: frozenset[str] = frozenset()
) -> list[str]:
    """Sorted, comparable lines: names upper case, TYPE values merged and sorted, encodings
    decoded, empty and ``ignore``d properties dropped, ``value_only`` properties without
    parameters."""
    out: list[str] = []
    for line in lines:
        if line.name in ignore:
            continue
        value = decoded_value(line)
        if not value.strip(" ;,"):
            continue  # an empty property says nothing (clients add them for every field)
        if line.name in value_only:
            out.append(f"{line.name}:{value}")
            continue
        types: set[str] = set()
        params: list[str] = []
        for key, param_value in line.params:
            if key in ("ENCODING", "CHARSET"):
                continue
            if key == "TYPE":
                types.update(t.strip().upper() for t in param_value.split(",") if t.strip())
            else:
                params.append(f"{key}={param_value}")
        if types:
            params.append("TYPE=" + ",".join(sorted(types)))
        head = ";".join([line.name, *sorted(params)])
        out.append(f"{head}:{value.strip()}")
    return sorted(out)


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def fold(line: str, width: int = 75) -> str:
    """Fold one logical line at ``width`` octets without splitting a UTF-8 sequence."""
    data = line.encode()
    if len(data) <= width:
        return line
    pieces: list[str] = []
    start = 0
    limit = width
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
        limit = width - 1  # continuation lines start with a space
    return "\r\n ".join(pieces)
