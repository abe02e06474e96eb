"""Exchange ActiveSync folders and items: the folder hierarchy, and the units of work of
FolderSync, Sync, GetItemEstimate, ItemOperations and Ping on the PIM store.

Mail folders hold RFC 5322 messages: Inbox (``inbox_mail``, what local delivery brings, see
``engine.activesync_delivery``), Drafts (``drafts_mail``: added, changed and deleted by
devices of protocol 16.0 on, and sent when the Add or Change carries ``email2:Send``; before
16.0 an Add is refused with status 6 and a Change changes only Read and Flag), Deleted Items
(``deleted_mail``) and Sent Items (``sent_mail``); Outbox holds nothing. A device changes a
message's Read and Flag only. A Delete in a mail folder moves the message to Deleted Items
unless DeletesAsMoves is 0; a Delete in Deleted Items deletes.

The hierarchy is the service's default folders, then the owner's own (see
``engine.activesync_folders``); a device's ``eas_devices.folders`` says what it was told of
each, so FolderSync sends Add, Update and Delete. Sync honours FilterType
(``engine.protocols.activesync_filter``), remembered per device and folder.

Each Sync collection is one write unit: the device's Add, Change and Delete go through
:class:`engine.pim.CollectionSync` (the conflict rules OMA DS follows too), then the
service's changes after the change number the device has seen go out, a window at a time.
An item's ServerId is the device's id of it in the PIM store's id map (``pim_id_map``); the
device's SyncKey and change number per folder are in ``eas_folder_states``, and
``pim_sync_states`` is kept for the device page. A SyncKey equal to the one before the
current one serves the last response again (its answer was lost); the ClientIds of that
Sync's Adds stay in the id map beside their ServerIds (``client:<SyncKey>:<ClientId>``) until
the next key is used, so a resent Add maps to the item it made, whatever the session forgot.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .activesync_delivery import recipients, send_unit, store_message_unit
from .pim import FEATURES, CollectionSync, collection_unit
from .protocols import eas_bodies, eas_pim
from .protocols.activesync import EasError, child_text, el
from .protocols.activesync_filter import admits, applies
from .protocols.activesync_tables import AIRSYNC, EMAIL2
from .protocols.omads import ClientChange, DatastoreState
from .protocols.wbxml import Element
from .store import Store, activesync as db, pim as pim_db
from .timestamps import now

if TYPE_CHECKING:
    from .activesync import Caller

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- folders

#: The folder hierarchy: ServerId, display name, type (MS-ASCMD 2.2.3.186.3), PIM kind.
FOLDERS: tuple[tuple[str, str, int, str | None], ...] = (
    ("inbox", "Inbox", 2, "inbox_mail"),
    ("drafts", "Drafts", 3, "drafts_mail"),
    ("deleted", "Deleted Items", 4, "deleted_mail"),
    ("sent", "Sent Items", 5, "sent_mail"),
    ("outbox", "Outbox", 6, None),
    ("tasks", "Tasks", 7, "tasks"),
    ("calendar", "Calendar", 8, "calendar"),
    ("contacts", "Contacts", 9, "contacts"),
    ("notes", "Notes", 10, "notes"),
)
FOLDER_KINDS = {server_id: kind for server_id, _, _, kind in FOLDERS}


def folders_for(features: dict[str, bool]) -> list[tuple[str, str, int]]:
    """The service's own folders (ServerId, name, type) the organisation's features show."""
    return [
        (server_id, name, kind_type)
        for server_id, name, kind_type, kind in FOLDERS
        if kind is None or features.get(FEATURES.get(kind, ""), True)
    ]


#: The root of the hierarchy as a ParentId.
ROOT = "0"


@dataclass(frozen=True)
class Folder:
    """One folder of the owner's hierarchy: a default one (its ServerId is a name, its
    collection the account's default of its kind) or one the owner made (its ServerId is its
    collection's id)."""

    server_id: str
    parent_id: str
    name: str
    type: int
    kind: str | None
    default: bool

    @property
    def shown(self) -> list[Any]:
        """What FolderSync says of the folder: [ParentId, DisplayName, Type]."""
        return [self.parent_id, self.name, self.type]


