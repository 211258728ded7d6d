"""The errors a user can cause. Every message starts with ``jammi:`` and says what to do.

Each subclass also inherits the closest builtin, so Python callers can catch
``KeyError`` or ``ValueError`` as they would anywhere else.
"""

from __future__ import annotations

import re

PREFIX = "jammi: "
_LONG = re.compile(r"[^\s,;'\"]{300,}")


def _shorten(found: re.Match) -> str:
    text = found.group(0)
    return f"{text[:60]}...({len(text):,} characters)"


class JammiError(Exception):
    """Base class: the message is what a SQL user sees, so it names the fix."""

    def __init__(self, message: str):
        if not message.startswith(PREFIX):
            message = PREFIX + message
        message = _LONG.sub(_shorten, message)  # a 100,000-character argument, echoed
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class NotFoundError(JammiError, KeyError):
    """An unknown model, source, column, job or table."""


class InvalidArgumentError(JammiError, ValueError):
    """An argument or config value that is not allowed."""


class AlreadyExistsError(JammiError, ValueError):
    """A name that is already taken."""


class DataError(JammiError, ValueError):
    """The data in a source cannot be used as asked (NULL keys, empty, wrong types)."""


class InUseError(JammiError, RuntimeError):
    """Something others depend on (an embedding table, a fine-tuned model, a job)."""


class JobStateError(JammiError, RuntimeError):
    """A job operation that its current status does not allow."""


class TrainingError(JammiError, RuntimeError):
    """Training went wrong (divergence, nothing to train on)."""


class ReadOnlyError(JammiError, PermissionError):
    """A call that writes, on a database opened read-only or held by another process."""


class LockedError(JammiError, OSError):
    """The database file is held by another process."""


class CancelledError(JammiError):
    """A long call stopped by Ctrl-C or ``interrupt()``; what it wrote was rolled back."""


class ArtifactError(JammiError, OSError):
    """A model folder that is missing, incomplete or of an unknown format."""


class MissingPackageError(JammiError, ModuleNotFoundError):
    """An optional package a call needs (pandas for ``.df()``) is not installed."""


# The class of each jammi error recently raised inside a SQL function, by message, so the
# Python API can raise the same class once the error has crossed DuckDB as text.
_RAISED: dict[str, type[JammiError]] = {}


def remember(exc: JammiError) -> None:
    if len(_RAISED) > 256:
        _RAISED.clear()
    _RAISED[exc.message] = type(exc)


def from_duckdb(exc: BaseException) -> JammiError | None:
    """A duckdb error that carries a ``jammi:`` message, as the JammiError it was raised as.

    The result is also an instance of the duckdb error's class, so ``except duckdb.Error``
    keeps working. None when the error is not ours.
    """
    message = user_message(exc)
    if message is None:
        return None
    cls = _RAISED.get(message, InvalidArgumentError)  # else raised by SQL's error()
    both = _translated(cls, type(exc))
    return both(message) if both is not None else cls(message)


_CLASSES: dict[tuple[type, type], type | None] = {}


def _translated(cls: type, duck: type) -> type | None:
    if (cls, duck) not in _CLASSES:
        try:
            _CLASSES[cls, duck] = type(cls.__name__, (cls, duck), {"__module__": __name__})
        except TypeError:  # incompatible layouts: the jammi class alone
            _CLASSES[cls, duck] = None
    return _CLASSES[cls, duck]


def user_message(exc: BaseException) -> str | None:
    """The ``jammi:`` part of an error that crossed DuckDB, or None if it is not ours."""
    text = str(exc)
    at = text.find(PREFIX)
    # DuckDB appends where in the statement a table function failed ("LINE 1: ..." and carets)
    return text[at:].split("\n\nLINE ", 1)[0] if at >= 0 else None
