"""The PIM store: contacts, calendars, tasks and notes of each account, shared by devices.

One *collection* per account and kind holds items; every change takes the collection's
next change number and a deletion leaves a tombstone, so what a device lacks is "every
change after the number it has seen" (:func:`engine.store.pim.changes_after`), however many
devices (OMA DS now, Exchange ActiveSync later) share the collection.

:class:`CollectionSync` is one device's synchronisation of one collection in one session:
it applies the device's changes (recognising in a slow sync the items the service already
has, so nothing is duplicated), resolves conflicts by the configured policy without losing
data, lists the service's changes for the device, records the device's ids of items (the
id map) and, at the end, the device's sync state (anchors, change number seen, mode, time).
Item bytes are kept as received; they are converted only for a device that does not accept
the format they are in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .audit import audit_event
from .devices import get_device
from .errors import Forbidden
from .ids import new_id
from .principals import AccountKind, Principal, Right, holds
from .protocols import icalendar, vcard
from .protocols.contentline import digest
from .protocols.omads import ChangeOutcome, ClientChange, DatastoreState, ServerChange
from .store import Store, pim as db
from .store.audit import insert_event
from .timestamps import now

KINDS = ("contacts", "calendar", "tasks", "notes")
#: The organisation feature that switches each kind's synchronisation on or off.
FEATURES = {
    "contacts": "contacts_sync",
    "calendar": "calendar_sync",
    "tasks": "tasks_sync",
    "notes": "notes_sync",
}
#: Conflict policies: the device's change wins if it is the newer one (by the item's own
#: REV/LAST-MODIFIED, else the device's, which arrives last); the service's always wins; or
#: both are kept, the device's as a new item. In each, the losing version of an item that
#: was changed survives on the winning side or as the duplicate: nothing is lost.
POLICIES = ("newest-wins", "server-wins", "keep-both")
DEFAULT_POLICY = "newest-wins"

_OK, _ADDED, _CLIENT_WON, _DUPLICATED, _NOT_DELETED, _SERVER_WON, _NOT_FOUND = (
    200,
    201,
    208,
    209,
    211,
    419,
    404,
)


@dataclass(frozen=True)
class Facts:
    """What the store keeps beside an item's bytes."""

    content_type: str
    uid: str | None
    fingerprint: str
    revision: str | None


def facts_of(kind: str, data: str, content_type: str | None) -> Facts:
    if kind == "contacts":
        return Facts(
            content_type or vcard.content_type(data),
            vcard.uid(data),
            vcard.fingerprint(data),
            vcard.revision(data),
        )
    if kind in ("calendar", "tasks"):
        return Facts(
            content_type or icalendar.content_type(data),
            icalendar.uid(data),
            icalendar.fingerprint(data),
            icalendar.revision(data),
        )
    text = data.replace("\r\n", "\n").strip()
    return Facts(content_type or "text/plain", None, digest([text]), None)


def for_device(
    kind: str, content_type: str, data: str, accepts: list[list[str]]
) -> tuple[str, str]:
    """The item in a format the device accepts (its DevInf Rx-Pref first), else as stored."""
    if not accepts or any(ct == content_type for ct, _ in accepts):
        return content_type, data
    preferred, version = accepts[0]
    if kind == "contacts" and preferred in (vcard.TYPE_21, vcard.TYPE_30):
        return preferred, vcard.convert(data, version or "3.0")
    if kind in ("calendar", "tasks") and preferred in (icalendar.TYPE_10, icalendar.TYPE_20):
        return preferred, icalendar.convert(data, version or "2.0")
    return content_type, data


# --------------------------------------------------------------------------- collections


def collection_unit(
    conn: sqlite3.Connection, organisation_id: str, account_id: str, kind: str
) -> dict[str, Any]:
    """The account's collection of ``kind``, made on first use."""
    found = db.collection_of(conn, account_id, kind)
    if found is not None:
        return found
    collection = {
        "id": new_id(),
        "organisation_id": organisation_id,
        "account_id": account_id,
        "kind": kind,
        "version": 0,
        "created_at": now(),
    }
    db.insert_collection(conn, collection)
    return collection


# --------------------------------------------------------------------------- devices' datastores


def _datastore(row: dict[str, Any], features: dict[str, bool]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        "datastore": row["datastore"],
        "enabled": features.get(FEATURES[row["kind"]], True),
        "items": row["items"],
        "device_items": row["device_items"],
        "last_sync_at": row["last_sync_at"],
        "last_mode": row["last_mode"],
        "refresh_requested": bool(row["refresh_requested"]),
    }


