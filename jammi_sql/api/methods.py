"""The ``Database`` methods that mirror SQL functions, made from the registry.

Each public entry of :data:`jammi_sql.functions.registry.FUNCTIONS` becomes a method of the
same name, parameters and defaults (its ``Method`` says where the Python side differs), with
the function's reference entry as its docstring. A method checks its arguments as the SQL
macro does (a missing or mistyped one is the same jammi error, here a JammiError subclass),
refuses to write on a read-only database, and runs inside ``progress.call`` so
``db.interrupt()`` reaches it, then calls the same function body as SQL. A table macro's
rows come back as a pyarrow Table, a scalar macro's value as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .. import progress
from ..errors import InvalidArgumentError
from ..functions.arguments import python_value
from ..functions.registry import FUNCTIONS, Method, SqlFunction
from .job_handle import Job
from .relation import translated

# How a method hands back the body's value, by the name its Method gives (``wraps``).
WRAPS: dict[str, Callable[[Any, Any], Any]] = {"job": lambda db, job_id: Job(db, job_id)}


def add_methods(cls: type) -> None:
    """Give ``cls`` (Database) a method for every public SQL function that has one."""
    import jammi_sql.functions.declarations  # noqa: F401  (fills the registry)

    for fn in FUNCTIONS:
        if not fn.public or fn.method is None:
            continue
        name = fn.method.name or fn.name
        if name in cls.__dict__:
            raise RuntimeError(f"Database.{name} is written by hand and made from the registry")
        method = _method(fn, fn.method, name)
        method.__module__ = cls.__module__
        setattr(cls, name, method)


def _method(fn: SqlFunction, how: Method, name: str) -> Callable[..., Any]:
    signature = _signature(fn, how)

    def method(self, *args: Any, **kwargs: Any) -> Any:
        values = _arguments(fn, how, signature, args, kwargs)
        if fn.impl is None:  # SQL alone: run it
            return _run_macro(self, fn, values)
        with translated(), progress.call(self.ctx):
            if fn.writes:
                self.ctx.require_writable(fn.name)
            value = fn.impl(self.ctx, *(values[p.name] for p in fn.params))
        return WRAPS[how.wraps](self, value) if how.wraps else value

    method.__name__ = name
    method.__qualname__ = f"Database.{name}"
    method.__doc__ = _doc(fn)
    method.__signature__ = signature.replace(
        return_annotation=inspect.Signature.empty,
        parameters=[
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *signature.parameters.values(),
        ],
    )
    return method


def _signature(fn: SqlFunction, how: Method) -> inspect.Signature:
    """The method's parameters: the adapter's (``takes``), else the function's, renamed."""
    if how.takes is not None:
        return inspect.signature(how.takes)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [
            inspect.Parameter(
                how.names.get(p.name, p.name),
                kind,
                default=p.default if p.optional else inspect.Parameter.empty,
            )
            for p in fn.params
        ]
    )


def _arguments(
    fn: SqlFunction,
    how: Method,
    signature: inspect.Signature,
    args: tuple,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The SQL arguments by name, checked as the macro checks them."""
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params]
    if unknown and not takes_any:
        raise InvalidArgumentError(
            f"{fn.name} has no argument {', '.join(map(repr, unknown))}; its arguments are "
            f"{', '.join(params)}"
        )
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(f"{fn.name}: {exc}; call it as {fn.signature()}") from None
    for p in params.values():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            if p.name not in bound.arguments:
                sql_name = next((s for s, py in how.names.items() if py == p.name), p.name)
                raise InvalidArgumentError(fn.missing(sql_name))
    bound.apply_defaults()
    if how.takes is not None:
        given = how.takes(*bound.args, **bound.kwargs)
    else:
        renamed = {py: sql for sql, py in how.names.items()}
        given = {renamed.get(k, k): v for k, v in bound.arguments.items()}
    values = {}
    for p in fn.params:
        value = given.get(p.name, p.default if p.optional else None)
        values[p.name] = python_value(fn.name, p.name, p.type, value) if p.typed else value
    return values


def _run_macro(db: Any, fn: SqlFunction, values: dict[str, Any]) -> Any:
    """A table macro's rows as a pyarrow Table, a scalar macro's value, run on the API's own
    cursor."""
    args = ", ".join("?" if not p.optional else f"{p.name} := ?" for p in fn.params)
    params = [_sql_value(values[p.name]) for p in fn.params]
    with translated():
        if fn.table:
            return (
                db._cursor().sql(f"SELECT * FROM {fn.name}({args})", params=params).to_arrow_table()
            )
        return db._cursor().execute(f"SELECT {fn.name}({args})", params).fetchall()[0][0]


def _sql_value(value: Any) -> Any:
    """A numpy array or number (or a list of them) as the list or number DuckDB binds."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_sql_value(v) for v in value]
    return value


def _doc(fn: SqlFunction) -> str:
    """The function's reference entry, what the method returns, and the SQL call."""
    returns = fn.method.doc
    if fn.impl is None and fn.table:
        returns = "Returns the rows as a pyarrow Table (.to_pandas() for a DataFrame)."
    return "\n\n".join(part for part in (fn.doc, returns, f"SQL: {fn.signature()}") if part)
