"""The store interface that every backend implements.

Domain operations never see a database connection. They hand the store a *unit of work*: a
plain synchronous function from :mod:`engine.store` (where all SQL lives) that takes a
connection and arguments. Writes go to one writer that commits many units together; reads
run on reader connections in worker threads, except point reads (:meth:`Store.lookup`),
which are cheaper to run than to hand over. Both backends (SQLite now, PostgreSQL later)
run the same units, which is why the SQL in them is kept plain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

#: A unit of work: runs inside a transaction (a savepoint, for writes) on the given connection.
Unit = Callable[..., T]


class StoreError(Exception):
    """The store could not do what was asked (closed, corrupt, out of space...)."""


class Conflict(StoreError):
    """A write broke a uniqueness or reference rule; nothing of it was kept."""


class Store(Protocol):
    @property
    def alive(self) -> bool:
        """False once the store can no longer accept writes."""
        ...

    async def write(self, unit: Callable[..., T], /, *args: Any) -> T:
        """Run ``unit(connection, *args)`` in its own savepoint; return once it is committed.

        If ``unit`` raises, its savepoint is rolled back, the exception is raised here, and
        the other writes committed with it are not affected.
        """
        ...

    async def write_point(self, unit: Callable[..., T], /, *args: Any) -> T:
        """Like :meth:`write`, for a *point* write: a few rows changed by a unique key.

        Committed with the other writes all the same; such a unit may run on the caller's
        thread, since it takes less than handing it to a worker thread and back (which,
        in Python, also means waiting for the GIL at each step the unit takes). A unit that
        may touch many rows goes through :meth:`write`.
        """
        ...

    async def read(self, unit: Callable[..., T], /, *args: Any) -> T:
        """Run ``unit(connection, *args)`` on a reader connection (a consistent snapshot)."""
        ...

    async def lookup(self, unit: Callable[..., T], /, *args: Any) -> T:
        """Like :meth:`read`, for a *point* read: a few lookups by a unique index.

        Such a unit takes microseconds, less than handing it to a worker thread and back,
        so it may run at once on the caller's thread. A unit that may scan, sort or read
        many rows goes through :meth:`read`, which never blocks the event loop.
        """
        ...