async def device_datastores(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> list[dict[str, Any]]:
    """The datastores a device synchronises: item counts (the owner's collection and what
    the device holds of it), last sync time and mode, whether a refresh is pending."""
    device = await get_device(store, principal, organisation, device_id)
    rows = await store.read(db.sync_states_of_device, device["id"])
    features = await store.read(db.features_of_organisation, device["id"])
    # ActiveSync mail folders (Inbox, Sent Items, ...) are no datastores of OMA DS.
    return [_datastore(row, features) for row in rows if row["kind"] in FEATURES]


async def request_refresh(
    store: Store,
    principal: Principal,
    organisation: str,
    device_id: str,
    kinds: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Make the device's next sync of these datastores (all by default) a slow sync: the
    device and the service compare everything and each ends with all items, once.

    The device's owner may ask, and managers with the commands right.
    """
    device = await get_device(store, principal, organisation, device_id)
    if principal.kind is not AccountKind.USER and not holds(principal, Right.COMMANDS):
        raise Forbidden("this needs the 'commands' right")
    chosen = list(kinds or KINDS)
    event = audit_event(
        principal,
        "device.sync_refresh_requested",
        organisation_id=None,  # the device's, filled in by the write
        target_type="device",
        target_id=device["id"],
        details={"kinds": chosen},
    )
    await store.write(_request_refresh, device["id"], chosen, event)
    return await device_datastores(store, principal, organisation, device_id)


def _request_refresh(
    conn: sqlite3.Connection, device_id: str, kinds: list[str], event: dict[str, Any]
) -> None:
    db.request_refresh(conn, device_id, kinds)
    event["organisation_id"] = db.organisation_of_device(conn, device_id)
    insert_event(conn, event)


# --------------------------------------------------------------------------- one device's sync


class PimChanges:
    """Who hears that a collection changed, once the change is committed: ActiveSync's
    parked Pings, so that what an OMA DS client sends reaches them at once rather than at
    their board's next look at the store."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """``listener(collection_id)`` must not block (it runs in the committing task)."""
        self._listeners.append(listener)

    def changed(self, collection_id: str) -> None:
        for listener in self._listeners:
            listener(collection_id)


@dataclass
class CollectionSync:
    """One device's synchronisation of one collection in one session (see the module)."""

    store: Store
    organisation_id: str
    device_id: str
    collection_id: str
    kind: str
    datastore: str
    state: DatastoreState
    seen_version: int
    policy: str = DEFAULT_POLICY
    accepts: list[list[str]] = field(default_factory=list)
    mode: str = "two-way"
    #: Slow sync: the id map as it was before (the device's ids are matched again).
    previous_map: dict[str, int] = field(default_factory=dict)
    #: Slow sync: items the device has now (not sent to it), and items no other may match.
    matched: set[int] = field(default_factory=set)
    claimed: set[int] = field(default_factory=set)
    #: Slow sync: matched items where the service's version won, sent back as Replace.
    send_back: set[int] = field(default_factory=set)
    snapshot: int | None = None
    map_outdated: bool = False
    #: Told of the collection once the device's changes to it are committed.
    changes: PimChanges | None = None

    async def begin(self, mode: str) -> None:
        self.mode = mode
        if mode in ("slow", "refresh-from-client", "refresh-from-server"):
            # The id map is matched again item by item; it is forgotten with the first change
            # this session writes, so a session that ends before changes nothing.
            self.previous_map = await self.store.read(db.id_map, self.device_id, self.collection_id)
            self.map_outdated = True

    def _forget_outdated_map(self, conn: sqlite3.Connection) -> None:
        if self.map_outdated:
            db.clear_mappings(conn, self.device_id, self.collection_id)
            self.map_outdated = False

    # ------------------------------------------------------------------ the device's changes

    async def apply(self, changes: list[ClientChange]) -> list[ChangeOutcome]:
        outcomes = await self.store.write(self.apply_unit, changes)
        if changes and self.changes is not None:
            self.changes.changed(self.collection_id)
        return outcomes

    def apply_unit(
        self, conn: sqlite3.Connection, changes: list[ClientChange]
    ) -> list[ChangeOutcome]:
        self._forget_outdated_map(conn)
        outcomes: list[ChangeOutcome] = []
        for change in changes:
            if self.mode in ("slow", "refresh-from-client"):
                outcomes.append(self._slow_change(conn, change))
            elif change.command == "Delete":
                outcomes.append(self._delete(conn, change))
            else:
                outcomes.append(self._upsert(conn, change))
        return outcomes

    def _new_item(self, conn: sqlite3.Connection, change: ClientChange, facts: Facts) -> int:
        at = now()
        item_id = db.insert_item(
            conn,
            {
                "collection_id": self.collection_id,
                "organisation_id": self.organisation_id,
                "version": db.next_version(conn, self.collection_id),
                "origin": self.device_id,
                "content_type": facts.content_type,
                "data": change.data,
                "uid": facts.uid,
                "fingerprint": facts.fingerprint,
                "deleted": 0,
                "created_at": at,
                "updated_at": at,
            },
        )
        db.put_mapping(conn, self.device_id, self.collection_id, change.luid, item_id)
        return item_id

    def _overwrite(
        self, conn: sqlite3.Connection, item_id: int, change: ClientChange, facts: Facts
    ) -> None:
        db.update_item(
            conn,
            item_id,
            {
                "version": db.next_version(conn, self.collection_id),
                "origin": self.device_id,
                "content_type": facts.content_type,
                "data": change.data,
                "uid": facts.uid,
                "fingerprint": facts.fingerprint,
                "deleted": 0,
                "updated_at": now(),
            },
        )

    def _changed_elsewhere(self, item: dict[str, Any]) -> bool:
        return item["version"] > self.seen_version and item["origin"] != self.device_id

    def _device_wins(self, item: dict[str, Any], facts: Facts) -> bool:
        """Whose version of a conflicting item survives in place, by the policy."""
        if self.policy == "server-wins":
            return False
        if self.policy == "newest-wins":
            theirs = facts_of(self.kind, item["data"] or "", item["content_type"]).revision
            return not (theirs and facts.revision and theirs > facts.revision)
        return True

    def _upsert(self, conn: sqlite3.Connection, change: ClientChange) -> ChangeOutcome:
        facts = facts_of(self.kind, change.data or "", change.content_type)
        item_id = db.mapped_item(conn, self.device_id, self.collection_id, change.luid)
        item = db.item_in(conn, self.collection_id, item_id) if item_id is not None else None
        if item is None:
            return ChangeOutcome(_ADDED, str(self._new_item(conn, change, facts)))
        if item["deleted"] or not self._changed_elsewhere(item):
            # Deleted here but changed on the device: the change brings the item back.
            self._overwrite(conn, item["id"], change, facts)
            return ChangeOutcome(_OK, str(item["id"]))
        if item["fingerprint"] == facts.fingerprint:
            return ChangeOutcome(_OK, str(item["id"]))
        if self.policy == "keep-both":
            # The device's version becomes a new item under its id; the service's version
            # loses its mapping and goes to the device as a new item.
            return ChangeOutcome(_DUPLICATED, str(self._new_item(conn, change, facts)))
        if self._device_wins(item, facts):
            self._overwrite(conn, item["id"], change, facts)
            return ChangeOutcome(_CLIENT_WON, str(item["id"]))
        return ChangeOutcome(_SERVER_WON, str(item["id"]))  # goes back as a Replace

    def _delete(self, conn: sqlite3.Connection, change: ClientChange) -> ChangeOutcome:
        item_id = db.mapped_item(conn, self.device_id, self.collection_id, change.luid)
        item = db.item_in(conn, self.collection_id, item_id) if item_id is not None else None
        if item is None:
            return ChangeOutcome(_NOT_DELETED)
        db.drop_mapping(conn, self.device_id, self.collection_id, change.luid)
        if item["deleted"]:
            return ChangeOutcome(_OK, str(item["id"]))
        if self._changed_elsewhere(item):
            # Changed elsewhere, deleted on the device: the change is kept and the item goes
            # back to the device (unmapped, it is sent as new).
            return ChangeOutcome(_SERVER_WON, str(item["id"]))
        db.update_item(
            conn,
            item["id"],
            {
                "version": db.next_version(conn, self.collection_id),
                "origin": self.device_id,
                "data": None,
                "deleted": 1,
                "updated_at": now(),
            },
        )
        return ChangeOutcome(_OK, str(item["id"]))

    def _slow_change(self, conn: sqlite3.Connection, change: ClientChange) -> ChangeOutcome:
        if change.command == "Delete":
            return ChangeOutcome(_OK)
        facts = facts_of(self.kind, change.data or "", change.content_type)
        item = None
        known = self.previous_map.get(change.luid)
        if known is not None and known not in self.claimed:
            item = db.item_in(conn, self.collection_id, known)
            if item is not None and item["deleted"]:
                item = None
        if item is None:
            item = db.live_item_matching(
                conn, self.collection_id, facts.fingerprint, facts.uid, self.claimed
            )
        if item is None:
            item_id = self._new_item(conn, change, facts)
            self.matched.add(item_id)
            self.claimed.add(item_id)
            return ChangeOutcome(_ADDED, str(item_id))
        self.claimed.add(item["id"])
        if item["fingerprint"] == facts.fingerprint or self.mode == "refresh-from-client":
            if item["fingerprint"] != facts.fingerprint:
                self._overwrite(conn, item["id"], change, facts)
            db.put_mapping(conn, self.device_id, self.collection_id, change.luid, item["id"])
            self.matched.add(item["id"])
            return ChangeOutcome(_OK, str(item["id"]))
        if self.policy == "keep-both":
            item_id = self._new_item(conn, change, facts)
            self.matched.add(item_id)
            self.claimed.add(item_id)
            return ChangeOutcome(_DUPLICATED, str(item_id))
        db.put_mapping(conn, self.device_id, self.collection_id, change.luid, item["id"])
        self.matched.add(item["id"])
        if self._device_wins(item, facts):
            self._overwrite(conn, item["id"], change, facts)
            return ChangeOutcome(_CLIENT_WON, str(item["id"]))
        self.send_back.add(item["id"])
        return ChangeOutcome(_SERVER_WON, str(item["id"]))

    # ------------------------------------------------------------------ the service's changes

    async def outgoing(self) -> list[ServerChange]:
        return await self.store.write(self._outgoing)

    def _outgoing(self, conn: sqlite3.Connection) -> list[ServerChange]:
        self._forget_outdated_map(conn)
        mode = self.mode
        if mode == "refresh-from-client":
            # What the device did not send is gone from the collection.
            for item_id in db.live_item_ids(conn, self.collection_id):
                if item_id not in self.claimed:
                    db.update_item(
                        conn,
                        item_id,
                        {
                            "version": db.next_version(conn, self.collection_id),
                            "origin": self.device_id,
                            "data": None,
                            "deleted": 1,
                            "updated_at": now(),
                        },
                    )
        self.snapshot = db.collection_version(conn, self.collection_id)
        if mode in ("refresh-from-client", "one-way-from-client"):
            if mode == "one-way-from-client":
                self.snapshot = self.seen_version
            return []
        if mode in ("slow", "refresh-from-server"):
            rows = [
                row
                for row in db.live_items(conn, self.collection_id)
                if row["id"] not in self.matched or row["id"] in self.send_back
            ]
        else:
            rows = db.changes_after(conn, self.collection_id, self.seen_version, self.device_id)
        luids = db.luids_of_items(conn, self.device_id, self.collection_id, [r["id"] for r in rows])
        changes: list[ServerChange] = []
        for row in rows:
            luid = luids.get(row["id"])
            if row["deleted"]:
                if luid is not None:
                    db.drop_mapping(conn, self.device_id, self.collection_id, luid)
                    changes.append(ServerChange("Delete", str(row["id"]), luid, None, None))
                continue
            content_type, data = for_device(
                self.kind, row["content_type"], row["data"], self.accepts
            )
            command = "Replace" if luid is not None else "Add"
            changes.append(ServerChange(command, str(row["id"]), luid, data, content_type))
        return changes

    # ------------------------------------------------------------------ map and commit

    async def map(self, pairs: list[tuple[str, str]]) -> int:
        return await self.store.write(self._map, pairs)

    def _map(self, conn: sqlite3.Connection, pairs: list[tuple[str, str]]) -> int:
        mapped = 0
        for server_id, luid in pairs:
            if not server_id.isdigit():
                continue
            item = db.item_in(conn, self.collection_id, int(server_id))
            if item is not None:
                db.put_mapping(conn, self.device_id, self.collection_id, luid, item["id"])
                mapped += 1
        return _OK if mapped or not pairs else _NOT_FOUND

    async def finish(self, client_anchor: str, server_anchor: str) -> None:
        await self.store.write(self._finish, client_anchor, server_anchor)

    def _finish(self, conn: sqlite3.Connection, client_anchor: str, server_anchor: str) -> None:
        db.put_sync_state(
            conn,
            {
                "device_id": self.device_id,
                "collection_id": self.collection_id,
                "organisation_id": self.organisation_id,
                "datastore": self.datastore,
                "client_anchor": client_anchor,
                "server_anchor": server_anchor,
                "seen_version": self.snapshot if self.snapshot is not None else self.seen_version,
                "last_sync_at": now(),
                "last_mode": self.mode,
                "refresh_requested": 0,
            },
        )
