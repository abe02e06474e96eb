"""The sans-IO pieces of ActiveSync mail kept in the store: the message's header block
edited without touching the rest, Read and Flag kept as the store's headers, drafts built
from Email properties, and the recipients local delivery looks at."""

from __future__ import annotations

import pytest

from engine.activesync_delivery import recipients
from engine.protocols import eas_pim
from engine.protocols.activesync import EasError, el
from engine.protocols.activesync_tables import AIRSYNC, AIRSYNCBASE, EMAIL, EMAIL2, TASKS
from engine.protocols.wbxml import Element

MESSAGE = (
    "From: a@acme.test\r\nTo: b@acme.test\r\nBcc: c@acme.test,\r\n d@acme.test\r\n"
    "Subject: Hi\r\n\r\nBcc: not a header\r\n"
)


def data(*children: Element) -> Element:
    return Element("ApplicationData", AIRSYNC, list(children))


def test_header_block_is_edited_alone() -> None:
    dropped = eas_pim.drop_headers(MESSAGE, ("bcc",))
    assert dropped == (
        "From: a@acme.test\r\nTo: b@acme.test\r\nSubject: Hi\r\n\r\nBcc: not a header\r\n"
    )
    assert eas_pim.header_value(MESSAGE, "Bcc") == "c@acme.test, d@acme.test"
    assert eas_pim.header_value(MESSAGE, "Cc") is None
    bare = "\r\nno headers at all\r\n"
    assert eas_pim.drop_headers(bare, ("Bcc",)) == bare


def test_read_and_flag_round_trip_and_are_never_shown() -> None:
    assert eas_pim.mail_state(MESSAGE) == (True, [])  # unmarked: read (a sent message)
    flag = [(EMAIL, "Status", "2"), (TASKS, "Subject", "a b=c; d")]
    kept = eas_pim.with_state(MESSAGE, False, flag)
    assert eas_pim.mail_state(kept) == (False, flag)
    assert eas_pim.without_state(kept) == MESSAGE
    shown = {e.tag: e for e in eas_pim.mail_to_eas(kept)}
    assert shown["Read"].text == "0" and shown["Flag"].find("Subject").text == "a b=c; d"  # type: ignore[union-attr]
    changed = eas_pim.mail_from_eas(data(el(EMAIL, "Read", "1"), el(EMAIL, "Flag")), kept)
    assert eas_pim.mail_state(changed) == (True, [])
    # Unknown Flag children are not kept.
    junk = eas_pim.mail_from_eas(data(el(EMAIL, "Flag", el(EMAIL, "Subject", "x"))), MESSAGE)
    assert eas_pim.mail_state(junk) == (True, [])
    with pytest.raises(EasError):
        eas_pim.mail_from_eas(data(el(EMAIL, "Read", "1")))  # no Add of a message


def test_drafts_from_email_properties() -> None:
    text = eas_pim.draft_from_eas(
        data(
            el(EMAIL, "To", "b@acme.test"),
            el(EMAIL2, "Bcc", "c@acme.test"),
            el(EMAIL, "Subject", "Plan"),
            el(EMAIL, "Importance", "2"),
            el(
                AIRSYNCBASE,
                "Body",
                el(AIRSYNCBASE, "Type", "2"),
                el(AIRSYNCBASE, "Data", "<b>x</b>"),
            ),
        )
    )
    assert "Subject: Plan" in text and "Importance: high" in text and "text/html" in text
    shown = {e.tag: e.text for e in eas_pim.draft_to_eas(text)}
    assert shown["Bcc"] == "c@acme.test" and shown["IsDraft"] == "1" and shown["Importance"] == "2"
    # A Change names what changes; an emptied To goes.
    changed = eas_pim.draft_from_eas(data(el(EMAIL, "To", "")), text)
    assert eas_pim.header_value(changed, "To") is None and "<b>x</b>" in changed
    for bad in ("x\r\nBcc: spy@globex.test", "x\nTo: spy@globex.test"):
        with pytest.raises(EasError):
            eas_pim.draft_from_eas(data(el(EMAIL, "Subject", bad)))


def test_recipients_are_to_cc_and_bcc_once() -> None:
    text = "To: B <b@acme.test>, c@acme.test\r\nCc: B@ACME.test\r\nBcc: d@acme.test\r\n\r\nx"
    assert recipients(text) == ["b@acme.test", "c@acme.test", "d@acme.test"]
    assert recipients("Subject: none\r\n\r\nx") == []
