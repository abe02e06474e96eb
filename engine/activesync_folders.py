"""Exchange ActiveSync folders of the owner's own: FolderCreate, FolderUpdate, FolderDelete
(MS-ASCMD 2.2.1.3, 2.2.1.6, 2.2.1.4) and MoveItems (2.2.1.12) on the PIM store.

A folder the owner makes is a collection of the PIM store beside the account's default one
of its kind: types 13 (calendar), 14 (contacts), 15 (tasks) and 17 (notes) hold those kinds;
12 (mail) and 1 (generic, a mail folder as in Exchange) hold messages like Sent Items.
Journal folders (16) are not kept: there are no journal items. The default folders
(Contacts, Calendar, …, the ones OMA DS synchronises too) cannot be renamed, moved (2) or
deleted (3).

Statuses, as MS-ASCMD 2.2.3.177.3/.4/.6 give them: 10 for a request lacking SyncKey,
ServerId, ParentId, DisplayName (or one longer than 256 characters) or a FolderCreate Type
other than 1 and 12 to 17; 9 for a SyncKey that is not the device's current hierarchy key;
FolderCreate 2 (a sibling of that name, case-insensitive), 5 (no such parent), 6 (a journal
folder, a kind the organisation switched off, or beyond ``MAX_FOLDERS`` or ``MAX_DEPTH``);
FolderUpdate 2 (a default folder, or a sibling of that name), 4 (no such folder), 5 (no such
parent, or the folder itself or one below it), 6 (a move beyond ``MAX_DEPTH``); FolderDelete
3 (a default folder), 4 (no such folder). Another account's folders are "no such folder".

Each command carries the device's folder hierarchy SyncKey; a success takes the next key,
and what the device now holds is recorded, so its next FolderSync does not repeat its own
change while every other device of the owner gets it (Add, Update or Delete). Deleting a
folder deletes the folders under it and leaves tombstones of their items. A refused command
changes nothing.

MoveItems (statuses of 2.2.3.177.10: 1 no such source folder or item in it, 2 no such
destination, 4 source and destination the same, 5 a destination of another kind or one that
holds nothing; 7, locked, never happens) moves an item between two folders of the same
kind, or between any two mail folders: the item becomes a tombstone in its source and a new
item (a new ServerId, DstMsgId) in its destination, both as the moving device's change, so
other devices' Syncs report Delete and Add, not this device's.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .activesync_items import ROOT, Folder, collection_for, held_folders, hierarchy, hold
from .ids import new_id
from .pim import FEATURES
from .protocols import activesync as eas, eas_pim
from .protocols.activesync import EasError, child_text, el
from .protocols.activesync_tables import FOLDER_HIERARCHY, MOVE
from .protocols.wbxml import Element
from .store import activesync as db, pim as pim_db
from .timestamps import now

if TYPE_CHECKING:
    from .activesync import Caller

#: The PIM kind a folder of each FolderCreate Type holds (None: a Type not kept).
USER_KINDS: dict[int, str | None] = {
    1: "sent_mail",
    12: "sent_mail",
    13: "calendar",
    14: "contacts",
    15: "tasks",
    16: None,
    17: "notes",
}
#: The longest DisplayName kept (MS-ASCMD gives none; Exchange's folder names stop here).
MAX_NAME = 256
#: The most folders of its own an account keeps, and the deepest one lies below the root
#: (MS-ASCMD gives no limits: beyond these, FolderCreate and FolderUpdate answer 6).
MAX_FOLDERS = 1000
MAX_DEPTH = 32

# FolderCreate/FolderUpdate/FolderDelete statuses (MS-ASCMD 2.2.3.177.3, .4, .6).
OK = 1
EXISTS_OR_SPECIAL = 2  # FolderCreate: the name exists; FolderUpdate: that, or a default folder
SPECIAL = 3  # FolderDelete: a default folder
MISSING = 4  # FolderUpdate and FolderDelete: no such folder
PARENT_MISSING = 5  # FolderCreate and FolderUpdate
SERVER_ERROR = 6
BAD_KEY = 9
MALFORMED = 10

# MoveItems statuses (MS-ASCMD 2.2.3.177.10).
MOVE_BAD_SOURCE = 1
MOVE_BAD_DESTINATION = 2
MOVE_DONE = 3
MOVE_SAME_FOLDER = 4
MOVE_FAILED = 5


@dataclass
class FolderOutcome:
    """A folder command's status, the new hierarchy SyncKey and the created ServerId; the
    collections whose items changed (their Pings are told)."""

    status: int
    sync_key: int | None = None
    server_id: str | None = None
    changed: list[str] = field(default_factory=list)
    #: The folders the device no longer holds once the command is done.
    gone: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FolderRequest:
    command: str
    sync_key: str
    server_id: str | None = None
    parent_id: str | None = None
    name: str | None = None
    folder_type: int | None = None


# --------------------------------------------------------------------------- requests


def read_request(root: Element | None, command: str) -> FolderRequest | None:
    """The command's elements, or None when the request is malformed (status 10)."""
    try:
        if root is None:
            return None
        eas.expect_root(root, FOLDER_HIERARCHY, command)
    except EasError:
        return None
    key = child_text(root, "SyncKey")
    server_id = child_text(root, "ServerId")
    parent_id = child_text(root, "ParentId")
    name = (child_text(root, "DisplayName") or "").strip()
    if key is None:
        return None
    if command == "FolderDelete":
        return FolderRequest(command, key, server_id=server_id) if server_id else None
    if parent_id is None or not name or len(name) > MAX_NAME:
        return None
    if command == "FolderUpdate":
        if not server_id:
            return None
        return FolderRequest(command, key, server_id, parent_id, name)
    kind_type = child_text(root, "Type") or ""
    if not kind_type.isdigit() or int(kind_type) not in USER_KINDS:
        return None
    return FolderRequest(command, key, None, parent_id, name, int(kind_type))


