"""The SyncML 1.2 message model: the OMA examples, round trips through XML and WBXML, the DTD's
element order on everything written, hardening of the XML parser, and answers the server can
give to messages that are wholly or partly wrong."""

from __future__ import annotations

import contextlib
import random
import re
from pathlib import Path

import pytest

from engine.protocols import devinf, syncml, wbxml
from engine.protocols.syncml import (
    Add,
    Alert,
    Anchor,
    Atomic,
    BadCommand,
    Chal,
    Copy,
    Cred,
    Delete,
    Exec,
    Get,
    Item,
    Map,
    MapItem,
    Mem,
    Message,
    Meta,
    Move,
    Put,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    Sync,
    SyncHdr,
    SyncmlError,
    Target,
)
from engine.protocols.wbxml import Element
from engine.protocols.wbxml_tables import SYNCML_1_2, SYNCML_LANGUAGES

VECTORS = Path(__file__).parent / "syncml_vectors"
XML = syncml.CONTENT_TYPE_DS_XML
WBXML = syncml.CONTENT_TYPE_DS_WBXML

#: The client's initialisation package of the OMA DS 1.2 protocol's two-way sync example,
#: comments included as the specification prints them.
CLIENT_INIT = b"""<?xml version="1.0" encoding="UTF-8"?>
<SyncML xmlns='SYNCML:SYNCML1.2'>
  <SyncHdr>
    <VerDTD>1.2</VerDTD>
    <VerProto>SyncML/1.2</VerProto>
    <SessionID>1</SessionID>
    <MsgID>1</MsgID>
    <Target><LocURI>http://www.syncml.org/sync-server</LocURI></Target>
    <Source><LocURI>IMEI:493005100592800</LocURI></Source>
    <Cred> <!--The authentication is optional.-->
      <Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type></Meta>
      <Data>QnJ1Y2UyOk9oQmVoYXZl</Data> <!--base64 formatting of "userid:password"-->
    </Cred>
    <Meta> <!--The Meta is now used to indicate the maximum SyncML message size, which
      client can receive.-->
      <MaxMsgSize xmlns='syncml:metinf'>5000</MaxMsgSize>
    </Meta>
  </SyncHdr>
  <SyncBody>
    <Alert>
      <CmdID>1</CmdID>
      <Data>200</Data> <!-- 200 = TWO_WAY_ALERT -->
      <Item>
        <Target><LocURI>./contacts/james_bond</LocURI></Target>
        <Source><LocURI>./dev-contacts</LocURI></Source>
        <Meta>
          <Anchor xmlns='syncml:metinf'>
            <Last>234</Last>
            <Next>276</Next>
          </Anchor>
        </Meta>
      </Item>
    </Alert>
    <Final/>
  </SyncBody>
</SyncML>
"""

#: The server's modifications of the same example: statuses, challenge-free, a Sync with a
#: Replace of a vCard given as CDATA.
SERVER_SYNC = b"""<SyncML xmlns='SYNCML:SYNCML1.2'>
  <SyncHdr>
    <VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto>
    <SessionID>1</SessionID><MsgID>2</MsgID>
    <Target><LocURI>IMEI:493005100592800</LocURI></Target>
    <Source><LocURI>http://www.syncml.org/sync-server</LocURI></Source>
  </SyncHdr>
  <SyncBody>
    <Status>
      <CmdID>1</CmdID><MsgRef>2</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd>
      <TargetRef>http://www.syncml.org/sync-server</TargetRef>
      <SourceRef>IMEI:493005100592800</SourceRef>
      <Data>200</Data>
    </Status>
    <Sync>
      <CmdID>3</CmdID>
      <Target><LocURI>./dev-contacts</LocURI></Target>
      <Source><LocURI>./contacts/james_bond</LocURI></Source>
      <Replace>
        <CmdID>4</CmdID>
        <Meta><Type xmlns='syncml:metinf'>text/x-vcard</Type></Meta>
        <Item>
          <Target><LocURI>1023</LocURI></Target>
          <Data><![CDATA[BEGIN:VCARD
VERSION:2.1
FN:Bruce Smith
N:Smith;Bruce
TEL;WORK;VOICE:+1-919-555-1234
END:VCARD]]></Data>
        </Item>
      </Replace>
    </Sync>
    <Final/>
  </SyncBody>
</SyncML>
"""


