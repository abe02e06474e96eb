"""An Exchange ActiveSync client of the tests' own, speaking WBXML over httpx the way the
well-known phone clients do: OPTIONS, Provision in two phases (and again when told 142, 143
or 144, or HTTP 449), FolderSync, Sync from SyncKey 0 with a window and MoreAvailable,
Ping, folders of the user's own (FolderCreate, FolderUpdate, FolderDelete), MoveItems,
FilterType, and acknowledging a remote wipe."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field

import httpx

from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    COMPOSE_MAIL,
    CONTACTS,
    FIND,
    FOLDER_HIERARCHY,
    GET_ITEM_ESTIMATE,
    ITEM_OPERATIONS,
    MOVE,
    PING,
    PROVISION,
    SEARCH,
    SETTINGS,
)
from engine.protocols.wbxml import Element

PATH = "/Microsoft-Server-ActiveSync"


class EasFailure(Exception):
    """The server answered with an HTTP error or a failing command status."""

    def __init__(self, message: str, http: int = 200, status: int | None = None) -> None:
        super().__init__(message)
        self.http = http
        self.status = status


@dataclass
class SyncOutcome:
    sync_key: str
    status: int
    added: dict[str, Element] = field(default_factory=dict)
    changed: dict[str, Element] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    responses: list[Element] = field(default_factory=list)
    more: bool = False


@dataclass
class EasClient:
    http: httpx.AsyncClient
    user: str
    password: str
    device_id: str
    device_type: str = "iPhone"
    version: str = "16.1"
    encoded_query: bool = False
    policy_key: str | None = None
    folder_key: str = "0"
    folders: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: The parent of each folder (ServerId -> ParentId, "0": the root).
    parents: dict[str, str] = field(default_factory=dict)
    sync_keys: dict[str, str] = field(default_factory=dict)
    #: The items the client holds per folder: ServerId -> ApplicationData.
    items: dict[str, dict[str, Element]] = field(default_factory=dict)
    wiped: str | None = None

    # ------------------------------------------------------------------ transport

    def _query(self, command: str) -> str:
        if not self.encoded_query:
            return (
                f"Cmd={command}&User={self.user}&DeviceId={self.device_id}"
                f"&DeviceType={self.device_type}"
            )
        codes = {name: code for code, name in eas.COMMAND_CODES.items()}
        major, minor = self.version.split(".")
        data = bytes((int(major) * 10 + int(minor), codes[command])) + struct.pack("<H", 0x0409)
        device = self.device_id.encode()
        data += bytes((len(device),)) + device
        if self.policy_key:
            data += b"\x04" + struct.pack("<I", int(self.policy_key))
        else:
            data += b"\x00"
        kind = self.device_type.encode()
        data += bytes((len(kind),)) + kind
        user = self.user.encode()
        data += bytes((8, len(user))) + user
        return base64.b64encode(data).decode()

    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        headers = {
            "Authorization": f"Basic {token}",
            "MS-ASProtocolVersion": self.version,
            "Content-Type": eas.CONTENT_TYPE,
            "User-Agent": "eas-test-client/1.0",
        }
        if self.policy_key and not self.encoded_query:
            headers["X-MS-PolicyKey"] = self.policy_key
        return headers

    async def post(
        self, command: str, body: Element | bytes | None, wait: float = 30
    ) -> httpx.Response:
        content = eas.encode(body) if isinstance(body, Element) else (body or b"")
        return await self.http.post(
            f"{PATH}?{self._query(command)}",
            content=content,
            headers=self.headers(),
            timeout=wait,
        )

    async def call(self, command: str, body: Element | None, wait: float = 30) -> Element | None:
        """POST one command; provision first (and once again) when the server asks to."""
        for attempt in range(2):
            response = await self.post(command, body, wait)
            if response.status_code == 449 and attempt == 0 and command != "Provision":
                await self.provision()
                continue
            if response.status_code != 200:
                raise EasFailure(f"{command}: HTTP {response.status_code}", response.status_code)
            if not response.content:
                return None
            root = eas.decode(response.content)
            status = child_text(root, "Status")
            if status in ("140", "142", "143", "144") and attempt == 0 and command != "Provision":
                await self.provision()
                continue
            return root
        raise EasFailure(f"{command}: still refused after provisioning")

    async def options(self) -> httpx.Response:
        return await self.http.options(PATH, headers=self.headers())

    # ------------------------------------------------------------------ Provision

    async def provision(self) -> Element:
        """Both phases; a remote wipe is acknowledged (and remembered in ``wiped``)."""
        info = el(
            SETTINGS,
            "DeviceInformation",
            el(
                SETTINGS,
                "Set",
                el(SETTINGS, "Model", "Test Phone"),
                el(SETTINGS, "IMEI", "356938035643809"),
                el(SETTINGS, "FriendlyName", "Test phone"),
                el(SETTINGS, "OS", "TestOS 17.1"),
                el(SETTINGS, "OSLanguage", "English"),
                el(SETTINGS, "PhoneNumber", "+441234"),
                el(SETTINGS, "UserAgent", "eas-test-client/1.0"),
            ),
        )
        policy = el(
            PROVISION,
            "Policies",
            el(PROVISION, "Policy", el(PROVISION, "PolicyType", eas.POLICY_TYPE)),
        )
        first_body = [policy] if self.version < "14.1" else [info, policy]
        first = await self._provision(el(PROVISION, "Provision", *first_body))
        for tag in ("RemoteWipe", "AccountOnlyRemoteWipe"):
            if first.find(tag) is not None:
                self.wiped = tag
                return await self._provision(
                    el(PROVISION, "Provision", el(PROVISION, tag, el(PROVISION, "Status", "1")))
                )
        answer = first.find("Policies").find("Policy")  # type: ignore[union-attr]
        temporary = child_text(answer, "PolicyKey")
        self.policy_key = temporary
        second = await self._provision(
            el(
                PROVISION,
                "Provision",
                el(
                    PROVISION,
                    "Policies",
                    el(
                        PROVISION,
                        "Policy",
                        el(PROVISION, "PolicyType", eas.POLICY_TYPE),
                        el(PROVISION, "PolicyKey", temporary or ""),
                        el(PROVISION, "Status", "1"),
                    ),
                ),
            )
        )
        for tag in ("RemoteWipe", "AccountOnlyRemoteWipe"):
            if second.find(tag) is not None:
                self.wiped = tag
                return await self._provision(
                    el(PROVISION, "Provision", el(PROVISION, tag, el(PROVISION, "Status", "1")))
                )
        final = second.find("Policies").find("Policy")  # type: ignore[union-attr]
        self.policy_key = child_text(final, "PolicyKey")
        return first

    async def _provision(self, body: Element) -> Element:
        response = await self.post("Provision", body)
        if response.status_code != 200:
            raise EasFailure(f"Provision: HTTP {response.status_code}", response.status_code)
        root = eas.decode(response.content)
        if child_text(root, "Status") != "1":
            raise EasFailure("Provision failed", status=int(child_text(root, "Status") or 0))
        return root

    # ------------------------------------------------------------------ folders

    async def folder_sync(self) -> dict[str, tuple[str, int]]:
        root = await self.call(
            "FolderSync",
            el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", self.folder_key)),
        )
        assert root is not None
        status = child_text(root, "Status")
        if status != "1":
            raise EasFailure("FolderSync failed", status=int(status or 0))
        self.folder_key = child_text(root, "SyncKey") or self.folder_key
        changes = root.find("Changes")
        for change in changes.elements() if changes is not None else []:
            server_id = child_text(change, "ServerId") or ""
            if change.tag in ("Add", "Update"):
                self.folders[server_id] = (
                    child_text(change, "DisplayName") or "",
                    int(child_text(change, "Type") or 0),
                )
                self.parents[server_id] = child_text(change, "ParentId") or "0"
            elif change.tag == "Delete":
                self.folders.pop(server_id, None)
                self.parents.pop(server_id, None)
        return self.folders

    async def folder_command(self, command: str, *parts: Element) -> Element:
        """FolderCreate, FolderUpdate or FolderDelete under the client's hierarchy SyncKey
        (unless ``parts`` bring their own); a new SyncKey answered is the client's next."""
        if not any(p.tag == "SyncKey" for p in parts):
            parts = (el(FOLDER_HIERARCHY, "SyncKey", self.folder_key), *parts)
        root = await self.call(command, el(FOLDER_HIERARCHY, command, *parts))
        assert root is not None
        if child_text(root, "Status") == "1":
            self.folder_key = child_text(root, "SyncKey") or self.folder_key
        return root

    async def folder_create(
        self, name: str, folder_type: int, parent: str = "0"
    ) -> tuple[int, str | None]:
        """FolderCreate: its Status and the new folder's ServerId."""
        root = await self.folder_command(
            "FolderCreate",
            el(FOLDER_HIERARCHY, "ParentId", parent),
            el(FOLDER_HIERARCHY, "DisplayName", name),
            el(FOLDER_HIERARCHY, "Type", str(folder_type)),
        )
        server_id = child_text(root, "ServerId")
        if server_id is not None:
            self.folders[server_id] = (name, folder_type)
            self.parents[server_id] = parent
        return int(child_text(root, "Status") or 0), server_id

    async def folder_update(self, server_id: str, name: str, parent: str = "0") -> int:
        root = await self.folder_command(
            "FolderUpdate",
            el(FOLDER_HIERARCHY, "ServerId", server_id),
            el(FOLDER_HIERARCHY, "ParentId", parent),
            el(FOLDER_HIERARCHY, "DisplayName", name),
        )
        status = int(child_text(root, "Status") or 0)
        if status == 1:
            self.folders[server_id] = (name, self.folders[server_id][1])
            self.parents[server_id] = parent
        return status

    async def folder_delete(self, server_id: str) -> int:
        root = await self.folder_command(
            "FolderDelete", el(FOLDER_HIERARCHY, "ServerId", server_id)
        )
        status = int(child_text(root, "Status") or 0)
        if status == 1:
            self.folders.pop(server_id, None)
        return status

    async def move_items(
        self, moves: list[tuple[str, str, str]]
    ) -> list[tuple[str, int, str | None]]:
        """MoveItems of (SrcMsgId, SrcFldId, DstFldId): (SrcMsgId, Status, DstMsgId) each;
        a moved item goes from the client's source folder to its destination."""
        root = await self.call(
            "MoveItems",
            el(
                MOVE,
                "MoveItems",
                *(
                    el(
                        MOVE,
                        "Move",
                        el(MOVE, "SrcMsgId", item),
                        el(MOVE, "SrcFldId", source),
                        el(MOVE, "DstFldId", destination),
                    )
                    for item, source, destination in moves
                ),
            ),
        )
        assert root is not None
        answers = []
        for (item, source, destination), response in zip(moves, root.elements(), strict=True):
            status = int(child_text(response, "Status") or 0)
            moved = child_text(response, "DstMsgId")
            if status == 3 and moved is not None:
                data = self.items.get(source, {}).pop(item, None)
                if data is not None:
                    self.items.setdefault(destination, {})[moved] = data
            answers.append((child_text(response, "SrcMsgId") or "", status, moved))
        return answers

    def folder_of_type(self, folder_type: int) -> str:
        return next(sid for sid, (_, kind) in self.folders.items() if kind == folder_type)

    # ------------------------------------------------------------------ Sync

    async def sync(
        self,
        folder: str,
        *,
        adds: dict[str, list[Element]] | None = None,
        changes: dict[str, list[Element]] | None = None,
        deletes: list[str] | None = None,
        window: int | None = None,
        key: str | None = None,
        heartbeat: int | None = None,
        filter_type: int | None = None,
        options: list[Element] | None = None,
    ) -> SyncOutcome:
        """One Sync of one folder; ``adds`` by ClientId, ``changes`` by ServerId;
        ``heartbeat``: the Sync may wait that long for changes (an empty answer: none);
        ``filter_type``: Options' FilterType; ``options``: more of the collection's Options
        (BodyPreference, MIMESupport, ...)."""
        key = key if key is not None else self.sync_keys.get(folder, "0")
        parts: list[Element] = [el(AIRSYNC, "SyncKey", key), el(AIRSYNC, "CollectionId", folder)]
        if key != "0":
            parts.append(el(AIRSYNC, "GetChanges"))
        if window is not None:
            parts.append(el(AIRSYNC, "WindowSize", str(window)))
        if filter_type is not None or options:
            filtered = [] if filter_type is None else [el(AIRSYNC, "FilterType", str(filter_type))]
            parts.append(el(AIRSYNC, "Options", *filtered, *(options or [])))
        commands: list[Element] = []
        for client_id, data in (adds or {}).items():
            commands.append(
                el(
                    AIRSYNC,
                    "Add",
                    el(AIRSYNC, "ClientId", client_id),
                    Element("ApplicationData", AIRSYNC, data),
                )
            )
        for server_id, data in (changes or {}).items():
            commands.append(
                el(
                    AIRSYNC,
                    "Change",
                    el(AIRSYNC, "ServerId", server_id),
                    Element("ApplicationData", AIRSYNC, data),
                )
            )
        for server_id in deletes or []:
            commands.append(el(AIRSYNC, "Delete", el(AIRSYNC, "ServerId", server_id)))
        if commands:
            parts.append(el(AIRSYNC, "Commands", *commands))
        extra = [el(AIRSYNC, "HeartbeatInterval", str(heartbeat))] if heartbeat else []
        root = await self.call(
            "Sync",
            el(
                AIRSYNC,
                "Sync",
                el(AIRSYNC, "Collections", el(AIRSYNC, "Collection", *parts)),
                *extra,
            ),
            wait=30 + (heartbeat or 0),
        )
        if root is None:  # an empty response: nothing changed while the Sync waited
            return SyncOutcome(key, 1)
        if root.find("Collections") is None:
            return SyncOutcome(key, int(child_text(root, "Status") or 0))
        collection = root.find("Collections").find("Collection")  # type: ignore[union-attr]
        outcome = SyncOutcome(
            child_text(collection, "SyncKey") or "", int(child_text(collection, "Status") or 0)
        )
        if outcome.status != 1:
            return outcome
        self.sync_keys[folder] = outcome.sync_key
        held = self.items.setdefault(folder, {})
        outcome.more = collection.find("MoreAvailable") is not None
        server = collection.find("Commands")
        for command in server.elements() if server is not None else []:
            server_id = child_text(command, "ServerId") or ""
            if command.tag == "Add":
                outcome.added[server_id] = held[server_id] = command.find("ApplicationData")
            elif command.tag == "Change":
                outcome.changed[server_id] = held[server_id] = command.find("ApplicationData")
            elif command.tag in ("Delete", "SoftDelete"):
                outcome.deleted.append(server_id)
                held.pop(server_id, None)
        responses = collection.find("Responses")
        outcome.responses = responses.elements() if responses is not None else []
        for response in outcome.responses:
            if response.tag == "Add" and child_text(response, "Status") == "1":
                client_id = child_text(response, "ClientId") or ""
                held[child_text(response, "ServerId") or ""] = Element(
                    "ApplicationData", AIRSYNC, (adds or {}).get(client_id, [])
                )
        for server_id in deletes or []:
            held.pop(server_id, None)
        return outcome

    async def sync_all(
        self, folder: str, window: int | None = None, filter_type: int | None = None
    ) -> list[SyncOutcome]:
        """Sync until nothing more is available (SyncKey 0 first when new)."""
        outcomes = []
        if self.sync_keys.get(folder, "0") == "0":
            outcomes.append(await self.sync(folder, filter_type=filter_type))
        while True:
            outcome = await self.sync(folder, window=window, filter_type=filter_type)
            outcomes.append(outcome)
            if not outcome.more:
                return outcomes

    async def estimate(self, folder: str, filter_type: int | None = None) -> tuple[int, int | None]:
        root = await self.call(
            "GetItemEstimate",
            el(
                GET_ITEM_ESTIMATE,
                "GetItemEstimate",
                el(
                    GET_ITEM_ESTIMATE,
                    "Collections",
                    el(
                        GET_ITEM_ESTIMATE,
                        "Collection",
                        el(AIRSYNC, "SyncKey", self.sync_keys.get(folder, "0")),
                        el(GET_ITEM_ESTIMATE, "CollectionId", folder),
                        *(
                            [el(AIRSYNC, "Options", el(AIRSYNC, "FilterType", str(filter_type)))]
                            if filter_type is not None
                            else []
                        ),
                    ),
                ),
            ),
        )
        assert root is not None
        response = root.find("Response")
        assert response is not None
        estimate = child_text(response.find("Collection"), "Estimate")  # type: ignore[arg-type]
        return int(child_text(response, "Status") or 0), int(estimate) if estimate else None

    async def fetch(
        self, folder: str, server_id: str, options: list[Element] | None = None
    ) -> Element | None:
        root = await self.call(
            "ItemOperations",
            el(
                ITEM_OPERATIONS,
                "ItemOperations",
                el(
                    ITEM_OPERATIONS,
                    "Fetch",
                    el(ITEM_OPERATIONS, "Store", "Mailbox"),
                    el(AIRSYNC, "CollectionId", folder),
                    el(AIRSYNC, "ServerId", server_id),
                    el(ITEM_OPERATIONS, "Options", *options) if options else None,
                ),
            ),
        )
        assert root is not None
        fetch = root.find("Response").find("Fetch")  # type: ignore[union-attr]
        if child_text(fetch, "Status") != "1":
            return None
        return fetch.find("Properties")

    # ------------------------------------------------------------------ mail

    async def smart(
        self,
        command: str,
        mime: str,
        source: list[Element] | None,
        *,
        save: bool = True,
        replace_mime: bool = False,
        query: str = "",
    ) -> httpx.Response:
        """SmartReply or SmartForward: WBXML with its Source from 14.0 on, the message itself
        with the original named in the query (``&CollectionId=..&ItemId=..``) before."""
        if self.version >= "14.0":
            parts = [el(COMPOSE_MAIL, "ClientId", f"s{id(mime)}")]
            if source is not None:
                parts.append(el(COMPOSE_MAIL, "Source", *source))
            if save:
                parts.append(el(COMPOSE_MAIL, "SaveInSentItems"))
            if replace_mime:
                parts.append(el(COMPOSE_MAIL, "ReplaceMime"))
            parts.append(el(COMPOSE_MAIL, "Mime", mime.encode()))
            return await self.post(command, el(COMPOSE_MAIL, command, *parts))
        headers = self.headers() | {"Content-Type": "message/rfc822"}
        line = self._query(command) + query + ("&SaveInSent=T" if save else "")
        return await self.http.post(f"{PATH}?{line}", content=mime.encode(), headers=headers)

    async def send_mail(self, mime: str, *, save: bool = True) -> httpx.Response:
        """SendMail: WBXML from 14.0 on, the message itself (message/rfc822) before."""
        if self.version >= "14.0":
            parts = [el(COMPOSE_MAIL, "ClientId", f"m{id(mime)}")]
            if save:
                parts.append(el(COMPOSE_MAIL, "SaveInSentItems"))
            parts.append(el(COMPOSE_MAIL, "Mime", mime.encode()))
            return await self.post("SendMail", el(COMPOSE_MAIL, "SendMail", *parts))
        headers = self.headers() | {"Content-Type": "message/rfc822"}
        query = self._query("SendMail") + ("&SaveInSent=T" if save else "")
        return await self.http.post(f"{PATH}?{query}", content=mime.encode(), headers=headers)

    # ------------------------------------------------------------------ Ping

    async def ping(
        self, folders: list[str] | None, heartbeat: int | None, wait: float = 60
    ) -> tuple[int, list[str], Element]:
        body = None
        if folders is not None or heartbeat is not None:
            parts: list[Element] = []
            if heartbeat is not None:
                parts.append(el(PING, "HeartbeatInterval", str(heartbeat)))
            if folders is not None:
                parts.append(
                    el(
                        PING,
                        "Folders",
                        *(
                            el(PING, "Folder", el(PING, "Id", f), el(PING, "Class", "Contacts"))
                            for f in folders
                        ),
                    )
                )
            body = el(PING, "Ping", *parts)
        response = await self.post("Ping", body, wait)
        if response.status_code != 200:
            raise EasFailure(f"Ping: HTTP {response.status_code}", response.status_code)
        root = eas.decode(response.content)
        listed = root.find("Folders")
        changed = [f.text for f in listed.elements()] if listed is not None else []
        return int(child_text(root, "Status") or 0), changed, root