def folder_response(command: str, outcome: FolderOutcome) -> Element:
    children = [el(FOLDER_HIERARCHY, "Status", str(outcome.status))]
    if outcome.status == OK:
        children.append(el(FOLDER_HIERARCHY, "SyncKey", str(outcome.sync_key)))
        if outcome.server_id is not None:
            children.append(el(FOLDER_HIERARCHY, "ServerId", outcome.server_id))
    return el(FOLDER_HIERARCHY, command, *children)


# --------------------------------------------------------------------------- units


def folder_change_unit(
    conn: sqlite3.Connection, caller: Caller, request: FolderRequest
) -> FolderOutcome:
    """FolderCreate, FolderUpdate or FolderDelete in one write unit."""
    row = db.eas_device(conn, caller.device["id"])
    assert row is not None
    if request.sync_key != str(row["folder_sync_key"]) or row["folder_sync_key"] == 0:
        return FolderOutcome(BAD_KEY)
    folders = hierarchy(conn, caller.account["id"], caller.features)
    by_id = {f.server_id: f for f in folders}
    if request.command == "FolderCreate":
        outcome = _create(conn, caller, request, folders, by_id)
    elif request.command == "FolderUpdate":
        outcome = _update(conn, caller, request, folders, by_id)
    else:
        outcome = _delete(conn, caller, request, by_id)
    if outcome.status != OK:
        return outcome
    # The device holds its own change now; changes of other devices stay for its FolderSync.
    outcome.sync_key = row["folder_sync_key"] + 1
    held = held_folders(row)
    for server_id in outcome.gone:
        held.pop(server_id, None)
    if request.command != "FolderDelete":
        current = {f.server_id: f for f in hierarchy(conn, caller.account["id"], caller.features)}
        changed = current[outcome.server_id or request.server_id or ""]
        held[changed.server_id] = changed.shown
    hold(conn, caller.device["id"], held, outcome.sync_key)
    return outcome


def _sibling_named(folders: list[Folder], parent: str, name: str, other_than: str | None) -> bool:
    return any(
        f.parent_id == parent and f.name.casefold() == name.casefold() and f.server_id != other_than
        for f in folders
    )


