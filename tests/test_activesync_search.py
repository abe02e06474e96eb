"""ActiveSync look-ups through the running service: Search of the GAL and of the mailbox,
Find (16.1), ResolveRecipients with free/busy, and ValidateCert. The GAL is the caller's
own organisation's: another organisation's people never show, however they are asked for."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.eas_client import EasClient, mailbox_find, search
from engine.ids import new_id
from engine.pim import collection_unit, facts_of
from engine.pki import CertificateAuthority
from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    COMPOSE_MAIL,
    EMAIL,
    FIND,
    GAL,
    ITEM_OPERATIONS,
    RESOLVE_RECIPIENTS,
    SEARCH,
    VALIDATE_CERT,
)
from engine.protocols.wbxml import Element
from engine.store import pim as pim_db
from engine.timestamps import now

from .conftest import RunningService
from .eas_world import EasWorld, eas_world, ready
from .omads_world import _password_hash, database, make_world

BUSY_EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:busy-1\r\n"
    "DTSTART:20270310T100000Z\r\nDTEND:20270310T110000Z\r\nSUMMARY:Busy\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def add_account(
    world: EasWorld, organisation_id: str, login: str, name: str, email: str, kind: str = "user"
) -> str:
    account_id = new_id()
    at = now()
    with database(world.running) as conn:
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, display_name, email,"
            " password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (account_id, organisation_id, login, kind, name, email, _password_hash(), at, at),
        )
    return account_id


@pytest.fixture
async def world(running: RunningService, tmp_path: Path) -> AsyncIterator[EasWorld]:
    async with eas_world(running, tmp_path) as made:
        with database(running) as conn:
            conn.execute(
                "UPDATE accounts SET email = 'alice@acme.test', display_name = 'Alice Smith'"
                " WHERE id = ?",
                (made.ds.owner_id,),
            )
        org = made.ds.organisation_id
        bob = add_account(made, org, "bob", "Bob Jones", "bob@acme.test")
        add_account(made, org, "bobby", "Bobby Tables", "bobby@acme.test")
        add_account(made, org, "room", "Board Room", "room@acme.test", kind="resource")
        gone = add_account(made, org, "bobo", "Bobo Gone", "bobo@acme.test")
        with database(running) as conn:
            conn.execute("UPDATE accounts SET active = 0 WHERE id = ?", (gone,))
            calendar = collection_unit(conn, org, bob, "calendar")
            facts = facts_of("calendar", BUSY_EVENT, "text/calendar")
            pim_db.insert_item(
                conn,
                {
                    "collection_id": calendar["id"],
                    "organisation_id": org,
                    "version": pim_db.next_version(conn, calendar["id"]),
                    "origin": None,
                    "content_type": facts.content_type,
                    "data": BUSY_EVENT,
                    "uid": facts.uid,
                    "fingerprint": facts.fingerprint,
                    "deleted": 0,
                    "created_at": now(),
                    "updated_at": now(),
                },
            )
        yield made


def store_of(root: Element | None) -> Element:
    assert root is not None and child_text(root, "Status") == "1"
    found = root.find("Response").find("Store")  # type: ignore[union-attr]
    assert found is not None
    return found


def names(store: Element) -> list[str]:
    return [
        child_text(r.find("Properties"), "DisplayName") or ""  # type: ignore[arg-type]
        for r in store.elements()
        if r.tag == "Result" and r.find("Properties") is not None
    ]


async def other_organisation(world: EasWorld, tmp_path: Path) -> EasClient:
    """A device of another organisation whose people share names with ours."""
    other = EasWorld(make_world(world.running, tmp_path / "globex", "globex"), world.http)
    add_account(other, other.ds.organisation_id, "bob", "Bob Other", "bob@globex.test")
    other.add_device("GLOBEXDEVICE")
    client = other.client("GLOBEXDEVICE", user="globex\\alice")
    await client.provision()
    await client.folder_sync()
    return client


# --------------------------------------------------------------------------- GAL


async def test_gal_search_find_and_resolve_stay_in_the_organisation(
    world: EasWorld, tmp_path: Path
) -> None:
    phone = await ready(world, "GALDEVICE1")
    globex = await other_organisation(world, tmp_path)
    found = store_of(await phone.call("Search", search("GAL", "bob")))
    assert names(found) == ["Bob Jones", "Bobby Tables"]  # not Bobo (inactive), not globex
    assert child_text(found, "Range") == "0-1" and child_text(found, "Total") == "2"
    (first, _) = [r.find("Properties") for r in found.elements() if r.tag == "Result"]
    assert child_text(first, "EmailAddress") == "bob@acme.test"  # type: ignore[arg-type]
    assert child_text(first, "Alias") == "bob" and child_text(first, "LastName") == "Jones"  # type: ignore[arg-type]
    # A range of one, and a picture asked for: none held (173).
    found = store_of(
        await phone.call(
            "Search",
            search("GAL", "bob", el(SEARCH, "Range", "0-0"), el(SEARCH, "Picture")),
        )
    )
    assert names(found) == ["Bob Jones"] and child_text(found, "Total") == "2"
    picture = found.find("Result").find("Properties").find("Picture")  # type: ignore[union-attr]
    assert picture is not None and picture.ns == GAL and child_text(picture, "Status") == "173"
    # A room is in the GAL; nobody matches a name nobody has.
    assert names(store_of(await phone.call("Search", search("GAL", "board")))) == ["Board Room"]
    empty = store_of(await phone.call("Search", search("GAL", "zed")))
    assert child_text(empty, "Total") == "0" and names(empty) == []
    # The other organisation sees only its own Bob, by name or by our address.
    theirs = store_of(await globex.call("Search", search("GAL", "bob")))
    assert names(theirs) == ["Bob Other"]
    assert names(store_of(await globex.call("Search", search("GAL", "bob@acme")))) == []
    # Find (16.1) over the GAL.
    find = el(
        FIND,
        "Find",
        el(FIND, "SearchId", "s1"),
        el(
            FIND,
            "ExecuteSearch",
            el(
                FIND,
                "GalSearchCriterion",
                el(FIND, "Query", el(FIND, "FreeText", "bob")),
                el(FIND, "Options", el(FIND, "Range", "0-9")),
            ),
        ),
    )
    answer = await phone.call("Find", find)
    assert answer is not None and child_text(answer, "Status") == "1"
    response = answer.find("Response")
    assert response is not None and child_text(response, "Total") == "2"
    assert [
        child_text(r.find("Properties"), "DisplayName")  # type: ignore[arg-type]
        for r in response.elements()
        if r.tag == "Result"
    ] == ["Bob Jones", "Bobby Tables"]
    globex_find = await globex.call("Find", find)
    assert child_text(globex_find.find("Response"), "Total") == "1"  # type: ignore[union-attr,arg-type]
    # ResolveRecipients: one, ambiguous, ambiguous and cut short, none; free/busy of one.
    resolve = el(
        RESOLVE_RECIPIENTS,
        "ResolveRecipients",
        *(
            el(RESOLVE_RECIPIENTS, "To", name)
            for name in ("bob@acme.test", "Bob", "nobody", "bob@globex.test")
        ),
        el(
            RESOLVE_RECIPIENTS,
            "Options",
            el(RESOLVE_RECIPIENTS, "CertificateRetrieval", "2"),
            el(RESOLVE_RECIPIENTS, "Picture"),
            el(
                RESOLVE_RECIPIENTS,
                "Availability",
                el(RESOLVE_RECIPIENTS, "StartTime", "2027-03-10T09:00:00.000Z"),
                el(RESOLVE_RECIPIENTS, "EndTime", "2027-03-10T12:00:00.000Z"),
            ),
        ),
    )
    answer = await phone.call("ResolveRecipients", resolve)
    assert answer is not None and child_text(answer, "Status") == "1"
    one, many, none, foreign = [r for r in answer.elements() if r.tag == "Response"]
    assert child_text(one, "Status") == "1"
    recipient = one.find("Recipient")
    assert recipient is not None and child_text(recipient, "Type") == "1"
    assert child_text(recipient, "DisplayName") == "Bob Jones"
    assert child_text(recipient.find("Availability"), "MergedFreeBusy") == "002200"  # type: ignore[arg-type]
    assert child_text(recipient.find("Certificates"), "Status") == "7"  # type: ignore[arg-type]
    assert child_text(recipient.find("Picture"), "Status") == "173"  # type: ignore[arg-type]
    assert child_text(many, "Status") == "2" and child_text(many, "RecipientCount") == "2"
    assert [child_text(r, "EmailAddress") for r in many.elements() if r.tag == "Recipient"] == [
        "bob@acme.test",
        "bobby@acme.test",
    ]
    assert all(r.find("Certificates") is None for r in many.elements() if r.tag == "Recipient")
    assert child_text(none, "Status") == "4" and none.find("Recipient") is None
    assert child_text(foreign, "Status") == "4"  # another organisation's address
    capped = el(
        RESOLVE_RECIPIENTS,
        "ResolveRecipients",
        el(RESOLVE_RECIPIENTS, "To", "bo"),
        el(RESOLVE_RECIPIENTS, "Options", el(RESOLVE_RECIPIENTS, "MaxAmbiguousRecipients", "1")),
    )
    response = (await phone.call("ResolveRecipients", capped)).find("Response")  # type: ignore[union-attr]
    assert child_text(response, "Status") == "3" and child_text(response, "RecipientCount") == "3"  # type: ignore[arg-type]
    assert len([r for r in response.elements() if r.tag == "Recipient"]) == 1  # type: ignore[union-attr]
    # Refusals.
    assert (
        child_text(
            await phone.call("ResolveRecipients", el(RESOLVE_RECIPIENTS, "ResolveRecipients")),  # type: ignore[arg-type]
            "Status",
        )
        == "5"
    )
    for bad in (search("GAL", ""), search("GAL", "bob", el(SEARCH, "Range", "5-1"))):
        assert child_text(store_of(await phone.call("Search", bad)), "Status") == "2"
    library = search("DocumentLibrary", "x")
    assert child_text(store_of(await phone.call("Search", library)), "Status") == "2"
    old = await ready(world, "GALDEVICE2", version="14.1")
    assert child_text(store_of(await old.call("Search", library)), "Status") == "5"
    assert child_text(await old.call("Find", find), "Status") == "137"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- mailbox


MESSAGE = (
    "From: alice@acme.test\r\nTo: bob@acme.test\r\nSubject: {subject}\r\n"
    'Content-Type: text/plain; charset="utf-8"\r\n\r\n{text}\r\n'
)


async def test_mailbox_search_and_find(world: EasWorld) -> None:
    phone = await ready(world, "MAILSEARCH1")
    await phone.send_mail(MESSAGE.format(subject="Quarterly budget", text="Numbers attached."))
    await phone.send_mail(MESSAGE.format(subject="Lunch", text="The budget café at noon?"))
    await phone.send_mail(MESSAGE.format(subject="Holiday", text="Away next week."))
    encoded = base64.b64encode("Encoded budget notes, café.".encode()).decode()
    await phone.send_mail(
        "From: alice@acme.test\r\nTo: bob@acme.test\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n'
        f"\r\n{encoded}\r\n"
    )
    await phone.sync_all("sent")
    query = el(
        SEARCH,
        "Query",
        el(
            SEARCH,
            "And",
            el(AIRSYNC, "Class", "Email"),
            el(AIRSYNC, "CollectionId", "sent"),
            el(SEARCH, "FreeText", "BUDGET"),
        ),
    )
    found = store_of(
        await phone.call(
            "Search",
            search(
                "Mailbox",
                query,
                el(SEARCH, "Range", "0-9"),
                el(
                    AIRSYNCBASE,
                    "BodyPreference",
                    el(AIRSYNCBASE, "Type", "1"),
                    el(AIRSYNCBASE, "TruncationSize", "5"),
                ),
            ),
        )
    )
    results = [r for r in found.elements() if r.tag == "Result"]
    assert child_text(found, "Total") == "3" and len(results) == 3
    subjects = sorted(child_text(r.find("Properties"), "Subject") or "" for r in results)  # type: ignore[arg-type]
    assert subjects == ["Café", "Lunch", "Quarterly budget"]  # the encoded one found too
    results = [r for r in results if child_text(r.find("Properties"), "Subject") != "Café"]  # type: ignore[arg-type]
    result = results[0]
    assert child_text(result, "Class") == "Email" and child_text(result, "CollectionId") == "sent"
    body = result.find("Properties").find("Body")  # type: ignore[union-attr]
    assert child_text(body, "Truncated") == "1" and len(child_text(body, "Data") or "") <= 5  # type: ignore[arg-type]
    # The LongId names the message to SmartForward.
    long_id = child_text(result, "LongId") or ""
    forwarded = await phone.smart(
        "SmartForward",
        "From: alice@acme.test\r\nTo: carol@example.org\r\nSubject: Fwd\r\n\r\nFYI\r\n",
        [el(COMPOSE_MAIL, "LongId", long_id)],
    )
    assert forwarded.status_code == 200 and forwarded.content == b""
    # ItemOperations fetches a result by its LongId, whole this time.
    for value, status in ((long_id, "1"), ("sent:999999", "6"), ("contacts:x", "6")):
        fetched = await phone.call(
            "ItemOperations",
            el(
                ITEM_OPERATIONS,
                "ItemOperations",
                el(
                    ITEM_OPERATIONS,
                    "Fetch",
                    el(ITEM_OPERATIONS, "Store", "Mailbox"),
                    el(SEARCH, "LongId", value),
                ),
            ),
        )
        fetch = fetched.find("Response").find("Fetch")  # type: ignore[union-attr]
        assert child_text(fetch, "Status") == status and child_text(fetch, "LongId") == value  # type: ignore[arg-type]
    # A LongId reaches only the owner's own items.
    refused = await phone.smart(
        "SmartForward",
        "From: alice@acme.test\r\nTo: carol@example.org\r\nSubject: Fwd\r\n\r\nFYI\r\n",
        [el(COMPOSE_MAIL, "LongId", "sent:999999")],
    )
    assert child_text(eas.decode(refused.content), "Status") == "150"

    # Received after a moment (every message here is newer), before it (none), of a class
    # a mailbox does not hold (none).
    def dated(bound: str | None, *extra: Element) -> Element:
        when = el(SEARCH, "Value", "2020-01-01T00:00:00.000Z")
        limit = el(SEARCH, bound, el(EMAIL, "DateReceived"), when) if bound else None
        return el(
            SEARCH,
            "Query",
            el(
                SEARCH,
                "And",
                el(AIRSYNC, "Class", "Email"),
                el(SEARCH, "FreeText", "budget"),
                limit,
                *extra,
            ),
        )

    plain = store_of(await phone.call("Search", search("Mailbox", dated(None))))
    totals = []
    for query_element in (
        dated("GreaterThan"),
        dated("LessThan"),
        dated("GreaterThan", el(AIRSYNC, "Class", "SMS")),
    ):
        answer = store_of(await phone.call("Search", search("Mailbox", query_element)))
        totals.append(child_text(answer, "Total"))
    assert totals == [child_text(plain, "Total"), "0", "0"] and totals[0] != "0"
    # An unknown folder: FolderSync required; no FreeText: invalid.
    unknown = el(
        SEARCH,
        "Query",
        el(SEARCH, "And", el(AIRSYNC, "CollectionId", "nope"), el(SEARCH, "FreeText", "x")),
    )
    assert (
        child_text(store_of(await phone.call("Search", search("Mailbox", unknown))), "Status")
        == "11"
    )
    bare = el(SEARCH, "Query", el(SEARCH, "And", el(AIRSYNC, "Class", "Email")))
    assert (
        child_text(store_of(await phone.call("Search", search("Mailbox", bare))), "Status") == "2"
    )

    # Find (16.1) over the mailbox: results carry the device's ServerIds.
    def find(range_text: str, text: str = "holiday") -> Element:
        return mailbox_find("m1", text, range_text)

    answer = await phone.call("Find", find("0-9"))
    response = answer.find("Response")  # type: ignore[union-attr]
    (result,) = [r for r in response.elements() if r.tag == "Result"]  # type: ignore[union-attr]
    server_id = child_text(result, "ServerId")
    assert server_id in phone.items["sent"]
    properties = result.find("Properties")
    assert child_text(properties, "Subject") == "Holiday"  # type: ignore[arg-type]
    assert child_text(properties, "Preview") == "Away next week."  # type: ignore[arg-type]
    assert child_text(properties, "HasAttachments") == "0"  # type: ignore[arg-type]
    forwarded_find = (await phone.call("Find", find("0-9", "fyi"))).find("Response")  # type: ignore[union-attr]
    (result,) = [r for r in forwarded_find.elements() if r.tag == "Result"]  # type: ignore[union-attr]
    assert child_text(result.find("Properties"), "HasAttachments") == "1"  # type: ignore[arg-type]
    later = (await phone.call("Find", find("5-9"))).find("Response")  # type: ignore[union-attr]
    assert child_text(later, "Status") == "4"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ValidateCert


def _certificate(
    issuer: CertificateAuthority,
    usage: x509.ObjectIdentifier,
    *,
    days: tuple[int, int] = (-1, 30),
) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    at = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at + dt.timedelta(days=days[0]))
        .not_valid_after(at + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("alice@acme.test")]), critical=False
        )
        .sign(issuer._private_key, hashes.SHA256())  # the test signs as the CA
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


async def test_validate_cert(world: EasWorld) -> None:
    phone = await ready(world, "CERTDEVICE1")
    tls = world.running.bootstrap.tls
    ours = CertificateAuthority.load(tls.ca_certificate, tls.ca_private_key)
    stranger = CertificateAuthority.create("Stranger CA", key_size=2048)
    email = ExtendedKeyUsageOID.EMAIL_PROTECTION
    asked = [
        _certificate(ours, email),
        _certificate(stranger, email),
        _certificate(ours, email, days=(-60, -1)),
        _certificate(ours, ExtendedKeyUsageOID.CLIENT_AUTH),
        "bm90IGEgY2VydGlmaWNhdGU=",
    ]

    async def statuses(*extra: Element) -> list[str]:
        root = await phone.call(
            "ValidateCert",
            el(
                VALIDATE_CERT,
                "ValidateCert",
                el(
                    VALIDATE_CERT,
                    "Certificates",
                    *(el(VALIDATE_CERT, "Certificate", c) for c in asked),
                ),
                *extra,
            ),
        )
        assert root is not None and child_text(root, "Status") == "1"
        return [child_text(c, "Status") or "" for c in root.elements() if c.tag == "Certificate"]

    assert await statuses() == ["1", "4", "7", "6", "10"]
    # CheckCRL: the service revokes none of its own; others' revocation cannot be checked.
    assert (await statuses(el(VALIDATE_CERT, "CheckCRL", "1")))[0] == "1"
    empty = await phone.call("ValidateCert", el(VALIDATE_CERT, "ValidateCert"))
    assert child_text(empty, "Status") == "2"  # type: ignore[arg-type]
