"""The offload actor: pure CPU work done by a worker process, many calls per hand-off.

The service is one Python process, and its event loop holds the GIL: every microsecond of
Python it spends on one request is one no other request gets, while the machine's other
cores have nothing to do. Checking a device's signature and reading its message are pure
functions of the request's bytes (DER, a signature verification, a plist), a good part of
what a device message costs. This actor hands such calls to a worker process of its own
(``python -m engine.actors.offload``), which has its own GIL, and waits for the answers
without holding up the loop.

Handing over costs the loop a pickle and a pipe write, so the actor takes every call
queued while the previous batch was out, and sends them in one frame (as the store's
writer commits writes together). A frame is a 4-byte big-endian length and a pickle: a
list of :class:`Call` one way; the other, a list of answers, ``(True, value)`` or
``(False, exception)`` each pickled on its own, so that one that cannot travel fails only
its call. Only top-level functions with picklable arguments can be called; nothing in the
worker may touch the store or keep state a caller relies on.

Supervision is the runtime's: if the worker dies, the batch in flight fails with
:class:`~engine.actors.ActorDead`, the actor restarts with a fresh worker, and callers
decide what a failure means (the Apple routes then do the work themselves). On shutdown
the worker's input is closed, which ends it; a service killed outright leaves it an
end-of-file on its input, which ends it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import pickle
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import trio

from .runtime import Actor, ActorDead, ActorRef, Envelope, RestartPolicy, start

_LENGTH = struct.Struct(">I")
#: How long a worker gets to leave after its input closes before it is killed.
STOP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Call:
    """A top-level function and its arguments, to run in the worker process."""

    function: Callable[..., Any]
    args: tuple[Any, ...]


class Offload(Actor):
    #: A batch is as large as what queued while the previous one was out.
    batch_limit = 512

    def __init__(self) -> None:
        self._process: trio.Process | None = None
        self._received = bytearray()

    async def started(self) -> None:
        self._process = await trio.lowlevel.open_process(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for stream in (self._process.stdin, self._process.stdout):
            _widen(stream)

    async def handle_batch(self, envelopes: deque[Envelope]) -> None:
        batch = list(envelopes)
        envelopes.clear()
        try:
            results = await self._exchange([call for call, _ in batch])
        except BaseException:
            for _, reply in batch:
                if reply is not None:
                    reply.fail(ActorDead(self.ref.name))
            with trio.CancelScope(shield=True):
                await self.stopping()  # a crashed actor is not stopped: end its worker here
            raise
        for (_, reply), (ok, value) in zip(batch, results, strict=True):
            if reply is None:
                continue
            if ok:
                reply.send(value)
            else:
                reply.fail(value)

    async def _exchange(self, calls: list[Call]) -> list[tuple[bool, Any]]:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        await process.stdin.send_all(_frame(calls))
        while len(self._received) < _LENGTH.size:
            await self._receive(process.stdout)
        (size,) = _LENGTH.unpack_from(self._received)
        while len(self._received) < _LENGTH.size + size:
            await self._receive(process.stdout)
        payload = bytes(self._received[_LENGTH.size : _LENGTH.size + size])
        del self._received[: _LENGTH.size + size]
        answers: list[bytes] = pickle.loads(payload)
        if len(answers) != len(calls):
            raise RuntimeError("the offload worker answered another number of calls")
        return [pickle.loads(answer) for answer in answers]

    async def _receive(self, stdout: trio.abc.ReceiveStream) -> None:
        chunk = await stdout.receive_some(1 << 16)
        if not chunk:
            raise ActorDead(f"{self.ref.name}: the worker process ended")
        self._received += chunk

    async def stopping(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(STOP_SECONDS):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


#: Linux's F_SETPIPE_SZ: a pipe that holds a whole batch takes it in one write.
_SET_PIPE_SIZE = 1031
PIPE_BYTES = 1 << 20


def _widen(stream: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or over the user's limit
        fcntl.fcntl(stream.fileno(), _SET_PIPE_SIZE, PIPE_BYTES)


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


#: Calls wait in the mailbox while a worker is replaced: restart it quickly, and give up
#: (callers then do the work themselves) if it keeps dying.
POLICY = RestartPolicy(max_restarts=5, within=60.0, backoff_initial=0.05, backoff_max=1.0)


async def start_offload(nursery: trio.Nursery, name: str) -> ActorRef[Call]:
    """Start an offload actor and its worker; ``await ref.ask(Call(f, args))`` is ``f(*args)``
    computed in the worker. A worker that keeps crashing stops the actor for good (callers
    then get ``ActorDead`` at once), never the service."""
    return await start(nursery, Offload, name=name, capacity=4096, policy=POLICY, escalate=False)


# --------------------------------------------------------------------------- the worker


def _answer(call: Call) -> bytes:
    """One call's answer, pickled on its own: an answer that cannot travel (an exception
    pickle cannot rebuild, a value nested too deep) fails that call, not the worker."""
    try:
        answer: tuple[bool, Any] = (True, call.function(*call.args))
    except Exception as exc:
        answer = (False, exc)
    try:
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)  # it must arrive, not only leave
    except Exception as exc:
        ok, value = answer
        reason = (
            f"the answer cannot be sent back: {type(exc).__name__}"
            if ok
            else f"{type(value).__name__}: {value}"
        )
        payload = pickle.dumps((False, RuntimeError(reason[:500])), pickle.HIGHEST_PROTOCOL)
    return payload


def serve_calls(source: IO[bytes], sink: IO[bytes]) -> None:
    """The worker's loop: read a frame of calls, answer each, until the input ends."""
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (size,) = _LENGTH.unpack(head)
        calls: list[Call] = pickle.loads(source.read(size))
        sink.write(_frame([_answer(call) for call in calls]))
        sink.flush()


if __name__ == "__main__":
    frames = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the pipe
    serve_calls(sys.stdin.buffer, frames)
