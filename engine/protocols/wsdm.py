"""WSDM: the EMM client app's own protocol, as messages in and out (sans-IO).

WSDM is JSON over HTTPS under the REST API's base URL (``/api/v1/wsdm/...``). Every message,
request or answer, is a JSON object whose ``version`` is :data:`VERSION`; a device that
speaks a version this service does not know is told so (``unsupported_version``) instead of
being half understood. Members this module does not know are refused, so a typo on the
device is a clear error, not a silently ignored value.

This module only turns bytes into checked messages and answers into bytes: no store, no
trio, no web. ``docs/wsdm.md`` shows an example of every message.

Messages (device → service):

* :class:`Enrolment` - an installation code (or the owner's login), what the device says
  about itself, and an ``enrolment_id`` that makes a retried enrolment a replay.
* :class:`CheckIn` - state and inventory, locations, command results, the configuration
  hash it holds, and a ``checkin_id`` that makes a repeated check-in a replay.
* :class:`Results` - command results on their own, as soon as a command is done.
* :class:`Unenrolment` - the device leaves management.

Generic commands (``engine/commands.py``) become WSDM commands by :func:`wsdm_command`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

VERSION = 1
MEDIA_TYPE = "application/json"
#: The largest WSDM request body; an inventory with a few thousand apps fits easily.
MAX_BODY = 512 * 1024
#: Bounds that keep one message from being a burden on the store.
MAX_APPLICATIONS = 5000
MAX_LOCATIONS = 500
MAX_RESULTS = 500
MAX_TEXT = 255
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: An enrolment's own id: chosen by the device, random enough that nobody else guesses it.
_ENROLMENT_ID = re.compile(r"[A-Za-z0-9._:-]{16,64}")


class ProtocolError(Exception):
    """A request WSDM refuses: ``code`` is the protocol's word for it, ``status`` the HTTP one.

    Codes: ``malformed`` (not JSON, not an object, wrong members or values),
    ``unsupported_version``, ``too_large``, ``unauthenticated`` (no or unknown device
    token), ``unenrolled`` (the device was unenrolled or removed: it must stop managing),
    ``device_inactive``, ``code_refused`` (with ``reason`` from the installation code),
    ``login_refused`` (enrolment with the owner's login),
    ``not_found``, ``conflict``, ``busy``; and from the HTTP edge ``refused`` (a domain
    refusal), ``throttled``, ``too_slow``, ``method_not_allowed``, ``internal``.
    """

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.extra = extra


def malformed(message: str) -> ProtocolError:
    return ProtocolError("malformed", message, 400)


# --------------------------------------------------------------------------- decoding


def decode(body: bytes) -> dict[str, Any]:
    """A request body as a versioned JSON object, or :class:`ProtocolError`."""
    if len(body) > MAX_BODY:
        raise ProtocolError("too_large", f"the body is larger than {MAX_BODY} bytes", 413)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser goes: no device sends that
        raise malformed("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise malformed("the body must be a JSON object")
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError(
            "unsupported_version",
            f"this service speaks WSDM version {VERSION}",
            400,
            supported=[VERSION],
        )
    return data


class _Reader:
    """Takes members out of one JSON object, checking each; refuses what is left over."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise malformed(f"{where or 'the body'} must be a JSON object")
        self.data = dict(data)
        self.where = where

    def _name(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def take(self, name: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                raise malformed(f"{self._name(name)} is required")
            return None
        value = self.data.pop(name)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if value is None and not required:
            return None
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        elif float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(_JSON_NAMES[k] for k in kinds)
            raise malformed(f"{self._name(name)} must be {names}")
        return value

    def text(self, name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
        value = self.take(name, str, required=required)
        if value is not None:
            if len(value) > limit:
                raise malformed(f"{self._name(name)} is longer than {limit} characters")
            if required and not value.strip():
                raise malformed(f"{self._name(name)} must not be blank")
        return value

    def number(self, name: str, low: float, high: float, *, required: bool = False) -> Any:
        value = self.take(name, (int, float), required=required)
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise malformed(f"{self._name(name)} must lie between {low} and {high}")
        return value

    def done(self) -> None:
        if self.data:
            raise malformed(f"unknown member: {self._name(sorted(self.data)[0])}")


_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
}


def _identifier(reader: _Reader, name: str, *, required: bool = False) -> str | None:
    value = reader.take(name, str, required=required)
    if value is not None and not _ID.fullmatch(value):
        raise malformed(f"{reader._name(name)}: 1-64 letters, digits and ._:-")
    return value


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class DeviceFacts:
    """What a device says about itself at enrolment (all optional but the platform)."""

    platform: str
    name: str | None = None
    model: str | None = None
    manufacturer: str | None = None
    os_version: str | None = None
    serial_number: str | None = None
    imei: str | None = None


PLATFORMS = ("android", "ios", "ipados", "windows", "other")


@dataclass(frozen=True)
class OwnerLogin:
    """A device owner's sign-in, where the organisation allows enrolment with it."""

    organisation: str
    login: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Enrolment:
    """Exactly one of ``code`` and ``owner`` says who may enrol.

    ``enrolment_id``, chosen by the device and sent again unchanged when it retries after a
    lost answer, makes the retry a replay of the same enrolment rather than a second one.
    """

    device: DeviceFacts
    code: str | None = None
    owner: OwnerLogin | None = None
    enrolment_id: str | None = None


def parse_enrolment(data: dict[str, Any]) -> Enrolment:
    reader = _Reader(data, "")
    reader.take("version", int)
    code = reader.text("code", limit=32)
    enrolment_id = reader.take("enrolment_id", str)
    if enrolment_id is not None and not _ENROLMENT_ID.fullmatch(enrolment_id):
        raise malformed("enrolment_id: 16-64 letters, digits and ._:-")
    credentials = reader.take("login", dict)
    if (code is None) == (credentials is None):
        raise malformed("give either code or login")
    owner = None
    if credentials is not None:
        sub = _Reader(credentials, "login")
        organisation = sub.text("organisation", required=True, limit=64)
        login = sub.text("login", required=True)
        password = sub.text("password", required=True, limit=1024)
        sub.done()
        assert organisation is not None and login is not None and password is not None
        owner = OwnerLogin(organisation, login, password)
    device = _Reader(reader.take("device", dict, required=True), "device")
    platform = device.text("platform", required=True)
    if platform not in PLATFORMS:
        raise malformed(f"device.platform must be one of {', '.join(PLATFORMS)}")
    facts = DeviceFacts(
        platform=platform,
        name=device.text("name"),
        model=device.text("model"),
        manufacturer=device.text("manufacturer"),
        os_version=device.text("os_version"),
        serial_number=device.text("serial_number"),
        imei=device.text("imei"),
    )
    device.done()
    reader.done()
    return Enrolment(facts, code, owner, enrolment_id)


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    recorded_at: str
    accuracy: float | None = None
    command_id: str | None = None


@dataclass(frozen=True)
class Result:
    """A command's outcome: ``ok`` false means the device could not do it."""

    command_id: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


_RESULT_STATUSES = MappingProxyType({"done": True, "failed": False})
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


def location_of_result(command_id: str, detail: Mapping[str, Any]) -> Location | None:
    """The location a locate or track result carries (``latitude``, ``longitude``, optional
    ``accuracy`` and ``at``: the form the portals read from a command's result), if it
    carries a well-formed one."""
    at = detail.get("at")
    try:
        return _location(
            {
                "latitude": detail.get("latitude"),
                "longitude": detail.get("longitude"),
                **({"accuracy": detail["accuracy"]} if "accuracy" in detail else {}),
                "recorded_at": at,
                "command_id": command_id,
            },
            "detail",
        )
    except ProtocolError:
        return None


def _location(data: object, where: str) -> Location:
    reader = _Reader(data, where)
    latitude = reader.number("latitude", -90, 90, required=True)
    longitude = reader.number("longitude", -180, 180, required=True)
    accuracy = reader.number("accuracy", 0, 1e7)
    recorded_at = reader.text("recorded_at", required=True, limit=40)
    assert recorded_at is not None
    if not _TIME.fullmatch(recorded_at):
        raise malformed(f"{where}.recorded_at must be an RFC 3339 date-time")
    command_id = _identifier(reader, "command_id")
    reader.done()
    return Location(float(latitude), float(longitude), recorded_at, accuracy, command_id)


def _result(data: object, where: str) -> Result:
    reader = _Reader(data, where)
    command_id = _identifier(reader, "command_id", required=True)
    status = reader.text("status", required=True)
    if status not in _RESULT_STATUSES:
        raise malformed(f"{where}.status must be done or failed")
    detail = reader.take("detail", dict) or {}
    if len(json.dumps(detail)) > 8192:
        raise malformed(f"{where}.detail is larger than 8 KiB")
    reader.done()
    assert command_id is not None and status is not None
    return Result(command_id, _RESULT_STATUSES[status], detail)


def _list(reader: _Reader, name: str, limit: int) -> list[Any]:
    items = reader.take(name, list) or []
    if len(items) > limit:
        raise malformed(f"{reader._name(name)} holds more than {limit} items")
    return items


def _results(reader: _Reader) -> tuple[Result, ...]:
    results = tuple(
        _result(item, f"results[{n}]")
        for n, item in enumerate(_list(reader, "results", MAX_RESULTS))
    )
    if len({r.command_id for r in results}) != len(results):
        raise malformed("results name a command twice")
    return results


@dataclass(frozen=True)
class Results:
    results: tuple[Result, ...]


def parse_results(data: dict[str, Any]) -> Results:
    reader = _Reader(data, "")
    reader.take("version", int)
    results = _results(reader)
    reader.done()
    return Results(results)


@dataclass(frozen=True)
class CheckIn:
    """One check-in. ``inventory`` is the checked state report as stored (see
    :func:`_inventory`); ``checkin_id`` repeats unchanged when a device retries."""

    checkin_id: str
    inventory: dict[str, Any]
    results: tuple[Result, ...] = ()
    locations: tuple[Location, ...] = ()
    configuration_hash: str | None = None
    has_push_identity: bool = True


def parse_check_in(data: dict[str, Any]) -> CheckIn:
    reader = _Reader(data, "")
    reader.take("version", int)
    checkin_id = _identifier(reader, "checkin_id", required=True)
    inventory = _inventory(reader.take("state", dict, required=True))
    results = _results(reader)
    locations = tuple(
        _location(item, f"locations[{n}]")
        for n, item in enumerate(_list(reader, "locations", MAX_LOCATIONS))
    )
    configuration_hash = reader.text("configuration_hash", limit=64)
    push = reader.take("push_identity", bool)
    reader.done()
    assert checkin_id is not None
    return CheckIn(
        checkin_id,
        inventory,
        results,
        locations,
        configuration_hash,
        has_push_identity=push is not False,
    )


def _inventory(data: object) -> dict[str, Any]:
    """The device's state report, checked member by member (what the portal shows)."""
    reader = _Reader(data, "state")
    report: dict[str, Any] = {}
    for name in ("os_version", "model", "manufacturer", "serial_number", "imei"):
        value = reader.text(name)
        if value is not None:
            report[name] = value
    battery = reader.number("battery_level", 0, 100)
    if battery is not None:
        report["battery_level"] = battery
    charging = reader.take("charging", bool)
    if charging is not None:
        report["charging"] = charging
    rooted = reader.take("rooted", bool)
    if rooted is not None:
        report["rooted"] = rooted
    storage = reader.take("storage", dict)
    if storage is not None:
        sub = _Reader(storage, "state.storage")
        report["storage"] = {
            "total_bytes": sub.number("total_bytes", 0, 2**60, required=True),
            "free_bytes": sub.number("free_bytes", 0, 2**60, required=True),
        }
        sub.done()
    network = reader.take("network", dict)
    if network is not None:
        sub = _Reader(network, "state.network")
        report["network"] = {
            k: v
            for k, v in {
                "type": sub.text("type", limit=32),
                "operator": sub.text("operator", limit=64),
                "roaming": sub.take("roaming", bool),
                "phone_number": sub.text("phone_number", limit=32),
            }.items()
            if v is not None
        }
        sub.done()
    applications = reader.take("applications", list)
    if applications is not None:
        if len(applications) > MAX_APPLICATIONS:
            raise malformed(f"state.applications holds more than {MAX_APPLICATIONS} items")
        apps = []
        for n, item in enumerate(applications):
            sub = _Reader(item, f"state.applications[{n}]")
            apps.append(
                {
                    k: v
                    for k, v in {
                        "id": sub.text("id", required=True),
                        "name": sub.text("name"),
                        "version": sub.text("version", limit=64),
                    }.items()
                    if v is not None
                }
            )
            sub.done()
        report["applications"] = apps
    reader.done()
    return report


@dataclass(frozen=True)
class Unenrolment:
    reason: str | None = None


def parse_unenrolment(data: dict[str, Any]) -> Unenrolment:
    reader = _Reader(data, "")
    reader.take("version", int)
    reason = reader.text("reason")
    reader.done()
    return Unenrolment(reason)


# --------------------------------------------------------------------------- commands

#: Generic command kind → the WSDM command type the client app executes.
COMMAND_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "lock": "LockScreen",
        "unlock": "ClearPasscode",
        "wipe": "WipeDevice",
        "enterprise_wipe": "WipeEnterpriseData",
        "locate": "ReportLocation",
        "track": "TrackLocation",
        "message": "ShowMessage",
        "install_application": "InstallApplication",
        "remove_application": "RemoveApplication",
        "request_inventory": "ReportInventory",
    }
)
#: Parameters whose WSDM name differs from the generic one.
_PARAMETER_NAMES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "track": MappingProxyType(
            {"duration_minutes": "duration_seconds", "interval_minutes": "interval_seconds"}
        ),
    }
)


