"""Errors of the Python API as JammiErrors, and opening a database file with a clear message.

A ``jammi:`` error raised inside a SQL function crosses DuckDB as text. ``translated()``
turns it back into the JammiError subclass it was raised as (also an instance of the duckdb
error class, so ``except duckdb.Error`` keeps working). DuckDB relations are lazy: most
errors surface when rows are fetched, so ``db.sql`` returns a ``Relation`` that translates
errors on every call, and is a duckdb relation in every other respect. Its methods that need
an optional package (``.df()``: pandas) say how to install it when it is missing.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from ..errors import InvalidArgumentError, LockedError, MissingPackageError, from_duckdb

# Relation methods that import an optional package, and the pip extra that installs it.
NEEDS = {"df": "pandas", "fetchdf": "pandas", "to_df": "pandas", "pl": "polars"}
EXTRAS = {"pandas": "jammi-sql[pandas]"}


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except duckdb.Error as exc:
        if str(exc).rstrip().endswith("KeyboardInterrupt:"):  # Ctrl-C inside a jammi call
            raise KeyboardInterrupt from exc
        ours = from_duckdb(exc)
        if ours is None:
            raise
        raise ours from exc
    except RuntimeError as exc:  # DuckDB saw Ctrl-C first
        if str(exc) == "Query interrupted":
            raise KeyboardInterrupt from exc
        raise


class Relation:
    """A ``duckdb.DuckDBPyRelation`` whose errors arrive as JammiErrors.

    Every attribute and method of the relation is available; ``.relation`` is the raw one
    (to hand to code that needs that exact type).
    """

    __slots__ = ("relation",)

    def __init__(self, relation: duckdb.DuckDBPyRelation):
        self.relation = relation

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.relation, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in NEEDS:
                require(NEEDS[name], f".{name}()")
            with translated():
                return wrap(attr(*args, **kwargs))

        return call

    def __getitem__(self, key: Any) -> Any:
        with translated():
            return wrap(self.relation[key])

    def __len__(self) -> int:
        with translated():
            return len(self.relation)

    def __str__(self) -> str:
        with translated():
            return str(self.relation)

    def __repr__(self) -> str:
        with translated():
            return repr(self.relation)


def require(package: str, what: str) -> None:
    """Import ``package`` or raise a ``jammi:`` error saying how to install it."""
    try:
        importlib.import_module(package)
    except ImportError:
        extra = f" (or: pip install '{EXTRAS[package]}')" if package in EXTRAS else ""
        raise MissingPackageError(
            f"{what} returns a {package} DataFrame, and {package} is not installed; "
            f"pip install {package}{extra}, or fetch without it: .fetchall(), .arrow()"
        ) from None


def wrap(value: Any) -> Any:
    return Relation(value) if isinstance(value, duckdb.DuckDBPyRelation) else value


_HOLDER = re.compile(r"held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def open_connection(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, with the lock error as a ``jammi:`` message naming the holder."""
    memory = path in ("", ":memory:") or path.startswith(":memory:")
    if read_only and memory:
        raise InvalidArgumentError(
            "an in-memory database cannot be opened read-only; give a database file"
        )
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        found = _HOLDER.search(str(exc))
        holder = f"process {found['pid']} ({found['program']})" if found else "another process"
        raise LockedError(
            f"'{path}' is held by {holder}; DuckDB lets one process at a time open a database "
            "file for writing. Meanwhile: read it with jammi_sql.connect(path, read_only=True) "
            "or jammi-sql --readonly (at once if that process opened it read-only, else once "
            "it closes it), or copy the file and open the copy"
        ) from None