def hierarchy(conn: sqlite3.Connection, account_id: str, features: dict[str, bool]) -> list[Folder]:
    """The owner's folders: the service's, then the owner's own in creation order; folders of
    a kind the organisation switched off are left out (and so are the folders under them)."""
    folders = [
        Folder(sid, ROOT, name, kind_type, FOLDER_KINDS[sid], True)
        for sid, name, kind_type in folders_for(features)
    ]
    shown = {f.server_id for f in folders} | {ROOT}
    own = [
        row
        for row in pim_db.folder_collections(conn, account_id)
        if features.get(FEATURES.get(row["kind"], ""), True)
    ]
    made = {row["id"]: index for index, row in enumerate(own)}
    children: dict[str, list[dict[str, Any]]] = {}
    for row in own:
        children.setdefault(row["parent_id"], []).append(row)
    # Parents before children, whatever order they were made in: a generation at a time,
    # each in creation order; folders under folders that are not shown never come.
    ready = [row for row in own if row["parent_id"] in shown]
    while ready:
        for row in ready:
            folders.append(
                Folder(
                    row["id"],
                    row["parent_id"],
                    row["display_name"],
                    row["folder_type"],
                    row["kind"],
                    False,
                )
            )
            shown.add(row["id"])
        below = (c for row in ready for c in children.get(row["id"], ()) if c["id"] not in shown)
        ready = sorted(below, key=lambda row: made[row["id"]])
    return folders


def folder_of(
    conn: sqlite3.Connection, caller: Caller, server_id: str, create: bool = True
) -> tuple[Folder, dict[str, Any] | None] | None:
    """The folder a ServerId names in the caller's hierarchy and the PIM collection behind
    it (None for Outbox, which holds nothing); None: no such folder."""
    folders = hierarchy(conn, caller.account["id"], caller.features)
    found = next((f for f in folders if f.server_id == server_id), None)
    return (found, collection_for(conn, caller, found, create)) if found is not None else None


def collection_for(
    conn: sqlite3.Connection, caller: Caller, folder: Folder, create: bool = True
) -> dict[str, Any] | None:
    """The PIM collection behind a folder of the caller's hierarchy (None: Outbox, which
    holds nothing). A default folder's collection is made on first use only when
    ``create``: a read unit must not write, so it passes False and finds none yet."""
    if folder.kind is None:
        return None
    if folder.default and not create:
        return pim_db.collection_of(conn, caller.account["id"], folder.kind)
    if folder.default:
        return collection_unit(
            conn, caller.device["organisation_id"], caller.account["id"], folder.kind
        )
    return pim_db.folder_collection(conn, caller.account["id"], folder.server_id)


def held_folders(row: dict[str, Any]) -> dict[str, list[Any] | None]:
    """The folders a device holds (ServerId -> what it was told of them); a device of
    before folders of the owner's own is known to hold only ServerIds."""
    held = json.loads(row["folders"] or "[]")
    if isinstance(held, list):
        return {sid: None for sid in held}
    return dict(held)


def hold(conn: sqlite3.Connection, device_id: str, held: dict[str, Any], key: int) -> None:
    db.update_eas_device(
        conn,
        device_id,
        {"folder_sync_key": key, "folders": json.dumps(held, sort_keys=True), "updated_at": now()},
    )


# --------------------------------------------------------------------------- units: folders


@dataclass
class HierarchyChanges:
    """FolderSync's answer: the new key and the folders added, changed and deleted."""

    sync_key: int
    added: list[Folder] = field(default_factory=list)
    updated: list[Folder] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def folder_sync_unit(conn: sqlite3.Connection, caller: Caller, key: str) -> HierarchyChanges | None:
    """The new folder SyncKey and the folders added, renamed or moved, and deleted since
    ``key`` (None when the key is not the device's). SyncKey 0 starts the device over: every
    folder's sync state and the device's ids of items go."""
    device_id = caller.device["id"]
    row = db.eas_device(conn, device_id)
    assert row is not None
    current = hierarchy(conn, caller.account["id"], caller.features)
    if key == "0":
        db.forget_folder_states(conn, device_id)
        for collection in pim_db.collections_of_account(conn, caller.account["id"]):
            pim_db.clear_mappings(conn, device_id, collection["id"])
        new_key = row["folder_sync_key"] + 1
        hold(conn, device_id, {f.server_id: f.shown for f in current}, new_key)
        return HierarchyChanges(new_key, added=current)
    if key != str(row["folder_sync_key"]) or row["folder_sync_key"] == 0:
        return None
    held = held_folders(row)
    now_shown = {f.server_id: f for f in current}
    changes = HierarchyChanges(row["folder_sync_key"])
    changes.deleted = sorted(sid for sid in held if sid not in now_shown)
    for folder in current:
        if folder.server_id not in held:
            changes.added.append(folder)
        elif held[folder.server_id] not in (None, folder.shown):
            changes.updated.append(folder)
    if changes.added or changes.updated or changes.deleted:
        changes.sync_key += 1
        hold(conn, device_id, {f.server_id: f.shown for f in current}, changes.sync_key)
    return changes


