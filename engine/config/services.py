"""Configuration → Services: the settings each service sends to devices.

The supervisor sets every service's settings system-wide. Each organisation has, per
service, a *Use system-wide settings* switch (on by default) and may store overrides for
single values; the overrides count only while the switch is off, and the values it does not
override keep following the system-wide ones. The result is what devices are told: where to
connect and how often.

The field table is declarative (:class:`Field` inside :class:`ServiceSpec`, all in
:data:`SERVICES`) so that the portal forms and the REST API can be generated from it and
cannot drift from what :func:`validate_values` accepts.

Decisions worth knowing:

* Input is JSON-shaped and checked strictly: an integer field takes a JSON integer, not
  ``"60"``, ``60.0`` or ``true``. Silent coercion would hide client bugs in API callers.
* WSDM's service URL is not stored: it *is* the REST API's URL (the EMM client app talks
  WSDM to the REST API), so it is derived, read-only, and cannot disagree.
* The XMPP service "URL" is the XMPP server address devices connect to, stored as
  ``host:port``. ``host`` alone and the RFC 5122 form ``xmpp:host`` are accepted and
  normalised by adding the standard client port 5222. It is ``None`` when push over XMPP
  is not configured.
* Web UI and REST API have no connection interval, and XMPP has none either: its devices
  hold a connection open rather than connecting on a schedule.

Everything here is pure: immutable values in, new immutable values out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from engine.config.bootstrap import format_host_port, normalise_http_url, parse_host_port

__all__ = [
    "JSON_VERSION",
    "SERVICES",
    "Deployment",
    "Field",
    "OrganisationServiceSettings",
    "OrganisationSettings",
    "ServiceSpec",
    "SettingsError",
    "SourcedValue",
    "SystemSettings",
    "apply_organisation_change",
    "apply_system_change",
    "effective_settings",
    "effective_with_sources",
    "system_defaults",
    "validate_values",
]

SettingValue = str | int | bool | None
Source = Literal["system", "organisation"]

#: Version of the dicts made by ``to_json``; bump it (and teach ``from_json`` the old one)
#: whenever their shape changes, since they are stored.
JSON_VERSION = 1

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class SettingsError(ValueError):
    """A settings value or document is not acceptable.

    ``service`` and ``field`` name where (either may be ``""`` when the whole document is at
    fault), so the portal can put the message next to the right input and the REST API can
    return it as a field error.
    """

    def __init__(self, service: str, field: str, problem: str) -> None:
        super().__init__(service, field, problem)
        self.service = service
        self.field = field
        self.problem = problem

    def __str__(self) -> str:
        where = ".".join(part for part in (self.service, self.field) if part)
        return f"{where}: {self.problem}" if where else self.problem


# --------------------------------------------------------------------------- the field table


@dataclass(frozen=True)
class Deployment:
    """What default values are derived from: the bootstrap file's public URL and, when push
    over XMPP is configured, the XMPP server's ``host:port``."""

    public_url: str
    xmpp_server: str | None = None


def _json_type(value: object) -> str:
    """JSON's name for a value's type, which is what API callers think in."""
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case list() | tuple():
            return "array"
        case dict() | MappingProxyType():
            return "object"
    return type(value).__name__


_TYPE_NAMES: Mapping[type, str] = MappingProxyType({str: "string", int: "integer", bool: "boolean"})


