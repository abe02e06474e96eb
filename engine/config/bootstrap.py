"""The bootstrap file: the one TOML file the service starts from.

Everything the process needs *before* it can open its store lives here: where to listen,
where the data directory and the database are, which TLS files to load, and the public URL
that devices and browsers use. Everything else (service settings, organisations, accounts)
lives in the store, because it is edited at run time through the portals and the REST API.

The file is written once by ``emm init`` and then edited by hand, so every mistake is
reported as a :class:`ConfigError` that names the file, the dotted key and the problem, and
nothing is guessed: an unknown key is an error (a typo must not silently fall back to a
default), and TOML booleans are never accepted where integers are expected or the reverse.

Public API: :func:`load_bootstrap`, :func:`render_bootstrap`, the dataclasses they use and
the small address/URL parsers that :mod:`engine.config.services` shares.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import tomli

__all__ = [
    "Apns",
    "Bootstrap",
    "ClientCertificates",
    "ConfigError",
    "Database",
    "Limits",
    "Listen",
    "ListenAddress",
    "LogLevel",
    "Tls",
    "Xmpp",
    "format_host_port",
    "load_bootstrap",
    "normalise_host",
    "normalise_http_url",
    "parse_host_port",
    "render_bootstrap",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """The bootstrap file cannot be used as written.

    Operators read this message on a terminal after editing the file, so it carries the
    three things they need to fix it: which file, which key (dotted, ``""`` when the file as
    a whole is at fault, e.g. a syntax error) and what is wrong with it.
    """

    def __init__(
        self,
        path: Path,
        key: str,
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(path, key, problem)
        self.path = path
        self.key = key
        self.problem = problem
        # Only TOML syntax errors have a position; tomli's message also carries it.
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.key:
            return f"{self.path}: {self.key}: {self.problem}"
        return f"{self.path}: {self.problem}"


# --------------------------------------------------------------------------- values


class LogLevel(StrEnum):
    """How chatty the service log is; the names operators know from every other daemon."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def as_logging_level(self) -> int:
        """The matching :mod:`logging` level, so the caller need not repeat this table."""
        return logging.getLevelNamesMapping()[self.name]


