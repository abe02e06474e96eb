"""The WBXML codec: the specification's own example, every token kind, the bounds, garbage,
and the cross-check with Debian's libwbxml (``wbxml2xml``/``xml2wbxml``): what one encodes,
the other decodes to the same SyncML document."""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.protocols import devinf, syncml, wbxml
from engine.protocols.wbxml import Element, Language, WbxmlError
from engine.protocols.wbxml_tables import (
    DEVINF_1_2,
    DEVINF_NS,
    METINF_NS,
    SYNCML_1_2,
    SYNCML_LANGUAGES,
    SYNCML_NS,
)

DATA = Path(__file__).parent / "syncml_vectors"

#: The made-up language of the WBXML specification's first example (WAP-192 section 8.1).
XYZ = Language("XYZ", 0x01, "-//XYZ//DTD XYZ//EN", "XYZ", {0: ("", {5: "BR", 6: "CARD", 7: "XYZ"})})


def test_the_specification_example_decodes() -> None:
    """WAP-192 example 1: an entity, inline strings, an empty element, US-ASCII."""
    body = bytes.fromhex(
        "01 01 03 00 47 46 03 20 58 20 26 20 59 00 05 03 20 58 00 02 81 20 03 3d 00 02 81 20"
        " 03 31 20 00 01 01"
    )
    document = wbxml.decode(body, language=XYZ)
    assert (document.version, document.public_id, document.charset) == (1, 1, 3)
    card = document.root.find("CARD")
    assert card is not None
    assert card.children == [" X & Y", Element("BR"), " X\u00a0=\u00a01 "]


def test_multi_byte_integers() -> None:
    assert wbxml.mb_u_int32(0) == b"\x00"
    assert wbxml.mb_u_int32(0x7F) == b"\x7f"
    assert wbxml.mb_u_int32(0x80) == b"\x81\x00"
    assert wbxml.mb_u_int32(0x1201) == b"\xa4\x01"  # SyncML 1.2's public id
    assert wbxml.mb_u_int32(0xFFFFFFFF) == b"\x8f\xff\xff\xff\x7f"
    with pytest.raises(WbxmlError):
        wbxml.mb_u_int32(1 << 32)


def _header(table: bytes = b"", version: int = 3, public: bytes = b"\xa4\x01") -> bytes:
    return bytes([version]) + public + b"\x6a" + wbxml.mb_u_int32(len(table)) + table


def test_string_table_literal_public_id_switch_page_and_opaque() -> None:
    table = b"-//SYNCML//DTD SyncML 1.2//EN\x00shared\x00"
    body = (
        _header(table, public=b"\x00\x00")
        + b"\x6d"  # <SyncML>
        + b"\x6b"  # <SyncBody>
        + b"\x5a\x00\x01\x53\x83\x1e\x03-x\x00\x01\x01"  # Meta/Type: STR_T "shared" + "-x"
        + b"\x00\x00\x4f\xc3\x03\x00\xffa\x01"  # back to page 0, Data OPAQUE
        + b"\x12"  # <Final/>
        + b"\x01\x01"
    )
    document = wbxml.decode(body, SYNCML_LANGUAGES)
    assert document.public_text == "-//SYNCML//DTD SyncML 1.2//EN"
    assert document.language is SYNCML_1_2
    sync_body = document.root.find("SyncBody")
    assert sync_body is not None
    meta = sync_body.find("Meta")
    assert meta is not None
    assert meta.children == [Element("Type", METINF_NS, ["shared-x"])]
    assert sync_body.find("Data") == Element("Data", SYNCML_NS, [b"\x00\xffa"])
    assert sync_body.find("Final") == Element("Final", SYNCML_NS)


def test_literal_tags_and_attributes_are_read() -> None:
    table = b"Custom\x00kind\x00"
    body = _header(table) + b"\x6d\xc4\x00\x04\x07\x03v\x00\x01\x03t\x00\x01\x01"
    root = wbxml.decode(body, SYNCML_LANGUAGES).root
    custom = root.children[0]
    assert isinstance(custom, Element)
    assert (custom.tag, custom.attrs, custom.children) == ("Custom", {"kind": "v"}, ["t"])


