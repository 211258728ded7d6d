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


def _quote(text: str) -> str:
    """Text for inside a SQL string literal; braces doubled for str.format."""
    return text.replace("'", "''").replace("{", "{{").replace("}", "}}")
