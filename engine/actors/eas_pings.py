"""The board of parked ActiveSync Pings, and the one sweeper task that serves it.

A Ping is answered when a folder it watches changes, when a command waits for its device,
or when its heartbeat ends. Holding tens of thousands must be cheap, so a parked Ping is
one small object in three indexes (by session, by device, by watched collection) and one
heap entry; there is no task and no timer per Ping. The board is synchronous and lives in
the service's one Trio thread, so the device sessions, the store's committers and the
wake-up hub call it directly.

Changes reach it two ways: :meth:`PingBoard.changed` at once from the writers that know
(ActiveSync's own Sync), and :meth:`PingBoard.versions` twice a second from the sweeper, which
compares the watched collections' change numbers (one indexed query for all of them) and so
also sees the changes other protocols commit (OMA DS, the portal, the API).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..wakeups import Waiting
from .runtime import Reply

log = logging.getLogger(__name__)

#: A function that turns what happened into the reply a parked Ping gets: (what happened,
#: the folders that changed, the device speaks a version before 14.0, a Sync with Wait).
Answer = Callable[[str, Sequence[str], bool, bool], Any]


class ParkedPing:
    """One parked Ping: its reply slot, what it watches and when its heartbeat ends."""

    __slots__ = (
        "account_id",
        "before_14",
        "deadline",
        "device_id",
        "key",
        "slot",
        "sync",
        "watched",
    )

    def __init__(
        self,
        key: str,
        device_id: str,
        account_id: str,
        watched: dict[str, tuple[str, int]],
        deadline: float,
        slot: Reply,
        before_14: bool,
        sync: bool = False,
    ) -> None:
        self.key = key
        self.device_id = device_id
        self.account_id = account_id
        #: collection id -> (folder ServerId, change number the device has seen)
        self.watched = watched
        self.deadline = deadline
        self.slot = slot
        self.before_14 = before_14
        #: A Sync with Wait rather than a Ping (answered differently).
        self.sync = sync


class PingBoard:
    """Parked Pings and their indexes; ``answer(kind, folders, before_14)`` builds replies
    (kind: ``changes``, ``expired``, ``provision``, ``hierarchy``)."""

    def __init__(self, answer: Answer, clock: Callable[[], float] = trio.current_time) -> None:
        self.answer = answer
        self.clock = clock
        self.by_key: dict[str, ParkedPing] = {}
        self.by_device: dict[str, ParkedPing] = {}
        self.by_account: dict[str, set[ParkedPing]] = {}
        self.by_collection: dict[str, set[ParkedPing]] = {}
        self.expiries: list[tuple[float, int, ParkedPing]] = []
        self._sequence = itertools.count()
        #: Delays from a change being noticed to its Ping being answered (for the bench).
        self.answered = 0

    def __len__(self) -> int:
        return len(self.by_key)

    def park(
        self,
        key: str,
        device_id: str,
        account_id: str,
        watched: dict[str, tuple[str, int]],
        heartbeat: float,
        slot: Reply,
        before_14: bool,
        *,
        sync: bool = False,
    ) -> None:
        self.release_key(key)
        ping = ParkedPing(
            key, device_id, account_id, watched, self.clock() + heartbeat, slot, before_14, sync
        )
        self.by_key[key] = ping
        self.by_device[device_id] = ping
        self.by_account.setdefault(account_id, set()).add(ping)
        for collection_id in watched:
            self.by_collection.setdefault(collection_id, set()).add(ping)
        heapq.heappush(self.expiries, (ping.deadline, next(self._sequence), ping))

    def _settle(self, ping: ParkedPing, kind: str, folders: Sequence[str] = ()) -> None:
        if self.by_key.get(ping.key) is not ping:
            return
        del self.by_key[ping.key]
        if self.by_device.get(ping.device_id) is ping:
            del self.by_device[ping.device_id]
        same_account = self.by_account.get(ping.account_id)
        if same_account is not None:
            same_account.discard(ping)
            if not same_account:
                del self.by_account[ping.account_id]
        for collection_id in ping.watched:
            parked = self.by_collection.get(collection_id)
            if parked is not None:
                parked.discard(ping)
                if not parked:
                    del self.by_collection[collection_id]
        self.answered += 1
        ping.slot.send(self.answer(kind, folders, ping.before_14, ping.sync))

    def release_key(self, key: str) -> None:
        """The session's parked Ping (if any) ends as if its heartbeat were over."""
        ping = self.by_key.get(key)
        if ping is not None:
            self._settle(ping, "expired")

    def hierarchy_changed(self, account_id: str, exclude: str | None = None) -> None:
        """The account's folders changed (a folder made, renamed, moved or deleted): its
        other devices' Pings are told to FolderSync (Ping status 7)."""
        for ping in tuple(self.by_account.get(account_id, ())):
            if ping.device_id != exclude:
                self._settle(ping, "hierarchy")

    def changed(self, collection_id: str, exclude: str | None = None) -> None:
        """A change was committed to the collection: answer the Pings watching it."""
        for ping in tuple(self.by_collection.get(collection_id, ())):
            if ping.device_id != exclude:
                self._settle(ping, "changes", [ping.watched[collection_id][0]])

    def versions(self, versions: dict[str, int]) -> None:
        """Current change numbers of watched collections: answer Pings behind them."""
        for collection_id, version in versions.items():
            for ping in tuple(self.by_collection.get(collection_id, ())):
                folder, seen = ping.watched[collection_id]
                if version > seen:
                    self._settle(ping, "changes", [folder])

    def wake(self, waiting: Sequence[Waiting]) -> None:
        """Wake-up hub subscriber: a command waits for these devices (a wipe): their Pings
        end so that they provision and fetch it."""
        for one in waiting:
            if one.protocol == "eas":
                ping = self.by_device.get(one.device_id)
                if ping is not None:
                    self._settle(ping, "provision")

    def expire(self) -> None:
        moment = self.clock()
        heap = self.expiries
        while heap and heap[0][0] <= moment:
            _, _, ping = heapq.heappop(heap)
            self._settle(ping, "expired")

    def compact(self) -> None:
        """Drop heap entries of Pings answered early once they outnumber the parked ones."""
        if len(self.expiries) > 2 * len(self.by_key) + 1024:
            self.expiries = [
                entry for entry in self.expiries if self.by_key.get(entry[2].key) is entry[2]
            ]
            heapq.heapify(self.expiries)

    def answer_all(self) -> None:
        for ping in tuple(self.by_key.values()):
            self._settle(ping, "expired")


async def sweep(
    board: PingBoard,
    read_versions: Callable[[list[str]], Any],
    *,
    tick: float = 0.25,
    poll_every: float = 0.5,
) -> None:
    """The one task behind every parked Ping: heartbeats every ``tick``, the watched
    collections' change numbers every ``poll_every`` seconds."""
    next_poll = trio.current_time() + poll_every
    try:
        while True:
            await trio.sleep(tick)
            board.expire()
            if trio.current_time() >= next_poll:
                next_poll = trio.current_time() + poll_every
                board.compact()
                watched = list(board.by_collection)
                if watched:
                    try:
                        board.versions(await read_versions(watched))
                    except Exception:  # the store is busy or closing: the next poll retries
                        log.exception("polling watched collections failed")
    finally:
        board.answer_all()