class ClientCertificates(StrEnum):
    """Whether TLS clients must present a certificate issued by the service's own CA.

    ``optional`` is the default because browsers and API clients connect without one while
    enrolled devices present theirs on the same listener.
    """

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True)
class ListenAddress:
    """One socket to bind. ``host`` holds an IPv6 address without brackets.

    ``str()`` gives the ``host:port`` form (``[::1]:8443`` for IPv6) that Hypercorn's
    ``bind`` option and the bootstrap file both use. Port 0 asks the OS for a free port.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)


@dataclass(frozen=True)
class Listen:
    """Sockets for plain HTTP and for HTTPS; either list may be empty, not both."""

    http: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8080),)
    https: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8443),)


@dataclass(frozen=True)
class Database:
    """Where the store keeps its data. Only the embedded SQLite backend exists so far."""

    path: Path
    backend: str = "sqlite"


@dataclass(frozen=True)
class Tls:
    """The server's TLS identity, the service CA that issues device identities, and who
    may vouch for a client certificate on the service's behalf."""

    certificate: Path
    private_key: Path
    ca_certificate: Path
    ca_private_key: Path
    client_certificates: ClientCertificates = ClientCertificates.OPTIONAL
    # Only these peers (TLS-terminating proxies) may send an RFC 9440 Client-Cert header;
    # from anyone else the header is a forgery attempt and must be ignored.
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one client or one device from exhausting the process."""

    max_request_body: int = 16 * MIB
    mailbox_capacity: int = 64
    session_idle_seconds: float = 300.0


@dataclass(frozen=True)
class Xmpp:
    """The account the service logs in with at a real XMPP server to push to devices."""

    jid: str
    # repr=False: a Bootstrap is logged at start-up, the password must not be.
    password: str = field(repr=False)
    host: str
    port: int = 5222

    @property
    def domain(self) -> str:
        """The domain part of the JID, i.e. the XMPP service the account belongs to."""
        return self.jid.partition("@")[2]

    @property
    def address(self) -> str:
        """``host:port`` of the XMPP server, as devices are told to reach it."""
        return format_host_port(self.host, self.port)


APNS_PRODUCTION = "https://api.push.apple.com"


@dataclass(frozen=True)
class Apns:
    """Where Apple MDM push notifications go: Apple's production service unless told
    otherwise (``https://api.sandbox.push.apple.com``, or a test server); ``ca_certificate``
    replaces the system's trusted roots (for a test server only)."""

    base_url: str = APNS_PRODUCTION
    ca_certificate: Path | None = None


@dataclass(frozen=True)
class Bootstrap:
    """Everything the bootstrap file says, with defaults filled in and every path absolute."""

    public_url: str
    data_dir: Path
    log_level: LogLevel
    listen: Listen
    database: Database
    tls: Tls
    limits: Limits
    xmpp: Xmpp | None = None
    apns: Apns = field(default_factory=Apns)


# --------------------------------------------------------------------------- address parsing
# Shared with engine.config.services: both files accept the same host and URL syntax, so an
# address that is good in one place is good in the other.

_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")


def normalise_host(text: str) -> str:
    """Return ``text`` as a canonical IP address or lower-case host name.

    Raises :class:`ValueError` with an operator-readable problem otherwise. A name whose
    last label is all digits is refused: it is almost always a mistyped IPv4 address
    (``10.0.0.300``), and no real top-level domain is numeric.
    """
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower()
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_HOST_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(f"{text!r} is neither an IP address nor a valid host name")
    return name


def format_host_port(host: str, port: int) -> str:
    """``host:port``, bracketing IPv6 addresses so the port stays unambiguous."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(text: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into a normalised host and a port.

    Raises :class:`ValueError` naming what is wrong. Port 0 ("any free port") only makes
    sense for a socket we bind, never for an address someone connects to.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        host_text, rest = text[1:close], text[close + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        port_text = rest[1:]
        try:
            host = ipaddress.IPv6Address(host_text)
        except ValueError:
            raise ValueError(f"{text!r}: {host_text!r} is not an IPv6 address") from None
        host_name = str(host)
    else:
        host_text, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"{text!r}: expected host:port, e.g. 127.0.0.1:8080")
        if ":" in host_text:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:8080")
        host_name = normalise_host(host_text)
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range ({lowest}..65535)")
    return host_name, port


def normalise_http_url(text: str, *, keep_trailing_slash: bool) -> str:
    """Check that ``text`` is an absolute http(s) URL a device can be told to use.

    Returns it with scheme and host lower-cased (and without a trailing slash unless
    ``keep_trailing_slash``: a base URL gets paths appended, a service URL is used as is).
    Query, fragment and credentials are refused: devices would drop or leak them.
    Raises :class:`ValueError` naming the problem.
    """
    if not text:
        raise ValueError("URL is empty")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"{text!r} contains whitespace")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{text!r} must be an absolute http:// or https:// URL")
    if not parts.netloc:
        raise ValueError(f"{text!r} has no host")
    if "@" in parts.netloc:
        raise ValueError(f"{text!r} must not contain a user name or password")
    if "?" in text:
        raise ValueError(f"{text!r} must not have a query string")
    if "#" in text:
        raise ValueError(f"{text!r} must not have a fragment")
    if parts.hostname is None:
        raise ValueError(f"{text!r} has no host")
    try:
        host = normalise_host(parts.hostname)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0  # not a number, or above 65535: reported just below
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise ValueError(f"{text!r} has an invalid port (expected 1..65535)")
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = parts.path if keep_trailing_slash else parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, "", ""))


# --------------------------------------------------------------------------- reading TOML

_REQUIRED = object()


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for "expected X, got Y" messages."""
    match value:
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "float"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "table"
        case datetime():
            return "datetime"
        case date():
            return "date"
        case time():
            return "time"
    return type(value).__name__  # pragma: no cover - tomli produces nothing else


def _describe(value: object) -> str:
    """Type and, for short scalars, the value itself: "got a boolean (true)"."""
    kind = _toml_type(value)
    article = "an" if kind[0] in "aeiou" else "a"
    if isinstance(value, bool):
        return f"{article} {kind} ({str(value).lower()})"
    if isinstance(value, int | float) or (isinstance(value, str) and len(value) <= 40):
        return f"{article} {kind} ({value!r})"
    return f"{article} {kind}"


class _Section:
    """One TOML table being read: checks keys and types, and names the dotted key on error.

    Unknown keys are checked first, on construction, so a misspelt required key is reported
    as the misspelling rather than as "missing".
    """

    def __init__(
        self, source: Path, prefix: str, data: Mapping[str, object], known: Iterable[str]
    ) -> None:
        self.source = source
        self.prefix = prefix
        self.data = data
        known = tuple(known)
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                expected = ", ".join(known)
                raise self.error(key, f"unknown key{hint}; known keys here: {expected}")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def _raw(self, name: str, expected: str, default: object) -> object:
        if name in self.data:
            return self.data[name]
        if default is _REQUIRED:
            raise self.error(name, f"required key is missing (expected {expected})")
        return default

    def _wrong_type(self, name: str, expected: str, value: object) -> ConfigError:
        return self.error(name, f"expected {expected}, got {_describe(value)}")

    def string(self, name: str, default: object = _REQUIRED, *, empty_ok: bool = False) -> str:
        value = self._raw(name, "a string", default)
        if not isinstance(value, str):
            raise self._wrong_type(name, "a string", value)
        if not value and not empty_ok:
            raise self.error(name, "must not be empty")
        return value

    def integer(self, name: str, default: int, lowest: int, highest: int) -> int:
        value = self._raw(name, "an integer", default)
        # bool is a subclass of int in Python; TOML keeps them apart and so do we.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong_type(name, "an integer", value)
        if not lowest <= value <= highest:
            raise self.error(name, f"{value} is out of range ({lowest}..{highest})")
        return value

    def number(self, name: str, default: float) -> float:
        value = self._raw(name, "a number", default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong_type(name, "a number", value)
        return float(value)

    def strings(self, name: str, default: Iterable[str]) -> list[tuple[int, str]]:
        """An array of strings, each with its index so errors can say which one."""
        value = self._raw(name, "an array of strings", list(default))
        if not isinstance(value, list):
            raise self._wrong_type(name, "an array of strings", value)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{name}[{index}]", f"expected a string, got {_describe(item)}")
        return list(enumerate(value))

    def path(self, name: str, base: Path, default: str) -> Path:
        text = self.string(name, default)
        if "\0" in text:
            raise self.error(name, "a path must not contain NUL characters")
        return _resolve(base, text)

    def table(self, name: str, known: Iterable[str]) -> _Section | None:
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            raise self._wrong_type(name, "a table", value)
        return _Section(self.source, self.key(name), value, known)


def _resolve(base: Path, text: str) -> Path:
    """Absolute path for ``text``, relative ones taken from ``base``.

    ``normpath`` rather than ``resolve()``: the result is what the operator wrote, without
    following symlinks or touching the file system while loading configuration.
    """
    return Path(os.path.normpath(base / Path(text)))


# Table and key names, in the order render_bootstrap writes them.
_TOP_KEYS = (
    "public_url",
    "data_dir",
    "log_level",
    "listen",
    "database",
    "tls",
    "limits",
    "xmpp",
    "apns",
)
_APNS_KEYS = ("base_url", "ca_certificate")
_LISTEN_KEYS = ("http", "https")
_DATABASE_KEYS = ("backend", "path")
_TLS_KEYS = (
    "certificate",
    "private_key",
    "ca_certificate",
    "ca_private_key",
    "client_certificates",
    "trusted_proxies",
)
_LIMITS_KEYS = ("max_request_body", "mailbox_capacity", "session_idle_seconds")
_XMPP_KEYS = ("jid", "password", "host", "port")

_DEFAULT_DATABASE = "emm.sqlite3"
_DEFAULT_TLS = {
    "certificate": "tls/server.pem",
    "private_key": "tls/server.key",
    "ca_certificate": "ca/ca.pem",
    "ca_private_key": "ca/ca.key",
}


def load_bootstrap(path: Path) -> Bootstrap:
    """Read and check the bootstrap file at ``path``.

    Relative paths in the file are taken from ``data_dir``, and a relative ``data_dir``
    from the file's own directory, so an instance directory can be moved as a whole.

    Raises :class:`ConfigError` for anything that is not exactly right; see the module
    docstring for why nothing is guessed.
    """
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start})") from exc
    try:
        document = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(
            source,
            "",
            f"TOML syntax error: {exc}",
            line=getattr(exc, "lineno", None),
            column=getattr(exc, "colno", None),
        ) from exc
    return _read_document(source, document)


