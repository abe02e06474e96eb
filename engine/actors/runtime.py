"""A small actor runtime on Trio.

An actor is an object that handles one message at a time from a bounded mailbox, in its own
Trio task. Callers hold an :class:`ActorRef` and either ``tell`` (fire and forget) or ``ask``
(wait for the answer, with a deadline). The design borrows from Erlang/OTP and Akka:

* **Bounded mailboxes.** Posting to a full mailbox raises :class:`MailboxFull` at once; the
  HTTP edge turns that into ``503`` with ``Retry-After`` instead of queueing without limit.
* **Let it crash.** An exception escaping :meth:`Actor.receive` fails only the message being
  handled (its asker gets :class:`ActorCrashed`); the loop then builds a fresh actor from its
  factory, after an exponential backoff, and carries on with the same mailbox, so callers
  holding the reference notice nothing. More than ``max_restarts`` within ``within`` seconds
  is no longer a transient fault: the actor stops for good and the failure escalates.
* **Every ask is answered.** A message is answered by its handler, fails with
  :class:`ActorCrashed` when the handler raises, or with :class:`ActorDead` when the actor
  stops for good or is cancelled; a later post raises :class:`ActorDead` at once. So an ask
  carries no timer of its own: deadlines belong to the edge that has a client waiting
  (``with trio.fail_after(...)``), the Trio way, and cost nothing on internal asks.
* **Passivation.** Its owner (a :class:`~engine.actors.registry.Registry`) may passivate an
  actor that is parked with an empty mailbox: the mailbox is closed in the same tick as the
  owner forgets it, so a later post raises :class:`ActorPassivated` and is retried on a
  fresh activation; no message can be caught in between.

Replies use Trio's low-level park/reschedule primitives rather than a channel per ask: an
ask is then one small object and one task switch, which is what makes tens of thousands
of them per second affordable on one core.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import outcome
import trio

log = logging.getLogger(__name__)

M = TypeVar("M")


class ActorError(Exception):
    """Base class of the errors the runtime raises to callers."""


class MailboxFull(ActorError):
    """The actor's mailbox is full: back off and try again later (backpressure)."""


class ActorDead(ActorError):
    """The actor has stopped for good; nothing posted to it will be handled."""


class ActorPassivated(ActorDead):
    """The actor stopped because it was idle; its owner may activate a fresh one."""


class ActorCrashed(ActorError):
    """The actor raised while handling this message; ``__cause__`` holds the exception."""


class Escalation(ActorError):
    """An actor crashed more often than its restart policy allows."""


class Reply:
    """A one-shot answer slot: the actor settles it once, the asker waits for it once.

    Settling an abandoned reply (its asker timed out or was cancelled) is harmless.
    """

    __slots__ = ("_result", "_task")

    def __init__(self) -> None:
        self._result: outcome.Outcome[Any] | None = None
        self._task: trio.lowlevel.Task | None = None

    @property
    def settled(self) -> bool:
        return self._result is not None

    def send(self, value: Any) -> None:
        self.settle(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self.settle(outcome.Error(error))

    def settle(self, result: outcome.Outcome[Any]) -> None:
        if self._result is not None:
            return
        self._result = result
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task, result)

    async def wait(self) -> Any:
        if self._result is not None:
            await trio.lowlevel.checkpoint()
            return self._result.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


Envelope = tuple[Any, Reply | None]


class ActorRef(Generic[M]):
    """The only handle callers get: post messages to the actor, never touch it directly."""

    __slots__ = ("__weakref__", "_send", "_stopped", "name")

    def __init__(self, name: str, send: trio.MemorySendChannel[Envelope]) -> None:
        self.name = name
        self._send = send
        self._stopped: type[ActorDead] | None = None

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}{' stopped' if self._stopped else ''}>"

    @property
    def alive(self) -> bool:
        return self._stopped is None

    def post(self, message: M, reply: Reply | None = None) -> None:
        """Queue ``message``; ``reply`` (if any) is settled by whoever ends up handling it."""
        try:
            self._send.send_nowait((message, reply))
        except trio.WouldBlock:
            raise MailboxFull(self.name) from None
        except trio.ClosedResourceError:
            raise (self._stopped or ActorDead)(self.name) from None

    def tell(self, message: M) -> None:
        """Queue ``message`` without waiting for it to be handled."""
        self.post(message)

    async def ask(self, message: M) -> Any:
        """Queue ``message`` and wait for the actor's answer (see "Every ask is answered")."""
        reply = Reply()
        self.post(message, reply)
        return await reply.wait()

    def stop(self) -> None:
        """Ask the actor to stop once it has handled what is already queued."""
        self._close(ActorDead)

    def _close(self, reason: type[ActorDead]) -> None:
        if self._stopped is None:
            self._stopped = reason
        self._send.close()