# --------------------------------------------------------------------------- units: Sync


@dataclass
class SyncWork:
    """One collection of a Sync request, handled in one write unit."""

    caller: Caller
    folder: str
    kind: str | None
    key: str
    window: int
    get_changes: bool
    commands: list[Element]
    policy: str
    store: Store
    #: The folder's collection when the owner made the folder (None: the kind's default).
    collection_id: str | None = None
    #: The FilterType of the request's Options (None: the one the folder has).
    filter_type: int | None = None
    #: How the device wants bodies (the collection's Options), None: whole, as plain text.
    bodies: eas_bodies.BodyPreferences | None = None
    #: A Delete of a message moves it to Deleted Items (DeletesAsMoves, MS-ASCMD 2.2.3.43).
    deletes_as_moves: bool = True


@dataclass
class SyncResult:
    sync_key: str
    status: int = 1
    commands: list[Element] = field(default_factory=list)
    responses: list[Element] = field(default_factory=list)
    more: bool = False
    changed_collection: str | None = None
    #: Other collections the Sync changed (Deleted Items, for deletes as moves).
    also_changed: list[str] = field(default_factory=list)


def _sync_state(conn: sqlite3.Connection, work: SyncWork) -> dict[str, Any] | None:
    return db.folder_state(conn, work.caller.device["id"], work.folder)


def sync_unit(conn: sqlite3.Connection, work: SyncWork) -> SyncResult:
    device_id = work.caller.device["id"]
    organisation_id = work.caller.device["organisation_id"]
    state = _sync_state(conn, work)
    if work.kind is None:
        collection = None
    elif work.collection_id is not None:
        collection = pim_db.folder_collection(conn, work.caller.account["id"], work.collection_id)
        if collection is None:  # deleted since the device's FolderSync
            return SyncResult(work.key, status=12)
    else:
        collection = collection_unit(conn, organisation_id, work.caller.account["id"], work.kind)
    at = now()
    if work.key == "0":
        reset_version = pim_db.collection_version(conn, collection["id"]) if collection else 0
        if collection is not None:
            pim_db.clear_mappings(conn, device_id, collection["id"])
        db.put_folder_state(
            conn,
            {
                "device_id": device_id,
                "folder": work.folder,
                "organisation_id": organisation_id,
                "collection_id": collection["id"] if collection else None,
                "sync_key": 1,
                "seen_version": 0,
                "previous_key": None,
                "previous_version": None,
                "reset_version": reset_version,
                "updated_at": at,
                "filter_type": work.filter_type or 0,
            },
        )
        return SyncResult("1")
    if state is None or not work.key.isdigit():
        return SyncResult(work.key, status=3)
    key = int(work.key)
    if key == state["sync_key"]:
        seen = state["seen_version"]
        if state["collection_id"] is not None:
            db.forget_client_mappings(conn, device_id, state["collection_id"], key)
    elif key == state["previous_key"]:
        seen = state["previous_version"]  # the last response was lost: serve it again
    else:
        return SyncResult(work.key, status=3)
    result = SyncResult(str(key + 1))
    filter_type = state["filter_type"] if work.filter_type is None else work.filter_type
    if collection is None:  # Outbox: empty, and nothing may be added
        for command in work.commands:
            result.responses.append(_refused_command(command, "6"))
        new_seen = 0
    else:
        _apply_commands(conn, work, collection["id"], seen, result)
        new_seen = seen
        if work.get_changes:
            # Another FilterType: every change is weighed again (Add what came inside the
            # window, SoftDelete what left it), not only those after ``seen``.
            refilter = filter_type != state["filter_type"]
            new_seen = _outgoing(
                conn,
                work,
                Window(collection["id"], 0 if refilter else seen, seen, filter_type),
                state["reset_version"],
                result,
            )
        else:
            new_seen = max(seen, 0)
        if not result.more and work.get_changes:
            new_seen = pim_db.collection_version(conn, collection["id"])
        pim_db.put_sync_state(
            conn,
            {
                "device_id": device_id,
                "collection_id": collection["id"],
                "organisation_id": organisation_id,
                "datastore": f"eas:{work.folder}",
                "client_anchor": None,
                "server_anchor": str(key + 1),
                "seen_version": new_seen,
                "last_sync_at": at,
                "last_mode": "eas",
                "refresh_requested": 0,
            },
        )
    db.put_folder_state(
        conn,
        {
            "device_id": device_id,
            "folder": work.folder,
            "organisation_id": organisation_id,
            "collection_id": collection["id"] if collection else None,
            "sync_key": key + 1,
            "seen_version": new_seen,
            "previous_key": key,
            "previous_version": seen,
            "reset_version": state["reset_version"],
            "updated_at": at,
            "filter_type": filter_type,
        },
    )
    db.update_eas_device(conn, device_id, {"last_sync_at": at})
    return result


