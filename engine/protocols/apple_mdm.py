"""Apple MDM messages, sans-IO: check-in messages, command reports, commands, results.

Everything a device sends is a property list (XML or binary) read with :mod:`plistlib`;
anything :mod:`plistlib` cannot read, a top level that is not a dictionary, a missing key or
a value of the wrong type is a :class:`ProtocolError`, which the web layer answers with
``400`` (never ``401``: a ``401`` makes a device remove its enrolment).

Vocabulary (Apple's "Device Management" documentation):

* **Check-in** (``CheckInURL``): ``Authenticate``, ``TokenUpdate``, ``CheckOut``,
  ``UserAuthenticate``, ``SetBootstrapToken``, ``GetBootstrapToken``, told apart by
  ``MessageType``.
* **Channels**: the *device channel* is named by ``UDID`` (device enrolment) or
  ``EnrollmentID`` (user enrolment); a *user channel* adds ``UserID`` (with ``UDID``) or
  ``EnrollmentUserID`` (with ``EnrollmentID``). :class:`Channel` keeps them apart.
* **Command reports** (``ServerURL``): ``Status`` is ``Idle``, ``Acknowledged``, ``Error``,
  ``CommandFormatError`` or ``NotNow``; all but ``Idle`` carry the ``CommandUUID`` they
  answer. The server answers with one command (``CommandUUID`` + ``Command`` with its
  ``RequestType``) or an empty body.
"""

from __future__ import annotations

import plistlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "CHECK_IN_CONTENT_TYPE",
    "Channel",
    "CheckIn",
    "CommandReport",
    "MessageType",
    "ProtocolError",
    "Status",
    "build_command",
    "command_for",
    "inventory_from",
    "parse_check_in",
    "parse_report",
    "read_plist",
]

CHECK_IN_CONTENT_TYPE = "application/x-apple-aspen-mdm-checkin"
SERVER_CONTENT_TYPE = "application/x-apple-aspen-mdm"
#: Check-in messages and command reports are small; a full installed-application list of
#: a Mac is the largest and stays well under this.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ProtocolError(ValueError):
    """The device's message cannot be used as sent (answered 400)."""


class MessageType(StrEnum):
    AUTHENTICATE = "Authenticate"
    TOKEN_UPDATE = "TokenUpdate"
    CHECK_OUT = "CheckOut"
    USER_AUTHENTICATE = "UserAuthenticate"
    SET_BOOTSTRAP_TOKEN = "SetBootstrapToken"
    GET_BOOTSTRAP_TOKEN = "GetBootstrapToken"


class Status(StrEnum):
    IDLE = "Idle"
    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    NOT_NOW = "NotNow"


# --------------------------------------------------------------------------- plists


def read_plist(body: bytes) -> dict[str, Any]:
    """A property list whose top level is a dictionary; anything else is a ProtocolError.

    :mod:`plistlib` refuses XML entity declarations itself, so entity expansion attacks
    fail here too.
    """
    if len(body) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too large")
    if not body.strip():
        raise ProtocolError("empty message")
    try:
        value = plistlib.loads(body)
    except Exception as exc:  # plistlib raises many kinds on bad input; all mean "malformed"
        raise ProtocolError(f"not a property list: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise ProtocolError("the property list is not a dictionary")
    if not _nested_within(value, MAX_PLIST_DEPTH):
        raise ProtocolError(f"the property list nests deeper than {MAX_PLIST_DEPTH} levels")
    return value


#: Apple's messages nest a few levels (a list of profiles, each with its payloads); far
#: deeper is no message of a device, and would only strain whatever walks it next.
MAX_PLIST_DEPTH = 32


def _nested_within(value: object, limit: int) -> bool:
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        pending.extend((child, depth + 1) for child in children)
    return True


def write_plist(value: Mapping[str, Any]) -> bytes:
    """XML property list bytes (what devices expect in answers)."""
    return plistlib.dumps(dict(value), fmt=plistlib.FMT_XML, sort_keys=True)


_MISSING = object()


def _get(
    message: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = False
) -> Any:
    value = message.get(key, _MISSING)
    if value is _MISSING:
        if required:
            raise ProtocolError(f"{key} is missing")
        return None
    # bool is an int subclass; a plist keeps <true/> and <integer> apart, and so do we.
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"{key} has the wrong type")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{key} has the wrong type")
    if isinstance(value, str) and required and not value:
        raise ProtocolError(f"{key} is empty")
    return value


# --------------------------------------------------------------------------- channels


