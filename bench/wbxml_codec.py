"""SyncML codec speed: messages per second through the message model, XML vs WBXML.

What it measures
    One SyncML message like those of a slow sync: the header with credentials and
    MaxMsgSize, a Status for the previous package, and a Sync holding N Add commands of one
    vCard 3.0 each (default 100). For each encoding it times, over a fixed number of rounds,
    ``parse_message`` (bytes to the model: the server's read of a request) and
    ``encode_message`` (the model to bytes: its write of a reply), and reports messages per
    CPU second, CPU microseconds per message, megabytes of message bytes per CPU second, and
    the size of the message. CPU time of the bench process is used, not wall time, so a busy
    machine changes the figures little.

Baseline
    lxml alone on the same XML bytes, in the same run: ``etree.fromstring`` (parse only, no
    model) and ``etree.tostring`` of the parsed tree. The ``x lxml`` column divides our time
    by lxml's parse time for reads and its serialise time for writes: the cost of having a
    typed model (and, for WBXML, of a codec written in Python) over C parsing alone.

Why
    Every request and reply of an OMA DS session goes through this codec; a slow sync of
    10,000 contacts is some hundred such messages each way, so the codec's cost per message
    is a floor under the server's CPU time per sync.

Run: ``.venv/bin/python -m bench.wbxml_codec [--items 100] [--seconds 2]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from lxml import etree

from engine.protocols import syncml
from engine.protocols.syncml import (
    Add,
    Cred,
    Item,
    Message,
    Meta,
    Source,
    Status,
    Sync,
    SyncHdr,
    Target,
)

from .common import environment, print_table


def vcard(n: int) -> str:
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\n"
        f"N:Contact{n:05d};Given{n};;;\r\nFN:Given{n} Contact{n:05d}\r\n"
        f"TEL;TYPE=CELL:+44 7700 9{n:05d}\r\nEMAIL;TYPE=INTERNET:c{n}@example.org\r\n"
        "ORG:Example & Sons\r\nNOTE:Met at the <conference>\\, 2026\r\nEND:VCARD\r\n"
    )


def sync_message(items: int) -> Message:
    header = SyncHdr(
        "1234",
        "3",
        Target("https://emm.example/ds"),
        Source("IMEI:356938035643809", "phone"),
        cred=Cred("dXNlcjpzZWNyZXQ=", Meta(format="b64", type="syncml:auth-basic")),
        meta=Meta(max_msg_size=1_000_000, max_obj_size=4_000_000),
    )
    adds = [
        Add(
            str(4 + n),
            [Item(source=Source(f"cli-{n}"), meta=Meta(type="text/vcard"), data=vcard(n))],
        )
        for n in range(items)
    ]
    return Message(
        header,
        [
            Status("1", "2", "0", "SyncHdr", "200"),
            Sync("2", Target("./contacts"), Source("contacts"), adds, number_of_changes=items),
        ],
        final=True,
    )


def rate(work: Callable[[], object], seconds: float) -> float:
    """CPU seconds per call, from as many calls as fit in ``seconds`` of wall time (after one
    warm-up call). CPU time of this process, so other work on the machine moves it little."""
    work()
    calls = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            work()
        calls += 10
    return (time.process_time() - cpu_started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100, help="Add commands in the Sync")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    message = sync_message(args.items)
    xml = syncml.encode_message(message)
    wbxml = syncml.encode_message(message, wbxml=True)
    assert syncml.parse_message(xml, syncml.CONTENT_TYPE_DS_XML) == message
    assert syncml.parse_message(wbxml, syncml.CONTENT_TYPE_DS_WBXML) == message

    lxml_parse = rate(lambda: etree.fromstring(xml), args.seconds)
    tree = etree.fromstring(xml)
    lxml_write = rate(lambda: etree.tostring(tree, xml_declaration=True, encoding="UTF-8"),
                      args.seconds)  # fmt: skip
    measured = [
        ("XML read (parse_message)", len(xml), rate(
            lambda: syncml.parse_message(xml, syncml.CONTENT_TYPE_DS_XML), args.seconds),
         lxml_parse),
        ("XML write (encode_message)", len(xml), rate(
            lambda: syncml.encode_message(message), args.seconds), lxml_write),
        ("WBXML read (parse_message)", len(wbxml), rate(
            lambda: syncml.parse_message(wbxml, syncml.CONTENT_TYPE_DS_WBXML), args.seconds),
         lxml_parse),
        ("WBXML write (encode_message)", len(wbxml), rate(
            lambda: syncml.encode_message(message, wbxml=True), args.seconds), lxml_write),
        ("baseline: lxml fromstring", len(xml), lxml_parse, lxml_parse),
        ("baseline: lxml tostring", len(xml), lxml_write, lxml_write),
    ]  # fmt: skip
    rows = [
        [
            name,
            f"{size:,}",
            f"{1 / seconds:,.0f}",
            f"{seconds * 1e6:,.0f}",
            f"{size / seconds / 1e6:,.1f}",
            f"{seconds / baseline:.1f}",
        ]
        for name, size, seconds, baseline in measured
    ]
    round_trip = {
        "XML": measured[0][2] + measured[1][2],
        "WBXML": measured[2][2] + measured[3][2],
    }
    print_table(
        f"SyncML codec, Sync message with {args.items} vCard Adds ({environment()})",
        ["operation", "bytes", "msgs/s", "us/msg", "MB/s", "x lxml"],
        rows,
        [
            f"read+write round trip: XML {1 / round_trip['XML']:,.0f} msgs/s, "
            f"WBXML {1 / round_trip['WBXML']:,.0f} msgs/s; "
            f"WBXML is {len(wbxml) / len(xml):.0%} of the XML size",
        ],
    )


if __name__ == "__main__":
    main()