def _create(
    conn: sqlite3.Connection,
    caller: Caller,
    request: FolderRequest,
    folders: list[Folder],
    by_id: dict[str, Folder],
) -> FolderOutcome:
    assert request.parent_id is not None and request.name is not None
    assert request.folder_type is not None
    if request.parent_id != ROOT and request.parent_id not in by_id:
        return FolderOutcome(PARENT_MISSING)
    kind = USER_KINDS[request.folder_type]
    if kind is None or not caller.features.get(FEATURES.get(kind, ""), True):
        return FolderOutcome(SERVER_ERROR)  # journal, or a kind the organisation switched off
    if _sibling_named(folders, request.parent_id, request.name, None):
        return FolderOutcome(EXISTS_OR_SPECIAL)
    if (
        _depth(by_id, request.parent_id) >= MAX_DEPTH
        or len(pim_db.folder_collections(conn, caller.account["id"])) >= MAX_FOLDERS
    ):
        return FolderOutcome(SERVER_ERROR)
    at = now()
    collection_id = new_id()
    pim_db.insert_collection(
        conn,
        {
            "id": collection_id,
            "organisation_id": caller.device["organisation_id"],
            "account_id": caller.account["id"],
            "kind": kind,
            "version": 0,
            "created_at": at,
            "is_default": 0,
            "display_name": request.name,
            "parent_id": request.parent_id,
            "folder_type": request.folder_type,
            "updated_at": at,
        },
    )
    return FolderOutcome(OK, server_id=collection_id)


def _depth(by_id: dict[str, Folder], server_id: str) -> int:
    """How far below the root a folder lies (the root 0, a folder in it 1)."""
    depth = 0
    while server_id in by_id and depth <= len(by_id):
        depth += 1
        server_id = by_id[server_id].parent_id
    return depth


def _under(folders: list[dict[str, Any]], server_id: str) -> list[str]:
    """The folder and every folder below it, of the account's own folders, parents first."""
    children: dict[str, list[str]] = {}
    for row in folders:
        children.setdefault(row["parent_id"], []).append(row["id"])
    found = [server_id]
    seen = {server_id}
    for parent in found:
        for child in children.get(parent, ()):
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def _height(folders: list[dict[str, Any]], server_id: str) -> int:
    """How many levels a folder and those below it take (a folder alone: 1)."""
    parents = {row["id"]: row["parent_id"] for row in folders}
    below = _under(folders, server_id)
    levels = {server_id: 1}
    for child in below[1:]:  # parents first: a child's parent has its level already
        levels[child] = levels[parents[child]] + 1
    return max(levels.values())


def _update(
    conn: sqlite3.Connection,
    caller: Caller,
    request: FolderRequest,
    folders: list[Folder],
    by_id: dict[str, Folder],
) -> FolderOutcome:
    assert request.server_id is not None
    assert request.parent_id is not None and request.name is not None
    target = by_id.get(request.server_id)
    if target is None:
        return FolderOutcome(MISSING)
    if target.default:
        return FolderOutcome(EXISTS_OR_SPECIAL)
    own = pim_db.folder_collections(conn, caller.account["id"])
    if request.parent_id != ROOT and (
        request.parent_id not in by_id or request.parent_id in _under(own, target.server_id)
    ):
        return FolderOutcome(PARENT_MISSING)  # not there, or the folder itself or below it
    if _sibling_named(folders, request.parent_id, request.name, target.server_id):
        return FolderOutcome(EXISTS_OR_SPECIAL)
    if _depth(by_id, request.parent_id) + _height(own, target.server_id) > MAX_DEPTH:
        return FolderOutcome(SERVER_ERROR)
    pim_db.update_collection(
        conn,
        target.server_id,
        {"display_name": request.name, "parent_id": request.parent_id, "updated_at": now()},
    )
    return FolderOutcome(OK)


def _delete(
    conn: sqlite3.Connection, caller: Caller, request: FolderRequest, by_id: dict[str, Folder]
) -> FolderOutcome:
    assert request.server_id is not None
    target = by_id.get(request.server_id)
    if target is None:
        return FolderOutcome(MISSING)
    if target.default:
        return FolderOutcome(SPECIAL)
    device_id = caller.device["id"]
    at = now()
    outcome = FolderOutcome(OK)
    for collection_id in _under(
        pim_db.folder_collections(conn, caller.account["id"]), target.server_id
    ):
        if pim_db.delete_live_items(conn, collection_id, device_id, at):
            outcome.changed.append(collection_id)
        pim_db.update_collection(conn, collection_id, {"deleted_at": at, "updated_at": at})
        pim_db.clear_mappings(conn, device_id, collection_id)
        db.forget_folder_state(conn, device_id, collection_id)
        outcome.gone.append(collection_id)
    return outcome


# --------------------------------------------------------------------------- MoveItems


@dataclass(frozen=True)
class Move:
    src_msg_id: str
    src_fld_id: str
    dst_fld_id: str


