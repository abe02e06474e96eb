"""The asyncio thread the XMPP clients live on, seen from Trio."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from engine.actors.xmpp import AsyncioThread


async def test_calls_run_on_the_loop_thread_and_answer_or_raise() -> None:
    thread = AsyncioThread("test-bridge")
    try:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert await thread.call(where) == "test-bridge"

        async def fails() -> None:
            raise LookupError("from asyncio")

        with pytest.raises(LookupError, match="from asyncio"):
            await thread.call(fails)

        seen: list[int] = []
        thread.soon(seen.append, 1)
        assert await thread.call(lambda: asyncio.sleep(0, result=len(seen))) == 1
    finally:
        await thread.stop()


async def test_a_cancelled_call_cancels_the_coroutine() -> None:
    thread = AsyncioThread("test-bridge")
    cancelled = threading.Event()
    try:

        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with trio.move_on_after(0.05):
            await thread.call(forever)
        await trio.to_thread.run_sync(cancelled.wait, 5)
        assert cancelled.is_set()
    finally:
        await thread.stop()