@dataclass(frozen=True)
class Field:
    """One setting of one service, described well enough to build a form or an API schema.

    ``default`` is a constant; ``default_factory`` computes the default from the
    :class:`Deployment` instead (URLs depend on where the service runs). ``validator``
    receives a value already of ``type`` and returns its normal form or raises
    :class:`ValueError`. A ``derived_from`` field (``"service.field"``) is never stored: its
    value is always that other field's effective value.
    """

    name: str
    label: str
    type: type
    help: str
    default: SettingValue = None
    default_factory: Callable[[Deployment], SettingValue] | None = None
    validator: Callable[[Any], SettingValue] | None = None
    nullable: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[SettingValue, ...] = ()
    unit: str | None = None
    derived_from: str | None = None

    def default_for(self, deployment: Deployment) -> SettingValue:
        """The value a fresh system has, before the supervisor changes anything."""
        if self.default_factory is not None:
            return self.default_factory(deployment)
        return self.default

    def check(self, value: object) -> SettingValue:
        """Return ``value`` in normal form or raise :class:`ValueError` with the problem."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError("a value is required (got null)")
        expected = _TYPE_NAMES[self.type]
        # bool is an int subclass; JSON keeps them apart and so does this check.
        if isinstance(value, bool) is not (self.type is bool) or not isinstance(value, self.type):
            raise ValueError(f"expected {expected}, got {_json_type(value)} ({value!r})")
        if self.choices and value not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise ValueError(f"{value!r} is not one of {allowed}")
        if (
            self.minimum is not None
            and self.maximum is not None
            and isinstance(value, int)
            and not self.minimum <= value <= self.maximum
        ):
            unit = f" {self.unit}" if self.unit else ""
            raise ValueError(f"{value} is out of range ({self.minimum}..{self.maximum}{unit})")
        return self.validator(value) if self.validator is not None else value

    def describe(self) -> dict[str, object]:
        """A JSON-compatible description of the field, for forms and API schemas."""
        return {
            "name": self.name,
            "label": self.label,
            "type": _TYPE_NAMES[self.type],
            "help": self.help,
            "nullable": self.nullable,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices),
            "unit": self.unit,
            "read_only": self.derived_from is not None,
            "derived_from": self.derived_from,
        }


@dataclass(frozen=True)
class ServiceSpec:
    """A service on the Configuration → Services page: its identifier, title and fields."""

    name: str
    title: str
    description: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        """The named field; :class:`SettingsError` if this service has no such field."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        known = ", ".join(f.name for f in self.fields)
        raise SettingsError(self.name, name, f"unknown field; this service has: {known}")

    @property
    def stored_fields(self) -> tuple[Field, ...]:
        """The fields that hold a value of their own (not derived from another field)."""
        return tuple(f for f in self.fields if f.derived_from is None)

    def describe(self) -> dict[str, object]:
        """A JSON-compatible description of the service and its fields."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "fields": [f.describe() for f in self.fields],
        }


def _http_url(value: str) -> str:
    # A service URL is used as written: "/" may matter to the device.
    return normalise_http_url(value, keep_trailing_slash=True)


def _xmpp_server(value: str) -> str:
    text = value
    if text.startswith("xmpp:"):
        # RFC 5122 "xmpp:domain" names a domain; anything with a node, resource or
        # authority names an account, not a server to connect to.
        text = text.removeprefix("xmpp:")
        if text.startswith("//") or any(ch in text for ch in "@/?#"):
            raise ValueError(f"{value!r}: give the server as xmpp:host, host or host:port")
    has_port = text.rpartition("]")[2] != "" if text.startswith("[") else ":" in text
    host, port = parse_host_port(text if has_port else f"{text}:5222", allow_port_zero=False)
    return format_host_port(host, port)


def _certificate_id(value: str) -> str:
    # Opaque id of a certificate kept in the store; upload and parsing live elsewhere.
    if not value or len(value) > 128 or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a stored-certificate id")
    return value


def _url_under(path: str) -> Callable[[Deployment], SettingValue]:
    def default(deployment: Deployment) -> SettingValue:
        return deployment.public_url + path

    return default


def _service_url(path: str, help: str) -> Field:
    return Field(
        name="service_url",
        label="Service URL",
        type=str,
        help=help,
        default_factory=_url_under(path),
        validator=_http_url,
    )


def _connection_interval(help: str = "How often a device should normally connect.") -> Field:
    return Field(
        name="connection_interval",
        label="Default connection interval",
        type=int,
        help=help,
        default=60,
        minimum=1,
        maximum=10080,  # one week
        unit="minutes",
    )


API_PATH = "/api/v1"

SERVICES: Mapping[str, ServiceSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ServiceSpec(
                "oma_dm",
                "OMA DM",
                "Device management over SyncML DM: inventory, settings, lock and wipe.",
                (
                    _service_url("/omadm", "URL the devices' OMA DM client connects to."),
                    _connection_interval(),
                ),
            ),
            ServiceSpec(
                "oma_ds",
                "OMA DS",
                "Keeps contacts, calendars, tasks and notes in sync over SyncML DS.",
                (
                    _service_url("/omads", "URL the devices' OMA DS client synchronises with."),
                    _connection_interval("How often a device should normally synchronise."),
                ),
            ),
            ServiceSpec(
                "wsdm",
                "WSDM",
                "The EMM client app's own protocol (mainly Android): enrolment, commands, "
                "inventory, location and messages.",
                (
                    Field(
                        name="service_url",
                        label="Service URL",
                        type=str,
                        help="Always the REST API's URL: the client app talks to the REST API.",
                        derived_from="rest_api.service_url",
                    ),
                    _connection_interval(),
                ),
            ),
            ServiceSpec(
                "eas",
                "Exchange ActiveSync",
                "Mail, contacts, calendar, tasks and notes sync with policies and remote wipe.",
                (
                    _service_url(
                        "/Microsoft-Server-ActiveSync", "URL the devices' mail app connects to."
                    ),
                    _connection_interval(),
                ),
            ),
            ServiceSpec(
                "apple_mdm",
                "Apple MDM",
                "Manages iOS, macOS and tvOS devices, woken by Apple push notifications.",
                (
                    _service_url("/mdm/server", "URL devices fetch MDM commands from."),
                    Field(
                        name="check_in_url",
                        label="Check-in URL",
                        type=str,
                        help="URL devices report enrolment, token updates and check-out to.",
                        default_factory=_url_under("/mdm/checkin"),
                        validator=_http_url,
                    ),
                    _connection_interval(),
                    Field(
                        name="apns_certificate",
                        label="APNS certificate",
                        type=str,
                        help="The Apple Push Notification service certificate used to wake "
                        "devices; without one Apple devices cannot be sent commands.",
                        nullable=True,
                        validator=_certificate_id,
                    ),
                    Field(
                        name="scheduled_notifications",
                        label="Enable scheduled notifications",
                        type=bool,
                        help="Also push to every device periodically, not only when a command "
                        "is waiting.",
                        default=False,
                    ),
                    Field(
                        name="notification_interval",
                        label="Notification interval",
                        type=int,
                        help="How often scheduled notifications are sent.",
                        default=60,
                        choices=(15, 30, 60, 240, 720, 1440),
                        unit="minutes",
                    ),
                ),
            ),
            ServiceSpec(
                "microsoft_edm",
                "Microsoft EDM",
                "Enrols Windows devices (MS-MDE2) and then manages them over OMA DM.",
                (
                    _service_url(
                        "/EnrollmentServer/Discovery.svc",
                        "Enrolment discovery URL Windows devices start from.",
                    ),
                    _connection_interval(),
                    Field(
                        name="auth_policy",
                        label="Authentication",
                        type=str,
                        help="How device owners sign in to enrol (MS-MDE2 AuthPolicy): "
                        "OnPremise asks Windows for login@organisation and password, "
                        "Federated shows the service's sign-in page.",
                        default="OnPremise",
                        choices=("OnPremise", "Federated"),
                    ),
                ),
            ),
            ServiceSpec(
                "xmpp",
                "XMPP",
                "Carries push notifications to devices through an XMPP server.",
                (
                    Field(
                        name="service_url",
                        label="XMPP server",
                        type=str,
                        help="host:port of the XMPP server devices connect to for push "
                        "(host alone or xmpp:host means port 5222); empty turns push off.",
                        nullable=True,
                        default_factory=lambda deployment: deployment.xmpp_server,
                        validator=_xmpp_server,
                    ),
                ),
            ),
            ServiceSpec(
                "web_ui",
                "Web UI",
                "The admin portal and the device owners' self-service portal.",
                (_service_url("/", "URL of the portals in a browser."),),
            ),
            ServiceSpec(
                "rest_api",
                "REST API",
                "Lets other systems do everything the portals can.",
                (_service_url(API_PATH, "Base URL of the REST API; WSDM uses it too."),),
            ),
        )
    }
)


def _spec(service: str) -> ServiceSpec:
    try:
        return SERVICES[service]
    except KeyError:
        known = ", ".join(SERVICES)
        raise SettingsError(service, "", f"unknown service; known services: {known}") from None


def _stored_field(service: str, name: str) -> Field:
    f = _spec(service).field(name)
    if f.derived_from is not None:
        raise SettingsError(
            service, name, f"read-only: it always equals {f.derived_from}; change that instead"
        )
    return f


def validate_values(service: str, values: Mapping[str, object]) -> dict[str, SettingValue]:
    """Check a partial set of values for one service and return them in normal form.

    Raises :class:`SettingsError` naming the service and field for an unknown service or
    field, a read-only (derived) field, a wrong JSON type, a value out of range or not among
    the choices, or a malformed URL.
    """
    _spec(service)
    if not isinstance(values, Mapping):
        raise SettingsError(service, "", f"expected an object, got {_json_type(values)}")
    normalised: dict[str, SettingValue] = {}
    for name, value in values.items():
        f = _stored_field(service, name)
        try:
            normalised[name] = f.check(value)
        except ValueError as exc:
            raise SettingsError(service, name, str(exc)) from None
    return normalised


# --------------------------------------------------------------------------- settings values


def _frozen(values: Mapping[str, SettingValue]) -> Mapping[str, SettingValue]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class SystemSettings:
    """The supervisor's values: every stored field of every service, always complete."""

    services: Mapping[str, Mapping[str, SettingValue]]

    def values(self, service: str) -> Mapping[str, SettingValue]:
        """The stored values of one service (derived fields not included)."""
        _spec(service)
        return self.services[service]

    def to_json(self) -> dict[str, object]:
        """A JSON-compatible dict for the store, with a version to migrate from later."""
        return {
            "version": JSON_VERSION,
            "services": {name: dict(values) for name, values in self.services.items()},
        }

    @classmethod
    def from_json(
        cls, data: object, *, public_url: str, xmpp_server: str | None = None
    ) -> SystemSettings:
        """Read :meth:`to_json`'s output back, checking every value again.

        Services or fields missing from ``data`` (stored before they existed) take their
        defaults from :func:`system_defaults` with the same arguments; unknown ones are
        refused rather than dropped, since they mean the data came from a newer version or
        was damaged.
        """
        services = _read_document(data)
        current = system_defaults(public_url, xmpp_server=xmpp_server)
        for service, values in services.items():
            current = apply_system_change(current, service, values)
        return current