def wsdm_command(command: Mapping[str, Any]) -> dict[str, Any]:
    """A generic command (as ``engine.commands.public(..., for_device=True)`` gives it) in
    WSDM's terms; minutes become seconds, the unit the client app's timers use."""
    kind = command["kind"]
    renames = _PARAMETER_NAMES.get(kind, {})
    parameters: dict[str, Any] = {}
    for name, value in (command.get("parameters") or {}).items():
        wsdm_name = renames.get(name, name)
        parameters[wsdm_name] = value * 60 if wsdm_name.endswith("_seconds") else value
    return {"command_id": command["id"], "type": COMMAND_TYPES[kind], "parameters": parameters}


# --------------------------------------------------------------------------- answers


def configuration(
    *,
    organisation_id: str,
    organisation_code: str,
    service_url: str,
    connection_interval_minutes: int,
    xmpp_server: str | None,
) -> dict[str, Any]:
    """The configuration a device runs with, and its hash (what check-ins compare)."""
    document = {
        "organisation_id": organisation_id,
        "organisation": organisation_code,
        "service_url": service_url,
        "connection_interval_seconds": connection_interval_minutes * 60,
        "xmpp_server": xmpp_server,
    }
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]
    return document | {"hash": digest}


def encode(answer: Mapping[str, Any]) -> bytes:
    """An answer as bytes, with the version first."""
    return json.dumps({"version": VERSION, **answer}, separators=(",", ":")).encode()


def error_body(error: ProtocolError) -> bytes:
    return encode({"error": {"code": error.code, "message": str(error), **error.extra}})