def test_encode_then_decode_is_identity_and_switches_pages_lazily() -> None:
    tree = Element(
        "SyncML",
        SYNCML_NS,
        [
            Element(
                "SyncHdr",
                SYNCML_NS,
                [Element("Meta", SYNCML_NS, [Element("MaxMsgSize", METINF_NS, ["10000"])])],
            ),
            Element("SyncBody", SYNCML_NS, [Element("Data", SYNCML_NS, [b"\x00\x01"])]),
        ],
    )
    encoded = wbxml.encode(tree, SYNCML_1_2)
    # One switch to MetInf and one back, no redundant ones.
    assert encoded.count(b"\x00\x01\x4c") == 1 and encoded.count(b"\x00\x00\x6b") == 1
    assert wbxml.decode(encoded, SYNCML_LANGUAGES).root == tree
    literal = wbxml.encode(tree, SYNCML_1_2, literal_public_id=True)
    assert wbxml.decode(literal, SYNCML_LANGUAGES).public_text == SYNCML_1_2.public_text


def test_encoding_refuses_what_it_cannot_write() -> None:
    with pytest.raises(WbxmlError, match="no token"):
        wbxml.encode(Element("Nope", SYNCML_NS), SYNCML_1_2)
    with pytest.raises(WbxmlError, match="NUL"):
        wbxml.encode(Element("SyncML", SYNCML_NS, ["a\x00b"]), SYNCML_1_2)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "ends early"),
        (b"\x09\x01\x6a\x00\x45\x01", "unsupported WBXML version"),
        (_header(public=b"\x05") + b"\x45\x01", "unknown WBXML language"),
        (b"\x03\xa4\x01\x05\x00\x45\x01", "unsupported charset"),
        (_header() + b"\x3f", "unknown tag token"),
        (_header() + b"\x00\x07\x45\x01", "unknown code page"),
        (_header() + b"\x6d\x83\x00\x01", "outside a table"),
        (_header(b"abc") + b"\x6d\x83\x00\x01", "no terminator"),
        (_header() + b"\x6d\xc3\x8f\xff\xff\xff\x7f", "announced"),
        (_header() + b"\x6d\xc3\x8f\xff\xff\xff\xff\x01", "too long"),
        (_header() + b"\x6d\x03abc", "no terminator"),
        (_header() + b"\x6d\x03\xff\xfe\x00\x01", "not valid utf-8"),
        (_header() + b"\x6d\x02\x8f\xff\xff\xff\x7f\x01", "not a character"),
        (_header() + b"\x6d\x01\x6d\x01", "after the root"),
        (_header(), "no root"),
        (_header() + b"\x6d\x80\x01", "extension token"),
        (_header() + b"\x01", "END without an open element"),
        (_header() + b"\x03a\x00", "outside the root"),
        (_header() + b"\x6d\x6b\x01", "not closed"),
        (_header(b"\x00", public=b"\x00\x05") + b"\x6d\x01", "outside a table"),
    ],
)
def test_malformed_documents_give_a_clean_error(body: bytes, message: str) -> None:
    with pytest.raises(WbxmlError, match=re.compile(message, re.IGNORECASE)):
        wbxml.decode(body, SYNCML_LANGUAGES)


def test_depth_element_count_and_size_are_bounded() -> None:
    deep = _header() + b"\x6d" + b"\x6b" * 100 + b"\x01" * 101
    with pytest.raises(WbxmlError, match="deeper"):
        wbxml.decode(deep, SYNCML_LANGUAGES)
    wide = _header() + b"\x6d" + b"\x12" * 1000 + b"\x01"
    with pytest.raises(WbxmlError, match="too many"):
        wbxml.decode(wide, SYNCML_LANGUAGES, max_elements=500)
    assert len(wbxml.decode(wide, SYNCML_LANGUAGES).root.children) == 1000
    with pytest.raises(WbxmlError, match="exceeds"):
        wbxml.decode(wide, SYNCML_LANGUAGES, max_bytes=100)


def test_string_table_references_cannot_amplify_a_small_document() -> None:
    """Each two-byte STR_T stands for a whole table entry: the decoded text is bounded too,
    and many adjacent pieces are joined once (not copied again for every piece)."""
    entry = b"x" * 10_000
    table = entry + b"\x00"
    references = b"\x83\x00" * 5_000  # 10 KB of references to 10 KB each: 50 MB of text
    bomb = _header(table) + b"\x6d" + references + b"\x01"
    with pytest.raises(WbxmlError, match="more text than allowed"):
        wbxml.decode(bomb, SYNCML_LANGUAGES, max_bytes=1_000_000)
    pieces = _header() + b"\x6d" + b"\x02\x41" * 100_000 + b"\x01"  # 100,000 entities "A"
    assert wbxml.decode(pieces, SYNCML_LANGUAGES).root.children == ["A" * 100_000]