def _read_document(source: Path, document: dict[str, object]) -> Bootstrap:
    top = _Section(source, "", document, _TOP_KEYS)

    try:
        public_url = normalise_http_url(top.string("public_url"), keep_trailing_slash=False)
    except ValueError as exc:
        raise top.error("public_url", str(exc)) from None

    file_dir = Path(os.path.abspath(source.parent))
    data_dir = top.path("data_dir", file_dir, ".")

    level_text = top.string("log_level", LogLevel.INFO.value)
    try:
        log_level = LogLevel(level_text)
    except ValueError:
        choices = ", ".join(repr(level.value) for level in LogLevel)
        raise top.error("log_level", f"{level_text!r} is not one of {choices}") from None

    return Bootstrap(
        public_url=public_url,
        data_dir=data_dir,
        log_level=log_level,
        listen=_read_listen(top.table("listen", _LISTEN_KEYS), top),
        database=_read_database(top.table("database", _DATABASE_KEYS), data_dir, top),
        tls=_read_tls(top.table("tls", _TLS_KEYS), data_dir, top),
        limits=_read_limits(top.table("limits", _LIMITS_KEYS), top),
        xmpp=_read_xmpp(top.table("xmpp", _XMPP_KEYS)),
        apns=_read_apns(top.table("apns", _APNS_KEYS), data_dir),
    )