def _refused_command(command: Element, status: str) -> Element:
    ids = [
        el(AIRSYNC, tag, child_text(command, tag) or "")
        for tag in ("ClientId", "ServerId")
        if command.find(tag) is not None
    ]
    return el(AIRSYNC, command.tag, *ids, el(AIRSYNC, "Status", status))


#: PIM store outcomes (SyncML status codes) as Sync statuses.
_OUTCOME_STATUS = {200: "1", 201: "1", 208: "1", 209: "1", 419: "7", 211: "8", 404: "8"}


def _apply_commands(
    conn: sqlite3.Connection, work: SyncWork, collection_id: str, seen: int, result: SyncResult
) -> None:
    """The device's Add, Change, Delete and Fetch, by the PIM store's conflict rules."""
    device_id = work.caller.device["id"]
    kind = work.kind
    assert kind is not None
    sync = CollectionSync(
        store=work.store,
        organisation_id=work.caller.device["organisation_id"],
        device_id=device_id,
        collection_id=collection_id,
        kind=kind,
        datastore=f"eas:{work.folder}",
        state=DatastoreState(None, None, False),
        seen_version=seen,
        policy=work.policy,
    )
    changed = False
    for command in work.commands:
        tag = command.tag
        if tag == "Fetch":
            server_id = child_text(command, "ServerId", "") or ""
            item = _mapped_live_item(conn, device_id, collection_id, server_id)
            try:
                data = eas_pim.application_data(kind, item["data"], work.bodies) if item else None
            except eas_pim.UNREADABLE:
                data = None  # an item that cannot be shown is not found
            if data is None:
                result.responses.append(_refused_command(command, "8"))
            else:
                result.responses.append(
                    el(
                        AIRSYNC,
                        "Fetch",
                        el(AIRSYNC, "ServerId", server_id),
                        el(AIRSYNC, "Status", "1"),
                        data,
                    )
                )
            continue
        if tag not in ("Add", "Change", "Delete"):
            continue
        server_id = child_text(command, "ServerId")
        if tag == "Add":
            client_id = child_text(command, "ClientId")
            data = command.find("ApplicationData")
            if not client_id or data is None:
                result.responses.append(_refused_command(command, "6"))
                continue
            if eas_pim.is_mail(kind) and not _drafts_16(work):
                result.responses.append(_refused_command(command, "6"))  # only 16.0 drafts
                continue
            try:
                text = eas_pim.item_text(kind, data)
            except EasError:
                result.responses.append(_refused_command(command, "6"))
                continue
            if _send_asked(work, command) and not recipients(text):
                result.responses.append(_refused_command(command, "6"))  # nobody to send to
                continue
            luid = db.client_luid(int(work.key), client_id)
            known = pim_db.mapped_item(conn, device_id, collection_id, luid)
            if known is not None and _live(pim_db.item_in(conn, collection_id, known)):
                item_id = known  # resent under the same SyncKey: the item it already made
            else:
                outcome = sync.apply_unit(
                    conn, [ClientChange("Add", luid, text, eas_pim.CONTENT_TYPES[kind])]
                )[0]
                assert outcome.server_id is not None
                item_id = int(outcome.server_id)
                pim_db.put_mapping(conn, device_id, collection_id, str(item_id), item_id)
                db.put_client_mapping(conn, device_id, collection_id, luid, item_id)
                changed = True
                if _send_asked(work, command):
                    _send_draft(conn, work, collection_id, item_id, result)
            result.responses.append(
                el(
                    AIRSYNC,
                    "Add",
                    el(AIRSYNC, "ClientId", client_id),
                    el(AIRSYNC, "ServerId", str(item_id)),
                    el(AIRSYNC, "Status", "1"),
                )
            )
            continue
        item_id = _server_item(conn, device_id, collection_id, server_id or "")
        if item_id is None:
            result.responses.append(_refused_command(command, "8"))
            continue
        if tag == "Change":
            data = command.find("ApplicationData")
            stored = pim_db.item_in(conn, collection_id, item_id)
            if data is None or stored is None:
                result.responses.append(_refused_command(command, "6"))
                continue
            try:
                if kind == "drafts_mail" and not _drafts_16(work):
                    text = eas_pim.mail_from_eas(data, stored["data"])  # Read and Flag only
                else:
                    text = eas_pim.item_text(kind, data, stored["data"])
            except EasError:
                result.responses.append(_refused_command(command, "6"))
                continue
            outcome = sync.apply_unit(
                conn, [ClientChange("Replace", server_id or "", text, eas_pim.CONTENT_TYPES[kind])]
            )[0]
            if outcome.status in (200, 208) and _send_asked(work, command):
                _send_draft(conn, work, collection_id, item_id, result)
        else:
            doomed = pim_db.item_in(conn, collection_id, item_id)
            outcome = sync.apply_unit(conn, [ClientChange("Delete", server_id or "", None, None)])[
                0
            ]
            if outcome.status == 200 and _live(doomed) and _moves_to_deleted(work):
                assert doomed is not None
                result.also_changed.append(_keep_deleted(conn, work, doomed["data"] or ""))
        status = _OUTCOME_STATUS.get(outcome.status, "1")
        if status != "1":  # Change and Delete are answered only when they fail
            result.responses.append(_refused_command(command, status))
        if outcome.status in (200, 201, 208, 209):
            changed = True
    if changed:
        result.changed_collection = collection_id


