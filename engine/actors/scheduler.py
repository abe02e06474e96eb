"""The WSDM scheduler: a timer that runs the scheduled jobs, claimed in the store.

The jobs themselves (overdue devices, scheduled notifications) live in
``engine/wsdm_schedules.py``; what they must remember (when each is next due, and which node
took it) is in the store, so schedules survive a restart and two nodes never both run one
job. This actor only decides *when* to look: every ``period`` seconds, and at once when told
(:meth:`poke`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger(__name__)


def node_name() -> str:
    """Who claims a job: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    def __init__(self, run_once: Callable[[], Awaitable[Any]], *, period: float = 30.0) -> None:
        self.run_once = run_once
        self.period = period
        self.passes = 0
        self._poked = trio.Event()

    def poke(self) -> None:
        """Run a pass now rather than at the end of the period."""
        self._poked.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Scheduler] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        while True:
            try:
                outcome = await self.run_once()
                if outcome:
                    log.debug("scheduled jobs: %r", outcome)
            except Exception:  # a failing pass is retried at the next one
                log.exception("scheduled jobs failed")
            self.passes += 1
            with trio.move_on_after(self.period):
                await self._poked.wait()
            self._poked = trio.Event()
