"""Progress and cancellation of long work in this process.

The state layer reports (``task = progress.start("embedding patents", total)`` then
``task.advance(n)``); a front end polls ``progress.active()`` from another thread while a
query runs. Training jobs report through ``jammi.jobs`` instead, which any client can read.

Cancelling: DuckDB runs a Python function on the thread that runs the query and only looks
at ``con.interrupt()`` between calls, so a long jammi call runs inside ``with
progress.call():`` and checks ``progress.check()`` after each micro-batch. A front end that
interrupts a query also calls ``progress.cancel(thread)``; the call then raises
:class:`~jammi_sql.errors.CancelledError` and its transaction rolls back.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import CancelledError

_lock = threading.RLock()  # reentrant: the Ctrl-C handler may run while it is held
_active: dict[int, Task] = {}
_warnings: list[str] = []
_ids = itertools.count(1)
_calls: Counter[int] = Counter()  # thread -> jammi calls running on it (nested ones count)
_owners: dict[int, object] = {}  # thread -> whose call it is (a Context)
_cancelled: set[int] = set()  # threads whose running call must stop


@dataclass
class Task:
    description: str
    total: int
    done: float = 0
    started: float = field(default_factory=time.monotonic)
    id: int = 0
    counted: bool = True  # done/total count things (rows, texts); False: only the fraction

    @property
    def rate(self) -> float:
        """Done per second so far."""
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def advance(self, n: float = 1) -> None:
        with _lock:
            self.done = min(self.total, self.done + n)

    def update(self, done: float) -> None:
        with _lock:
            self.done = max(0, min(self.total, done))

    def close(self) -> None:
        with _lock:
            _active.pop(self.id, None)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start(description: str, total: int, counted: bool = True) -> Task:
    task = Task(description, max(int(total), 0), id=next(_ids), counted=counted)
    with _lock:
        _active[task.id] = task
    return task


_tallies: dict[str, Task] | None = None  # description -> running count, while watched


@contextmanager
def watching() -> Iterator[None]:
    """A front end shows bars while this is open: work whose total nobody knows ahead (``embed``
    over a query's rows) is then counted with ``tally``; the counts end with it."""
    global _tallies
    with _lock:
        _tallies = {}
    try:
        yield
    finally:
        with _lock:
            for task in (_tallies or {}).values():
                _active.pop(task.id, None)
            _tallies = None


def tally(description: str, n: int) -> None:
    """Count ``n`` more done under ``description`` (no total), if a front end is watching."""
    if _tallies is None:
        return
    with _lock:
        if _tallies is None:
            return
        if description not in _tallies:
            _tallies[description] = start(description, 0)
        _tallies[description].done += n


def active() -> list[Task]:
    """A snapshot of the tasks running now, oldest first."""
    with _lock:
        return [dataclasses.replace(t) for t in _active.values()]


def warn(message: str) -> None:
    """A warning for the front end to show once the statement ends (the shell prints it)."""
    with _lock:
        _warnings.append(message)


def take_warnings() -> list[str]:
    """The warnings since the last call, oldest first; the list is emptied."""
    with _lock:
        taken = list(_warnings)
        _warnings.clear()
        return taken


@contextmanager
def call(owner: object = None) -> Iterator[None]:
    """Marks a long jammi call of ``owner`` running on this thread, so ``cancel`` can reach it."""
    thread = threading.get_ident()
    with _lock:
        _calls[thread] += 1
        _owners.setdefault(thread, owner)
    try:
        yield
    finally:
        with _lock:
            _calls[thread] -= 1
            if not _calls[thread]:
                del _calls[thread]
                _owners.pop(thread, None)
                _cancelled.discard(thread)


def _on_ctrl_c(signum: int, frame: object) -> None:
    cancel()
    signal.default_int_handler(signum, frame)


def catch_ctrl_c() -> None:
    """Make Ctrl-C also cancel running jammi calls. DuckDB may run a function on one of its
    own threads and, seeing the signal first, interrupt only its own work; Python's default
    handler is kept for everything else (KeyboardInterrupt as always). Another handler that
    someone installed is left alone, and so is a process that is not on its main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)


def cancel(*, thread: int | None = None, owner: object = None) -> int:
    """Ask the jammi calls running on ``thread``, or of ``owner``, (both None: all) to stop at
    their next micro-batch. Returns how many threads were running one."""
    with _lock:
        targets = [
            t
            for t in _calls
            if (thread is None or t == thread) and (owner is None or _owners.get(t) is owner)
        ]
        _cancelled.update(targets)
    return len(targets)


def cancelled(thread: int) -> bool:
    """Whether the call running on ``thread`` was asked to stop (for a watcher thread)."""
    return thread in _cancelled


def check() -> None:
    """Raise CancelledError when this thread's call was cancelled."""
    if _cancelled and threading.get_ident() in _cancelled:
        raise CancelledError(
            "the call was cancelled (Ctrl-C or interrupt()); what it had written was rolled "
            "back, so run it again to start over"
        )
