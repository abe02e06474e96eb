"""The actor runtime: asks, backpressure, supervision, passivation, device sessions."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from engine.actors import (
    Actor,
    ActorCrashed,
    ActorDead,
    ActorPassivated,
    DeviceRequest,
    Escalation,
    MailboxFull,
    Registry,
    RestartPolicy,
    spawn,
    start,
    start_listener,
)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Counter(Actor):
    """Counts; 'boom' crashes it; 'slow' takes ten seconds."""

    instances = 0

    def __init__(self, log: list[Any] | None = None) -> None:
        Counter.instances += 1
        self.count = 0
        self.log = log if log is not None else []

    async def receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "slow":
            await trio.sleep(10)
        self.count += 1
        self.log.append(message)
        return self.count

    async def stopping(self) -> None:
        self.log.append("stopped")


async def test_ask_answers_in_order_and_tell_does_not_wait() -> None:
    async with trio.open_nursery() as nursery:
        log: list[Any] = []
        ref = await start(nursery, lambda: Counter(log), name="counter")
        ref.tell("a")
        ref.tell("b")
        assert await ref.ask("c") == 3
        assert log == ["a", "b", "c"]
        ref.stop()
    assert log[-1] == "stopped"


async def test_full_mailbox_is_backpressure_not_memory() -> None:
    async with trio.open_nursery() as nursery:
        ref = await start(nursery, Counter, name="counter", capacity=2)
        ref.tell("slow")  # the actor picks this one up...
        await trio.testing.wait_all_tasks_blocked()
        ref.tell(1)
        ref.tell(2)  # ...and these two fill the mailbox
        with pytest.raises(MailboxFull):
            ref.tell(3)
        nursery.cancel_scope.cancel()


async def test_crash_fails_only_that_message_and_restarts_with_backoff(clock: Any) -> None:
    policy = RestartPolicy(max_restarts=3, within=60, backoff_initial=1.0, backoff_max=8.0)
    async with trio.open_nursery() as nursery:
        Counter.instances = 0
        ref = await start(nursery, Counter, name="counter", policy=policy)
        assert await ref.ask("x") == 1
        before = trio.current_time()
        with pytest.raises(ActorCrashed) as crashed:
            await ref.ask("boom")
        assert isinstance(crashed.value.__cause__, RuntimeError)
        # The next message waits out the first backoff (1 s) and meets a fresh actor.
        assert await ref.ask("y") == 1
        assert trio.current_time() - before == pytest.approx(1.0)
        assert Counter.instances == 2
        with pytest.raises(ActorCrashed):
            await ref.ask("boom")
        before = trio.current_time()
        assert await ref.ask("z") == 1
        assert trio.current_time() - before == pytest.approx(2.0)  # backoff doubled
        ref.stop()


async def test_crash_loop_escalates_to_the_parent_and_answers_waiting_callers(
    clock: Any,
) -> None:
    policy = RestartPolicy(max_restarts=2, within=60, backoff_initial=0.1)
    outcomes: list[str] = []

    async def caller(ref: Any, message: str) -> None:
        try:
            await ref.ask(message)
            outcomes.append("ok")
        except ActorCrashed:
            outcomes.append("crashed")
        except ActorDead:
            outcomes.append("dead")

    with pytest.RaisesGroup(pytest.RaisesExc(Escalation)):
        async with trio.open_nursery() as nursery:
            ref = await start(nursery, Counter, name="counter", policy=policy)
            async with trio.open_nursery() as callers:
                for message in ["boom", "boom", "boom", "after-1", "after-2"]:
                    callers.start_soon(caller, ref, message)
                    await trio.testing.wait_all_tasks_blocked()
    # Three crashes (two restarts allowed), then the queued callers learn it at once.
    assert sorted(outcomes) == ["crashed", "crashed", "crashed", "dead", "dead"]
    assert not ref.alive


async def test_ask_to_a_dead_actor_fails_at_once(clock: Any) -> None:
    exits: list[Any] = []
    async with trio.open_nursery() as nursery:
        ref = spawn(
            nursery,
            Counter,
            name="counter",
            policy=RestartPolicy(max_restarts=0),
            escalate=False,
            on_exit=lambda r, error: exits.append(error),
        ).ref
        with pytest.raises(ActorCrashed):
            await ref.ask("boom")
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(exits[0], Escalation)
        before = trio.current_time()
        with pytest.raises(ActorDead):
            await ref.ask("hello")
        with pytest.raises(ActorDead):
            ref.tell("hello")
        assert trio.current_time() == before  # no deadline waited out


async def test_the_caller_sets_the_deadline_and_a_late_answer_is_harmless(clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        ref = await start(nursery, Counter, name="counter")
        with trio.move_on_after(1) as scope:
            await ref.ask("slow")  # takes ten seconds
        assert scope.cancelled_caught
        assert await ref.ask("next") == 2  # the abandoned ask was still handled, once
        ref.stop()


async def test_registry_activates_on_demand_and_passivates_when_idle(clock: Any) -> None:
    log: list[Any] = []
    async with trio.open_nursery() as nursery:
        registry: Registry[str] = Registry(nursery, lambda key: Counter(log), kind="t", idle=10)
        assert await registry.ask("a", "m1") == 1
        assert "a" in registry
        await trio.sleep(9)
        assert "a" in registry
        await trio.sleep(4)  # passivated between idle and 1.25 x idle
        assert "a" not in registry
        assert log == ["m1", "stopped"]
        assert await registry.ask("a", "m2") == 1  # a fresh activation
        assert registry.activations == 2
        nursery.cancel_scope.cancel()


async def test_passivation_never_catches_a_message(clock: trio.testing.MockClock) -> None:
    handled: list[str] = []

    class Recorder(Actor):
        async def receive(self, message: str) -> None:
            handled.append(message)

    async with trio.open_nursery() as nursery:
        registry: Registry[str] = Registry(nursery, lambda key: Recorder(), kind="t", idle=1)
        stale = registry.get("k")
        await trio.testing.wait_all_tasks_blocked()  # parked, nothing queued
        clock.jump(5)
        stale.tell("queued")  # arrives before the actor runs again...
        assert registry.passivate_idle() == 0  # ...so it is not idle, whatever the clock says
        await trio.testing.wait_all_tasks_blocked()
        assert handled == ["queued"]
        clock.jump(5)
        assert registry.passivate_idle() == 1
        # A caller still holding the old reference is told so; the registry re-routes it.
        with pytest.raises(ActorPassivated):
            stale.tell("late")
        registry.tell("k", "late")

        # Many senders at random moments, often right at the idle deadline: every message
        # lands exactly once, across many activations.
        async def sender(i: int) -> None:
            await trio.sleep(random.uniform(0, 600))  # gaps around the idle period
            registry.tell("k", f"m{i}")

        async with trio.open_nursery() as senders:
            for i in range(500):
                senders.start_soon(sender, i)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert sorted(handled) == sorted(["queued", "late", *(f"m{i}" for i in range(500))])
    assert registry.activations > 20


class Echo:
    """Session logic for tests: echoes, and crashes on 'boom'."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.seen = 0

    async def handle(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError(f"{self.key} exploded")
        self.seen += 1
        return (self.key, message, self.seen)

    async def close(self) -> None:
        pass


async def test_listener_routes_to_device_sessions_and_a_crash_stays_with_its_device(
    clock: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        listener = await start_listener(
            nursery,
            "test",
            Echo,
            policy=RestartPolicy(max_restarts=1, within=60, backoff_initial=0.1),
        )
        keys = [f"dev{i}" for i in range(100)]
        for key in keys:
            assert await listener.ref.ask(DeviceRequest(key, "hi")) == (key, "hi", 1)
        # dev0 crashes until its session gives up; its neighbours never notice.
        for _ in range(2):
            with pytest.raises(ActorCrashed):
                await listener.ref.ask(DeviceRequest("dev0", "boom"))
        await trio.testing.wait_all_tasks_blocked()
        assert "dev0" not in listener.sessions
        for key in keys[1:]:
            assert await listener.ref.ask(DeviceRequest(key, "again")) == (key, "again", 2)
        # ...and dev0 itself comes back on its next request, as a fresh session.
        assert await listener.ref.ask(DeviceRequest("dev0", "back")) == ("dev0", "back", 1)
        assert listener.ref.alive
        nursery.cancel_scope.cancel()


async def test_a_busy_device_session_reports_backpressure() -> None:
    class Stuck:
        def __init__(self, key: str) -> None:
            pass

        async def handle(self, message: Any) -> Any:
            await trio.sleep_forever()

        async def close(self) -> None:
            pass

    async with trio.open_nursery() as nursery:
        listener = await start_listener(nursery, "test", Stuck, session_capacity=1)
        for i in (1, 2):  # one in hand, one waiting in the session's mailbox
            nursery.start_soon(listener.ref.ask, DeviceRequest("d", i))
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(MailboxFull):
            await listener.ref.ask(DeviceRequest("d", 3))
        nursery.cancel_scope.cancel()


async def test_stop_drains_the_mailbox_first() -> None:
    log: list[Any] = []
    async with trio.open_nursery() as nursery:
        ref = await start(nursery, lambda: Counter(log), name="counter")
        for i in range(5):
            ref.tell(i)
        ref.stop()
        with pytest.raises(ActorDead):
            ref.tell("too late")
    assert log == [0, 1, 2, 3, 4, "stopped"]


class Slow:
    """Session logic whose hand-off (close) takes a while; it records what happens when."""

    def __init__(self, key: str, log: list[str]) -> None:
        self.key = key
        self.log = log

    async def handle(self, message: Any) -> Any:
        self.log.append(f"handle {message}")
        return message

    async def close(self) -> None:
        self.log.append("close starts")
        await trio.sleep(5)
        self.log.append("close ends")


async def test_a_device_never_has_two_sessions_while_one_hands_over(
    clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        listener = await start_listener(nursery, "t", lambda key: Slow(key, log), session_idle=1)
        await listener.ref.ask(DeviceRequest("d", "first"))
        await trio.testing.wait_all_tasks_blocked()
        clock.jump(5)
        assert listener.sessions.passivate_idle() == 1
        await trio.testing.wait_all_tasks_blocked()  # the old session's close has begun...
        assert log[-1] == "close starts"
        # ...and a request for the same device waits for it rather than meeting a second
        # session working on half-handed-over state.
        assert await listener.ref.ask(DeviceRequest("d", "second")) == "second"
        nursery.cancel_scope.cancel()
    assert log == [
        "handle first",
        "close starts",
        "close ends",
        "handle second",
        "close starts",
        "close ends",
    ]


async def test_shutdown_lets_every_session_hand_over(clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        listener = await start_listener(nursery, "t", lambda key: Slow(key, log))
        for key in ("a", "b", "c"):
            await listener.ref.ask(DeviceRequest(key, key))
        await listener.sessions.aclose()
        assert log.count("close ends") == 3
        assert len(listener.sessions) == 0
        # Cancellation (a second signal) still runs the hand-off of a live session.
        await listener.ref.ask(DeviceRequest("d", "d"))
        nursery.cancel_scope.cancel()
    assert log.count("close ends") == 4
