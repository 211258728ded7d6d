"""One build of an embedding table (rows or index) at a time in this process."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from ..catalog.tables import Catalog

_BUILDS: dict[tuple, threading.Lock] = {}
_BUILDS_LOCK = threading.Lock()


@contextmanager
def building(catalog: Catalog, table: str, wait: bool = True):
    """One build of a table of a database at a time in this process (DuckDB lets only one
    process write a database file). With ``wait=False`` it yields whether the lock was free."""
    with _BUILDS_LOCK:
        lock = _BUILDS.setdefault((catalog.database_key(), table), threading.Lock())
    got = lock.acquire(blocking=wait)
    try:
        yield got
    finally:
        if got:
            lock.release()