def test_every_truncation_and_random_garbage_give_only_wbxml_errors() -> None:
    """Whatever the bytes, the decoder answers a tree or a WbxmlError, never another error."""
    good = (DATA / "syncevolution-init.wbxml").read_bytes()
    for end in range(len(good)):
        with pytest.raises(WbxmlError):
            wbxml.decode(good[:end], SYNCML_LANGUAGES)
    rng = random.Random(7)
    for _ in range(3000):
        mutated = bytearray(good[:300])
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        for candidate in (bytes(mutated), _header() + rng.randbytes(rng.randint(0, 64))):
            with contextlib.suppress(WbxmlError):
                wbxml.decode(candidate, SYNCML_LANGUAGES)


def test_the_real_syncevolution_client_message_decodes() -> None:
    """What SyncEvolution sends first (captured from the Debian client): WBXML 1.2, numeric
    public id, MetInf on page 1, its DevInf as an opaque DevInf WBXML document."""
    document = wbxml.decode((DATA / "syncevolution-init.wbxml").read_bytes(), SYNCML_LANGUAGES)
    assert (document.version, document.public_id) == (0x02, 0x1201)
    nested = wbxml.decode(_first_opaque(document.root), SYNCML_LANGUAGES)
    assert nested.language is DEVINF_1_2
    assert nested.root.tag == "DevInf" and nested.root.ns == DEVINF_NS


def _first_opaque(element: Element) -> bytes:
    for child in element.children:
        if isinstance(child, bytes):
            return child
        if isinstance(child, Element):
            try:
                return _first_opaque(child)
            except LookupError:
                continue
    raise LookupError("no opaque data")


# -- cross-check with libwbxml --------------------------------------------------------------

needs_libwbxml = pytest.mark.skipif(
    shutil.which("wbxml2xml") is None or shutil.which("xml2wbxml") is None,
    reason="libwbxml2-utils is not installed (scripts/test installs it)",
)