def test_the_client_initialisation_example_reads_as_the_specification_means() -> None:
    message = syncml.parse_message(CLIENT_INIT, XML)
    header = message.header
    assert (header.ver_dtd, header.ver_proto, header.session_id, header.msg_id) == (
        "1.2",
        "SyncML/1.2",
        "1",
        "1",
    )
    assert header.target == Target("http://www.syncml.org/sync-server")
    assert header.source == Source("IMEI:493005100592800")
    assert header.cred == Cred("QnJ1Y2UyOk9oQmVoYXZl", Meta(type="syncml:auth-basic"))
    assert header.meta == Meta(max_msg_size=5000)
    assert message.final
    [alert] = message.commands
    assert alert == Alert(
        "1",
        "200",
        items=[
            Item(
                target=Target("./contacts/james_bond"),
                source=Source("./dev-contacts"),
                meta=Meta(anchor=Anchor(next="276", last="234")),
            )
        ],
    )


def test_the_server_sync_example_keeps_the_vcard_exactly() -> None:
    message = syncml.parse_message(SERVER_SYNC, XML)
    status, sync = message.commands
    assert status == Status(
        "1",
        "2",
        "0",
        "SyncHdr",
        "200",
        target_refs=["http://www.syncml.org/sync-server"],
        source_refs=["IMEI:493005100592800"],
    )
    assert isinstance(sync, Sync)
    [replace] = sync.commands
    assert isinstance(replace, Replace)
    assert replace.meta == Meta(type="text/x-vcard")
    assert replace.items[0].data == (
        "BEGIN:VCARD\nVERSION:2.1\nFN:Bruce Smith\nN:Smith;Bruce\n"
        "TEL;WORK;VOICE:+1-919-555-1234\nEND:VCARD"
    )


def test_the_real_client_messages_read_alike_in_xml_and_wbxml() -> None:
    """SyncEvolution's first message, captured in both encodings from the Debian client."""
    from_xml = syncml.parse_message((VECTORS / "syncevolution-init.xml").read_bytes(), XML)
    from_wbxml = syncml.parse_message((VECTORS / "syncevolution-init.wbxml").read_bytes(), WBXML)
    put, get, alert = from_wbxml.commands[:3]
    assert isinstance(put, Put) and isinstance(get, Get) and isinstance(alert, Alert)
    assert put.meta == Meta(type=devinf.DEVINF_TYPE_XML)  # +wbxml on the wire
    assert alert.data == "201" and alert.items[0].meta.anchor is not None  # type: ignore[union-attr]
    client = devinf.parse_devinf(put.items[0].data)  # type: ignore[arg-type]
    assert (client.dev_id, client.man, client.support_large_objs) == (
        "sc-client",
        "Patrick Ohly",
        True,
    )
    assert client.datastores[0].rx_pref == devinf.ContentType("text/vcard", "3.0")
    # The XML capture synced two datastores, the WBXML one only the address book.
    from_xml_devinf = devinf.parse_devinf(from_xml.commands[0].items[0].data)  # type: ignore[union-attr,arg-type]
    assert from_xml_devinf.datastores[0] == client.datastores[0]
    assert [store.source_ref for store in from_xml_devinf.datastores] == [
        "./addressbook",
        "./calendar",
    ]
    assert from_xml.header == from_wbxml.header


# -- a message with everything --------------------------------------------------------------


def _full_meta() -> Meta:
    return Meta(
        format="b64",
        type="text/vcard",
        mark="read",
        size=42,
        anchor=Anchor("2", "1"),
        version="3.0",
        next_nonce="bm9uY2U=",
        max_msg_size=10240,
        max_obj_size=65536,
        emi=["x-one", "x-two"],
        mem=Mem(1000, 10, shared_mem=True),
        field_level=True,
    )


def _full_item(data: str | bytes | Element | None = "BEGIN:VCARD\r\nN:A&B<c>\r\nEND:VCARD") -> Item:
    return Item(
        target=Target("srv-1", "Server one"),
        source=Source("cli-1", "Client one"),
        source_parent="cli-parent",
        target_parent="srv-parent",
        meta=_full_meta(),
        data=data,
        more_data=True,
    )


