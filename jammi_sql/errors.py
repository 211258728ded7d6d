"""The errors a user can cause. Every message starts with ``jammi:`` and says what to do.

Each subclass also inherits the closest builtin, so Python callers can catch
``KeyError`` or ``ValueError`` as they would anywhere else.
"""

from __future__ import annotations

PREFIX = "jammi: "


class JammiError(Exception):
    """Base class: the message is what a SQL user sees, so it names the fix."""

    def __init__(self, message: str):
        if not message.startswith(PREFIX):
            message = PREFIX + message
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


class JobStateError(JammiError, RuntimeError):
    """A job operation that its current status does not allow."""


class TrainingError(JammiError, RuntimeError):
    """Training went wrong (divergence, nothing to train on)."""


class ArtifactError(JammiError, OSError):
    """A model folder that is missing, incomplete or of an unknown format."""


def user_message(exc: BaseException) -> str | None:
    """The ``jammi:`` part of an error that crossed DuckDB, or None if it is not ours."""
    text = str(exc)
    at = text.find(PREFIX)
    return text[at:] if at >= 0 else None
