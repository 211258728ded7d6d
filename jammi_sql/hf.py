"""Hugging Face transformers, imported once under a lock.

transformers resolves its classes lazily (``from transformers import AutoModel`` imports
``transformers.models.auto`` on first use), and two threads doing that first import at once
can see a half-initialised module: ``ImportError: cannot import name 'AutoModel'``. A job's
worker thread and the caller's thread (validating the next ``fine_tune``) do exactly that, so
every jammi module takes transformers' classes from here.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()


def transformers(*names: str) -> tuple[Any, ...]:
    """The named attributes of ``transformers`` (classes, or submodules such as
    ``utils.logging``), resolved one thread at a time."""
    with _LOCK:
        import transformers as module

        found = []
        for name in names:
            value: Any = module
            for part in name.split("."):
                value = getattr(value, part)
            found.append(value)
        return tuple(found)
