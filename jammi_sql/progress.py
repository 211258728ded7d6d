"""Progress of long work in this process, for the shell's progress bar.

The state layer reports (``task = progress.start("embedding patents", total)`` then
``task.advance(n)``); a front end polls ``progress.active()`` from another thread while a
query runs. Training jobs report through ``jammi.jobs`` instead, which any client can read.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

_lock = threading.Lock()
_active: dict[int, Task] = {}
_warnings: list[str] = []
_ids = itertools.count(1)


@dataclass
class Task:
    description: str
    total: int
    done: float = 0
    started: float = field(default_factory=time.monotonic)
    id: int = 0

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


def start(description: str, total: int) -> Task:
    task = Task(description, max(int(total), 0), id=next(_ids))
    with _lock:
        _active[task.id] = task
    return task


def active() -> list[Task]:
    """A snapshot of the tasks running now, oldest first."""
    with _lock:
        return [Task(t.description, t.total, t.done, t.started, t.id) for t in _active.values()]


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