@dataclass(frozen=True)
class OrganisationServiceSettings:
    """One organisation's choice for one service: the switch, and the values it keeps ready
    for when the switch is off (kept while it is on, so turning it back off restores them)."""

    use_system_wide: bool = True
    # A factory only because dataclasses refuse unhashable defaults; _EMPTY is immutable.
    overrides: Mapping[str, SettingValue] = dataclasses.field(default_factory=lambda: _EMPTY)


_DEFAULT_ORG_SERVICE = OrganisationServiceSettings()


@dataclass(frozen=True)
class OrganisationSettings:
    """An organisation's per-service choices; services not listed use system-wide values."""

    services: Mapping[str, OrganisationServiceSettings] = dataclasses.field(
        default_factory=lambda: _EMPTY
    )

    def for_service(self, service: str) -> OrganisationServiceSettings:
        _spec(service)
        return self.services.get(service, _DEFAULT_ORG_SERVICE)

    def to_json(self) -> dict[str, object]:
        """A JSON-compatible dict listing every service, in :data:`SERVICES` order."""
        return {
            "version": JSON_VERSION,
            "services": {
                name: {
                    "use_system_wide": self.for_service(name).use_system_wide,
                    "overrides": dict(self.for_service(name).overrides),
                }
                for name in SERVICES
            },
        }

    @classmethod
    def from_json(cls, data: object) -> OrganisationSettings:
        """Read :meth:`to_json`'s output back, checking every value again; missing services
        use system-wide settings."""
        result = cls()
        for service, entry in _read_document(data).items():
            if not isinstance(entry, Mapping):
                raise SettingsError(service, "", f"expected an object, got {_json_type(entry)}")
            unknown = set(entry) - {"use_system_wide", "overrides"}
            if unknown:
                raise SettingsError(service, "", f"unknown keys: {', '.join(sorted(unknown))}")
            switch = entry.get("use_system_wide", True)
            if not isinstance(switch, bool):
                raise SettingsError(
                    service, "use_system_wide", f"expected boolean, got {_json_type(switch)}"
                )
            result = apply_organisation_change(
                result, service, use_system_wide=switch, overrides=entry.get("overrides", {})
            )
        return result