def _everything() -> Message:
    cred = Cred("dXNlcjpwYXNz", Meta(format="b64", type="syncml:auth-basic"))
    devinf_tree = devinf.devinf_element(
        devinf.DevInf(
            "emm",
            "server",
            [
                devinf.DataStore(
                    "contacts",
                    devinf.ContentType("text/vcard", "3.0"),
                    devinf.ContentType("text/vcard", "3.0"),
                    [1, 2, 7],
                    max_mem=10,
                    max_id=5,
                    shared_mem=True,
                    support_hierarchical_sync=True,
                    ctcaps=[
                        devinf.CTCap(
                            "text/vcard",
                            "3.0",
                            [
                                devinf.Property(
                                    "N",
                                    data_type="chr",
                                    max_occur=1,
                                    max_size=100,
                                    no_truncate=True,
                                    val_enum=["a"],
                                    display_name="Name",
                                    params=[devinf.PropParam("TYPE", "chr", ["X"], "Type")],
                                )
                            ],
                            field_level=True,
                        )
                    ],
                )
            ],
            man="EMM",
            mod="m",
            oem="o",
            fw_v="1",
            sw_v="2",
            hw_v="3",
            utc=True,
            support_large_objs=True,
            support_number_of_changes=True,
            ext=[devinf.Ext("X-Feature", ["1", "2"])],
        )
    )
    item_commands = [
        Add("10", [_full_item()], no_resp=True, cred=cred, meta=_full_meta()),
        Replace("11", [_full_item(), _full_item(None)], meta=Meta(type="text/vcard")),
        Delete(
            "12",
            [_full_item(None)],
            no_resp=True,
            cred=cred,
            meta=_full_meta(),
            archive=True,
            sft_del=True,
        ),
        Copy("13", [_full_item()], no_resp=True, cred=cred, meta=_full_meta()),
        Move("14", [_full_item()], no_resp=True, cred=cred, meta=_full_meta()),
    ]
    commands: list[syncml.Command] = [
        Status(
            "1", "1", "0", "SyncHdr", "407",
            target_refs=["a", "b"], source_refs=["c"], cred=cred,
            chal=Chal(Meta(format="b64", type="syncml:auth-md5", next_nonce="bg==")),
            items=[_full_item()],
        ),
        Alert("2", "200", no_resp=True, cred=cred, correlator="c1", items=[_full_item()]),
        Sync(
            "3", Target("./contacts", "C"), Source("contacts", "c"), item_commands,
            no_resp=True, cred=cred, meta=_full_meta(), number_of_changes=5,
        ),
        Get("4", [_full_item()], no_resp=True, cred=cred, meta=_full_meta(), lang="en"),
        Put("5", [Item(source=Source("./devinf12"), data=devinf_tree)], lang="de",
            meta=Meta(type=devinf.DEVINF_TYPE_XML)),
        Results("6", "4", [_full_item()], msg_ref="1", meta=_full_meta(), target_ref="t",
                source_ref="s"),
        Map("7", Target("contacts"), Source("./contacts"),
            [MapItem(Target("srv-1"), Source("cli-1")), MapItem(Target("srv-2"), Source("cli-2"))],
            cred=cred, meta=_full_meta()),
        Exec("8", _full_item(), no_resp=True, cred=cred, meta=_full_meta(), correlator="c2"),
        Atomic("9", [Add("15", [_full_item()]),
                     Sequence("16", [Get("17", [_full_item()])], no_resp=True,
                              meta=_full_meta())],
               no_resp=True, meta=_full_meta()),
    ]  # fmt: skip
    header = SyncHdr(
        "77", "3", Target("https://emm/ds", "EMM"), Source("IMEI:1", "phone"),
        resp_uri="https://emm/ds?s=1", no_resp=True, cred=cred, meta=_full_meta(),
    )  # fmt: skip
    return Message(header, commands, final=True)


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
def test_every_element_round_trips(wbxml_encoded: bool) -> None:
    message = _everything()
    encoded = syncml.encode_message(message, wbxml=wbxml_encoded)
    again = syncml.parse_message(encoded, WBXML if wbxml_encoded else XML)
    assert again == message
    assert syncml.encode_message(again, wbxml=wbxml_encoded) == encoded


def _content_model(name: str) -> re.Pattern[str]:
    """The DTD content model of ``name`` as a regular expression over child names."""
    parts = []
    for child, occurs in syncml.DTD_ORDER[name]:
        if child == "commands":
            allowed = syncml.ALLOWED_COMMANDS.get(name, syncml.ALLOWED_COMMANDS["SyncBody"])
            unit = "(?:(?:" + "|".join(sorted(allowed)) + "),)"
        else:
            unit = f"(?:{child},)"
        parts.append(unit + {"!": "", "?": "?", "*": "*", "+": "+"}[occurs])
    return re.compile("".join(parts))