class Actor:
    """Base class: override :meth:`receive`; its return value answers an ``ask``.

    ``self.ref`` is the actor's own reference, set before :meth:`started` runs.
    """

    ref: ActorRef[Any]
    _reply: Reply | None = None
    #: How many queued messages one batch takes before other tasks get to run. An actor
    #: that only routes (a listener) or commits in groups (the store's writer) takes more.
    batch_limit: int = 256

    async def started(self) -> None:
        """Runs in the actor's task before the first message (and after every restart)."""

    async def receive(self, message: Any) -> Any:
        raise NotImplementedError

    async def stopping(self) -> None:
        """Runs when the actor stops normally or is passivated, after its mailbox is drained."""

    async def handle_batch(self, envelopes: deque[Envelope]) -> None:
        """Handle queued envelopes, leftmost first.

        The default handles one at a time through :meth:`receive`. An actor that gains from
        seeing several messages at once (the store's writer commits them together) overrides
        this; it must pop what it takes and settle each reply. Whatever is left in
        ``envelopes`` after a crash is handled by the restarted actor.
        """
        while envelopes:
            message, reply = envelopes.popleft()
            self._reply = reply
            try:
                result = await self.receive(message)
            except BaseException as exc:
                reply, self._reply = self._reply, None
                if reply is not None:
                    reply.fail(_failure(self.ref.name, message, exc))
                raise
            reply, self._reply = self._reply, None
            if reply is not None:
                reply.send(result)

    def forward(self, target: ActorRef[Any], message: Any) -> None:
        """Hand the current message's reply to ``target``: it, not this actor, answers."""
        reply, self._reply = self._reply, None
        try:
            target.post(message, reply)
        except ActorError as exc:
            if reply is not None:
                reply.fail(exc)


def _failure(name: str, message: Any, exc: BaseException) -> ActorError:
    """What the asker of a message learns when handling it ended in ``exc``."""
    if not isinstance(exc, Exception):  # cancelled: the service is shutting down
        return ActorDead(name)
    crashed = ActorCrashed(f"{name} crashed on {type(message).__name__}: {exc!r}")
    crashed.__cause__ = exc
    return crashed


@dataclass(frozen=True)
class RestartPolicy:
    """How a crashed actor is restarted (backoff) and when to give up (escalation)."""

    max_restarts: int = 5
    within: float = 30.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))


DEFAULT_POLICY = RestartPolicy()


ActorFactory = Callable[[], Actor]
#: Called once the actor has stopped for good, with the escalated error or None.
ExitHook = Callable[[ActorRef[Any], BaseException | None], None]


