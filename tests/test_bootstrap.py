"""The bootstrap file: what operators write, what the service reads, and how it complains."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from engine.config.bootstrap import (
    GIB,
    MIB,
    Bootstrap,
    ClientCertificates,
    ConfigError,
    Database,
    Limits,
    Listen,
    ListenAddress,
    LogLevel,
    Tls,
    Xmpp,
    load_bootstrap,
    render_bootstrap,
)

MINIMAL = 'public_url = "https://emm.example.com/"\n'


def write(tmp_path: Path, text: str, name: str = "emm.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path)
    error = info.value
    # Every error names the file it is about, first, so the operator knows what to open.
    assert error.path == path
    assert str(error).startswith(f"{path}: ")
    return error


def full_bootstrap(data_dir: Path) -> Bootstrap:
    """A Bootstrap that sets every field away from its default, with awkward strings."""
    return Bootstrap(
        public_url="https://emm.example.com:8443/emm",
        data_dir=data_dir,
        log_level=LogLevel.DEBUG,
        listen=Listen(
            http=(),
            https=(ListenAddress("0.0.0.0", 443), ListenAddress("::1", 0), ListenAddress("::", 0)),
        ),
        database=Database(path=data_dir / "db" / "emm.sqlite3"),
        tls=Tls(
            certificate=Path("/etc/ssl/emm/server.pem"),
            private_key=data_dir / "keys" / 'quote " and \\ backslash.key',
            ca_certificate=data_dir / "ca" / "ünïcode ca.pem",
            ca_private_key=data_dir / "ca" / "tab\tand\nnewline.key",
            client_certificates=ClientCertificates.REQUIRED,
            trusted_proxies=(
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("fd00::/64"),
            ),
        ),
        limits=Limits(max_request_body=2 * MIB, mailbox_capacity=7, session_idle_seconds=12.5),
        xmpp=Xmpp(
            jid="emm@xmpp.example.com",
            password='p"a\\ss\u0001word',
            host="push.example.com",
            port=5223,
        ),
    )


# --------------------------------------------------------------------------- round trips


def test_full_file_round_trips_through_render_and_load(tmp_path: Path) -> None:
    original = full_bootstrap(tmp_path / "data")
    # Saved somewhere unrelated to data_dir: data_dir is written absolute.
    path = write(tmp_path, render_bootstrap(original), "elsewhere.toml")
    assert load_bootstrap(path) == original


def test_rendered_data_dir_is_relative_to_the_file_when_asked(tmp_path: Path) -> None:
    original = full_bootstrap(tmp_path)
    text = render_bootstrap(original, file_dir=tmp_path)
    assert 'data_dir = "."' in text
    # Paths inside data_dir are written relative, so the directory can be moved whole.
    assert 'path = "db/emm.sqlite3"' in text
    moved = tmp_path / "moved"
    moved.mkdir()
    reloaded = load_bootstrap(write(moved, text))
    assert reloaded.data_dir == moved
    assert reloaded.database.path == moved / "db" / "emm.sqlite3"
    # An absolute path outside data_dir stays where it was.
    assert reloaded.tls.certificate == Path("/etc/ssl/emm/server.pem")


def test_rendered_file_without_xmpp_round_trips_and_explains_how_to_enable_it(
    tmp_path: Path,
) -> None:
    original = load_bootstrap(write(tmp_path, MINIMAL))
    text = render_bootstrap(original)
    assert "# [xmpp]" in text
    assert load_bootstrap(write(tmp_path, text, "again.toml")) == original


def test_rendered_sections_carry_comments_for_operators(tmp_path: Path) -> None:
    text = render_bootstrap(full_bootstrap(tmp_path))
    for section in ("[listen]", "[database]", "[tls]", "[limits]", "[xmpp]"):
        after = text.split(section + "\n", 1)[1]
        assert after.startswith("#"), f"{section} has no comment"


# --------------------------------------------------------------------------- defaults and paths


def test_defaults_fill_in_a_minimal_file(tmp_path: Path) -> None:
    b = load_bootstrap(write(tmp_path, MINIMAL))
    assert b.public_url == "https://emm.example.com"  # trailing slash dropped
    assert b.data_dir == tmp_path
    assert b.log_level is LogLevel.INFO
    assert b.log_level.as_logging_level() == 20
    assert [str(a) for a in b.listen.http] == ["127.0.0.1:8080"]
    assert [str(a) for a in b.listen.https] == ["127.0.0.1:8443"]
    assert b.database == Database(path=tmp_path / "emm.sqlite3", backend="sqlite")
    assert b.tls.certificate == tmp_path / "tls" / "server.pem"
    assert b.tls.private_key == tmp_path / "tls" / "server.key"
    assert b.tls.ca_certificate == tmp_path / "ca" / "ca.pem"
    assert b.tls.ca_private_key == tmp_path / "ca" / "ca.key"
    assert b.tls.client_certificates is ClientCertificates.OPTIONAL
    assert b.tls.trusted_proxies == ()
    assert b.limits == Limits(16 * MIB, 64, 300.0)
    assert b.xmpp is None


def test_relative_paths_resolve_against_the_files_directory(tmp_path: Path) -> None:
    text = MINIMAL + (
        'data_dir = "var/../state"\n'
        '[database]\npath = "db/emm.sqlite3"\n'
        '[tls]\ncertificate = "/abs/server.pem"\nprivate_key = "../keys/server.key"\n'
    )
    (tmp_path / "etc").mkdir()
    b = load_bootstrap(write(tmp_path / "etc", text))
    data_dir = tmp_path / "etc" / "state"
    assert b.data_dir == data_dir
    assert b.database.path == data_dir / "db" / "emm.sqlite3"
    assert b.tls.certificate == Path("/abs/server.pem")
    assert b.tls.private_key == tmp_path / "etc" / "keys" / "server.key"
    assert b.tls.ca_certificate == data_dir / "ca" / "ca.pem"


def test_listen_addresses_accept_ipv6_hostnames_port_zero_and_empty_lists(tmp_path: Path) -> None:
    text = MINIMAL + '[listen]\nhttp = []\nhttps = ["[::1]:0", "LocalHost:8443", "10.1.2.3:1"]\n'
    b = load_bootstrap(write(tmp_path, text))
    assert b.listen.http == ()
    assert b.listen.https == (
        ListenAddress("::1", 0),
        ListenAddress("localhost", 8443),
        ListenAddress("10.1.2.3", 1),
    )
    assert str(b.listen.https[0]) == "[::1]:0"


def test_session_idle_seconds_accepts_an_integer(tmp_path: Path) -> None:
    b = load_bootstrap(write(tmp_path, MINIMAL + "[limits]\nsession_idle_seconds = 30\n"))
    assert b.limits.session_idle_seconds == 30.0
    assert isinstance(b.limits.session_idle_seconds, float)


def test_xmpp_host_defaults_to_the_jid_domain(tmp_path: Path) -> None:
    text = MINIMAL + '[xmpp]\njid = "emm@Chat.Example.com"\npassword = "secret"\n'
    xmpp = load_bootstrap(write(tmp_path, text)).xmpp
    assert xmpp == Xmpp(jid="emm@chat.example.com", password="secret", host="chat.example.com")
    assert xmpp.address == "chat.example.com:5222"
    assert "secret" not in repr(xmpp)


# --------------------------------------------------------------------------- errors


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path)
    assert info.value.path == path
    assert info.value.key == ""
    assert "cannot read file" in str(info.value)


def test_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "log_level = \n")
    assert error.key == ""
    assert "TOML syntax error" in error.problem
    assert (error.line, error.column) == (2, 13)
    assert "line 2" in str(error)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + 'publik_url = "https://x.example"\n', "publik_url"),
        (MINIMAL + "[listen]\nhtps = []\n", "listen.htps"),
        (MINIMAL + "[limits]\n[limits.extra]\nx = 1\n", "limits.extra"),
        (MINIMAL + "[logging]\nlevel = 'debug'\n", "logging"),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, key: str) -> None:
    error = load_error(tmp_path, text)
    assert error.key == key
    assert "unknown key" in error.problem
    assert f": {key}: unknown key" in str(error)


def test_unknown_key_suggests_the_close_match(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "[listen]\nhtps = []\n")
    assert "did you mean 'https'" in error.problem


def test_a_misspelt_required_key_is_reported_as_the_misspelling(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'publik_url = "https://x.example"\n')
    assert error.key == "publik_url"
    assert "did you mean 'public_url'" in error.problem


@pytest.mark.parametrize(
    ("text", "key", "expected", "got"),
    [
        (MINIMAL + '[limits]\nmailbox_capacity = "64"\n', "limits.mailbox_capacity",
         "expected an integer", "got a string ('64')"),
        (MINIMAL + "[limits]\nmailbox_capacity = true\n", "limits.mailbox_capacity",
         "expected an integer", "got a boolean (true)"),
        (MINIMAL + "[listen]\nhttp = 8080\n", "listen.http",
         "expected an array of strings", "got an integer (8080)"),
        (MINIMAL + "[listen]\nhttp = [8080]\n", "listen.http[0]",
         "expected a string", "got an integer (8080)"),
        (MINIMAL + "[xmpp]\njid = 'a@b.example'\npassword = 'x'\nport = 5222.0\n", "xmpp.port",
         "expected an integer", "got a float"),
        (MINIMAL + "[limits]\nsession_idle_seconds = false\n", "limits.session_idle_seconds",
         "expected a number", "got a boolean"),
        (MINIMAL + "listen = 1\n", "listen", "expected a table", "got an integer"),
        ("public_url = 1\n", "public_url", "expected a string", "got an integer"),
    ],
)  # fmt: skip
def test_wrong_types_name_what_was_expected_and_got(
    tmp_path: Path, text: str, key: str, expected: str, got: str
) -> None:
    error = load_error(tmp_path, text)
    assert error.key == key
    assert expected in error.problem
    assert got in error.problem
    assert f": {key}: " in str(error)


@pytest.mark.parametrize(
    ("listen", "key", "problem"),
    [
        ('http = ["127.0.0.1"]', "listen.http[0]", "expected host:port"),
        ('http = ["::1:8080"]', "listen.http[0]", "brackets"),
        ('https = ["[::1]"]', "listen.https[0]", "expected ':port'"),
        ('https = ["[10.0.0.1]:80"]', "listen.https[0]", "not an IPv6 address"),
        ('http = ["10.0.0.300:80"]', "listen.http[0]", "neither an IP address nor"),
        ('http = ["bad_host:80"]', "listen.http[0]", "neither an IP address nor"),
        ('http = [":80"]', "listen.http[0]", "neither an IP address nor"),
        ('http = ["localhost:65536"]', "listen.http[0]", "out of range (0..65535)"),
        ('http = ["localhost:http"]', "listen.http[0]", "is not a number"),
        ('http = ["127.0.0.1:80", "127.0.0.1:80"]', "listen.http[1]", "already listed"),
        ('http = ["127.0.0.1:80"]\nhttps = ["127.0.0.1:80"]', "listen.https[0]",
         "already listed in listen.http[0]"),
        ("http = []\nhttps = []", "listen", "both empty"),
    ],
)  # fmt: skip
def test_bad_listen_addresses(tmp_path: Path, listen: str, key: str, problem: str) -> None:
    error = load_error(tmp_path, MINIMAL + f"[listen]\n{listen}\n")
    assert error.key == key
    assert problem in error.problem


def test_duplicate_port_zero_is_allowed(tmp_path: Path) -> None:
    text = MINIMAL + '[listen]\nhttp = ["127.0.0.1:0"]\nhttps = ["127.0.0.1:0"]\n'
    b = load_bootstrap(write(tmp_path, text))
    assert b.listen.http == b.listen.https == (ListenAddress("127.0.0.1", 0),)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("emm.example.com", "absolute http:// or https://"),
        ("ftp://emm.example.com", "absolute http:// or https://"),
        ("https://", "has no host"),
        ("https://emm.example.com/?a=1", "query"),
        ("https://emm.example.com/#top", "fragment"),
        ("https://admin:pw@emm.example.com", "user name or password"),
        ("https://emm.example.com:99999", "invalid port"),
        ("https://emm example.com", "whitespace"),
        ("https://-bad-.example.com", "neither an IP address nor"),
    ],
)
def test_bad_public_url(tmp_path: Path, url: str, problem: str) -> None:
    error = load_error(tmp_path, f'public_url = "{url}"\n')
    assert error.key == "public_url"
    assert problem in error.problem


def test_public_url_is_normalised(tmp_path: Path) -> None:
    b = load_bootstrap(write(tmp_path, 'public_url = "HTTPS://EMM.Example.com:8443/Base/"\n'))
    # Host and scheme are case-insensitive; the path is not.
    assert b.public_url == "https://emm.example.com:8443/Base"


def test_missing_public_url(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'log_level = "debug"\n')
    assert error.key == "public_url"
    assert "required key is missing" in error.problem


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ('[database]\nbackend = "postgresql"', "database.backend", "not available yet"),
        ('[database]\nbackend = "mysql"', "database.backend", "unknown backend 'mysql'"),
        ('log_level = "verbose"', "log_level", "'verbose' is not one of"),
        ('[tls]\nclient_certificates = "yes"', "tls.client_certificates", "is not one of"),
        ('[tls]\ntrusted_proxies = ["10.0.0.5/8"]', "tls.trusted_proxies[0]", "host bits set"),
        ('[tls]\ntrusted_proxies = ["proxy.local"]', "tls.trusted_proxies[0]", "CIDR"),
        ('[tls]\ncertificate = ""', "tls.certificate", "must not be empty"),
        ("[limits]\nmax_request_body = 1023", "limits.max_request_body", "out of range"),
        (f"[limits]\nmax_request_body = {GIB + 1}", "limits.max_request_body", "out of range"),
        ("[limits]\nmailbox_capacity = 0", "limits.mailbox_capacity", "out of range"),
        ("[limits]\nsession_idle_seconds = 0", "limits.session_idle_seconds", "positive"),
        ("[limits]\nsession_idle_seconds = inf", "limits.session_idle_seconds", "finite"),
        ('[xmpp]\npassword = "x"', "xmpp.jid", "required key is missing"),
        ('[xmpp]\njid = "a@b.example"', "xmpp.password", "required key is missing"),
        ('[xmpp]\njid = "nodomain"\npassword = "x"', "xmpp.jid", "user@domain"),
        ('[xmpp]\njid = "a@b.example/res"\npassword = "x"', "xmpp.jid", "bare JID"),
        ('[xmpp]\njid = "a@b.example"\npassword = "x"\nport = 0', "xmpp.port", "out of range"),
    ],
)
def test_bad_values(tmp_path: Path, section: str, key: str, problem: str) -> None:
    # Top-level keys must precede the first table header in TOML.
    text = section + "\n" + MINIMAL if not section.startswith("[") else MINIMAL + section + "\n"
    error = load_error(tmp_path, text)
    assert error.key == key
    assert problem in error.problem
    assert str(error) == f"{error.path}: {key}: {error.problem}"
