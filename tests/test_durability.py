"""Nothing acknowledged is lost: SIGKILL the real service mid-stream, restart, check."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import httpx
import pytest
import trio

from . import service_process
from .conftest import NEW_PASSWORD, bearer, supervisor_token

WRITERS = 24
KILL_AFTER = 300  # acknowledged writes before the kill


@pytest.mark.slow
async def test_every_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "emm.log"
    one_time = await trio.to_thread.run_sync(service_process.init, data)
    process, urls = await service_process.serve(data, log)
    acknowledged: set[str] = set()
    attempted = 0
    try:
        async with httpx.AsyncClient(base_url=urls["http"], timeout=30) as client:
            auth = bearer(await supervisor_token(client, one_time))
            enough = trio.Event()

            async def writer(n: int) -> None:
                nonlocal attempted
                for i in range(10_000):
                    code = f"w{n}-{i}"
                    attempted += 1
                    try:
                        response = await client.post(
                            "/api/v1/organisations",
                            json={"code": code, "short_name": code},
                            headers=auth,
                        )
                    except httpx.TransportError:
                        return  # the service is gone
                    if response.status_code == 201:
                        acknowledged.add(code)
                        if len(acknowledged) >= KILL_AFTER:
                            enough.set()

            async with trio.open_nursery() as nursery:
                for n in range(WRITERS):
                    nursery.start_soon(writer, n)
                with trio.fail_after(120):
                    await enough.wait()
                process.send_signal(signal.SIGKILL)  # no chance to flush or say goodbye
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert attempted > len(acknowledged)  # requests were in flight at the kill

    process, urls = await service_process.serve(data, log)
    try:
        async with httpx.AsyncClient(base_url=urls["http"], timeout=30) as client:
            # The password changed before the kill is still the password.
            login = await client.post(
                "/api/v1/auth/token", json={"login": "supervisor", "password": NEW_PASSWORD}
            )
            assert login.status_code == 201, login.text
            listed = await client.get(
                "/api/v1/organisations", headers=bearer(login.json()["token"])
            )
            stored = {item["code"] for item in listed.json()["items"]}
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await process.wait()
    assert process.returncode == 0  # a clean stop after SIGTERM
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    with sqlite3.connect(data / "emm.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
