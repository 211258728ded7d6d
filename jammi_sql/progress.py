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
_ids = itertools.count(1)


@dataclass
class Task:
    description: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    id: int = 0

    def advance(self, n: int = 1) -> None:
        with _lock:
            self.done = min(self.total, self.done + n)

    def update(self, done: int) -> None:
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