def _order_violations(root: Element) -> list[str]:
    problems = []
    stack = [root]
    while stack:
        element = stack.pop()
        children = list(element.elements())
        stack += children
        if element.tag == "Data" or element.tag not in syncml.DTD_ORDER:
            continue
        sequence = "".join(child.tag + "," for child in children)
        if not _content_model(element.tag).fullmatch(sequence):
            problems.append(f"<{element.tag}>: {sequence}")
    return problems


def _devinf_order_violations(root: Element) -> list[str]:
    problems = []
    for element in [root, *_descendants(root)]:
        order = devinf.DTD_ORDER.get(element.tag)
        if order is None:
            continue
        ranks = [order.index(child.tag) for child in element.elements()]
        if ranks != sorted(ranks):
            problems.append(f"<{element.tag}>: {[c.tag for c in element.elements()]}")
    return problems


def _descendants(element: Element) -> list[Element]:
    out = []
    for child in element.elements():
        out.append(child)
        out += _descendants(child)
    return out


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
def test_everything_written_follows_the_dtd_order(wbxml_encoded: bool) -> None:
    encoded = syncml.encode_message(_everything(), wbxml=wbxml_encoded)
    if wbxml_encoded:
        root = wbxml.decode(encoded, SYNCML_LANGUAGES).root
    else:
        root = syncml.xml_to_tree(encoded)
    assert _order_violations(root) == []
    [devinf_root] = [
        element.children[0] if not wbxml_encoded else _nested_devinf(element)
        for element in _descendants(root)
        if element.tag == "Data" and _has_devinf(element, wbxml_encoded)
    ]
    assert isinstance(devinf_root, Element)
    assert _devinf_order_violations(devinf_root) == []


def _has_devinf(element: Element, wbxml_encoded: bool) -> bool:
    first = element.children[0] if element.children else None
    if wbxml_encoded:
        return isinstance(first, bytes) and first[:1] == b"\x02"
    return isinstance(first, Element)


def _nested_devinf(element: Element) -> Element:
    raw = element.children[0]
    assert isinstance(raw, bytes)
    return wbxml.decode(raw, SYNCML_LANGUAGES).root


def test_the_order_check_catches_a_wrong_order() -> None:
    """The DTD check above can fail: Data before Cmd in a Status, CmdID last in an Add."""
    wrong = syncml.xml_to_tree(
        b"<SyncML><SyncHdr/><SyncBody><Status><CmdID>1</CmdID><MsgRef>1</MsgRef>"
        b"<CmdRef>0</CmdRef><Data>200</Data><Cmd>SyncHdr</Cmd></Status>"
        b"<Add><Item/><CmdID>2</CmdID></Add></SyncBody></SyncML>"
    )
    assert [p.split(":")[0] for p in _order_violations(wrong)] == [
        "<Add>",
        "<Status>",
        "<SyncHdr>",
    ]


def test_reading_tolerates_another_order() -> None:
    shuffled = b"""<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><MsgID>4</MsgID>
      <Source><LocURI>dev</LocURI></Source><VerProto>SyncML/1.2</VerProto>
      <Target><LocURI>srv</LocURI></Target><SessionID>9</SessionID><VerDTD>1.2</VerDTD>
      </SyncHdr><SyncBody><Final/><Status><Data>200</Data><Cmd>Alert</Cmd><CmdRef>1</CmdRef>
      <MsgRef>1</MsgRef><CmdID>1</CmdID></Status></SyncBody></SyncML>"""
    message = syncml.parse_message(shuffled, XML)
    assert message.header == SyncHdr("9", "4", Target("srv"), Source("dev"))
    assert message.commands == [Status("1", "1", "1", "Alert", "200")]
    assert message.final


# -- data fidelity ---------------------------------------------------------------------------


def _one_item(data: str | bytes | Element | None) -> Message:
    header = SyncHdr("1", "1", Target("t"), Source("s"))
    return Message(header, [Add("1", [Item(source=Source("1"), data=data)])])


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
@pytest.mark.parametrize(
    "data",
    ["", "  spaced  ", "a\r\nb\rc\nd", "<&>\"'", "üñíçødé ✓ 😀", "]]>", "x" * 200_000],
    ids=["empty", "spaces", "line-ends", "markup", "unicode", "cdata-end", "large"],
)
def test_item_text_survives_exactly(data: str, wbxml_encoded: bool) -> None:
    encoded = syncml.encode_message(_one_item(data), wbxml=wbxml_encoded)
    again = syncml.parse_message(encoded, WBXML if wbxml_encoded else XML)
    assert again.commands[0].items[0].data == data  # type: ignore[union-attr]