@dataclass
class MoveOutcome:
    src_msg_id: str
    status: int
    dst_msg_id: str | None = None
    #: Source and destination collections of a done move.
    collections: tuple[str, str] | None = None


def read_moves(root: Element) -> list[Move]:
    """The Move elements; one lacking an id is kept with empty ids (it fails on its own)."""
    return [
        Move(
            child_text(move, "SrcMsgId", "") or "",
            child_text(move, "SrcFldId", "") or "",
            child_text(move, "DstFldId", "") or "",
        )
        for move in root.elements()
        if move.tag == "Move"
    ]


def move_response(outcomes: list[MoveOutcome]) -> Element:
    responses = []
    for outcome in outcomes:
        children = [
            el(MOVE, "SrcMsgId", outcome.src_msg_id),
            el(MOVE, "Status", str(outcome.status)),
        ]
        if outcome.dst_msg_id is not None:
            children.append(el(MOVE, "DstMsgId", outcome.dst_msg_id))
        responses.append(el(MOVE, "Response", *children))
    return el(MOVE, "MoveItems", *responses)


def move_unit(
    conn: sqlite3.Connection, caller: Caller, moves: list[Move]
) -> tuple[list[MoveOutcome], set[str]]:
    """Every Move of a MoveItems in one write unit; the collections that changed."""
    outcomes: list[MoveOutcome] = []
    changed: set[str] = set()
    shown = {f.server_id: f for f in hierarchy(conn, caller.account["id"], caller.features)}
    for move in moves:
        outcome = _move(conn, caller, shown, move)
        outcomes.append(outcome)
        changed |= set(outcome.collections or ())
    return outcomes, changed


def _same_class(source: str | None, destination: str | None) -> bool:
    """Whether an item may move between folders of these kinds: the same kind, or any two
    mail folders (Inbox, Drafts, Deleted Items, Sent Items and the owner's own)."""
    return source == destination or (eas_pim.is_mail(source) and eas_pim.is_mail(destination))


def _move(
    conn: sqlite3.Connection, caller: Caller, shown: dict[str, Folder], move: Move
) -> MoveOutcome:
    device_id = caller.device["id"]
    source_folder = shown.get(move.src_fld_id)
    source = collection_for(conn, caller, source_folder) if source_folder else None
    if source_folder is None or source is None:
        return MoveOutcome(move.src_msg_id, MOVE_BAD_SOURCE)
    destination_folder = shown.get(move.dst_fld_id)
    if destination_folder is None:
        return MoveOutcome(move.src_msg_id, MOVE_BAD_DESTINATION)
    if move.src_fld_id == move.dst_fld_id:
        return MoveOutcome(move.src_msg_id, MOVE_SAME_FOLDER)
    source_id = source["id"]
    item_id = (
        None
        if move.src_msg_id.startswith(db.CLIENT_PREFIX)
        else pim_db.mapped_item(conn, device_id, source_id, move.src_msg_id)
    )
    item = pim_db.item_in(conn, source_id, item_id) if item_id is not None else None
    if item is None or item["deleted"]:
        return MoveOutcome(move.src_msg_id, MOVE_BAD_SOURCE)  # not there, or moved already
    destination = collection_for(conn, caller, destination_folder)
    if destination is None or not _same_class(source_folder.kind, destination_folder.kind):
        return MoveOutcome(move.src_msg_id, MOVE_FAILED)  # another kind of item
    destination_id = destination["id"]
    at = now()
    moved = pim_db.insert_item(
        conn,
        {
            "collection_id": destination_id,
            "organisation_id": caller.device["organisation_id"],
            "version": pim_db.next_version(conn, destination_id),
            "origin": device_id,
            "content_type": item["content_type"],
            "data": item["data"],
            "uid": item["uid"],
            "fingerprint": item["fingerprint"],
            "deleted": 0,
            "created_at": at,
            "updated_at": at,
        },
    )
    pim_db.update_item(
        conn,
        item["id"],
        {
            "version": pim_db.next_version(conn, source_id),
            "origin": device_id,
            "data": None,
            "deleted": 1,
            "updated_at": at,
        },
    )
    pim_db.drop_mapping_of_item(conn, device_id, source_id, item["id"])
    pim_db.put_mapping(conn, device_id, destination_id, str(moved), moved)
    return MoveOutcome(move.src_msg_id, MOVE_DONE, str(moved), (source_id, destination_id))
