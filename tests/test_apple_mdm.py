"""Apple MDM through the running service, with the device simulator and the APNs test server."""

from __future__ import annotations

import pytest
import trio

from engine import apple_mdm as domain

from .apple_support import AppleService, apple_fixture  # noqa: F401  (the fixture)
from .test_api_commands import API, database

pytestmark = pytest.mark.trio

INVENTORY = ["DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList"]


async def test_full_enrolment_push_poll_and_inventory(apple: AppleService) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    view = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}/apple-mdm",
        headers=apple.org.admin,
    )
    assert view.status_code == 200, view.text
    enrolment = view.json()["enrolment"]
    assert enrolment["state"] == "enrolled"
    assert enrolment["push_token_state"] == "good"
    assert enrolment["has_unlock_token"] is True
    assert apple.apns.pushes == []  # nothing waits yet: no push

    command_id = await apple.queue(device_id, "request_inventory")
    (push,) = await apple.apns.wait_for(1)
    assert push.token == device.push_token.hex()
    assert push.push_magic == device.push_magic
    assert push.topic == apple.pki.topic
    assert push.http_version == "2"

    assert await device.poll(apple.client) == [
        "DeviceInformation",
        "SecurityInfo",
        "ProfileList",
        "InstalledApplicationList",
    ]
    assert device.received[0][0] == command_id
    command = await apple.command(command_id)
    assert command["state"] == "acknowledged"
    assert command["result"] == {"status": "Acknowledged"}
    shown = await apple.client.get(
        f"{API}/organisations/{apple.org.code}/devices/{device_id}", headers=apple.org.admin
    )
    detail = shown.json()
    assert (detail["state"], detail["model"], detail["os_version"]) == (
        "enrolled",
        "iPhone15,2",
        "17.4.1",
    )
    assert detail["serial_number"] == device.serial_number
    assert detail["udid"] == device.udid
    assert detail["inventory"]["hardware"]["battery_level"] == 0.82
    assert detail["inventory"]["hardware"]["capacity_gb"] == 128.0
    assert detail["inventory"]["security"]["PasscodePresent"] is True
    assert detail["inventory"]["applications"] == [
        {"identifier": "com.example.app", "name": "Example", "version": "1.2"}
    ]
    (profile,) = detail["inventory"]["profiles"]
    assert profile["identifier"] == device.enrolment.payload["PayloadIdentifier"]


async def test_not_now_is_not_offered_again_in_the_session_and_comes_after_a_push(
    apple: AppleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain, "NOT_NOW_RETRY", 0.05)
    device = await apple.device(not_now={"DeviceLock"})
    device_id = apple.device_id(device)
    lock = await apple.queue(device_id, "lock", message="Found? Call us")
    inventory = await apple.queue(device_id, "request_inventory")
    with trio.fail_after(5):
        await apple.apns.wait_for(1)
    # Locked: DeviceLock is postponed, DeviceInformation still done, DeviceLock not again.
    assert await device.poll(apple.client) == ["DeviceLock", *INVENTORY]
    assert (await apple.command(lock))["state"] == "sent"
    assert (await apple.command(inventory))["state"] == "acknowledged"
    # The session ended with a NotNow command waiting: the device is pushed again.
    with trio.fail_after(5):
        await apple.apns.wait_for(2)
    device.not_now.clear()
    assert await device.poll(apple.client) == ["DeviceLock"]
    delivered = await apple.command(lock)
    assert delivered["state"] == "acknowledged"
    (first, _, command), *_ = [r for r in device.received if r[1] == "DeviceLock"]
    assert first == lock and command["Message"] == "Found? Call us"


async def test_unlock_clears_the_passcode_with_the_stored_unlock_token(
    apple: AppleService,
) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    unlock = await apple.queue(device_id, "unlock")
    message = await apple.queue(device_id, "message", text="Hello", title="IT")
    assert await device.poll(apple.client) == ["ClearPasscode", "DeviceLock"]
    assert device.received[0][2]["UnlockToken"] == device.unlock_token
    assert device.received[1][2]["Message"] == "IT: Hello"
    assert (await apple.command(unlock))["state"] == "acknowledged"
    assert (await apple.command(message))["state"] == "acknowledged"
    with database(apple.running) as conn:
        stored = conn.execute(
            "SELECT unlock_token FROM apple_mdm_enrolments WHERE id = ?", (device.udid,)
        ).fetchone()[0]
    assert stored.startswith("v1:") and device.unlock_token.hex() not in stored  # sealed


async def test_a_device_error_fails_the_command_with_its_error_chain(
    apple: AppleService,
) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    unlock = await apple.queue(device_id, "unlock")
    device.unlock_token = b"another token"  # the device no longer accepts the stored one
    assert await device.poll(apple.client) == ["ClearPasscode"]
    failed = await apple.command(unlock)
    assert failed["state"] == "failed"
    assert failed["result"]["error_chain"][0]["code"] == 12021


async def test_bad_token_from_apns_marks_the_device_and_is_not_retried(
    apple: AppleService,
) -> None:
    device = await apple.device()
    device_id = apple.device_id(device)
    apple.apns.permanent[device.push_token.hex()] = (410, "Unregistered")
    await apple.queue(device_id, "request_inventory")
    with trio.fail_after(5):
        await apple.apns.until(lambda: len(apple.apns.refused) == 1)
    url = f"{API}/organisations/{apple.org.code}/devices/{device_id}/apple-mdm"
    with trio.fail_after(5):
        while True:
            view = (await apple.client.get(url, headers=apple.org.admin)).json()["enrolment"]
            if view["push_token_state"] == "refused":
                break
            await trio.sleep(0.02)
    assert view["push_token_refused_reason"] == "Unregistered"
    # Another command: no push goes to the refused token.
    other = await apple.device()
    await apple.queue(device_id, "lock")
    await apple.queue(apple.device_id(other), "lock")
    with trio.fail_after(5):
        (push,) = await apple.apns.wait_for(1)
    assert push.token == other.push_token.hex()
    assert len(apple.apns.refused) == 1
    # A new token from the device (TokenUpdate) is pushed again.
    device.push_token = bytes(32)
    assert (await device.token_update(apple.client)).status_code == 200
    await apple.queue(device_id, "locate")
    with trio.fail_after(5):
        await apple.apns.wait_for(2)
    assert apple.apns.pushes[1].token == bytes(32).hex()


async def test_transient_apns_errors_are_retried(apple: AppleService) -> None:
    device = await apple.device()
    apple.apns.transient.append((503, "ServiceUnavailable"))
    await apple.queue(apple.device_id(device), "lock")
    with trio.fail_after(5):
        (push,) = await apple.apns.wait_for(1)
    assert push.token == device.push_token.hex()
    assert apple.apns.refused[0][1:] == (503, "ServiceUnavailable")
