"""The APNs notifier against the APNs test server; scheduled notifications in the service."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import web.apple_mdm as web_apple
from bench.apns_server import ApnsTestServer
from engine.actors.apns import ApnsNotifier, ClientIdentity, Push

from .apple_support import ApplePki, AppleService, apple_fixture  # noqa: F401  (the fixture)
from .test_api_commands import API, database

pytestmark = pytest.mark.trio


def identity_of(pki: ApplePki) -> ClientIdentity:
    certificate, _, key = pki.push_pem.partition("-----BEGIN PRIVATE KEY-----")
    return ClientIdentity("push", certificate, "-----BEGIN PRIVATE KEY-----" + key)


async def test_many_pushes_share_one_http2_connection(tmp_path: Path) -> None:
    pki = ApplePki.create(tmp_path)
    server = ApnsTestServer(pki.server_file, pki.server_key_file, pki.ca_file)
    identity = identity_of(pki)
    pushes = {
        f"device-{n}": Push(secrets.token_hex(32), f"magic-{n}", pki.topic, identity, n)
        for n in range(300)
    }
    pushes["device-bad"] = Push("ab" * 32, "magic", pki.topic, identity, "bad")
    server.permanent["ab" * 32] = (400, "BadDeviceToken")
    refused: list[tuple[object, str]] = []
    sent: list[object] = []
    answered = trio.Event()

    async def lookup(device_ids: Sequence[str]) -> list[Push]:
        return [pushes[d] for d in device_ids]

    async def on_refused(push: Push, reason: str) -> None:
        refused.append((push.target, reason))
        if len(sent) + len(refused) == len(pushes):
            answered.set()

    async def on_sent(done: list[Push]) -> None:
        sent.extend(p.target for p in done)
        if len(sent) + len(refused) == len(pushes):
            answered.set()

    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        notifier = ApnsNotifier(url, lookup, on_refused, on_sent, ca_file=str(pki.ca_file))
        await nursery.start(notifier.run)
        notifier.wake(pushes)
        with trio.fail_after(10):
            await answered.wait()
        nursery.cancel_scope.cancel()
    assert sorted(sent) == list(range(300))  # type: ignore[type-var]
    assert refused == [("bad", "BadDeviceToken")]
    assert {p.http_version for p in server.pushes} == {"2"}
    assert len({p.client for p in server.pushes}) == 1  # one connection carried them all
    assert {p.push_magic for p in server.pushes} == {f"magic-{n}" for n in range(300)}


async def deliver_all(
    server: ApnsTestServer, pki: ApplePki, count: int, **notifier: float
) -> list[object]:
    """Wake ``count`` devices through a notifier to ``server``; the targets reported sent."""
    identity = identity_of(pki)
    pushes = {
        f"device-{n}": Push(secrets.token_hex(32), f"magic-{n}", pki.topic, identity, n)
        for n in range(count)
    }
    sent: list[object] = []
    answered = trio.Event()

    async def lookup(device_ids: Sequence[str]) -> list[Push]:
        return [pushes[d] for d in device_ids]

    async def on_refused(push: Push, reason: str) -> None:
        raise AssertionError(f"refused: {reason}")

    async def on_sent(done: list[Push]) -> None:
        sent.extend(p.target for p in done)
        if len(sent) >= count:
            answered.set()

    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        apns = ApnsNotifier(url, lookup, on_refused, on_sent, ca_file=str(pki.ca_file), **notifier)
        await nursery.start(apns.run)
        apns.wake(pushes)
        with trio.fail_after(10):
            await answered.wait()
        nursery.cancel_scope.cancel()
    return sent


async def test_a_goaway_sends_the_pushes_it_left_unanswered_on_a_new_connection(
    tmp_path: Path,
) -> None:
    pki = ApplePki.create(tmp_path)
    server = ApnsTestServer(pki.server_file, pki.server_key_file, pki.ca_file, goaway_after=40)
    sent = await deliver_all(server, pki, 200, backoff=0.01)
    assert sorted(sent) == list(range(200))  # type: ignore[type-var]
    assert len({p.client for p in server.pushes}) >= 5  # 40 answered per connection
    assert {p.push_magic for p in server.pushes} == {f"magic-{n}" for n in range(200)}


async def test_pushes_keep_within_the_servers_stream_limit(tmp_path: Path) -> None:
    pki = ApplePki.create(tmp_path)
    server = ApnsTestServer(pki.server_file, pki.server_key_file, pki.ca_file, max_streams=3)
    sent = await deliver_all(server, pki, 100)  # more than 3 at once would be a protocol error
    assert sorted(sent) == list(range(100))  # type: ignore[type-var]
    assert len({p.client for p in server.pushes}) == 1


async def test_a_push_certificate_the_server_does_not_trust_is_refused(tmp_path: Path) -> None:
    pki = ApplePki.create(tmp_path / "a")
    stranger = ApplePki.create(tmp_path / "b")  # another "Apple": the TLS handshake fails
    server = ApnsTestServer(pki.server_file, pki.server_key_file, pki.ca_file)
    push = Push("cd" * 32, "m", stranger.topic, identity_of(stranger))

    async def nothing(*args: object) -> None:
        raise AssertionError("no answer expected")

    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        notifier = ApnsNotifier(
            url, nothing, nothing, nothing, ca_file=str(pki.ca_file), attempts=2, backoff=0.01
        )  # type: ignore[arg-type]
        assert await notifier.send(push) == "failed"
        nursery.cancel_scope.cancel()
    assert server.pushes == []


@pytest.fixture
def fast_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_apple, "SCHEDULE_TICK", 0.05)


async def test_scheduled_notifications_push_enrolled_devices(
    fast_schedule: None, apple: AppleService
) -> None:
    device = await apple.device()
    with trio.move_on_after(0.3):
        await apple.apns.wait_for(1)
    assert apple.apns.pushes == []  # off by default
    changed = await apple.client.patch(
        f"{API}/organisations/{apple.org.code}/config/services/apple_mdm",
        json={"overrides": {"scheduled_notifications": True, "notification_interval": 15}},
        headers=apple.org.admin,
    )
    assert changed.status_code == 200, changed.text
    with trio.fail_after(5):
        (push,) = await apple.apns.wait_for(1)
    assert push.token == device.push_token.hex()
    # Pushed just now: not again before the interval is over.
    with trio.move_on_after(0.3):
        await apple.apns.wait_for(2)
    assert len(apple.apns.pushes) == 1
    with database(apple.running) as conn:
        conn.execute("UPDATE apple_mdm_enrolments SET last_push_at = '2000-01-01T00:00:00.000Z'")
    with trio.fail_after(5):
        await apple.apns.wait_for(2)
