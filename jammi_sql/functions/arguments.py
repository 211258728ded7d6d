"""SQL expressions the generated macros hand arguments on with: each checks its argument's
type and range before anything runs, and fails with a ``jammi:`` message that names the fix
where DuckDB's binder would otherwise answer with no hint."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgumentError


def sql_literal(value: Any) -> str:
    """A Python default as SQL text, for the generated macros and the reference."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    return str(value)


INTEGER_TYPES = (
    "'TINYINT','SMALLINT','INTEGER','BIGINT','HUGEINT','UTINYINT','USMALLINT','UINTEGER','UBIGINT'"
)


def count_arg(param: str) -> str:
    """A whole number of at least 1, checked by SQL before anything runs."""
    return (
        f"CASE WHEN typeof({param}) NOT IN ({INTEGER_TYPES}) THEN error('jammi: {param} must be "
        f"a whole number of at least 1, e.g. {param} := 10; got ' || typeof({param})) "
        f"WHEN {param}::BIGINT < 1 THEN error('jammi: {param} must be at least 1, got ' || "
        f"{param}::VARCHAR) ELSE {param}::BIGINT END"
    )


NUMBER_TYPES = INTEGER_TYPES + ",'FLOAT','DOUBLE'"
_KINDS = {  # SQL type -> (typeof() values accepted, what the message asks for)
    "VARCHAR": ("'VARCHAR'", "text (VARCHAR)", ""),
    "VARCHAR[]": ("'VARCHAR[]','\"NULL\"[]'", "a list of names", "['text_a', 'text_b']"),
    "BIGINT": (INTEGER_TYPES, "a whole number", "10"),
    "DOUBLE": (NUMBER_TYPES, "a number", "60"),
    "BOOLEAN": ("'BOOLEAN'", "true or false", "true"),
}


def checked(function: str, param: str, sql_type: str) -> str:
    """How a macro hands an argument of ``sql_type`` on (``{0}`` is the parameter): a value of
    another type is a jammi error naming what is expected, where DuckDB's binder would
    answer "No function matches" or a conversion error with no hint."""
    if sql_type not in _KINDS:
        return "{0}"
    accepted, wanted, example = _KINDS[sql_type]
    decimal = " OR typeof({0}) LIKE 'DECIMAL%'" if sql_type == "DOUBLE" else ""
    hint = f"; cast it, e.g. {param}::VARCHAR" if sql_type == "VARCHAR" else ""
    example = f", e.g. {example}" if example else ""
    message = f"jammi: {function}'s {param} must be {wanted}{example}, not "
    return (
        f"CASE WHEN typeof({{0}}) IN ({accepted}, '\"NULL\"'){decimal} THEN {{0}}::{sql_type} "
        f"ELSE error('{_quote(message)}' || typeof({{0}}) || '{_quote(hint)}') END"
    )


# The default of a required parameter in a macro: a call that leaves it out is refused by name
# (see missing_check), where DuckDB's binder would say only "does not support the arguments".
MISSING = "<jammi: missing argument>"


def missing_check(param: str, message: str, passed: str) -> str:
    """``passed`` (how the macro hands ``param`` on), refused with ``message`` when the call
    left ``param`` out. Compared as text: every type casts to VARCHAR, so this binds whatever
    the argument's type."""
    return f"CASE WHEN {is_missing(param)} THEN error({sql_literal(message)}) ELSE {passed} END"


def is_missing(param: str) -> str:
    """Whether the call left ``param`` out (it holds MISSING, its macro default)."""
    return f"typeof({param}) = 'VARCHAR' AND {param}::VARCHAR = {sql_literal(MISSING)}"


def python_value(function: str, param: str, sql_type: str, value: Any) -> Any:
    """An argument of the Python API as the macro would hand it on: None stays None; a value of
    another type is the jammi error :func:`checked` raises in SQL. One name is a list of one
    (``columns='text'``), a path is its text, numpy numbers are numbers."""
    if value is None or sql_type not in _KINDS:
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if sql_type == "VARCHAR[]":
        if isinstance(value, str):
            value = [value]
        elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
            value = list(value)
    fits = {
        "VARCHAR": lambda v: isinstance(v, str),
        "VARCHAR[]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "BIGINT": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        "DOUBLE": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
        "BOOLEAN": lambda v: isinstance(v, bool),
    }[sql_type]
    if not fits(value):
        _, wanted, example = _KINDS[sql_type]
        hint = f"; cast it, e.g. str({param})" if sql_type == "VARCHAR" else ""
        example = f", e.g. {example}" if example else ""
        raise InvalidArgumentError(
            f"{function}'s {param} must be {wanted}{example}, not {_sql_type_of(value)}{hint}"
        )
    if sql_type == "BIGINT":
        return int(value)
    return float(value) if sql_type == "DOUBLE" and not isinstance(value, int) else value


def _sql_type_of(value: Any) -> str:
    """The DuckDB type name SQL's typeof() would give a Python value, near enough."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, numbers.Integral):
        return "BIGINT"
    if isinstance(value, numbers.Real):
        return "DOUBLE"
    if isinstance(value, str):
        return "VARCHAR"
    if isinstance(value, (list, tuple)):
        inner = {_sql_type_of(v) for v in value}
        return f"{inner.pop() if len(inner) == 1 else 'VARCHAR'}[]"
    if isinstance(value, dict):
        return "STRUCT"
    return type(value).__name__


def _quote(text: str) -> str:
    """Text for inside a SQL string literal; braces doubled for str.format."""
    return text.replace("'", "''").replace("{", "{{").replace("}", "}}")
