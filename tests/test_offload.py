"""The offload actor: pure calls computed in a worker process, batched, supervised."""

from __future__ import annotations

import operator
import os
import signal

import pytest
import trio

from engine.actors import ActorDead
from engine.actors.offload import Call, start_offload


class Unpicklable(Exception):
    def __init__(self, first: str, second: str) -> None:  # pickle cannot rebuild it
        super().__init__(f"{first} {second}")


def raise_unpicklable() -> None:
    raise Unpicklable("cannot", "travel")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _gone(pid: int) -> bool:
    for _ in range(100):
        if not _alive(pid):
            return True
        await trio.sleep(0.05)
    return False


async def test_calls_run_in_the_worker_and_answer_their_own_caller() -> None:
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "test")
        assert await offload.ask(Call(os.getpid, ())) != os.getpid()

        answers: dict[int, int] = {}

        async def multiply(n: int) -> None:
            answers[n] = await offload.ask(Call(operator.mul, (n, 7)))

        async with trio.open_nursery() as callers:  # queued together: sent as batches
            for n in range(300):
                callers.start_soon(multiply, n)
        assert answers == {n: n * 7 for n in range(300)}
        nursery.cancel_scope.cancel()


async def test_an_exception_comes_back_to_its_caller_only() -> None:
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "test")
        with pytest.raises(ZeroDivisionError):
            await offload.ask(Call(operator.truediv, (1, 0)))
        with pytest.raises(RuntimeError, match="Unpicklable: cannot travel"):
            await offload.ask(Call(raise_unpicklable, ()))
        assert await offload.ask(Call(operator.add, (2, 3))) == 5  # the worker lives on
        nursery.cancel_scope.cancel()


async def test_a_worker_that_dies_fails_its_batch_and_is_replaced() -> None:
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "test")
        first = await offload.ask(Call(os.getpid, ()))
        with pytest.raises(ActorDead):
            await offload.ask(Call(os.kill, (first, signal.SIGKILL)))
        with trio.fail_after(10):
            second = await offload.ask(Call(os.getpid, ()))
        assert second != first
        assert await _gone(first)  # ended and reaped, not left a zombie
        nursery.cancel_scope.cancel()


async def test_the_worker_ends_with_its_actor() -> None:
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "test")
        pid = await offload.ask(Call(os.getpid, ()))
        assert _alive(pid)
        offload.stop()
        with pytest.raises(ActorDead):
            await offload.ask(Call(operator.add, (1, 1)))
        assert await _gone(pid)
        nursery.cancel_scope.cancel()


async def test_the_worker_ends_when_the_service_is_cancelled() -> None:
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "test")
        pid = await offload.ask(Call(os.getpid, ()))
        nursery.cancel_scope.cancel()
    assert await _gone(pid)


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


async def test_an_answer_that_cannot_travel_fails_its_call_only() -> None:
    async with trio.open_nursery() as nursery:
        offload = await start_offload(nursery, "test")
        pid = await offload.ask(Call(os.getpid, ()))
        answers: dict[str, object] = {}

        async def ask(name: str, call: Call) -> None:
            try:
                answers[name] = await offload.ask(call)
            except Exception as exc:
                answers[name] = exc

        async with trio.open_nursery() as callers:  # one batch: too deep for pickle, and not
            callers.start_soon(ask, "deep", Call(nested, (5000,)))
            callers.start_soon(ask, "plain", Call(operator.add, (2, 2)))
        assert isinstance(answers["deep"], RuntimeError)
        assert "cannot be sent back" in str(answers["deep"])
        assert answers["plain"] == 4
        assert await offload.ask(Call(os.getpid, ())) == pid  # the same worker, alive
        nursery.cancel_scope.cancel()