def contact(first: str, last: str, phone: str = "+44 20 7946 0000") -> list[Element]:
    return [
        el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Type", "1"), el(AIRSYNCBASE, "Data", "a note")),
        el(CONTACTS, "FileAs", f"{last}, {first}"),
        el(CONTACTS, "FirstName", first),
        el(CONTACTS, "LastName", last),
        el(CONTACTS, "MobilePhoneNumber", phone),
    ]


def search(store: str, query: Element | str, *options: Element) -> Element:
    """A Search request of one Store (``GAL``, ``Mailbox``); a text ``query`` is the Query."""
    return el(
        SEARCH,
        "Search",
        el(
            SEARCH,
            "Store",
            el(SEARCH, "Name", store),
            query if isinstance(query, Element) else el(SEARCH, "Query", query),
            el(SEARCH, "Options", *options) if options else None,
        ),
    )


def mailbox_find(
    search_id: str, text: str, range_text: str, folder: str | None = "sent"
) -> Element:
    """A Find (16.1) of mail by free text, in one folder or (``folder`` None) in all."""
    return el(
        FIND,
        "Find",
        el(FIND, "SearchId", search_id),
        el(
            FIND,
            "ExecuteSearch",
            el(
                FIND,
                "MailBoxSearchCriterion",
                el(
                    FIND,
                    "Query",
                    el(AIRSYNC, "Class", "Email"),
                    el(AIRSYNC, "CollectionId", folder) if folder is not None else None,
                    el(FIND, "FreeText", text),
                ),
                el(FIND, "Options", el(FIND, "Range", range_text)),
            ),
        ),
    )