def _read_document(data: object) -> Mapping[str, Any]:
    """The ``services`` object of a stored document, after checking its envelope."""
    if not isinstance(data, Mapping):
        raise SettingsError("", "", f"expected an object, got {_json_type(data)}")
    version = data.get("version")
    if version != JSON_VERSION:
        raise SettingsError("", "", f"unsupported settings version {version!r}")
    services = data.get("services", {})
    if not isinstance(services, Mapping):
        raise SettingsError("", "", f"services: expected an object, got {_json_type(services)}")
    for service in services:
        _spec(service)
    return services


def system_defaults(public_url: str, *, xmpp_server: str | None = None) -> SystemSettings:
    """System-wide settings of a fresh installation, derived from the bootstrap file.

    ``public_url`` is the bootstrap ``public_url``; ``xmpp_server`` the bootstrap XMPP
    server's ``host:port`` (``Bootstrap.xmpp.address``) or ``None`` when push is off.
    """
    try:
        base = normalise_http_url(public_url, keep_trailing_slash=False)
    except ValueError as exc:
        raise SettingsError("", "public_url", str(exc)) from None
    deployment = Deployment(base, xmpp_server)
    services: dict[str, Mapping[str, SettingValue]] = {}
    for spec in SERVICES.values():
        values: dict[str, SettingValue] = {}
        for f in spec.stored_fields:
            value = f.default_for(deployment)
            try:
                values[f.name] = f.check(value)
            except ValueError as exc:
                raise SettingsError(spec.name, f.name, f"bad default: {exc}") from None
        services[spec.name] = _frozen(values)
    return SystemSettings(MappingProxyType(services))


