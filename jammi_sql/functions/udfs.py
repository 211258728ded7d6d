"""Python UDFs: the adapter around each registered function, and their names per connection.

DuckDB keeps Python UDFs per database and TEMP macros per connection, so a second connection
to the same file in this process gets its UDFs under names of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import duckdb

from .. import progress
from ..catalog.context import Context
from ..errors import JammiError, remember


def _udf(ctx: Context, fn: Any) -> Callable:
    def call(*args):
        try:
            if fn.writes:
                ctx.require_writable(fn.name)
            with progress.call(ctx):  # so Ctrl-C / interrupt() can stop it between batches
                return fn.sql_result(fn.impl(ctx, *args), args)
        except JammiError as e:  # so the Python API can raise the same class again
            remember(e)
            raise

    call.__name__ = fn.udf_name
    call.__doc__ = fn.doc
    # DuckDB counts the parameters of the callable it is given
    call.__signature__ = inspect.Signature(
        [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_ONLY) for p in fn.params]
    )
    return call


def register(con: duckdb.DuckDBPyConnection, ctx: Context, fn: Any) -> None:
    if fn.impl is None:
        return
    returns = fn.returns(ctx) if callable(fn.returns) else fn.returns
    try:
        con.remove_function(fn.udf_name + ctx.suffix)
    except (duckdb.InvalidInputException, duckdb.CatalogException):
        pass
    con.create_function(
        fn.udf_name + ctx.suffix,
        _udf(ctx, fn),
        [duckdb.sqltype(p.type) for p in fn.params],
        duckdb.sqltype(returns),
        type="arrow" if fn.arrow else "native",
        null_handling="special" if fn.sees_nulls else "default",
        side_effects=fn.side_effects,
    )


def free_suffix(con: duckdb.DuckDBPyConnection, first: str) -> str:
    """Python UDFs belong to the database, TEMP macros to one connection: a second connection
    to the same file in this process (a notebook cell run twice) names its UDFs apart."""
    taken = {r[0] for r in con.execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    for n in range(1000):
        suffix = f"_{n}" if n else ""
        if first + suffix not in taken:
            return suffix
        try:  # taken by this very connection (install run again): reuse the names
            con.remove_function(first + suffix)
            return suffix
        except (duckdb.InvalidInputException, duckdb.CatalogException):
            continue
    raise RuntimeError("too many jammi connections to one database in this process")


# DuckDB's array_* distance functions take fixed-size arrays only, and DuckDB casts no list
# to an array implicitly; embed() returns a list (each model has its own width). These TEMP
# macros give the array_* names the list functions' bodies, which take arrays and lists alike
# and return the same values and types; DuckDB's own stay reachable as system.main.array_*.
VECTOR_MACROS = (
    "array_cosine_similarity",
    "array_cosine_distance",
    "array_distance",
    "array_inner_product",
    "array_negative_inner_product",
    "array_dot_product",
)


def vector_macros_sql() -> str:
    return "\n".join(
        f"CREATE OR REPLACE TEMP MACRO {name}(array1, array2) AS "
        f"list_{name.removeprefix('array_')}(array1, array2);"
        for name in VECTOR_MACROS
    )