def _drafts_16(work: SyncWork) -> bool:
    """Whether the device may add and edit drafts (protocol 16.0 on, MS-ASCMD 3.1.5.4)."""
    return work.kind == "drafts_mail" and float(work.caller.eas["protocol_version"]) >= 16.0


def _send_asked(work: SyncWork, command: Element) -> bool:
    """Whether an Add or Change of a draft asks for it to be sent (``email2:Send``, 16.0)."""
    return _drafts_16(work) and any(c.tag == "Send" and c.ns == EMAIL2 for c in command.elements())


def _send_draft(
    conn: sqlite3.Connection, work: SyncWork, collection_id: str, item_id: int, result: SyncResult
) -> None:
    """Send a draft as SendMail would (from the owner's address, kept in Sent Items,
    delivered in the organisation); it leaves Drafts, every device of the owner is told."""
    item = pim_db.item_in(conn, collection_id, item_id)
    if item is None or item["deleted"]:
        return
    text = eas_pim.without_state(item["data"] or "")
    if not recipients(text):
        return  # a draft whose recipients were taken away stays a draft
    result.also_changed += send_unit(conn, work.caller, text, True)
    pim_db.update_item(
        conn,
        item_id,
        {
            "version": pim_db.next_version(conn, collection_id),
            "origin": None,
            "data": None,
            "deleted": 1,
            "updated_at": now(),
        },
    )
    result.also_changed.append(collection_id)


def _moves_to_deleted(work: SyncWork) -> bool:
    """Whether a Delete here moves the message to Deleted Items: a mail folder other than
    Deleted Items itself (whose Deletes delete), unless the device said DeletesAsMoves 0."""
    return (
        work.deletes_as_moves
        and eas_pim.is_mail(work.kind)
        and not (work.kind == "deleted_mail" and work.collection_id is None)
    )


def _keep_deleted(conn: sqlite3.Connection, work: SyncWork, text: str) -> str:
    """A deleted message's copy in the owner's Deleted Items (every device of theirs, the
    deleting one too, gets it there); the collection's id."""
    return store_message_unit(
        conn, work.caller.device["organisation_id"], work.caller.account["id"], "deleted_mail", text
    )


def _live(item: dict[str, Any] | None) -> bool:
    return item is not None and not item["deleted"]