def _empty(parent: _Section, name: str) -> _Section:
    """An absent table reads as an empty one: every key takes its default."""
    return _Section(parent.source, parent.key(name), {}, ())


def _read_listen(section: _Section | None, parent: _Section) -> Listen:
    section = section or _empty(parent, "listen")
    defaults = Listen()
    lists: dict[str, tuple[ListenAddress, ...]] = {}
    bound: dict[ListenAddress, str] = {}
    for name in _LISTEN_KEYS:
        addresses: list[ListenAddress] = []
        default = [str(address) for address in getattr(defaults, name)]
        for index, text in section.strings(name, default):
            key = f"{name}[{index}]"
            try:
                address = ListenAddress(*parse_host_port(text, allow_port_zero=True))
            except ValueError as exc:
                raise section.error(key, str(exc)) from None
            # Binding the same socket twice fails at start-up with a less helpful error.
            if address.port != 0 and address in bound:
                raise section.error(key, f"{text!r} is already listed in {bound[address]}")
            bound[address] = section.key(key)
            addresses.append(address)
        lists[name] = tuple(addresses)
    if not lists["http"] and not lists["https"]:
        raise parent.error(
            "listen", "http and https are both empty; the service would be unreachable"
        )
    return Listen(http=lists["http"], https=lists["https"])


def _read_database(section: _Section | None, data_dir: Path, parent: _Section) -> Database:
    section = section or _empty(parent, "database")
    backend = section.string("backend", "sqlite")
    if backend == "postgresql":
        raise section.error("backend", 'the postgresql backend is not available yet; use "sqlite"')
    if backend != "sqlite":
        raise section.error("backend", f'unknown backend {backend!r}; expected "sqlite"')
    return Database(path=section.path("path", data_dir, _DEFAULT_DATABASE), backend=backend)


