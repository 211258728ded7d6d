"""The registry of SQL functions: each declared once (name, parameters with defaults, return
type, doc), with the TEMP macro that gives it named, defaulted arguments. The functions are
declared in :mod:`jammi_sql.functions.declarations` and :mod:`jammi_sql.functions.data_declarations`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..catalog.context import Context
from .arguments import checked, sql_literal

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = REQUIRED  # a Python value, written into the macro as a SQL literal
    passed_as: str = "{}"  # how the macro hands it to the UDF, e.g. to_json({})::VARCHAR

    @property
    def optional(self) -> bool:
        return self.default is not REQUIRED


@dataclass(frozen=True)
class SqlFunction:
    name: str
    params: tuple[Param, ...]
    returns: str | Callable[[Context], str]
    doc: str
    impl: Callable[..., Any] | None = None  # None: a table macro over other functions
    table_sql: str | None = None  # the body of a table macro, over the parameter names
    shows: str = ""  # what the reference says it returns, when not its SQL type
    arrow: bool = False
    side_effects: bool = False
    sees_nulls: bool = False  # called with NULL arguments instead of returning NULL
    public: bool = True
    writes: bool = False  # refused on a database opened read-only
    table: bool = True  # a macro over other functions: a table macro, or a scalar one

    @property
    def has_macro(self) -> bool:
        return self.table_sql is not None or any(
            p.optional or p.passed_as != "{}" for p in self.params
        )

    @property
    def udf_name(self) -> str:
        return f"jammi_{self.name}" if self.has_macro else self.name

    def signature(self) -> str:
        required = [p.name for p in self.params if not p.optional]
        optional = [f" [, {p.name} := {sql_literal(p.default)}]" for p in self.params if p.optional]
        return f"{self.name}({', '.join(required)}{''.join(optional)})"

    def macro_sql(self, suffix: str = "") -> str:
        heads = [
            p.name if not p.optional else f"{p.name} := {sql_literal(p.default)}"
            for p in self.params
        ]
        head = f"CREATE OR REPLACE TEMP MACRO {self.name}({', '.join(heads)}) AS"
        if self.table_sql is not None:
            body = self.table_sql
            for fn in FUNCTIONS:  # the internal functions it calls, as this connection named them
                if fn.impl is not None and not fn.public:
                    body = body.replace(f"{fn.udf_name}(", f"{fn.udf_name}{suffix}(")
            return f"{head} TABLE {body}" if self.table else f"{head} {body}"
        args = ", ".join(p.passed_as.format(p.name) for p in self.params)
        return f"{head} {self.udf_name}{suffix}({args})"


FUNCTIONS: list[SqlFunction] = []


def sql_function(name: str, params: list[Param], returns, **options: Any):
    if options.get("public", True):  # every argument's type checked by the macro
        params = [
            p if p.passed_as != "{}" else replace(p, passed_as=checked(name, p.name, p.type))
            for p in params
        ]

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = inspect.cleandoc(fn.__doc__ or "")
        FUNCTIONS.append(SqlFunction(name, tuple(params), returns, doc, fn, **options))
        return fn

    return register


def table_macro(
    name: str, params: list[Param], shows: str, doc: str, body: str, public: bool = True
) -> None:
    FUNCTIONS.append(
        SqlFunction(name, tuple(params), "TABLE", doc, table_sql=body, shows=shows, public=public)
    )


def scalar_macro(name: str, params: list[Param], returns: str, doc: str, body: str) -> None:
    """A function that is SQL alone (no Python UDF): a scalar macro over the parameters."""
    FUNCTIONS.append(SqlFunction(name, tuple(params), returns, doc, table_sql=body, table=False))


V, BIG, DBL, LIST = "VARCHAR", "BIGINT", "DOUBLE", "VARCHAR[]"
WRITES = dict(side_effects=True, sees_nulls=True, writes=True)
CHANGES = dict(side_effects=True, sees_nulls=True)  # the world, not the database