def test_binary_data_travels_as_opaque_in_wbxml_and_is_refused_in_xml() -> None:
    binary = bytes(range(256))
    encoded = syncml.encode_message(_one_item(binary), wbxml=True)
    assert syncml.parse_message(encoded, WBXML).commands[0].items[0].data == binary  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="binary"):
        syncml.encode_message(_one_item(binary))


def test_xml_output_is_compact_utf8_with_metinf_namespaces() -> None:
    header = SyncHdr("1", "1", Target("t"), Source("s"), meta=Meta(max_msg_size=10240))
    encoded = syncml.encode_message(Message(header, [], final=True))
    assert encoded == (
        b'<?xml version="1.0" encoding="UTF-8"?><SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>'
        b"<VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID>"
        b"<MsgID>1</MsgID><Target><LocURI>t</LocURI></Target><Source><LocURI>s</LocURI>"
        b'</Source><Meta><MaxMsgSize xmlns="syncml:metinf">10240</MaxMsgSize></Meta>'
        b"</SyncHdr><SyncBody><Final/></SyncBody></SyncML>"
    )


# -- wrong messages ---------------------------------------------------------------------------

HEADER = (
    b"<SyncHdr><VerDTD>1.2</VerDTD><VerProto>SyncML/1.2</VerProto><SessionID>1</SessionID>"
    b"<MsgID>1</MsgID><Target><LocURI>t</LocURI></Target><Source><LocURI>s</LocURI></Source>"
    b"</SyncHdr>"
)


def _body(commands: bytes) -> bytes:
    return (
        b"<SyncML xmlns='SYNCML:SYNCML1.2'>"
        + HEADER
        + b"<SyncBody>"
        + commands
        + (b"<Final/></SyncBody></SyncML>")
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (_body(b""), "text/xml", 415, "content type"),
        (b"<SyncML", XML, 400, "malformed XML"),
        (b"\x03\xa4\x01\x6a\x00\x6d", WBXML, 400, "malformed WBXML"),
        (b"<Other/>", XML, 400, "not <SyncML>"),
        (b"<SyncML><SyncBody/></SyncML>", XML, 400, "SyncHdr and SyncBody"),
        (_body(b"").replace(b"<MsgID>1</MsgID>", b""), XML, 400, "MsgID"),
        (_body(b"").replace(b"<LocURI>t</LocURI>", b""), XML, 400, "LocURI"),
        (_body(b"").replace(b"<VerDTD>1.2", b"<VerDTD>1.0"), XML, 505, "VerDTD"),
        (
            b'<!DOCTYPE SyncML [<!ENTITY x SYSTEM "file:///etc/passwd">]><SyncML>&x;</SyncML>',
            XML,
            400,
            "DOCTYPE",
        ),
        (
            b'<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" "x" '
            b'[<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><SyncML>&b;</SyncML>',
            XML,
            400,
            "DOCTYPE",
        ),
        (b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "x"><SyncML/>', XML, 400, "DOCTYPE"),
        (
            b'<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" "http://127.0.0.1:9/x">'
            b"<SyncML><SyncHdr>&x;</SyncHdr></SyncML>",
            XML,
            400,
            "entity references",
        ),
        (b"<SyncML>" + b"<a>" * 60 + b"</a>" * 60 + b"</SyncML>", XML, 400, "deeper"),
    ],
)
def test_unusable_messages_raise_with_the_status_to_answer(
    body: bytes, content_type: str, status: int, message: str
) -> None:
    with pytest.raises(SyncmlError, match=message) as caught:
        syncml.parse_message(body, content_type)
    assert caught.value.status == status


def test_size_is_bounded_before_parsing() -> None:
    with pytest.raises(SyncmlError) as caught:
        syncml.parse_message(_body(b"x" * 2000), XML, max_bytes=1000)
    assert caught.value.status == 413


def test_a_bare_syncml_doctype_is_accepted_as_phones_send_it() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" '
        b'"http://www.openmobilealliance.org/tech/DTD/OMA-TS-SyncML_RepPro_DTD-V1_2.dtd">'
        + _body(b"")
    )
    assert syncml.parse_message(body, XML).final