def _read_tls(section: _Section | None, data_dir: Path, parent: _Section) -> Tls:
    section = section or _empty(parent, "tls")
    paths = {name: section.path(name, data_dir, default) for name, default in _DEFAULT_TLS.items()}

    mode_text = section.string("client_certificates", ClientCertificates.OPTIONAL.value)
    try:
        mode = ClientCertificates(mode_text)
    except ValueError:
        choices = ", ".join(repr(mode.value) for mode in ClientCertificates)
        raise section.error(
            "client_certificates", f"{mode_text!r} is not one of {choices}"
        ) from None

    proxies: list[IPNetwork] = []
    for index, text in section.strings("trusted_proxies", ()):
        try:
            # strict: "10.0.0.5/8" is more likely a typo than a wish to trust a /8.
            proxies.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise section.error(
                f"trusted_proxies[{index}]", f"{text!r} is not an IP network in CIDR form: {exc}"
            ) from None
    return Tls(**paths, client_certificates=mode, trusted_proxies=tuple(proxies))


def _read_limits(section: _Section | None, parent: _Section) -> Limits:
    section = section or _empty(parent, "limits")
    defaults = Limits()
    idle = section.number("session_idle_seconds", defaults.session_idle_seconds)
    if not (math.isfinite(idle) and idle > 0):
        raise section.error("session_idle_seconds", f"{idle} must be a positive, finite number")
    return Limits(
        max_request_body=section.integer("max_request_body", defaults.max_request_body, KIB, GIB),
        mailbox_capacity=section.integer("mailbox_capacity", defaults.mailbox_capacity, 1, 100_000),
        session_idle_seconds=idle,
    )


def _read_xmpp(section: _Section | None) -> Xmpp | None:
    if section is None:
        return None
    jid = section.string("jid")
    local, at, domain = jid.partition("@")
    # A bare JID: the resource is chosen per connection by the notifier, not configured.
    if not at or not local or "/" in jid or "@" in domain:
        raise section.error("jid", f"{jid!r} is not a bare JID of the form user@domain")
    try:
        domain = normalise_host(domain)
    except ValueError as exc:
        raise section.error("jid", f"{jid!r}: domain {exc}") from None
    password = section.string("password")
    try:
        host = normalise_host(section.string("host", domain))
    except ValueError as exc:
        raise section.error("host", str(exc)) from None
    port = section.integer("port", 5222, 1, 65535)
    return Xmpp(jid=f"{local}@{domain}", password=password, host=host, port=port)


def _read_apns(section: _Section | None, data_dir: Path) -> Apns:
    if section is None:
        return Apns()
    try:
        base_url = normalise_http_url(
            section.string("base_url", APNS_PRODUCTION), keep_trailing_slash=False
        )
    except ValueError as exc:
        raise section.error("base_url", str(exc)) from None
    if not base_url.startswith("https://"):
        raise section.error("base_url", "APNs is spoken over HTTPS (HTTP/2) only")
    ca = section.data.get("ca_certificate")
    return Apns(
        base_url=base_url,
        ca_certificate=section.path("ca_certificate", data_dir, "") if ca is not None else None,
    )