def _cross_check_messages() -> dict[str, syncml.Message]:
    """Several SyncML messages: header with credentials and meta, DevInf Put/Results, a Sync
    with vCard items, opaque item data, statuses with challenges, a Map, nested Atomic."""
    server_devinf = devinf.DevInf(
        dev_id="emm-ds",
        dev_typ="server",
        man="EMM",
        mod="OMA DS",
        sw_v="1.0",
        utc=True,
        support_large_objs=True,
        support_number_of_changes=True,
        datastores=[
            devinf.DataStore(
                source_ref="contacts",
                display_name="Contacts",
                max_guid_size=32,
                rx_pref=devinf.ContentType("text/vcard", "3.0"),
                rx=[devinf.ContentType("text/x-vcard", "2.1")],
                tx_pref=devinf.ContentType("text/vcard", "3.0"),
                tx=[devinf.ContentType("text/x-vcard", "2.1")],
                ctcaps=[
                    devinf.CTCap(
                        "text/vcard",
                        "3.0",
                        [
                            devinf.Property("BEGIN", val_enum=["VCARD"]),
                            devinf.Property(
                                "TEL", params=[devinf.PropParam("TYPE", val_enum=["HOME"])]
                            ),
                        ],
                    )
                ],
                sync_types=[1, 2, 3, 4, 5, 6, 7],
            )
        ],
    )
    header = syncml.SyncHdr(
        session_id="17",
        msg_id="2",
        target=syncml.Target("sc-client"),
        source=syncml.Source("https://emm.example/ds", "EMM"),
        resp_uri="https://emm.example/ds?s=abc",
        cred=syncml.Cred("dXNlcjpwYXNz", syncml.Meta(format="b64", type="syncml:auth-basic")),
        meta=syncml.Meta(max_msg_size=10240, max_obj_size=4_000_000),
    )
    vcard = "BEGIN:VCARD\nVERSION:3.0\nN:Doe;Jane;;;\nFN:Jane Doe & Co <x>\nEND:VCARD\n"
    messages = {
        "sync": syncml.Message(
            header,
            [
                syncml.Status(
                    "1",
                    "1",
                    "0",
                    "SyncHdr",
                    "401",
                    target_refs=["https://emm.example/ds"],
                    source_refs=["sc-client"],
                    chal=syncml.Chal(
                        syncml.Meta(format="b64", type="syncml:auth-md5", next_nonce="Tm9uY2U=")
                    ),
                ),
                syncml.Status(
                    "8",
                    "1",
                    "2",
                    "Alert",
                    "200",
                    items=[
                        syncml.Item(
                            data=Element(
                                "Anchor", METINF_NS, [Element("Next", METINF_NS, ["20260101"])]
                            )
                        )
                    ],
                ),
                syncml.Alert(
                    "2",
                    "200",
                    items=[
                        syncml.Item(
                            target=syncml.Target("./contacts"),
                            source=syncml.Source("contacts"),
                            meta=syncml.Meta(anchor=syncml.Anchor("20260102T000000Z", "1")),
                        )
                    ],
                ),
                syncml.Sync(
                    "3",
                    syncml.Target("./contacts"),
                    syncml.Source("contacts"),
                    number_of_changes=3,
                    commands=[
                        syncml.Add(
                            "4",
                            [syncml.Item(source=syncml.Source("1"), data=vcard)],
                            meta=syncml.Meta(type="text/vcard"),
                        ),
                        syncml.Replace(
                            "5",
                            [
                                syncml.Item(
                                    target=syncml.Target("srv-9"),
                                    meta=syncml.Meta(type="text/vcard", size=12345),
                                    data="BEGIN:VCARD\nPHOTO;ENCODING=b:QUJD",
                                    more_data=True,
                                )
                            ],
                        ),
                        syncml.Delete("6", [syncml.Item(target=syncml.Target("srv-3"))]),
                    ],
                ),
                syncml.Map(
                    "7",
                    syncml.Target("contacts"),
                    syncml.Source("./contacts"),
                    [syncml.MapItem(syncml.Target("srv-1"), syncml.Source("1"))],
                ),
            ],
            final=True,
        ),
        "devinf": syncml.Message(
            header,
            [
                syncml.Results(
                    "1",
                    "2",
                    msg_ref="1",
                    meta=syncml.Meta(type=devinf.DEVINF_TYPE_XML),
                    items=[
                        syncml.Item(
                            source=syncml.Source(devinf.DEVINF_URI),
                            data=devinf.devinf_element(server_devinf),
                        )
                    ],
                ),
                syncml.Put(
                    "2",
                    [
                        syncml.Item(
                            source=syncml.Source(devinf.DEVINF_URI),
                            data=devinf.devinf_element(server_devinf),
                        )
                    ],
                    meta=syncml.Meta(type=devinf.DEVINF_TYPE_XML),
                ),
                syncml.Get(
                    "3",
                    [syncml.Item(target=syncml.Target(devinf.DEVINF_URI))],
                    meta=syncml.Meta(type=devinf.DEVINF_TYPE_XML),
                ),
            ],
            final=True,
        ),
        "atomic": syncml.Message(
            header,
            [
                syncml.Atomic(
                    "1",
                    [
                        syncml.Sequence(
                            "2",
                            [
                                syncml.Exec(
                                    "3",
                                    syncml.Item(target=syncml.Target("./Vendor/Op")),
                                    correlator="c-1",
                                )
                            ],
                        ),
                        syncml.Alert("4", "1223"),
                    ],
                )
            ],
        ),
    }
    return messages


def _comparable(message: syncml.Message) -> syncml.Message:
    """What survives libwbxml unchanged: it writes opaque item data with CRLF line ends (and
    XML turns those back into LF); DevInf is compared as a model (indentation aside)."""
    for command in _walk(message.commands):
        for item in getattr(command, "items", []):
            if isinstance(item.data, str):
                item.data = re.sub(r"\r*\n", "\n", item.data)
            elif isinstance(item.data, Element) and item.data.tag == "DevInf":
                item.data = devinf.parse_devinf(item.data)  # type: ignore[assignment]
    return message


def _walk(commands: list[syncml.Command]) -> list[syncml.Command]:
    out: list[syncml.Command] = []
    for command in commands:
        out.append(command)
        out += _walk(getattr(command, "commands", []))
    return out


