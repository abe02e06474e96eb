"""Exchange ActiveSync on the wire, sans-IO: the HTTP request line and headers (MS-ASHTTP),
WBXML bodies (MS-ASWBXML) and the status codes of MS-ASCMD and MS-ASPROV.

A request names its command, user, device id and device type either in a plain query
string (``?Cmd=Sync&User=alice&DeviceId=...&DeviceType=...``) or in the base64-encoded
binary form of MS-ASHTTP section 2.2.1.1.1.1, which also carries the protocol version and
the policy key (otherwise the ``MS-ASProtocolVersion`` and ``X-MS-PolicyKey`` headers).
:func:`parse_request_line` turns either into one :class:`EasQuery`. Bodies are WBXML of
the ActiveSync language; :func:`decode` refuses anything else with a :class:`EasError`
carrying the MS-ASCMD status to answer (102 InvalidWBXML, 103 InvalidXML, 101
InvalidContent).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from . import wbxml
from .activesync_tables import ACTIVESYNC
from .wbxml import Element

#: MS-ASProtocolVersions: what the service speaks, oldest first.
VERSIONS = ("12.1", "14.0", "14.1", "16.0", "16.1")
#: MS-ASProtocolCommands: the commands the service answers.
COMMANDS = (
    "Sync",
    "SendMail",
    "SmartForward",
    "SmartReply",
    "GetAttachment",
    "FolderSync",
    "FolderCreate",
    "FolderDelete",
    "FolderUpdate",
    "MoveItems",
    "GetItemEstimate",
    "MeetingResponse",
    "Search",
    "Settings",
    "Ping",
    "ItemOperations",
    "Provision",
    "ResolveRecipients",
    "ValidateCert",
    "Find",
)
#: The command codes of the base64-encoded query (MS-ASHTTP 2.2.1.1.1.1.2).
COMMAND_CODES = {
    0: "Sync",
    1: "SendMail",
    2: "SmartForward",
    3: "SmartReply",
    4: "GetAttachment",
    9: "FolderSync",
    10: "FolderCreate",
    11: "FolderDelete",
    12: "FolderUpdate",
    13: "MoveItems",
    14: "GetItemEstimate",
    15: "MeetingResponse",
    16: "Search",
    17: "Settings",
    18: "Ping",
    19: "ItemOperations",
    20: "Provision",
    21: "ResolveRecipients",
    22: "ValidateCert",
    23: "Find",
}
#: Command parameter tags of the base64-encoded query (MS-ASHTTP 2.2.1.1.1.1.3).
PARAMETER_TAGS = {
    0: "AttachmentName",
    1: "CollectionId",
    3: "ItemId",
    4: "LongId",
    6: "Occurrence",
    7: "Options",
    8: "User",
}
CONTENT_TYPE = "application/vnd.ms-sync.wbxml"
#: The version this server reports in ``MS-Server-ActiveSync``.
SERVER_VERSION = "16.1"
MAX_BODY_BYTES = 4 * 1024 * 1024

# Common status values (MS-ASCMD 2.2.2).
INVALID_CONTENT = 101
INVALID_WBXML = 102
INVALID_XML = 103
DEVICE_ID_MISSING_OR_INVALID = 108
DEVICE_TYPE_MISSING_OR_INVALID = 109
SERVER_ERROR = 110
SERVER_ERROR_RETRY_LATER = 111
USER_DISABLED_FOR_SYNC = 126
DEVICE_IS_BLOCKED_FOR_THIS_USER = 129
ACCESS_DENIED = 130
COMMAND_NOT_SUPPORTED = 137
VERSION_NOT_SUPPORTED = 138
REMOTE_WIPE_REQUESTED = 140
DEVICE_NOT_PROVISIONED = 142
POLICY_REFRESH = 143
INVALID_POLICY_KEY = 144
#: HTTP status of a request that must provision first, for protocol versions before 14.0.
HTTP_NEEDS_PROVISIONING = 449


class EasError(ValueError):
    """A request that cannot be served as it stands; ``status`` is the MS-ASCMD status and
    ``http`` the HTTP status when the answer cannot be a WBXML body."""

    def __init__(self, message: str, status: int = INVALID_CONTENT, http: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.http = http


@dataclass(frozen=True)
class EasQuery:
    """The request line of one ActiveSync POST, in either encoding."""

    command: str
    user: str
    device_id: str
    device_type: str
    version: str
    policy_key: str | None
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def version_number(self) -> float:
        return float(self.version)

    @property
    def before_14(self) -> bool:
        """Protocol versions that learn of provisioning from HTTP 449, not a Status."""
        return self.version_number < 14.0


def _plain(query: str, headers: Mapping[str, str]) -> EasQuery:
    values = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    command = values.get("Cmd", "")
    return EasQuery(
        command=command,
        user=values.get("User", ""),
        device_id=values.get("DeviceId", ""),
        device_type=values.get("DeviceType", ""),
        version=headers.get("MS-ASProtocolVersion", "").strip(),
        policy_key=headers.get("X-MS-PolicyKey"),
        parameters={
            k: v for k, v in values.items() if k not in ("Cmd", "User", "DeviceId", "DeviceType")
        },
    )


def _printable(raw: bytes) -> str:
    """A binary device id as text: as is when printable ASCII, else hexadecimal."""
    if raw and all(0x21 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return raw.hex().upper()


def _encoded(query: str) -> EasQuery:
    """The base64-encoded query of MS-ASHTTP 2.2.1.1.1.1."""
    try:
        data = base64.b64decode(query.replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))
    except (binascii.Error, ValueError) as exc:
        raise EasError("the query is neither a plain nor a base64-encoded query") from exc
    try:
        at = 0
        version_byte, code = data[0], data[1]
        at = 4  # two bytes of locale follow
        length = data[at]
        device_id = data[at + 1 : at + 1 + length]
        at += 1 + length
        length = data[at]
        if length not in (0, 4):
            raise EasError("the policy key of an encoded query is 0 or 4 bytes")
        policy_key = str(struct.unpack_from("<I", data, at + 1)[0]) if length == 4 else None
        at += 1 + length
        length = data[at]
        device_type = data[at + 1 : at + 1 + length]
        at += 1 + length
        parameters: dict[str, str] = {}
        while at < len(data):
            tag, length = data[at], data[at + 1]
            value = data[at + 2 : at + 2 + length]
            if len(value) != length:
                raise EasError("an encoded query parameter runs past the end")
            parameters[PARAMETER_TAGS.get(tag, str(tag))] = value.decode("utf-8", "replace")
            at += 2 + length
    except (IndexError, struct.error) as exc:
        raise EasError("the encoded query is cut short") from exc
    options = parameters.pop("Options", "")
    if options and ord(options[0]) & 0x01:  # MS-ASHTTP 2.2.1.1.1.1.3: SaveInSent
        parameters["SaveInSent"] = "T"
    if options and ord(options[0]) & 0x02:
        parameters["AcceptMultiPart"] = "T"
    command = COMMAND_CODES.get(code)
    if command is None:
        raise EasError(f"unknown command code {code}", COMMAND_NOT_SUPPORTED, 501)
    return EasQuery(
        command=command,
        user=parameters.pop("User", ""),
        device_id=_printable(bytes(device_id)),
        device_type=bytes(device_type).decode("ascii", "replace"),
        version=f"{version_byte // 10}.{version_byte % 10}",
        policy_key=policy_key,
        parameters=parameters,
    )


def parse_request_line(query: str, headers: Mapping[str, str]) -> EasQuery:
    """The :class:`EasQuery` of a POST; refuses what MS-ASHTTP does not allow."""
    parsed = _plain(query, headers) if "Cmd=" in query else _encoded(query)
    if parsed.command not in COMMANDS:
        raise EasError(f"unknown command {parsed.command!r}", COMMAND_NOT_SUPPORTED, 501)
    if not parsed.device_id or len(parsed.device_id) > 64 or not parsed.device_id.isprintable():
        raise EasError("DeviceId is missing or invalid", DEVICE_ID_MISSING_OR_INVALID)
    if not parsed.device_type or len(parsed.device_type) > 64:
        raise EasError("DeviceType is missing or invalid", DEVICE_TYPE_MISSING_OR_INVALID)
    if parsed.version not in VERSIONS:
        raise EasError(
            f"protocol version {parsed.version!r} is not supported", VERSION_NOT_SUPPORTED
        )
    return parsed


def options_headers() -> dict[str, str]:
    """What ``OPTIONS`` answers: the versions and commands this server supports."""
    return {
        "MS-Server-ActiveSync": SERVER_VERSION,
        "MS-ASProtocolVersions": ",".join(VERSIONS),
        "MS-ASProtocolCommands": ",".join(COMMANDS),
        "Allow": "OPTIONS,POST",
        "Public": "OPTIONS,POST",
    }


# --------------------------------------------------------------------------- WBXML bodies


def _string_table_length(body: bytes) -> int:
    """The length the WBXML header gives its string table (after the version, the public id
    -- with its string-table index when it is 0 -- and the charset, each an mb_u_int32)."""
    at = 1
    numbers: list[int] = []
    while len(numbers) < 4:
        value = 0
        for _ in range(5):
            if at >= len(body):
                raise EasError("malformed WBXML: the header is cut short", INVALID_WBXML)
            byte = body[at]
            at += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        else:
            raise EasError("malformed WBXML: an mb_u_int32 is too long", INVALID_WBXML)
        numbers.append(value)
        if len(numbers) == 1 and value != 0:
            numbers.append(0)  # a public id by number: no index into the string table
    return numbers[3]


def decode(body: bytes) -> Element:
    """The root element of a WBXML request body (MS-ASWBXML). ActiveSync never uses a
    string table (MS-ASWBXML 2.1.2.1.1), so a body with one is refused before any of it is
    decoded."""
    if len(body) > MAX_BODY_BYTES:
        raise EasError("the request body is too large", INVALID_CONTENT, 413)
    if _string_table_length(body) != 0:
        raise EasError("malformed WBXML: ActiveSync uses no string table", INVALID_WBXML)
    try:
        return wbxml.decode(body, language=ACTIVESYNC, max_bytes=MAX_BODY_BYTES).root
    except wbxml.WbxmlError as exc:
        raise EasError(f"malformed WBXML: {exc}", INVALID_WBXML) from exc


def encode(root: Element) -> bytes:
    """A WBXML response body: version 1.3, unknown public id, UTF-8, no string table."""
    return wbxml.encode(root, ACTIVESYNC, version=0x03)


def el(ns: str, tag: str, *children: Element | str | bytes | None) -> Element:
    """An element with its children (``None`` children are left out, numbers as text)."""
    return Element(tag, ns, [c for c in children if c is not None])


def child_text(parent: Element, tag: str, default: str | None = None) -> str | None:
    found = parent.find(tag)
    return found.text if found is not None else default


def require(parent: Element, tag: str) -> Element:
    found = parent.find(tag)
    if found is None:
        raise EasError(f"<{parent.tag}> lacks <{tag}>", INVALID_XML)
    return found


def expect_root(root: Element, ns: str, tag: str) -> Element:
    if root.ns != ns or root.tag != tag:
        raise EasError(f"expected <{tag}> of {ns}, got <{root.tag}> of {root.ns}", INVALID_XML)
    return root


def integer(text: str | None, name: str, low: int, high: int) -> int | None:
    """An integer element value within bounds, or None when absent."""
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise EasError(f"{name} is not a number", INVALID_XML) from None
    if not low <= value <= high:
        raise EasError(f"{name} {value} is out of range", INVALID_CONTENT)
    return value


# --------------------------------------------------------------------------- Provision

#: The policy type of MS-ASPROV for protocol versions 12.0 and later.
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
#: The EASProvisionDoc elements in schema order, with the setting each comes from and the
#: value sent when the organisation has not set it.
PROVISION_DOC = (
    ("DevicePasswordEnabled", "passcode_required", True),
    ("AlphanumericDevicePasswordRequired", "alphanumeric_required", False),
    ("PasswordRecoveryEnabled", "password_recovery", False),
    ("RequireStorageCardEncryption", "storage_card_encryption", False),
    ("AttachmentsEnabled", "attachments_allowed", True),
    ("MinDevicePasswordLength", "min_passcode_length", 4),
    ("MaxInactivityTimeDeviceLock", "max_inactivity_seconds", 900),
    ("MaxDevicePasswordFailedAttempts", "max_failed_attempts", 8),
    ("MaxAttachmentSize", "max_attachment_size", None),
    ("AllowSimpleDevicePassword", "simple_passcode_allowed", True),
    ("DevicePasswordExpiration", "passcode_expiration_days", None),
    ("DevicePasswordHistory", "passcode_history", 0),
    ("AllowStorageCard", "storage_card_allowed", True),
    ("AllowCamera", "camera_allowed", True),
    ("RequireDeviceEncryption", "encryption_required", False),
    ("AllowUnsignedApplications", "unsigned_applications_allowed", True),
    ("AllowUnsignedInstallationPackages", "unsigned_packages_allowed", True),
    ("MinDevicePasswordComplexCharacters", "min_complex_characters", 1),
    ("AllowWiFi", "wifi_allowed", True),
    ("AllowTextMessaging", "text_messaging_allowed", True),
    ("AllowPOPIMAPEmail", "pop_imap_allowed", True),
    ("AllowBluetooth", "bluetooth", 2),
    ("AllowIrDA", "irda_allowed", True),
    ("RequireManualSyncWhenRoaming", "manual_sync_when_roaming", False),
    ("AllowDesktopSync", "desktop_sync_allowed", True),
    ("MaxCalendarAgeFilter", "max_calendar_age_filter", 0),
    ("AllowHTMLEmail", "html_email_allowed", True),
    ("MaxEmailAgeFilter", "max_email_age_filter", 0),
    ("MaxEmailBodyTruncationSize", "max_email_body_truncation", -1),
    ("MaxEmailHTMLBodyTruncationSize", "max_email_html_body_truncation", -1),
    ("RequireSignedSMIMEMessages", "signed_smime_required", False),
    ("RequireEncryptedSMIMEMessages", "encrypted_smime_required", False),
    ("RequireSignedSMIMEAlgorithm", "signed_smime_algorithm", 0),
    ("RequireEncryptionSMIMEAlgorithm", "encryption_smime_algorithm", 0),
    ("AllowSMIMEEncryptionAlgorithmNegotiation", "smime_negotiation", 2),
    ("AllowSMIMESoftCerts", "smime_soft_certs_allowed", True),
    ("AllowBrowser", "browser_allowed", True),
    ("AllowConsumerEmail", "consumer_email_allowed", True),
    ("AllowRemoteDesktop", "remote_desktop_allowed", True),
    ("AllowInternetSharing", "internet_sharing_allowed", True),
)


def provision_doc(policy: Mapping[str, object]) -> Element:
    """The ``EASProvisionDoc`` of an organisation's policy (MS-ASPROV 2.2.2.27).

    Booleans become 0/1; a setting left out (``None``) is sent empty, which MS-ASPROV
    defines as "no limit" for the sizes and ages.
    """
    children: list[Element] = []
    for tag, name, default in PROVISION_DOC:
        value = policy.get(name, default)
        if value is None:
            children.append(el("Provision", tag))
        elif isinstance(value, bool):
            children.append(el("Provision", tag, "1" if value else "0"))
        else:
            children.append(el("Provision", tag, str(value)))
    children.append(el("Provision", "UnapprovedInROMApplicationList"))
    children.append(el("Provision", "ApprovedApplicationList"))
    return el("Provision", "EASProvisionDoc", *children)