@dataclass(frozen=True)
class Channel:
    """Who a message is from: a device channel, or a user channel on that device."""

    device: str  # UDID, or EnrollmentID for a user enrolment
    user: str | None = None  # UserID, or EnrollmentUserID for a user enrolment
    user_enrolment: bool = False

    @property
    def key(self) -> str:
        """The enrolment's id: device channel alone, user channel as ``device/user``."""
        return self.device if self.user is None else f"{self.device}/{self.user}"


_MAX_ID = 256


def _channel(message: Mapping[str, Any]) -> Channel:
    udid = _get(message, "UDID", str)
    enrollment_id = _get(message, "EnrollmentID", str)
    if (udid is None) == (enrollment_id is None):
        raise ProtocolError("exactly one of UDID and EnrollmentID is required")
    device = udid if udid is not None else enrollment_id
    if udid is not None:
        user = _get(message, "UserID", str)
        if _get(message, "EnrollmentUserID", str) is not None:
            raise ProtocolError("EnrollmentUserID belongs with EnrollmentID")
    else:
        user = _get(message, "EnrollmentUserID", str)
        if _get(message, "UserID", str) is not None:
            raise ProtocolError("UserID belongs with UDID")
    for value in (device, user):
        if value is not None and (
            not value or len(value) > _MAX_ID or not value.isprintable() or "/" in value
        ):
            raise ProtocolError("malformed device or user identifier")
    return Channel(device, user, enrollment_id is not None)


# --------------------------------------------------------------------------- check-in

#: Optional string keys of Authenticate: what the device tells about itself.
_AUTHENTICATE_STRINGS = (
    "BuildVersion",
    "DeviceName",
    "IMEI",
    "MEID",
    "Model",
    "ModelName",
    "OSVersion",
    "ProductName",
    "SerialNumber",
)
_TOKEN_UPDATE_STRINGS = ("UserShortName", "UserLongName")


@dataclass(frozen=True)
class CheckIn:
    """One check-in message, checked; ``values`` holds its other keys, typed."""

    message_type: MessageType
    channel: Channel
    topic: str | None
    values: dict[str, Any] = field(default_factory=dict)


def parse_check_in(body: bytes) -> CheckIn:
    message = read_plist(body)
    raw_type = _get(message, "MessageType", str, required=True)
    try:
        message_type = MessageType(raw_type)
    except ValueError:
        raise ProtocolError(f"unknown MessageType {raw_type!r}") from None
    channel = _channel(message)
    values: dict[str, Any] = {}
    topic = _get(message, "Topic", str)
    if message_type is MessageType.AUTHENTICATE:
        if topic is None or not topic:
            raise ProtocolError("Topic is missing")
        if channel.user is not None:
            raise ProtocolError("Authenticate comes from the device channel only")
        for key in _AUTHENTICATE_STRINGS:
            value = _get(message, key, str)
            if value is not None:
                values[key] = value
    elif message_type is MessageType.TOKEN_UPDATE:
        if topic is None or not topic:
            raise ProtocolError("Topic is missing")
        values["Token"] = _get(message, "Token", bytes, required=True)
        if not values["Token"] or len(values["Token"]) > 100:
            raise ProtocolError("Token is malformed")
        values["PushMagic"] = _get(message, "PushMagic", str, required=True)
        values["UnlockToken"] = _get(message, "UnlockToken", bytes)
        values["AwaitingConfiguration"] = bool(_get(message, "AwaitingConfiguration", bool))
        values["NotOnConsole"] = bool(_get(message, "NotOnConsole", bool))
        for key in _TOKEN_UPDATE_STRINGS:
            values[key] = _get(message, key, str)
    elif message_type is MessageType.CHECK_OUT:
        pass
    elif message_type is MessageType.USER_AUTHENTICATE:
        if channel.user is None:
            raise ProtocolError("UserAuthenticate needs UserID")
        values["DigestResponse"] = _get(message, "DigestResponse", str)
    elif message_type is MessageType.SET_BOOTSTRAP_TOKEN:
        # Absent BootstrapToken: the device asks the server to forget the one it has.
        values["BootstrapToken"] = _get(message, "BootstrapToken", bytes)
        values["AwaitingConfiguration"] = bool(_get(message, "AwaitingConfiguration", bool))
    elif message_type is MessageType.GET_BOOTSTRAP_TOKEN:
        values["AwaitingConfiguration"] = bool(_get(message, "AwaitingConfiguration", bool))
    return CheckIn(message_type, channel, topic, values)


def bootstrap_token_answer(token: bytes | None) -> bytes:
    """The answer to GetBootstrapToken: the token, or an empty dictionary if none is kept."""
    return write_plist({} if token is None else {"BootstrapToken": token})


