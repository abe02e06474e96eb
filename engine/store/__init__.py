"""Persistence: one interface (:mod:`.base`), SQLite as the embedded backend.

All SQL of the service lives in this package, in small synchronous *units of work* that
domain operations hand to :meth:`Store.write` or :meth:`Store.read`.
"""

from .base import Conflict, Store, StoreError
from .sqlite import SQLiteStore, open_sqlite_store

__all__ = ["Conflict", "SQLiteStore", "Store", "StoreError", "open_sqlite_store"]