# --------------------------------------------------------------------------- writing TOML

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """A TOML basic string. Control characters are escaped; other text is kept as UTF-8."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            # Lone surrogates (undecodable file names) cannot be written as TOML at all.
            raise ValueError(f"{text!r} cannot be written as a TOML string")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_strings(items: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_string(item) for item in items) + "]"


def _relative(path: Path, base: Path) -> str:
    """Paths inside ``base`` are written relative to it so the directory stays movable."""
    if path == base:
        return "."
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def render_bootstrap(bootstrap: Bootstrap, *, file_dir: Path | None = None) -> str:
    """TOML text for ``bootstrap`` that :func:`load_bootstrap` reads back to an equal value.

    Pass ``file_dir``, the directory the text will be saved in, to have ``data_dir`` written
    relative to it (``"."`` when they are the same), which keeps an instance directory
    movable; without it ``data_dir`` is written absolute and the file can live anywhere.
    """
    b = bootstrap
    data_dir = str(b.data_dir)
    if file_dir is not None:
        data_dir = _relative(b.data_dir, Path(os.path.abspath(file_dir)))

    def path(value: Path) -> str:
        return _toml_string(_relative(value, b.data_dir))

    lines = [
        "# EMM service bootstrap file: read once at start-up; restart the service after",
        "# editing. Service settings, organisations and accounts live in the database.",
        "",
        "# The base URL devices and browsers use to reach this service (http or https,",
        "# no query). Service URLs sent to devices are derived from it.",
        f"public_url = {_toml_string(b.public_url)}",
        "# Where the database, certificates and keys live; relative paths in this file",
        "# are taken from here, and a relative data_dir from this file's directory.",
        f"data_dir = {_toml_string(data_dir)}",
        '# One of "debug", "info", "warning", "error".',
        f"log_level = {_toml_string(b.log_level.value)}",
        "",
        "[listen]",
        '# "host:port" to bind, IPv6 as "[::1]:8443"; port 0 picks a free port.',
        "# Either list may be empty, not both.",
        f"http = {_toml_strings(str(a) for a in b.listen.http)}",
        f"https = {_toml_strings(str(a) for a in b.listen.https)}",
        "",
        "[database]",
        '# Only "sqlite" is available so far.',
        f"backend = {_toml_string(b.database.backend)}",
        f"path = {path(b.database.path)}",
        "",
        "[tls]",
        "# The server's certificate chain and key (PEM).",
        f"certificate = {path(b.tls.certificate)}",
        f"private_key = {path(b.tls.private_key)}",
        "# The service's own CA, which issues device identities.",
        f"ca_certificate = {path(b.tls.ca_certificate)}",
        f"ca_private_key = {path(b.tls.ca_private_key)}",
        '# "none", "optional" or "required": must TLS clients present a device certificate?',
        f"client_certificates = {_toml_string(b.tls.client_certificates.value)}",
        "# Networks (CIDR) of TLS-terminating proxies allowed to pass a client certificate",
        "# in an RFC 9440 Client-Cert header; from anyone else the header is ignored.",
        f"trusted_proxies = {_toml_strings(str(n) for n in b.tls.trusted_proxies)}",
        "",
        "[limits]",
        "# Largest request body accepted, in bytes (1 KiB .. 1 GiB).",
        f"max_request_body = {b.limits.max_request_body}",
        "# Messages an actor may have waiting before callers get 503 Retry-After.",
        f"mailbox_capacity = {b.limits.mailbox_capacity}",
        "# Seconds without traffic before a device session is passivated.",
        f"session_idle_seconds = {b.limits.session_idle_seconds!r}",
        "",
    ]
    if b.xmpp is None:
        lines += [
            "# Push notifications over XMPP are off. To turn them on, add the account the",
            "# service logs in with (host defaults to the JID's domain, port to 5222):",
            "# [xmpp]",
            '# jid = "emm@xmpp.example.com"',
            '# password = "..."',
        ]
    else:
        lines += [
            "[xmpp]",
            "# The account the service logs in with to push notifications to devices.",
            f"jid = {_toml_string(b.xmpp.jid)}",
            f"password = {_toml_string(b.xmpp.password)}",
            "# The XMPP server to connect to.",
            f"host = {_toml_string(b.xmpp.host)}",
            f"port = {b.xmpp.port}",
        ]
    lines += [
        "",
        "[apns]",
        "# Where Apple MDM push notifications are sent (HTTP/2 with the APNS certificate);",
        "# https://api.sandbox.push.apple.com for development devices.",
        f"base_url = {_toml_string(b.apns.base_url)}",
    ]
    if b.apns.ca_certificate is not None:
        lines.append(f"ca_certificate = {_toml_string(path(b.apns.ca_certificate))}")
    return "\n".join(lines) + "\n"