@needs_libwbxml
@pytest.mark.parametrize("name", ["sync", "devinf", "atomic"])
def test_what_we_encode_libwbxml_decodes_to_the_same_document(name: str, tmp_path: Path) -> None:
    message = _cross_check_messages()[name]
    ours = tmp_path / "ours.wbxml"
    ours.write_bytes(syncml.encode_message(message, wbxml=True))
    back = tmp_path / "back.xml"
    subprocess.run(
        ["wbxml2xml", "-m", "0", "-o", str(back), str(ours)], check=True, capture_output=True
    )
    decoded = syncml.parse_message(back.read_bytes(), syncml.CONTENT_TYPE_DS_XML)
    expected = syncml.parse_message(syncml.encode_message(message), syncml.CONTENT_TYPE_DS_XML)
    assert _comparable(decoded) == _comparable(expected)


@needs_libwbxml
@pytest.mark.parametrize("name", ["sync", "devinf", "atomic"])
def test_what_libwbxml_encodes_we_decode_to_the_same_document(name: str, tmp_path: Path) -> None:
    message = _cross_check_messages()[name]
    source = tmp_path / "ours.xml"
    source.write_bytes(syncml.encode_message(message))
    theirs = tmp_path / "theirs.wbxml"
    subprocess.run(["xml2wbxml", "-o", str(theirs), str(source)], check=True, capture_output=True)
    raw = theirs.read_bytes()
    assert raw[1:3] == b"\xa4\x01"  # libwbxml writes the numeric SyncML 1.2 public id
    decoded = syncml.parse_message(raw, syncml.CONTENT_TYPE_DS_WBXML)
    expected = syncml.parse_message(source.read_bytes(), syncml.CONTENT_TYPE_DS_XML)
    assert _comparable(decoded) == _comparable(expected)


@needs_libwbxml
def test_the_real_client_message_reads_the_same_through_libwbxml_and_through_us(
    tmp_path: Path,
) -> None:
    captured = DATA / "syncevolution-init.wbxml"
    back = tmp_path / "back.xml"
    subprocess.run(
        ["wbxml2xml", "-m", "0", "-o", str(back), str(captured)], check=True, capture_output=True
    )
    theirs = syncml.parse_message(back.read_bytes(), syncml.CONTENT_TYPE_DS_XML)
    ours = syncml.parse_message(captured.read_bytes(), syncml.CONTENT_TYPE_DS_WBXML)
    assert _comparable(theirs) == _comparable(ours)


@pytest.mark.parametrize(
    ("syncml_id", "devinf_id"),
    [(b"\x9f\x53", b"\x9f\x54"), (b"\x9e\x21", b"\x9e\x2d")],
    ids=["1.1", "1.1-old-libwbxml-ids"],
)
def test_syncml_and_devinf_1_1_public_ids_decode(syncml_id: bytes, devinf_id: bytes) -> None:
    """SyncML 1.1 shares the 1.2 tokens; its public ids (both registrations) are known."""
    raw = (DATA / "syncevolution-init.wbxml").read_bytes()
    assert raw[1:3] == b"\xa4\x01" and raw.count(b"\x02\xa4\x03\x6a") == 1
    patched = (
        raw[:1] + syncml_id + raw[3:].replace(b"\x02\xa4\x03\x6a", b"\x02" + devinf_id + b"\x6a")
    )
    message = syncml.parse_message(patched, syncml.CONTENT_TYPE_DS_WBXML)
    put = message.commands[0]
    assert isinstance(put, syncml.Put)
    assert devinf.parse_devinf(put.items[0].data).dev_id == "sc-client"  # type: ignore[arg-type]


@needs_libwbxml
def test_libwbxml_encoding_of_the_real_client_xml_reads_the_same(tmp_path: Path) -> None:
    """SyncEvolution's XML message (DevInf with CTCaps of two datastores) through xml2wbxml."""
    source = DATA / "syncevolution-init.xml"
    theirs = tmp_path / "theirs.wbxml"
    subprocess.run(["xml2wbxml", "-o", str(theirs), str(source)], check=True, capture_output=True)
    decoded = syncml.parse_message(theirs.read_bytes(), syncml.CONTENT_TYPE_DS_WBXML)
    expected = syncml.parse_message(source.read_bytes(), syncml.CONTENT_TYPE_DS_XML)
    assert _comparable(decoded) == _comparable(expected)