# --------------------------------------------------------------------------- command reports


@dataclass(frozen=True)
class CommandReport:
    """A device's report at the server URL: its status and, for results, the whole plist."""

    status: Status
    channel: Channel
    command_uuid: str | None
    message: dict[str, Any]

    @property
    def error_chain(self) -> list[dict[str, Any]]:
        chain = self.message.get("ErrorChain")
        return chain if isinstance(chain, list) else []


def parse_report(body: bytes) -> CommandReport:
    message = read_plist(body)
    raw_status = _get(message, "Status", str, required=True)
    try:
        status = Status(raw_status)
    except ValueError:
        raise ProtocolError(f"unknown Status {raw_status!r}") from None
    channel = _channel(message)
    command_uuid = _get(message, "CommandUUID", str, required=status is not Status.IDLE)
    if command_uuid is not None and (not command_uuid or len(command_uuid) > _MAX_ID):
        raise ProtocolError("CommandUUID is malformed")
    chain = _get(message, "ErrorChain", list)
    if chain is not None and not all(isinstance(item, dict) for item in chain):
        raise ProtocolError("ErrorChain has the wrong type")
    return CommandReport(status, channel, command_uuid, message)


# --------------------------------------------------------------------------- commands


def build_command(command_uuid: str, request_type: str, values: Mapping[str, Any]) -> bytes:
    """A command as the server answers it: ``CommandUUID`` and ``Command``."""
    return write_plist(
        {"CommandUUID": command_uuid, "Command": {"RequestType": request_type, **values}}
    )


def new_command_uuid() -> str:
    return str(uuid.uuid4()).upper()


@dataclass(frozen=True)
class AppleCommand:
    request_type: str
    values: dict[str, Any]


#: What DeviceInformation asks for: enough for the inventory view.
DEVICE_INFORMATION_QUERIES = (
    "DeviceName",
    "Model",
    "ModelName",
    "ProductName",
    "OSVersion",
    "BuildVersion",
    "SerialNumber",
    "UDID",
    "IMEI",
    "MEID",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "WiFiMAC",
    "BluetoothMAC",
    "IsSupervised",
    "IsActivationLockEnabled",
)


#: The queries one generic ``request_inventory`` command makes, in this order; each part
#: has its own CommandUUID (the command's id, then ``<id>.<RequestType>``).
INVENTORY_PARTS = ("DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList")


def inventory_part(request_type: str) -> AppleCommand:
    if request_type == "DeviceInformation":
        return AppleCommand(request_type, {"Queries": list(DEVICE_INFORMATION_QUERIES)})
    if request_type == "InstalledApplicationList":
        return AppleCommand(request_type, {"ManagedAppsOnly": False})
    return AppleCommand(request_type, {})


def part_uuid(command_id: str, request_type: str) -> str:
    """The CommandUUID of one part of a command (the first part is the command's id)."""
    return command_id if request_type == INVENTORY_PARTS[0] else f"{command_id}.{request_type}"


def split_uuid(command_uuid: str) -> tuple[str, str | None]:
    """The command id and the part (None: the command itself) a CommandUUID names."""
    command_id, _, part = command_uuid.partition(".")
    return command_id, part or None


class Unsupported(ValueError):
    """A generic command this device cannot be given (e.g. ClearPasscode without a token)."""


def command_for(
    kind: str,
    parameters: Mapping[str, Any],
    *,
    unlock_token: bytes | None = None,
    profile_identifier: str | None = None,
) -> AppleCommand:
    """The Apple command for a generic command of the command model."""
    if kind == "request_inventory":
        return inventory_part(INVENTORY_PARTS[0])
    if kind in ("lock", "message"):
        values: dict[str, Any] = {}
        text = parameters.get("message") if kind == "lock" else parameters.get("text")
        if kind == "message" and parameters.get("title"):
            text = f"{parameters['title']}: {text}"
        if text:
            values["Message"] = text
        if parameters.get("phone_number"):
            values["PhoneNumber"] = parameters["phone_number"]
        return AppleCommand("DeviceLock", values)
    if kind == "unlock":
        if unlock_token is None:
            raise Unsupported("the device sent no UnlockToken: its passcode cannot be cleared")
        return AppleCommand("ClearPasscode", {"UnlockToken": unlock_token})
    if kind == "wipe":
        values = {}
        if "pin" in parameters:
            values["PIN"] = parameters["pin"]
        if "preserve_data_plan" in parameters:
            values["PreserveDataPlan"] = bool(parameters["preserve_data_plan"])
        return AppleCommand("EraseDevice", values)
    if kind == "enterprise_wipe":
        # Removing the enrolment profile removes every managed app, profile and its data.
        if profile_identifier is None:
            raise Unsupported("the enrolment profile's identifier is unknown")
        return AppleCommand("RemoveProfile", {"Identifier": profile_identifier})
    if kind == "locate":
        return AppleCommand("DeviceLocation", {})
    if kind == "install_application":
        if "url" in parameters:
            return AppleCommand("InstallApplication", {"ManifestURL": parameters["url"]})
        application = str(parameters["application_id"])
        if application.isdigit():
            return AppleCommand("InstallApplication", {"iTunesStoreID": int(application)})
        return AppleCommand("InstallApplication", {"Identifier": application})
    if kind == "remove_application":
        return AppleCommand("RemoveApplication", {"Identifier": parameters["application_id"]})
    raise Unsupported(f"{kind} has no Apple MDM command")


