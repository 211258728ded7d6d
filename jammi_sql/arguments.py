"""SQL expressions the generated macros hand arguments on with: each checks its argument's
type and range before anything runs, and fails with a ``jammi:`` message that names the fix
where DuckDB's binder would otherwise answer with no hint."""

from __future__ import annotations

from typing import Any


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


def text_arg(function: str, param: str) -> str:
    """How a macro hands a text argument on: another type is a jammi error naming the cast,
    where DuckDB's binder would answer with no hint."""
    return (
        f"CASE WHEN typeof({{0}}) IN ('VARCHAR', '\"NULL\"') THEN {{0}}::VARCHAR ELSE "
        f"error('jammi: {function}''s {param} must be text (VARCHAR), not ' || typeof({{0}}) || "
        f"'; cast it, e.g. {function}(..., {param}::VARCHAR)') END"
    )


def count_arg(param: str) -> str:
    """A whole number of at least 1, checked by SQL before anything runs."""
    return (
        f"CASE WHEN typeof({param}) NOT IN ({INTEGER_TYPES}) THEN error('jammi: {param} must be "
        f"a whole number of at least 1, e.g. {param} := 10; got ' || typeof({param})) "
        f"WHEN {param}::BIGINT < 1 THEN error('jammi: {param} must be at least 1, got ' || "
        f"{param}::VARCHAR) ELSE {param}::BIGINT END"
    )