def apply_system_change(
    current: SystemSettings, service: str, values: Mapping[str, object]
) -> SystemSettings:
    """``current`` with some of one service's system-wide values replaced."""
    changes = validate_values(service, values)
    services = dict(current.services)
    services[service] = _frozen({**current.services[service], **changes})
    return SystemSettings(MappingProxyType(services))


def apply_organisation_change(
    current: OrganisationSettings,
    service: str,
    *,
    use_system_wide: bool | None = None,
    overrides: Mapping[str, object] | None = None,
    clear: Iterable[str] = (),
) -> OrganisationSettings:
    """``current`` with one service's switch and overrides changed.

    ``use_system_wide`` ``None`` leaves the switch as it is. ``overrides`` are merged into
    the stored ones; ``clear`` names overrides to drop (the value then follows the system
    again). Naming a field in both is refused as ambiguous.
    """
    entry = current.for_service(service)
    spec = _spec(service)
    cleared = set()
    for name in clear:
        _stored_field(spec.name, name)
        cleared.add(name)
    changes = validate_values(service, overrides or {})
    both = cleared & set(changes)
    if both:
        raise SettingsError(service, sorted(both)[0], "both set and cleared in one change")
    merged = {k: v for k, v in entry.overrides.items() if k not in cleared} | changes
    switch = entry.use_system_wide if use_system_wide is None else use_system_wide
    services = dict(current.services)
    services[service] = OrganisationServiceSettings(switch, _frozen(merged))
    return OrganisationSettings(MappingProxyType(services))


# --------------------------------------------------------------------------- effective values


@dataclass(frozen=True)
class SourcedValue:
    """A value devices get, and where it came from (the portal shows which is which)."""

    value: SettingValue
    source: Source


def effective_with_sources(
    system: SystemSettings, org: OrganisationSettings | None
) -> dict[str, dict[str, SourcedValue]]:
    """What the devices of ``org`` are told, per service and field, with each value's source.

    A service's overrides count only while its *Use system-wide settings* switch is off,
    and only for the fields they name. ``org`` ``None`` (no organisation, e.g. the
    supervisor's own view) gives the system-wide values.
    """
    result: dict[str, dict[str, SourcedValue]] = {}
    for spec in SERVICES.values():
        entry = org.for_service(spec.name) if org is not None else _DEFAULT_ORG_SERVICE
        overrides = entry.overrides if not entry.use_system_wide else _EMPTY
        result[spec.name] = {
            f.name: (
                SourcedValue(overrides[f.name], "organisation")
                if f.name in overrides
                else SourcedValue(system.services[spec.name][f.name], "system")
            )
            for f in spec.stored_fields
        }
    # Derived fields last, so they see the effective value of what they follow.
    for spec in SERVICES.values():
        for f in spec.fields:
            if f.derived_from is not None:
                target_service, _, target_field = f.derived_from.partition(".")
                result[spec.name][f.name] = result[target_service][target_field]
    # Keep each service's fields in table order, as forms and API responses list them.
    return {
        spec.name: {f.name: result[spec.name][f.name] for f in spec.fields}
        for spec in SERVICES.values()
    }


def effective_settings(
    system: SystemSettings, org: OrganisationSettings | None
) -> dict[str, dict[str, SettingValue]]:
    """What the devices of ``org`` are told, per service and field (see
    :func:`effective_with_sources`)."""
    return {
        service: {name: sourced.value for name, sourced in values.items()}
        for service, values in effective_with_sources(system, org).items()
    }