def test_wrong_commands_become_bad_commands_beside_the_good_ones() -> None:
    """The server answers every command: unknown or misplaced ones get 406, malformed 400."""
    message = syncml.parse_message(
        _body(
            b"<Alert><CmdID>1</CmdID><Data>200</Data></Alert>"
            b"<Add><Meta/></Add>"
            b"<Add><CmdID>3</CmdID></Add>"
            b"<Search><CmdID>4</CmdID></Search>"
            b"<Frobnicate><CmdID>5</CmdID></Frobnicate>"
            b"<Status><CmdID>6</CmdID><MsgRef>1</MsgRef><Cmd>Alert</Cmd><Data>200</Data></Status>"
            b"<Sync><CmdID>7</CmdID><Status><CmdID>8</CmdID></Status>"
            b"<Replace><CmdID>9</CmdID><Item><Data>x</Data></Item></Replace></Sync>"
            b"<Map><CmdID>10</CmdID><Target><LocURI>a</LocURI></Target></Map>"
            b"<Alert><CmdID>11</CmdID><Item><Meta><MaxMsgSize>big</MaxMsgSize></Meta></Item>"
            b"</Alert>"
        ),
        XML,
    )
    alert, add_no_id, add_no_item, search, unknown, status, sync, bad_map, bad_alert = (
        message.commands
    )
    assert alert == Alert("1", "200")
    assert add_no_id == BadCommand("Add", None, "<Add> has no <CmdID>", 400)
    assert add_no_item == BadCommand("Add", "3", "<Add>: no <Item>", 400)
    assert (search.status, search.cmd_id) == (406, "4")  # type: ignore[union-attr]
    assert (unknown.status, unknown.cmd_id) == (406, "5")  # type: ignore[union-attr]
    assert status == BadCommand("Status", "6", "<Status>: <CmdRef> is missing", 400)
    assert isinstance(sync, Sync)
    assert sync.commands[0] == BadCommand("Status", "8", "<Status> is not allowed in <Sync>", 406)
    assert sync.commands[1] == Replace("9", [Item(data="x")])
    assert bad_map == BadCommand("Map", "10", "<Map>: <Source> is missing", 400)
    assert (bad_alert.status, bad_alert.cmd_id) == (400, "11")  # type: ignore[union-attr]
    assert "number" in bad_alert.reason  # type: ignore[union-attr]
    assert message.final


def test_a_broken_embedded_devinf_is_a_bad_command() -> None:
    header = SyncHdr("1", "1", Target("t"), Source("s"))
    broken = Put("1", [Item(data=b"\x02\xa4\x03\x6a\x00\x4a\x3f")])
    encoded = syncml.encode_message(Message(header, [broken]), wbxml=True)
    [command] = syncml.parse_message(encoded, WBXML).commands
    assert isinstance(command, BadCommand) and "DevInf" in command.reason


def test_content_types() -> None:
    assert syncml.content_type(False) == "application/vnd.syncml+xml"
    assert syncml.content_type(True) == "application/vnd.syncml+wbxml"
    assert syncml.content_type(True, dm=True) == "application/vnd.syncml.dm+wbxml"
    assert syncml.is_wbxml("application/vnd.syncml+wbxml; charset=UTF-8")
    assert not syncml.is_wbxml("Application/Vnd.SyncML.DM+XML")
    encoded = syncml.encode_message(_one_item("x"), wbxml=True)
    assert syncml.parse_message(encoded, syncml.CONTENT_TYPE_DM_WBXML) == _one_item("x")


def test_devinf_round_trips_and_needs_its_required_elements() -> None:
    put = _everything().commands[4]
    assert isinstance(put, Put)
    tree = put.items[0].data
    assert isinstance(tree, Element)
    info = devinf.parse_devinf(tree)
    assert devinf.parse_devinf(devinf.devinf_element(info)) == info
    assert info.datastores[0].ctcaps[0].properties[0].params[0].val_enum == ["X"]
    lacking = syncml.xml_to_tree(b"<DevInf><VerDTD>1.2</VerDTD><DevTyp>phone</DevTyp></DevInf>")
    with pytest.raises(devinf.DevInfError, match="DevID"):
        devinf.parse_devinf(lacking)
    no_synccap = syncml.xml_to_tree(
        b"<DevInf><DevID>d</DevID><DevTyp>phone</DevTyp><DataStore><SourceRef>c</SourceRef>"
        b"<Rx-Pref><CTType>text/vcard</CTType><VerCT>3.0</VerCT></Rx-Pref>"
        b"<Tx-Pref><CTType>text/vcard</CTType><VerCT>3.0</VerCT></Tx-Pref></DataStore></DevInf>"
    )
    with pytest.raises(devinf.DevInfError, match="SyncCap"):
        devinf.parse_devinf(no_synccap)