def _server_item(
    conn: sqlite3.Connection, device_id: str, collection_id: str, server_id: str
) -> int | None:
    """The item a ServerId names; a remembered ClientId is no ServerId."""
    if server_id.startswith(db.CLIENT_PREFIX):
        return None
    return pim_db.mapped_item(conn, device_id, collection_id, server_id)


def _mapped_live_item(
    conn: sqlite3.Connection, device_id: str, collection_id: str, server_id: str
) -> dict[str, Any] | None:
    item_id = _server_item(conn, device_id, collection_id, server_id)
    item = pim_db.item_in(conn, collection_id, item_id) if item_id is not None else None
    return item if _live(item) else None


@dataclass(frozen=True)
class Window:
    """What of a collection a Sync sends: the changes after ``after``, by ``filter_type``;
    changes up to ``seen`` the device has had (only their place in the filter is new)."""

    collection_id: str
    after: int
    seen: int
    filter_type: int


def _outgoing(
    conn: sqlite3.Connection,
    work: SyncWork,
    window: Window,
    reset_version: int,
    result: SyncResult,
) -> int:
    """The service's changes after ``window.after``, at most a window of them; the change
    number the device has seen once it has them. An item outside the FilterType is not sent
    (or, if the device holds it, SoftDeleted: it stays in the store)."""
    device_id = work.caller.device["id"]
    collection_id = window.collection_id
    kind = work.kind
    assert kind is not None
    moment = datetime.now(UTC)
    last = window.after
    emitted = 0
    while True:
        rows = db.changes_page(conn, collection_id, last, device_id, reset_version, 500)
        if not rows:
            return last
        luids = db.server_ids_of_items(conn, device_id, collection_id, [r["id"] for r in rows])
        for row in rows:
            if emitted >= work.window:
                result.more = True
                return last
            luid = luids.get(row["id"])
            if row["deleted"]:
                if luid is not None:
                    pim_db.drop_mapping(conn, device_id, collection_id, luid)
                    result.commands.append(el(AIRSYNC, "Delete", el(AIRSYNC, "ServerId", luid)))
                    emitted += 1
            elif not admits(kind, window.filter_type, row["data"] or "", moment):
                if luid is not None:
                    pim_db.drop_mapping(conn, device_id, collection_id, luid)
                    result.commands.append(el(AIRSYNC, "SoftDelete", el(AIRSYNC, "ServerId", luid)))
                    emitted += 1
            elif luid is not None and row["version"] <= window.seen:
                pass  # held and unchanged: still inside the filter
            else:
                try:
                    data = eas_pim.application_data(kind, row["data"] or "", work.bodies)
                except (EasError, *eas_pim.UNREADABLE):
                    log.warning("item %s cannot be shown over ActiveSync", row["id"])
                    last = row["version"]
                    continue
                if luid is None:
                    luid = str(row["id"])
                    pim_db.put_mapping(conn, device_id, collection_id, luid, row["id"])
                    result.commands.append(el(AIRSYNC, "Add", el(AIRSYNC, "ServerId", luid), data))
                else:
                    result.commands.append(
                        el(AIRSYNC, "Change", el(AIRSYNC, "ServerId", luid), data)
                    )
                emitted += 1
            last = row["version"]


# --------------------------------------------------------------------------- units: others


def estimate_unit(
    conn: sqlite3.Connection,
    caller: Caller,
    folder: str,
    key: str | None,
    filter_type: int | None,
) -> tuple[str, int | None]:
    """GetItemEstimate of one folder: how many changes its next Sync would bring, by the
    FilterType given (else the folder's): deletions counted whether held or not, and with
    another FilterType every item inside it (an estimate, never fewer than come)."""
    device_id = caller.device["id"]
    state = db.folder_state(conn, device_id, folder)
    if state is None or key in (None, "0"):
        return "3", None  # the folder's sync state is not primed
    if key != str(state["sync_key"]):
        return "4", None
    if state["collection_id"] is None:
        return "1", 0
    found = folder_of(conn, caller, folder, create=False)
    kind = found[0].kind if found else None
    chosen = state["filter_type"] if filter_type is None else filter_type
    if kind is None or not applies(kind, chosen):
        return "1", db.count_changes_after(
            conn, state["collection_id"], state["seen_version"], device_id, state["reset_version"]
        )
    moment = datetime.now(UTC)
    after = 0 if chosen != state["filter_type"] else state["seen_version"]
    count = 0
    while rows := db.changes_page(
        conn, state["collection_id"], after, device_id, state["reset_version"], 500
    ):
        for row in rows:
            if row["deleted"] or admits(kind, chosen, row["data"] or "", moment):
                count += 1
        after = rows[-1]["version"]
    return "1", count


