"""The ``emm`` command line: wrong bootstrap files stop start-up with exit 2 and a clear message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .service_process import EMM, init


def emm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EMM, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('public_url = "https://x.example"\n[listen\n', "", "line 2"),
        ('public_url = "https://x.example"\ncolour = "red"\n', "colour", "unknown key"),
        (
            'public_url = "https://x.example"\n[limits]\nmailbox_capacity = "many"\n',
            "limits.mailbox_capacity",
            "integer",
        ),
        (
            'public_url = "https://x.example"\n[listen]\nhttp = "127.0.0.1:80"\n',
            "listen.http",
            "array",
        ),
        ('public_url = "ftp://x.example"\n', "public_url", "http"),
        ("log_level = 'info'\n", "public_url", "required"),
    ],
)
def test_a_wrong_bootstrap_file_exits_2_naming_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    config = tmp_path / "emm.toml"
    config.write_text(text)
    done = emm("serve", "--config", str(config))
    assert done.returncode == 2
    message = done.stderr.strip()
    assert str(config) in message
    assert key in message
    assert problem.lower() in message.lower()
    assert "Traceback" not in done.stderr


def test_a_missing_bootstrap_file_exits_2(tmp_path: Path) -> None:
    done = emm("serve", "--config", str(tmp_path / "nowhere.toml"))
    assert done.returncode == 2
    assert "nowhere.toml" in done.stderr


def test_init_on_any_free_port_makes_a_url_without_port(tmp_path: Path) -> None:
    done = emm("init", "--data-dir", str(tmp_path / "d"), "--https", "127.0.0.1:0")
    assert done.returncode == 0, done.stderr
    assert "public URL:     https://127.0.0.1\n" in done.stdout


def test_init_makes_an_installation_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    password = init(data)
    assert len(password) >= 12
    for name in ("emm.toml", "emm.sqlite3", "ca/ca.pem", "ca/ca.key", "tls/server.pem"):
        assert (data / name).exists(), name
    assert (data / "ca/ca.key").stat().st_mode & 0o077 == 0  # private keys are private
    again = emm("init", "--data-dir", str(data))
    assert again.returncode == 1
    assert "initialised" in again.stderr