def test_devinf_1_1_top_level_ctcaps_join_their_datastore() -> None:
    tree = syncml.xml_to_tree(
        b"<DevInf><VerDTD>1.1</VerDTD><DevID>d</DevID><DevTyp>phone</DevTyp><DataStore>"
        b"<SourceRef>c</SourceRef><Rx-Pref><CTType>text/x-vcard</CTType><VerCT>2.1</VerCT>"
        b"</Rx-Pref><Tx-Pref><CTType>text/x-vcard</CTType><VerCT>2.1</VerCT></Tx-Pref>"
        b"<SyncCap><SyncType>1</SyncType></SyncCap></DataStore>"
        b"<CTCap><CTType>text/x-vcard</CTType><PropName>N</PropName></CTCap></DevInf>"
    )
    assert devinf.parse_devinf(tree).datastores[0].ctcaps[0].ct_type == "text/x-vcard"


def test_xml_parser_never_loads_a_dtd_or_an_entity(tmp_path: Path) -> None:
    """The external DTD a DOCTYPE names is not loaded, so its entities never expand: a
    reference to one is refused, and the document without one reads as it is."""
    dtd = tmp_path / "syncml.dtd"
    dtd.write_text('<!ENTITY secret "leaked">')
    doctype = f'<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" "{dtd.as_uri()}">'
    with pytest.raises(SyncmlError, match="entity references"):
        syncml.parse_message(
            doctype.encode() + _body(b"").replace(b"<SessionID>1", b"<SessionID>&secret;1"), XML
        )
    assert syncml.parse_message(doctype.encode() + _body(b""), XML).header.session_id == "1"


def _anchor_echo() -> Message:
    """A Status for an Alert echoing the client's Next anchor as MetInf in its item's data."""
    anchor = Element(
        "Anchor", syncml.METINF_NS, [Element("Next", syncml.METINF_NS, ["20260102T000000Z"])]
    )
    header = SyncHdr("1", "2", Target("dev"), Source("srv"))
    status = Status("1", "1", "3", "Alert", "200", items=[Item(data=anchor)])
    return Message(header, [status], final=True)


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
def test_metinf_in_item_data_stays_inline(wbxml_encoded: bool) -> None:
    message = _anchor_echo()
    encoded = syncml.encode_message(message, wbxml=wbxml_encoded)
    assert syncml.parse_message(encoded, WBXML if wbxml_encoded else XML) == message
    if wbxml_encoded:  # Data (0x4f), SWITCH_PAGE 1, Anchor (0x45): no opaque document
        assert b"\x4f\x00\x01\x45" in encoded
    else:
        assert b'<Data><Anchor xmlns="syncml:metinf"><Next>' in encoded


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
def test_encoded_size_is_what_a_command_adds(wbxml_encoded: bool) -> None:
    message = _everything()
    total = len(syncml.encode_message(message, wbxml=wbxml_encoded))
    without_last = Message(message.header, message.commands[:-1], final=True)
    added = total - len(syncml.encode_message(without_last, wbxml=wbxml_encoded))
    estimate = syncml.encoded_size(message.commands[-1], wbxml=wbxml_encoded)
    if wbxml_encoded:
        assert added <= estimate <= added + 2
    else:
        assert estimate == added


