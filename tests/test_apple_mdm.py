"""Apple MDM through the running service, with the device simulator and the APNs test server."""

from __future__ import annotations

import pytest

from .apple_support import AppleService, apple  # noqa: F401  (the fixture)
from .test_api_commands import API

pytestmark = pytest.mark.trio


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

    assert await device.poll(apple.client) == ["DeviceInformation"]
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