# --------------------------------------------------------------------------- results


def _jsonable(value: Any) -> Any:
    """A plist value as JSON can hold it (data as hex is never needed in the inventory)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class Inventory:
    """What a result tells about the device: inventory sections and device columns."""

    sections: dict[str, Any]
    columns: dict[str, Any]


def inventory_from(request_type: str, report: CommandReport) -> Inventory:
    """The inventory a command result carries (empty for commands that report nothing)."""
    message = report.message
    if request_type == "DeviceInformation":
        info = message.get("QueryResponses")
        if not isinstance(info, dict):
            raise ProtocolError("QueryResponses is missing")
        device = _jsonable(info)
        columns = {
            "model": _str(info.get("ProductName")) or _str(info.get("Model")),
            "os_version": _str(info.get("OSVersion")),
            "serial_number": _str(info.get("SerialNumber")),
            "imei": _str(info.get("IMEI")),
        }
        battery = info.get("BatteryLevel")
        summary = {
            "model_name": _str(info.get("ModelName")),
            "capacity_gb": _number(info.get("DeviceCapacity")),
            "available_gb": _number(info.get("AvailableDeviceCapacity")),
            "battery_level": _number(battery),
        }
        return Inventory(
            {"device_information": device, "hardware": summary},
            {k: v for k, v in columns.items() if v is not None},
        )
    if request_type == "SecurityInfo":
        info = message.get("SecurityInfo")
        if not isinstance(info, dict):
            raise ProtocolError("SecurityInfo is missing")
        return Inventory({"security": _jsonable(info)}, {})
    if request_type == "ProfileList":
        profiles = message.get("ProfileList")
        if not isinstance(profiles, list):
            raise ProtocolError("ProfileList is missing")
        return Inventory(
            {
                "profiles": [
                    {
                        "identifier": _str(p.get("PayloadIdentifier")),
                        "name": _str(p.get("PayloadDisplayName")),
                        "removal_disallowed": bool(p.get("PayloadRemovalDisallowed", False)),
                    }
                    for p in profiles
                    if isinstance(p, dict)
                ]
            },
            {},
        )
    if request_type == "InstalledApplicationList":
        apps = message.get("InstalledApplicationList")
        if not isinstance(apps, list):
            raise ProtocolError("InstalledApplicationList is missing")
        return Inventory(
            {
                "applications": [
                    {
                        "identifier": _str(a.get("Identifier")),
                        "name": _str(a.get("Name")),
                        "version": _str(a.get("ShortVersion")) or _str(a.get("Version")),
                    }
                    for a in apps
                    if isinstance(a, dict)
                ]
            },
            {},
        )
    return Inventory({}, {})


def result_summary(report: CommandReport) -> dict[str, Any]:
    """What the command's result row keeps: the status and, on errors, the error chain."""
    result: dict[str, Any] = {"status": report.status.value}
    if report.error_chain:
        result["error_chain"] = [
            {
                "code": item.get("ErrorCode"),
                "domain": _str(item.get("ErrorDomain")),
                "description": _str(item.get("LocalizedDescription")),
            }
            for item in report.error_chain
        ]
    return result


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def platform_of(product_name: str | None, model: str | None = None) -> str:
    """The inventory platform from Authenticate's ProductName (``iPhone17,2``, ``Mac14,2``)."""
    name = product_name or model or ""
    if name.startswith(("iPhone", "iPod")):
        return "ios"
    if name.startswith("iPad"):
        return "ipados"
    if name.startswith("AppleTV"):
        return "tvos"
    if name.startswith(("Mac", "iMac")) or "Book" in name or name.startswith("VirtualMac"):
        return "macos"
    return "ios"