#: OMA DM 1.2's package 1 as its protocol specification shows it: the client's session
#: alert (1201) and a Replace of its DevInfo nodes, with DM's own VerProto.
DM_PACKAGE_1 = b"""<SyncML xmlns="SYNCML:SYNCML1.2">
  <SyncHdr>
    <VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
    <SessionID>1</SessionID><MsgID>1</MsgID>
    <Target><LocURI>http://www.syncml.org/mgmt-server</LocURI></Target>
    <Source><LocURI>IMEI:493005100592800</LocURI></Source>
    <Cred>
      <Meta><Type xmlns="syncml:metinf">syncml:auth-basic</Type>
        <Format xmlns="syncml:metinf">b64</Format></Meta>
      <Data>QnJ1Y2UyOk9oQmVoYXZl</Data>
    </Cred>
    <Meta><MaxMsgSize xmlns="syncml:metinf">5000</MaxMsgSize></Meta>
  </SyncHdr>
  <SyncBody>
    <Alert><CmdID>1</CmdID><Data>1201</Data></Alert>
    <Replace>
      <CmdID>3</CmdID>
      <Item><Source><LocURI>./DevInfo/DevId</LocURI></Source>
        <Meta><Format xmlns="syncml:metinf">chr</Format></Meta>
        <Data>IMEI:493005100592800</Data></Item>
      <Item><Source><LocURI>./DevInfo/Man</LocURI></Source><Data>Device Factory, Inc.</Data></Item>
      <Item><Source><LocURI>./DevInfo/Mod</LocURI></Source><Data>SmartPhone2000</Data></Item>
      <Item><Source><LocURI>./DevInfo/DmV</LocURI></Source><Data>1.2</Data></Item>
      <Item><Source><LocURI>./DevInfo/Lang</LocURI></Source><Data>en-US</Data></Item>
    </Replace>
    <Final/>
  </SyncBody>
</SyncML>"""


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
def test_the_oma_dm_package_1_example_reads_and_round_trips(wbxml_encoded: bool) -> None:
    message = syncml.parse_message(DM_PACKAGE_1, syncml.CONTENT_TYPE_DM_XML)
    assert message.header.ver_proto == "DM/1.2"
    assert message.header.cred == Cred(
        "QnJ1Y2UyOk9oQmVoYXZl", Meta(format="b64", type="syncml:auth-basic")
    )
    alert, replace = message.commands
    assert alert == Alert("1", "1201")
    assert isinstance(replace, Replace)
    assert {item.source.loc_uri: item.data for item in replace.items} == {  # type: ignore[union-attr]
        "./DevInfo/DevId": "IMEI:493005100592800",
        "./DevInfo/Man": "Device Factory, Inc.",
        "./DevInfo/Mod": "SmartPhone2000",
        "./DevInfo/DmV": "1.2",
        "./DevInfo/Lang": "en-US",
    }
    assert replace.items[0].meta == Meta(format="chr")
    content_type = syncml.content_type(wbxml_encoded, dm=True)
    encoded = syncml.encode_message(message, wbxml=wbxml_encoded)
    assert syncml.parse_message(encoded, content_type) == message


def test_garbage_gives_only_syncml_errors() -> None:
    """Mutated real messages, in both encodings: a model or a SyncmlError, nothing else."""
    rng = random.Random(11)
    for name, content_type in (
        ("syncevolution-init.wbxml", WBXML),
        ("syncevolution-init.xml", XML),
    ):
        good = (VECTORS / name).read_bytes()
        for _ in range(1500):
            mutated = bytearray(good)
            for _ in range(rng.randint(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            with contextlib.suppress(SyncmlError):
                syncml.parse_message(bytes(mutated), content_type)


def test_opaque_bytes_that_are_not_text_where_text_belongs() -> None:
    """Binary opaque data in a CmdID makes that command bad; in the header, the message."""
    message = Message(SyncHdr("1", "1", Target("t"), Source("s")), [Alert("1", "200")])
    tree = syncml.build_tree(message, True)
    sync_hdr, sync_body = tree.elements()
    sync_body.elements()[0].elements()[0].children = [b"\xff"]  # Alert's CmdID
    [command] = syncml.parse_tree(
        wbxml.decode(wbxml.encode(tree, SYNCML_1_2), SYNCML_LANGUAGES).root
    ).commands
    assert isinstance(command, BadCommand) and "not UTF-8" in command.reason
    sync_hdr.elements()[2].children = [b"\xff"]  # SessionID
    with pytest.raises(SyncmlError, match="SessionID"):
        syncml.parse_message(wbxml.encode(tree, SYNCML_1_2), WBXML)


@pytest.mark.parametrize("wbxml_encoded", [False, True], ids=["xml", "wbxml"])
def test_element_count_is_bounded(wbxml_encoded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    many = _body(b"<Alert><CmdID>1</CmdID>" + b"<Item/>" * 1000 + b"</Alert>")
    if wbxml_encoded:
        many = wbxml.encode(syncml.xml_to_tree(many), SYNCML_1_2)
    assert len(syncml.parse_message(many, WBXML if wbxml_encoded else XML).commands) == 1
    monkeypatch.setattr(syncml, "MAX_ELEMENTS", 1000)
    with pytest.raises(SyncmlError, match="elements"):
        syncml.parse_message(many, WBXML if wbxml_encoded else XML)