class Runner:
    """The loop behind one actor: mailbox, supervision, clean stop; passivation on request."""

    __slots__ = (
        "after",
        "escalate",
        "factory",
        "finished",
        "last_active",
        "on_exit",
        "pending",
        "policy",
        "receive",
        "ref",
    )

    def __init__(
        self,
        factory: ActorFactory,
        name: str,
        capacity: int,
        policy: RestartPolicy,
        on_exit: ExitHook | None,
        escalate: bool,
        after: trio.Event | None = None,
    ) -> None:
        send, self.receive = trio.open_memory_channel[Envelope](capacity)
        #: Set once the actor has stopped for good (after its ``stopping``).
        self.finished = trio.Event()
        #: Wait for this before starting: the previous activation of the same key handing
        #: its state over (what it posts meanwhile waits in the mailbox).
        self.after = after
        self.ref: ActorRef[Any] = ActorRef(name, send)
        self.factory = factory
        self.policy = policy
        self.on_exit = on_exit
        self.escalate = escalate
        self.pending: deque[Envelope] = deque()
        #: When the actor last went to wait for mail (Trio clock).
        self.last_active = 0.0

    def passivate_if_idle(self, idle_since: float) -> bool:
        """Close the mailbox if the actor has waited for mail, with none arriving, since
        before ``idle_since``. Synchronous, so the owner forgets the actor in the same tick."""
        # Waiting in receive() with an empty buffer: a message handed straight to the waiting
        # task would already have taken it off the waiting list.
        mailbox = self.receive.statistics()
        if (
            mailbox.tasks_waiting_receive == 1
            and mailbox.current_buffer_used == 0
            and self.last_active <= idle_since
        ):
            self.ref._close(ActorPassivated)
            return True
        return False

    async def run(
        self, task_status: trio.TaskStatus[ActorRef[Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        error: BaseException | None = None
        try:
            if self.after is not None:
                await self.after.wait()
                self.after = None
            await self._supervise(task_status)
        except Escalation as exc:
            error = exc
            if self.escalate:
                raise
            log.error("%s stopped for good: %s", self.ref.name, exc.__cause__ or exc)
        finally:
            self._answer_leftovers()
            self.finished.set()
            if self.on_exit is not None:
                self.on_exit(self.ref, error)

    async def _supervise(self, task_status: trio.TaskStatus[ActorRef[Any]]) -> None:
        restarts: deque[float] | None = None  # most actors never crash: made on the first
        started = False
        while True:
            actor = self.factory()
            actor.ref = self.ref
            try:
                await actor.started()
                if not started:
                    started = True
                    task_status.started(self.ref)
                await self._loop(actor)
                await _stop(actor)
                return
            except trio.Cancelled:
                await _stop(actor)  # shutting down: the actor still hands its state over
                raise
            except Exception as exc:
                restarts = restarts if restarts is not None else deque()
                now = trio.current_time()
                while restarts and now - restarts[0] > self.policy.within:
                    restarts.popleft()
                if len(restarts) >= self.policy.max_restarts:
                    self.ref._close(ActorDead)
                    raise Escalation(
                        f"{self.ref.name} crashed {len(restarts) + 1} times "
                        f"within {self.policy.within}s"
                    ) from exc
                restarts.append(now)
                log.warning("%s crashed; restart %d", self.ref.name, len(restarts), exc_info=exc)
                await trio.sleep(self.policy.backoff(len(restarts)))

    async def _loop(self, actor: Actor) -> None:
        receive, pending, limit = self.receive, self.pending, actor.batch_limit
        while True:
            if not pending:
                try:
                    pending.append(receive.receive_nowait())
                except trio.WouldBlock:
                    pass
                except trio.EndOfChannel:
                    return
                if not pending:
                    # Park outside the except clause: a parked actor keeps no traceback alive.
                    self.last_active = trio.current_time()
                    try:
                        pending.append(await receive.receive())
                    except trio.EndOfChannel:
                        return
                # Take what else is queued so a batch-minded actor sees it all at once.
                while len(pending) < limit:
                    try:
                        pending.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
            await actor.handle_batch(pending)
            await trio.lowlevel.checkpoint()

    def _answer_leftovers(self) -> None:
        """Answer everything still queued once the actor is gone for good."""
        self.ref._close(self.ref._stopped or ActorDead)
        while True:
            if self.pending:
                _, reply = self.pending.popleft()
            else:
                try:
                    _, reply = self.receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if reply is not None:
                reply.fail(ActorDead(self.ref.name))


#: How long an actor's ``stopping`` may take; it runs shielded, so it needs a bound.
STOP_DEADLINE = 10.0


async def _stop(actor: Actor) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(STOP_DEADLINE) as scope:
        try:
            await actor.stopping()
        except Exception:
            log.exception("%s failed while stopping", actor.ref.name)
    if scope.cancelled_caught:
        log.error("%s did not stop within %ss", actor.ref.name, STOP_DEADLINE)


def spawn(
    nursery: trio.Nursery,
    factory: ActorFactory,
    *,
    name: str,
    capacity: int = 64,
    policy: RestartPolicy = DEFAULT_POLICY,
    on_exit: ExitHook | None = None,
    escalate: bool = True,
    after: trio.Event | None = None,
) -> Runner:
    """Start an actor without waiting; messages posted before it runs wait in its mailbox.

    This is what activation on demand needs: the reference (``.ref``) exists, and can be
    registered, in the same tick as the request that asked for it. With ``after``, the
    actor starts only once that event is set.
    """
    runner = Runner(factory, name, capacity, policy, on_exit, escalate, after)
    nursery.start_soon(runner.run, name=name)
    return runner


async def start(
    nursery: trio.Nursery,
    factory: ActorFactory,
    *,
    name: str,
    capacity: int = 64,
    policy: RestartPolicy = DEFAULT_POLICY,
    on_exit: ExitHook | None = None,
    escalate: bool = True,
) -> ActorRef[Any]:
    """Start an actor and return its reference once its :meth:`Actor.started` succeeded."""
    runner = Runner(factory, name, capacity, policy, on_exit, escalate)
    return await nursery.start(runner.run, name=name)