def fetch_unit(
    conn: sqlite3.Connection, caller: Caller, folder: str, server_id: str
) -> tuple[str, str] | None:
    """The kind and stored text of an item the device holds in ``folder`` (None also when
    the folder has no collection yet: nothing was ever synchronised in it)."""
    found = folder_of(conn, caller, folder, create=False)
    if found is None or found[1] is None or found[0].kind is None:
        return None
    item = _mapped_live_item(conn, caller.device["id"], found[1]["id"], server_id)
    return (found[0].kind, item["data"]) if item else None


def repeatable(root: Element, requested: list[Element], answers: list[Element]) -> Element:
    """The Sync request an empty (or partial) Sync repeats: this one with the collections it
    ran (its own and those taken from the last request), without its wait and Commands, each
    collection under the SyncKey just answered (MS-ASCMD 2.2.2.21: the device means "the
    last Sync again, with the current keys"). A collection that failed keeps the key it was
    sent with, so repeating it fails the same way."""
    new_keys = {
        child_text(answer, "CollectionId"): child_text(answer, "SyncKey")
        for answer in answers
        if child_text(answer, "Status") == "1"
    }
    collections: list[Element | str | bytes] = []
    for collection in requested:
        new_key = new_keys.get(child_text(collection, "CollectionId"))
        children: list[Element | str | bytes] = []
        for child in collection.children:
            if type(child) is Element and child.tag == "Commands":
                continue
            if type(child) is Element and child.tag == "SyncKey" and new_key is not None:
                child = Element("SyncKey", child.ns, [new_key])
            children.append(child)
        collections.append(Element(collection.tag, collection.ns, children))
    kept = [
        c
        for c in without_wait(root).children
        if not (type(c) is Element and c.tag in ("Collections", "Partial"))
    ]
    return Element(root.tag, root.ns, [Element("Collections", AIRSYNC, collections), *kept])


def without_wait(root: Element) -> Element:
    return Element(
        root.tag,
        root.ns,
        [
            c
            for c in root.children
            if not (type(c) is Element and c.tag in ("Wait", "HeartbeatInterval"))
        ],
    )


def sync_watch_unit(
    conn: sqlite3.Connection, caller: Caller, folders: list[tuple[str, str]]
) -> dict[str, tuple[str, int]] | None:
    """What a waiting Sync watches (collection -> folder, change number seen), or None when
    it should run at once: a key that is not the folder's current one, or changes waiting."""
    device_id = caller.device["id"]
    watched: dict[str, tuple[str, int]] = {}
    for folder, key in folders:
        state = db.folder_state(conn, device_id, folder)
        if state is None or key != str(state["sync_key"]):
            return None
        if state["collection_id"] is None:
            continue  # Outbox never changes
        if db.count_changes_after(
            conn, state["collection_id"], state["seen_version"], device_id, state["reset_version"]
        ):
            return None
        watched[state["collection_id"]] = (folder, state["seen_version"])
    return watched


def ping_unit(
    conn: sqlite3.Connection, caller: Caller, heartbeat: int, folders: list[str]
) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """Remember the Ping's parameters; the PIM folders it watches with the change number
    the device has seen, and the folders that already have changes for it."""
    device_id = caller.device["id"]
    db.update_eas_device(
        conn, device_id, {"heartbeat": heartbeat, "ping_folders": json.dumps(folders)}
    )
    watched: dict[str, tuple[str, int]] = {}
    changed: list[str] = []
    shown = {f.server_id: f for f in hierarchy(conn, caller.account["id"], caller.features)}
    for folder in folders:
        collection = collection_for(conn, caller, shown[folder]) if folder in shown else None
        if collection is None:
            continue
        state = db.folder_state(conn, device_id, folder)
        seen = state["seen_version"] if state else 0
        reset = state["reset_version"] if state else 0
        watched[collection["id"]] = (folder, seen)
        if db.count_changes_after(conn, collection["id"], seen, device_id, reset):
            changed.append(folder)
    return watched, changed
