"""The registry of SQL functions: each declared once (name, parameters with defaults, return
type, doc), with the TEMP macro that gives it named, defaulted arguments. The functions are
declared in :mod:`jammi_sql.functions.declarations` and :mod:`jammi_sql.functions.data_declarations`.

The same entry makes the ``Database`` method of the Python API (:mod:`jammi_sql.api.methods`):
its name, parameters and defaults, docstring, read-only check and progress. The function body
returns the Python value (a Source, a list of dropped tables); ``said`` turns it into the SQL
result where the two differ, and a ``Method`` says how the Python side differs, when it does.
A missing or mistyped argument is the same jammi error in both (see :mod:`.arguments`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..catalog.context import Context
from .arguments import MISSING, checked, is_missing, missing_check, sql_literal

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = REQUIRED  # a Python value, written into the macro as a SQL literal
    passed_as: str = "{}"  # how the macro hands it to the UDF, e.g. to_json({})::VARCHAR
    typed: bool = False  # its type is checked: by the macro in SQL, by python_value in Python

    @property
    def optional(self) -> bool:
        return self.default is not REQUIRED


@dataclass(frozen=True)
class Method:
    """How the ``Database`` method made from a SQL function differs from the function, where it
    does; the default is a method of the same name, parameters and defaults, returning what
    the function body returns."""

    name: str | None = None  # the method's name, when not the function's
    names: dict[str, str] = field(default_factory=dict)  # SQL parameter -> Python keyword
    # A function with the method's own signature that returns the SQL arguments by name
    # (add_source's path= and query=, fine_tune's config keys as keyword arguments).
    takes: Callable[..., dict[str, Any]] | None = None
    wraps: str | None = None  # how the value is handed back: 'job' (a Job handle); a table
    # macro's rows come back as a pyarrow Table
    doc: str = ""  # what the method's docstring adds to the function's: what it returns


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
    said: Callable[[Any, dict[str, Any]], Any] | None = None  # body's value, args -> SQL result
    method: Method | None = field(default_factory=Method)  # None: no Database method

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

    @property
    def says_missing(self) -> bool:
        """Whether a missing argument is a jammi error in SQL: a required parameter of a
        public function defaults to MISSING, which the macro refuses by name."""
        return self.public and any(not p.optional for p in self.params)

    def missing(self, param: str) -> str:
        """The message for a required argument left out, the same in SQL and Python."""
        return f"jammi: {self.name} needs {param}; call it as {self.signature()}"

    def macro_heads(self) -> list[str]:
        """The macro's parameters, with their defaults."""
        return [
            f"{p.name} := {sql_literal(p.default)}"
            if p.optional
            else (f"{p.name} := {sql_literal(MISSING)}" if self.says_missing else p.name)
            for p in self.params
        ]

    def macro_sql(self, suffix: str = "") -> str:
        head = f"CREATE OR REPLACE TEMP MACRO {self.name}({', '.join(self.macro_heads())}) AS"
        args = ", ".join(
            p.passed_as.format(p.name)
            if p.optional or not self.says_missing
            else missing_check(p.name, self.missing(p.name), p.passed_as.format(p.name))
            for p in self.params
        )
        if self.table_sql is None:
            return f"{head} {self.udf_name}{suffix}({args})"
        body = self.table_sql
        for fn in FUNCTIONS:  # the internal functions it calls, as this connection named them
            if fn.impl is not None and not fn.public:
                body = body.replace(f"{fn.udf_name}(", f"{fn.udf_name}{suffix}(")
        if not self.says_missing:
            return f"{head} TABLE {body}" if self.table else f"{head} {body}"
        # SQL alone: the body is a macro of its own, called with the missing arguments refused
        # (a table macro's body reads them as it binds; a scalar one's call is skipped)
        inner = replace(self, name=f"jammi_{self.name}", public=False).macro_sql(suffix)
        if self.table:
            return f"{inner};\n{head} TABLE SELECT * FROM jammi_{self.name}({args})"
        names = ", ".join(p.name for p in self.params)
        refusals = " ".join(
            f"WHEN {is_missing(p.name)} THEN error({sql_literal(self.missing(p.name))})"
            for p in self.params
            if not p.optional
        )
        return f"{inner};\n{head} CASE {refusals} ELSE jammi_{self.name}({names}) END"

    def sql_result(self, value: Any, args: tuple) -> Any:
        """What the SQL function returns for the body's value."""
        if self.said is None:
            return value
        return self.said(value, {p.name: a for p, a in zip(self.params, args, strict=True)})


FUNCTIONS: list[SqlFunction] = []


def sql_function(name: str, params: list[Param], returns, **options: Any):
    if options.get("public", True):  # every argument's type checked by the macro
        params = [
            p
            if p.passed_as != "{}"
            else replace(p, passed_as=checked(name, p.name, p.type), typed=True)
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
    """A function that is SQL alone, giving rows; its Database method returns them as a
    pyarrow Table."""
    FUNCTIONS.append(
        SqlFunction(name, tuple(params), "TABLE", doc, table_sql=body, shows=shows, public=public)
    )


def scalar_macro(name: str, params: list[Param], returns: str, doc: str, body: str) -> None:
    """A function that is SQL alone (no Python UDF): a scalar macro over the parameters."""
    FUNCTIONS.append(SqlFunction(name, tuple(params), returns, doc, table_sql=body, table=False))


V, BIG, DBL, LIST = "VARCHAR", "BIGINT", "DOUBLE", "VARCHAR[]"
WRITES = dict(side_effects=True, sees_nulls=True, writes=True)
CHANGES = dict(side_effects=True, sees_nulls=True)  # the world, not the database
