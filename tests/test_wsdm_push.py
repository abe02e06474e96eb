"""Push through a real Prosody: a queued command wakes the device, which checks in at once;
Prosody restarted mid-test, the service reconnects and the pushes queued meanwhile arrive."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from bench.prosody import Prosody, running_prosody
from bench.wsdm_sim import WsdmError, answer_pushes, push_listeners

from .wsdm_world import WsdmService, wsdm_service


async def wait_for_state(
    service: WsdmService, org: str, manager: dict[str, str], command_id: str, state: str
) -> None:
    """Poll the REST API (what an administrator sees) until the command is in ``state``."""
    while True:
        if (await service.command(org, manager, command_id))["state"] == state:
            return
        await trio.sleep(0.02)


async def test_a_queued_command_is_pushed_and_done_well_before_the_interval(
    tmp_path: Path,
) -> None:
    with running_prosody(tmp_path / "prosody") as prosody:
        async with wsdm_service(tmp_path, prosody) as service:
            manager = await service.organisation("acme")
            device_id, code = await service.new_device("acme", manager)
            device = await service.simulator.enrol(code)
            assert device.push is not None
            assert device.push["jid"] == f"{device_id}@{prosody.domain}"
            assert device.configuration["xmpp_server"] == f"127.0.0.1:{prosody.port}"
            assert device.configuration["connection_interval_seconds"] == 3600
            async with push_listeners("127.0.0.1", prosody.port) as listeners:
                with trio.fail_after(5):
                    await listeners.listen([device])
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer_pushes, service.simulator, listeners)
                    lock = await service.queue("acme", manager, device_id, "lock")
                    with trio.fail_after(5):  # the interval is an hour
                        await wait_for_state(service, "acme", manager, lock, "acknowledged")
                    nursery.cancel_scope.cancel()
            assert device.pushes == 1 and device.checkins == 1
            # Removed by the service: told at its next request, and its XMPP account goes.
            assert prosody.has_account(device_id)
            removed = await service.client.delete(
                f"/api/v1/organisations/acme/devices/{device_id}", headers=manager
            )
            assert removed.status_code == 204
            with pytest.raises(WsdmError) as refused:
                await service.simulator.check_in(device)
            assert refused.value.status == 410
            assert not prosody.has_account(device_id)


async def test_prosody_restarted_the_pushes_queued_meanwhile_arrive(tmp_path: Path) -> None:
    with running_prosody(tmp_path / "prosody") as prosody:
        async with wsdm_service(tmp_path, prosody) as service:
            manager = await service.organisation("acme")
            device_id, code = await service.new_device("acme", manager)
            device = await service.simulator.enrol(code)
            async with push_listeners("127.0.0.1", prosody.port) as listeners:
                with trio.fail_after(5):
                    await listeners.listen([device])
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer_pushes, service.simulator, listeners)
                    prosody.stop()
                    listeners.mark_all_offline()
                    lock = await service.queue("acme", manager, device_id, "lock")
                    await trio.sleep(0.3)  # queued while the server is away
                    assert (await service.command("acme", manager, lock))["state"] == "queued"
                    prosody.start()
                    with trio.fail_after(10):
                        await wait_for_state(service, "acme", manager, lock, "acknowledged")
                    nursery.cancel_scope.cancel()
            assert device.pushes >= 1


async def test_a_device_enrolled_while_xmpp_was_away_gets_its_push_identity_later(
    tmp_path: Path,
) -> None:
    prosody = Prosody.configure(tmp_path / "prosody")  # configured, not started yet
    try:
        async with wsdm_service(tmp_path, prosody) as service:
            manager = await service.organisation("acme")
            device_id, code = await service.new_device("acme", manager)
            device = await service.simulator.enrol(code)
            assert device.push is None  # the XMPP server was not there
            prosody.start()
            answer = await service.simulator.check_in(device)  # says it has no push identity
            assert answer["push"]["jid"] == f"{device_id}@{prosody.domain}"
            async with push_listeners("127.0.0.1", prosody.port) as listeners:
                with trio.fail_after(5):
                    await listeners.listen([device])
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer_pushes, service.simulator, listeners)
                    lock = await service.queue("acme", manager, device_id, "lock")
                    with trio.fail_after(5):
                        await wait_for_state(service, "acme", manager, lock, "acknowledged")
                    nursery.cancel_scope.cancel()
    finally:
        prosody.stop()


async def test_a_push_identity_given_at_a_check_in_is_recorded_and_goes_at_unenrolment(
    tmp_path: Path,
) -> None:
    with running_prosody(tmp_path / "prosody") as prosody:
        async with wsdm_service(tmp_path, prosody) as service:
            manager = await service.organisation("acme")
            device_id, code = await service.new_device("acme", manager)
            device = await service.simulator.enrol(code)
            # As if enrolled while push was off: no push identity, no XMPP account.
            with sqlite3.connect(service.running.bootstrap.database.path) as conn:
                conn.execute("UPDATE wsdm_devices SET push_jid = NULL")
            prosody.prosodyctl("deluser", f"{device_id}@{prosody.domain}")
            device.push = None
            answer = await service.simulator.check_in(device)  # asks for a push identity
            jid = f"{device_id}@{prosody.domain}"
            assert answer["push"]["jid"] == jid and prosody.has_account(device_id)
            with sqlite3.connect(service.running.bootstrap.database.path) as conn:
                stored = conn.execute("SELECT push_jid FROM wsdm_devices").fetchone()[0]
            assert stored == jid  # the scheduler's notifications reach it
            left = await service.client.post(
                "/api/v1/wsdm/unenrol", json={"version": 1}, headers=device.auth
            )
            assert left.status_code == 200, left.text
            assert not prosody.has_account(device_id)
