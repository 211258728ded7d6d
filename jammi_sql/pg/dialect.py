"""PostgreSQL as clients speak it, in DuckDB's terms: type OIDs, parameter types, errors as
SQLSTATEs, and the few rewrites and macros that let drivers' and psql's catalog queries run.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pg_mimic import PgError
from pg_mimic.arrays import ARRAY_OID

from ..errors import CancelledError, from_duckdb, user_message

READ_ONLY = (
    "jammi: this server was started with --readonly: queries only (no DDL or DML, no file "
    "access, no jammi function that writes); restart it without --readonly to change the database"
)
SCALAR_OIDS = {
    "BOOLEAN": 16,
    "TINYINT": 21,
    "SMALLINT": 21,
    "UTINYINT": 21,
    "INTEGER": 23,
    "USMALLINT": 23,
    "BIGINT": 20,
    "UINTEGER": 20,
    "FLOAT": 700,
    "DOUBLE": 701,
    "VARCHAR": 25,
    "BLOB": 17,
    "DATE": 1082,
    "TIME": 1083,
    "TIMESTAMP": 1114,
    "TIMESTAMP_S": 1114,
    "TIMESTAMP_MS": 1114,
    "TIMESTAMP_NS": 1114,
    "TIMESTAMP WITH TIME ZONE": 1184,
    "UUID": 2950,
    "JSON": 114,
    "INTERVAL": 1186,
}
NUMERIC, JSON, TEXT, INTERVAL = 1700, 114, 25, 1186
# what a parameter's ::type cast in the SQL declares, for clients that ask (asyncpg)
CAST_OIDS = {"int": 23, "integer": 23, "int4": 23, "bigint": 20, "int8": 20, "smallint": 21}
CAST_OIDS |= {"float": 700, "real": 700, "float4": 700, "double": 701, "float8": 701}
CAST_OIDS |= {"boolean": 16, "bool": 16, "text": 25, "varchar": 25, "json": 114}
CAST_OIDS |= {"varchar[]": 1009, "text[]": 1009}
CAST_OIDS |= {"float[]": 1021, "real[]": 1021, "float4[]": 1021, "double[]": 1022}
CAST_OIDS |= {"float8[]": 1022, "int[]": 1007, "integer[]": 1007, "int4[]": 1007}
CAST_OIDS |= {"bigint[]": 1016, "int8[]": 1016, "boolean[]": 1000, "bool[]": 1000}
_CAST = re.compile(r"\$(\d+)\s*::\s*(\w+(?:\s*\[\s*\])?)")
_INT_OIDS, _FLOAT_OIDS = {20, 21, 23}, {700, 701, NUMERIC}

# errors by DuckDB class -> SQLSTATE; a jammi error keeps DuckDB's class, so it maps too
SQLSTATES = [
    (duckdb.InterruptException, "57014"),
    (duckdb.ParserException, "42601"),
    (duckdb.CatalogException, "42P01"),
    (duckdb.BinderException, "42703"),
    (duckdb.PermissionException, "42501"),
    (duckdb.ConstraintException, "23000"),
    (duckdb.ConversionException, "22P02"),
    (duckdb.InvalidInputException, "22023"),
    (duckdb.TransactionException, "25000"),
]


def pg_type(duck_type: str) -> int:
    """The PostgreSQL type OID a DuckDB column type is sent as: FLOAT[d] as float4[],
    STRUCT, MAP and nested lists as json, anything else unknown as text."""
    if duck_type in SCALAR_OIDS:
        return SCALAR_OIDS[duck_type]
    if duck_type.startswith("DECIMAL") or duck_type in ("HUGEINT", "UBIGINT", "UHUGEINT"):
        return NUMERIC
    found = re.fullmatch(r"(.*)\[\d*\]", duck_type)
    if found:
        element = SCALAR_OIDS.get(found.group(1))
        return ARRAY_OID.get(element, JSON) if element else JSON
    if duck_type.startswith(("STRUCT", "MAP", "UNION")):
        return JSON
    return TEXT


# PostgreSQL's name of an unnamed result column of each type (``SELECT 0.1::real`` -> float4)
TYPE_NAMES = {16: "bool", 20: "int8", 21: "int2", 23: "int4", 700: "float4", 701: "float8"}
TYPE_NAMES |= {25: "text", 1082: "date", 1114: "timestamp", 1184: "timestamptz", 114: "json"}
TYPE_NAMES |= {NUMERIC: "numeric", 1186: "interval", 2950: "uuid", 17: "bytea"}
_CALL = re.compile(r"^([A-Za-z_]\w*)\(.*\)$", re.S)
_CAST_OF_COLUMN = re.compile(
    r'^CAST\((?:\w+\.)*"?([A-Za-z_]\w*)"? AS [^()]*(?:\(\d+(?:, ?\d+)?\))?\)$'
)


def pg_column_name(name: str, oid: int) -> str:
    """The name PostgreSQL gives a result column DuckDB named after its expression:
    ``count(*)`` is ``count``, ``f(x)`` is ``f``, ``x::real`` is ``x``, a cast literal is its
    type's name, any other expression ``?column?``. A column or an alias keeps its name."""
    if "(" not in name:
        return name
    if name == "count_star()":
        return "count"
    cast = _CAST_OF_COLUMN.match(name)
    if cast:
        return cast.group(1)
    if name.startswith("CAST("):
        from pg_mimic.arrays import ELEMENT_OID

        return TYPE_NAMES.get(ELEMENT_OID.get(oid, oid), "?column?")
    call = _CALL.match(name)
    if call and not name.startswith("("):
        return call.group(1).lower()
    return "?column?" if name.startswith("(") and name.endswith(")") else name


def real_text(value: float | None) -> str | None:
    """A REAL as PostgreSQL prints it: the shortest digits that give back the same float4
    (``0.1``, not ``0.10000000149011612``), in exponent form below 1e-4 and from 1e6."""
    if value is None:
        return None
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    single = np.float32(value)
    if single == 0:
        return "-0" if np.signbit(single) else "0"
    scientific = np.format_float_scientific(single, unique=True, exp_digits=2)
    exponent = int(scientific.rsplit("e", 1)[1])
    text = scientific if exponent < -4 or exponent >= 6 else np.format_float_positional(single)
    return text.replace(".e", "e").rstrip(".")


def converter(oid: int, duck_type: str):
    """Per-column conversion of Arrow's Python values into what pg_mimic encodes."""
    if oid == JSON and duck_type != "JSON":
        return lambda v: None if v is None else json.dumps(_jsonable(v), default=str)
    if oid == INTERVAL:
        return _interval
    return None


def _interval(v: Any) -> Any:
    """Arrow's (months, days, nanoseconds) as a timedelta when it has no months (both wire
    formats then follow), else as PostgreSQL's text."""
    if v is None:
        return None
    time = timedelta(microseconds=v.nanoseconds // 1000)
    return (
        timedelta(days=v.days) + time if not v.months else f"{v.months} mons {v.days} days {time}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return {str(k): _jsonable(v) for k, v in value}  # a MAP arrives as (key, value) pairs
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def pg_error(exc: BaseException, readonly: bool = False) -> PgError:
    """A PostgreSQL error for an exception a statement raised: our ``jammi:`` message when
    there is one, else DuckDB's own."""
    if isinstance(exc, PgError):
        return exc
    text = str(exc)
    if readonly and (isinstance(exc, duckdb.PermissionException) or "read-only mode" in text):
        return PgError("25006", READ_ONLY + f" ({text.splitlines()[0]})")
    if isinstance(exc, duckdb.InterruptException):
        return PgError("57014", "canceling statement due to user request")
    message = user_message(exc) or str(exc)
    state = next((code for cls, code in SQLSTATES if isinstance(exc, cls)), "XX000")
    if isinstance(from_duckdb(exc), CancelledError):  # a jammi call stopped by a cancel
        return PgError("57014", message)
    if message.startswith("jammi:"):
        state = "25006" if "read-only" in message else "P0001" if state == "XX000" else state
        if message.startswith("jammi: role '") and " may not " in message:
            state = "42501"  # a role's refusal raised inside a jammi function
    return PgError(state, message)


# PostgreSQL spellings in what drivers and psql send, and DuckDB's equivalents
REWRITES = [
    # psql's \dx: the class of a catalog table, which DuckDB's pg_description never names
    (re.compile(r"'pg_catalog\.pg_\w+'::pg_catalog\.regclass"), "0"),
    (  # psql's \sf NAME: the function's oid, the session's macro before the UDF under it
        re.compile(r"'([\w.]+)'::pg_catalog\.regproc::pg_catalog\.oid"),
        r"(SELECT function_oid FROM duckdb_functions() WHERE function_name = "
        r"split_part('\1', '.', -1) ORDER BY database_name = 'temp' DESC LIMIT 1)",
    ),
    (re.compile(r"::\s*(?:pg_catalog\.)?oid\b", re.I), "::BIGINT"),
    (re.compile(r"::\s*(?:pg_catalog\.)?(regtype|regclass|regproc|regnamespace)\b", re.I), ""),
    (re.compile(r"\bAS\s+(REGTYPE|REGCLASS|REGPROC|REGNAMESPACE)\b", re.I), "AS VARCHAR"),
    (re.compile(r"\bAS\s+OID\)", re.I), "AS UINTEGER)"),
    (re.compile(r"OPERATOR\(pg_catalog\.(~|!~|~\*)\)"), r"\1"),
    (re.compile(r"\bpg_catalog\.(\w+)\s*\(", re.I), r"\1("),
    (re.compile(r"\bjson_build_object\s*\(", re.I), "json_object("),
    (  # a column's type (SQLAlchemy's reflection): lists by their element, as real[]
        re.compile(
            r"\bformat_type\s*\(\s*((?:pg_catalog\.)?\w+)\.atttypid\s*,\s*\1\.atttypmod\s*\)", re.I
        ),
        r"pg_column_type_name(\1.attrelid, \1.attname, \1.atttypid, \1.atttypmod)",
    ),
    (re.compile(r"\bformat_type\s*\(", re.I), "pg_type_name("),
    (re.compile(r"\bpg_catalog\.(pg_\w+)\.(\w+)"), r"\1.\2"),  # schema.table.column
    (
        re.compile(r"\bpg_catalog\.pg_collation\b"),  # DuckDB's lacks collnamespace
        "(SELECT *, 0::BIGINT AS collnamespace FROM pg_catalog.pg_collation) AS pg_collation",
    ),
    (re.compile(r"\s+COLLATE\s+pg_catalog\.default", re.I), ""),
    (
        re.compile(r"\bgenerate_subscripts\s*\(\s*([\w.]+)\s*,([^)]*)\)", re.I),
        r"unnest(generate_series(1, len(\1) + 0 * (\2)))",
    ),  # 1-D: the dimension is 1
]
# Catalog tables DuckDB lacks or fills differently, as PostgreSQL clients join them for keys
# and indexes (SQLAlchemy's reflection, JDBC's getPrimaryKeys): pg_index holds one row per
# primary-key or unique constraint (its oid is the constraint's, which conindid names) and
# per CREATE INDEX; attnums are pg_attribute's (1-based; DuckDB's conkey is 0-based);
# indoption is int2vector's text ("0 0"), as clients read it.
_PG_CONSTRAINT = (
    "SELECT c.* REPLACE (CASE WHEN c.contype IN ('p', 'u') THEN c.oid ELSE 0 END AS conindid, "
    "coalesce(d.constraint_name, c.conname) AS conname) FROM pg_catalog.pg_constraint c "
    "LEFT JOIN duckdb_constraints() d ON c.oid = d.table_oid * 1000000 + d.constraint_index"
)
_INDEX_COLUMNS = (
    "false AS indnullsnotdistinct, false AS indisexclusion, true AS indimmediate, "
    "false AS indisclustered, true AS indisvalid, false AS indcheckxmin, true AS indisready, "
    "true AS indislive, false AS indisreplident, NULL::VARCHAR AS indexprs, "
    "NULL::VARCHAR AS indpred"
)
_PG_INDEX = (
    "SELECT oid AS indexrelid, conrelid AS indrelid, len(conkey)::SMALLINT AS indnatts, "
    "len(conkey)::SMALLINT AS indnkeyatts, true AS indisunique, contype = 'p' AS indisprimary, "
    "list_transform(conkey, lambda k: (k + 1)::SMALLINT) AS indkey, "
    "list_transform(conkey, lambda k: 0::BIGINT) AS indcollation, "
    "list_transform(conkey, lambda k: 0::BIGINT) AS indclass, "
    f"array_to_string(list_transform(conkey, lambda k: 0), ' ') AS indoption, {_INDEX_COLUMNS} "
    "FROM pg_catalog.pg_constraint WHERE contype IN ('p', 'u') UNION ALL BY NAME "
    "SELECT i.index_oid AS indexrelid, i.table_oid AS indrelid, "
    "len(i.expressions::VARCHAR[])::SMALLINT AS indnatts, "
    "len(i.expressions::VARCHAR[])::SMALLINT AS indnkeyatts, i.is_unique AS indisunique, "
    "i.is_primary AS indisprimary, list_transform(i.expressions::VARCHAR[], "
    "lambda e: coalesce(a.cols[trim(e, '\"')], 0)::SMALLINT) AS indkey, "
    "list_transform(i.expressions::VARCHAR[], lambda e: 0::BIGINT) AS indcollation, "
    "list_transform(i.expressions::VARCHAR[], lambda e: 0::BIGINT) AS indclass, "
    "array_to_string(list_transform(i.expressions::VARCHAR[], lambda e: 0), ' ') AS indoption, "
    f"{_INDEX_COLUMNS} "
    "FROM duckdb_indexes() i LEFT JOIN (SELECT attrelid, map_from_entries(list((attname, "
    "attnum))) AS cols FROM pg_catalog.pg_attribute GROUP BY attrelid) a "
    "ON a.attrelid = i.table_oid"
)
_PG_OPCLASS = "SELECT 0::BIGINT AS oid, ''::VARCHAR AS opcname, true AS opcdefault WHERE false"
_CLAUSE = r"(?:ON|JOIN|WHERE|LEFT|RIGHT|INNER|FULL|CROSS|GROUP|ORDER|LIMIT|UNION|USING)\b"


def _table(name: str, body: str) -> tuple[re.Pattern, Any]:
    """``pg_catalog.NAME`` as a subquery, under the alias the query gave it, else NAME."""
    pattern = re.compile(
        rf"\bpg_catalog\.{name}\b(?!\.)(\s+(?:AS\s+)?(?!{_CLAUSE})([A-Za-z_]\w*))?", re.I
    )
    return pattern, lambda m: f"({body}) AS {m.group(2) or name}"


_PG_DATABASE = (  # psql's \l: one database, UTF8, C collation
    "SELECT oid, datname, 10::BIGINT AS datdba, 6 AS encoding, 'C' AS datcollate, "
    "'C' AS datctype, NULL::VARCHAR AS daticulocale, NULL::VARCHAR AS daticurules, "
    "'c' AS datlocprovider, NULL::VARCHAR[] AS datacl, datistemplate, datallowconn, "
    "-1 AS datconnlimit FROM pg_catalog.pg_database WHERE datname NOT IN ('system', 'temp')"
)
_PG_AUTH_MEMBERS = (
    "SELECT 0::BIGINT AS oid, 0::BIGINT AS roleid, 0::BIGINT AS member, 0::BIGINT AS grantor, "
    "false AS admin_option WHERE false"
)
REWRITES += [
    (  # '{a,b}'::text[], PostgreSQL's array literal (DBeaver's keyword list), as a list
        re.compile(r"'\{([^'{}\\\"]*)\}'::(?:pg_catalog\.)?(?:text|varchar|name)\[\]", re.I),
        lambda m: (
            "["
            + ", ".join("'" + w.strip() + "'" for w in m.group(1).split(",") if w.strip())
            + "]::VARCHAR[]"
        ),
    ),
    (  # Metabase's row estimates: DuckDB's
        re.compile(
            r"\b(?:pg_catalog\.)?pg_stat_user_tables\b(\s+(?:AS\s+)?(?!"
            + _CLAUSE
            + r")([A-Za-z_]\w*))?",
            re.I,
        ),
        lambda m: (
            "(SELECT table_oid AS relid, schema_name AS schemaname, table_name AS relname, "
            "estimated_size AS n_live_tup, 0::BIGINT AS n_dead_tup FROM duckdb_tables()) AS "
            + (m.group(2) or "pg_stat_user_tables")
        ),
    ),
    _table("pg_database", _PG_DATABASE),
    _table("pg_roles", "SELECT * FROM jammi_pg_roles()"),
    _table("pg_user", "SELECT rolname AS usename, oid AS usesysid, * FROM jammi_pg_roles()"),
    _table("pg_auth_members", _PG_AUTH_MEMBERS),
    _table("pg_extension", "SELECT * FROM jammi_pg_extensions()"),
    _table("pg_proc", "SELECT * FROM jammi_pg_proc()"),
    _table(
        "pg_language",
        "SELECT DISTINCT prolang AS oid, CASE prolang WHEN 0 THEN 'internal' ELSE 'sql' END "
        "AS lanname, 10::BIGINT AS lanowner, false AS lanispl, true AS lanpltrusted "
        "FROM pg_catalog.pg_proc",
    ),
    _table("pg_index", _PG_INDEX),
    _table("pg_constraint", _PG_CONSTRAINT),
    _table("pg_opclass", _PG_OPCLASS),
]
# functions DuckDB's pg_catalog lacks, as TEMP macros on every session's cursor
PG_MACROS = (
    "CREATE OR REPLACE TEMP MACRO to_regtype(name) AS NULL::UINTEGER;"
    "CREATE OR REPLACE TEMP MACRO pg_get_userbyid(id) AS current_user;"
    "CREATE OR REPLACE TEMP MACRO pg_get_serial_sequence(t, c) AS NULL::VARCHAR;"
    "CREATE OR REPLACE TEMP MACRO pg_collation_is_visible(id) AS true;"
    "CREATE OR REPLACE TEMP MACRO pg_function_is_visible(id) AS true;"
    "CREATE OR REPLACE TEMP MACRO pg_encoding_to_char(e) AS 'UTF8';"
    "CREATE OR REPLACE TEMP MACRO pg_get_function_sqlbody(id) AS NULL::VARCHAR;"
    "CREATE OR REPLACE TEMP MACRO pg_get_expr(tree, relation) AS tree, "
    "(tree, relation, pretty) AS tree;"  # DBeaver passes pretty
    "CREATE OR REPLACE TEMP MACRO pg_get_partkeydef(id) AS NULL::VARCHAR;"
    "CREATE OR REPLACE TEMP MACRO pg_stat_get_numscans(id) AS 0::BIGINT;"
    "CREATE OR REPLACE TEMP MACRO array_upper(a, dimension) AS "
    "CASE WHEN dimension = 1 AND len(a) > 0 THEN len(a) END;"
    "CREATE OR REPLACE TEMP MACRO pg_get_keywords() AS TABLE SELECT keyword_name AS word, "
    "CASE keyword_category WHEN 'reserved' THEN 'R' WHEN 'unreserved' THEN 'U' "
    "WHEN 'type_function' THEN 'T' ELSE 'C' END AS catcode, keyword_category AS catdesc "
    "FROM duckdb_keywords();"
    # sizes DuckDB does not keep per table: 0 bytes, as PostgreSQL says of an empty one
    "CREATE OR REPLACE TEMP MACRO pg_total_relation_size(id) AS 0::BIGINT;"
    "CREATE OR REPLACE TEMP MACRO pg_relation_size(id) AS 0::BIGINT;"
    "CREATE OR REPLACE TEMP MACRO pg_table_size(id) AS 0::BIGINT;"
    "CREATE OR REPLACE TEMP MACRO pg_indexes_size(id) AS 0::BIGINT;"
    "CREATE OR REPLACE TEMP MACRO pg_get_indexdef(i) AS "
    "(SELECT any_value(sql) FROM duckdb_indexes() WHERE index_oid = i), "
    "(i, k, pretty) AS (SELECT any_value(trim((expressions::VARCHAR[])[k], '\"')) "
    "FROM duckdb_indexes() WHERE index_oid = i);"
    "CREATE OR REPLACE TEMP MACRO pg_type_name(t, m) AS "  # format_type, in PostgreSQL's words
    "CASE pg_catalog.format_type(t, m) WHEN 'int4' THEN 'integer' WHEN 'int8' THEN 'bigint' "
    "WHEN 'int2' THEN 'smallint' WHEN 'float4' THEN 'real' WHEN 'float8' THEN 'double precision' "
    "WHEN 'bool' THEN 'boolean' WHEN 'varchar' THEN 'character varying' "
    "WHEN 'timestamp' THEN 'timestamp without time zone' "
    "WHEN 'timestamptz' THEN 'timestamp with time zone' WHEN 'struct' THEN 'json' "
    "ELSE pg_catalog.format_type(t, m) END;"
    "CREATE OR REPLACE TEMP MACRO pg_column_type_name(rel, col, t, m) AS coalesce((SELECT "
    "any_value(CASE regexp_replace(data_type, '\\[\\d*\\]$', '') WHEN 'FLOAT' THEN 'real' "
    "WHEN 'DOUBLE' THEN 'double precision' WHEN 'INTEGER' THEN 'integer' "
    "WHEN 'BIGINT' THEN 'bigint' WHEN 'SMALLINT' THEN 'smallint' WHEN 'BOOLEAN' THEN 'boolean' "
    "WHEN 'VARCHAR' THEN 'character varying' ELSE 'text' END || '[]') "
    "FROM duckdb_columns() WHERE table_oid = rel AND column_name = col "
    "AND regexp_matches(data_type, '\\[\\d*\\]$')), pg_type_name(t, m));"
)


# psql's \\df and \\sf (after jammi_pg_functions(), which they read, on each session)
_FUNCTION_MACROS = (
    "CREATE OR REPLACE TEMP MACRO pg_get_function_result(id) AS (SELECT any_value(coalesce("
    "j.result, CASE WHEN function_type IN ('table_macro', 'table') THEN 'TABLE' "
    "ELSE coalesce(lower(return_type), 'any') END)) FROM duckdb_functions() f "
    "LEFT JOIN jammi_pg_functions() j ON j.name = f.function_name "
    "AND f.database_name = 'temp' WHERE function_oid = id);"
    "CREATE OR REPLACE TEMP MACRO pg_get_function_arguments(id) AS (SELECT any_value(coalesce("
    "j.arguments, array_to_string(list_transform(list_zip(parameters, parameter_types), "
    "lambda p: p[1] || ' ' || lower(coalesce(p[2], 'any'))), ', '))) FROM duckdb_functions() f "
    "LEFT JOIN jammi_pg_functions() j ON j.name = f.function_name "
    "AND f.database_name = 'temp' WHERE function_oid = id);"
    "CREATE OR REPLACE TEMP MACRO pg_get_function_identity_arguments(id) AS "
    "pg_get_function_arguments(id);"
    "CREATE OR REPLACE TEMP MACRO pg_get_functiondef(id) AS (SELECT any_value(CASE "
    "WHEN macro_definition IS NOT NULL THEN 'CREATE MACRO ' || schema_name || '.' || "
    "function_name || '(' || array_to_string(parameters, ', ') || ') AS ' || "
    "CASE WHEN function_type = 'table_macro' THEN 'TABLE ' ELSE '' END || "
    "macro_definition || chr(10) "
    "ELSE 'CREATE FUNCTION ' || schema_name || '.' || function_name || '(' || "
    "pg_get_function_arguments(id) || ') RETURNS ' || pg_get_function_result(id) || "
    "chr(10) || '-- ' || coalesce(function_type, '') || ' function, defined in Python' || "
    "coalesce(': ' || description, '') || chr(10) END) "
    "FROM duckdb_functions() WHERE function_oid = id);"
)


def session_macros(roles: list[Any], current: Any, extensions: list[tuple]) -> str:
    """The catalog of one session's server: its roles (``pg_roles``, for psql's ``\\du``),
    the extensions DuckDB has loaded (``pg_extension``, ``\\dx``), and who owns what."""

    def text(value: Any) -> str:
        return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"

    rows = [
        f"({10 + i}::BIGINT, {text(r.name)}, {str(not r.sandboxed and r.kind == 'owner')}, "
        f"{str(r.kind == 'owner')}, {str(r.kind == 'owner')})"
        for i, r in enumerate(roles)
    ]
    owner = next(r.name for r in roles if r.kind == "owner")
    from ..functions.registry import FUNCTIONS

    public_functions = [f for f in FUNCTIONS if f.public]
    public = ", ".join(text(f.name) for f in public_functions)
    signatures = ", ".join(  # \\df's argument and result types, from the registry
        f"({text(f.name)}, {text(_arguments(f))}, "
        f"{text('TABLE' if f.returns == 'TABLE' else _returns(f))})"
        for f in public_functions
    )
    extension_rows = [
        f"({30000 + i}::BIGINT, {text(name)}, {text(version or '')})"
        for i, (name, version) in enumerate(extensions)
    ] or ["(0::BIGINT, NULL, NULL)"]
    return (
        "CREATE OR REPLACE TEMP MACRO jammi_pg_roles() AS TABLE SELECT oid, rolname, "
        "rolsuper, true AS rolinherit, rolcreaterole, rolcreatedb, true AS rolcanlogin, "
        "false AS rolreplication, -1 AS rolconnlimit, '********' AS rolpassword, "
        "NULL::TIMESTAMP AS rolvaliduntil, false AS rolbypassrls, NULL::VARCHAR[] AS rolconfig "
        f"FROM (VALUES {', '.join(rows)}) t(oid, rolname, rolsuper, rolcreaterole, rolcreatedb);"
        # pg_proc with jammi's functions (this session's macros) in schema main, for \\df
        "CREATE OR REPLACE TEMP MACRO jammi_pg_proc() AS TABLE SELECT * REPLACE (CASE WHEN "
        "oid IN (SELECT function_oid FROM duckdb_functions() WHERE database_name = 'temp' "
        f"AND function_name IN ({public})) THEN (SELECT min(oid) FROM pg_catalog.pg_namespace "
        "WHERE nspname = 'main') ELSE pronamespace END AS pronamespace) "
        "FROM pg_catalog.pg_proc;"
        "CREATE OR REPLACE TEMP MACRO jammi_pg_functions() AS TABLE SELECT * FROM "
        f"(VALUES {signatures}) t(name, arguments, result);" + _FUNCTION_MACROS + ""
        "CREATE OR REPLACE TEMP MACRO jammi_pg_extensions() AS TABLE SELECT oid, extname, "
        "10::BIGINT AS extowner, 0::BIGINT AS extnamespace, false AS extrelocatable, "
        "extversion, NULL::VARCHAR[] AS extconfig, NULL::VARCHAR[] AS extcondition "
        f"FROM (VALUES {', '.join(extension_rows)}) t(oid, extname, extversion) "
        "WHERE extname IS NOT NULL;"
        f"CREATE OR REPLACE TEMP MACRO pg_get_userbyid(id) AS CASE id "
        + "".join(f"WHEN {10 + i} THEN {text(r.name)} " for i, r in enumerate(roles))
        + f"ELSE {text(owner)} END;"
        + "".join(
            f"CREATE OR REPLACE TEMP MACRO {fn}() AS {text(current.name)};"
            for fn in ("current_user", "session_user", "user", "current_role")
        )
    )


def _arguments(fn: Any) -> str:
    from ..functions.arguments import sql_literal

    return ", ".join(
        f"{p.name} {p.type.lower()}" + (f" DEFAULT {sql_literal(p.default)}" if p.optional else "")
        for p in fn.params
    )


def _returns(fn: Any) -> str:
    return fn.returns.lower() if isinstance(fn.returns, str) else "float[]"


def pg_compatible(sql: str) -> str:
    if "pg_catalog" not in sql and "::reg" not in sql:
        return sql
    for pattern, replacement in REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql


def param_oids(sql: str, declared: list[int | None], count: int) -> list[int]:
    """A parameter's type: as the client declared it, else as a ``$n::type`` cast in the SQL
    says, else text."""
    casts = {int(n): CAST_OIDS.get(re.sub(r"\s", "", t).lower()) for n, t in _CAST.findall(sql)}
    oids = []
    for i in range(max(count, len(declared))):
        given = declared[i] if i < len(declared) else None
        oids.append(given or casts.get(i + 1) or TEXT)
    return oids


_NAME = r'(?:"[^"]+"|[A-Za-z_]\w*)'
_INSERT_VALUES = re.compile(
    rf"^\s*INSERT\s+INTO\s+({_NAME}(?:\.{_NAME})*)\s*(?:\(([^)]*)\))?\s*VALUES\s*\((.*)\)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_TYPED = (
    _INT_OIDS | _FLOAT_OIDS | {16, TEXT} | {ARRAY_OID[o] for o in (16, 20, 21, 23, 700, 701, 25)}
)


def insert_targets(
    cursor: duckdb.DuckDBPyConnection, sql: str, declared: list[int | None]
) -> list[int | None]:
    """``INSERT INTO t [(columns)] VALUES ($1, $2, ...)``: each parameter the client left
    untyped gets its target column's type, so asyncpg's ``executemany`` may send ints,
    floats and lists (not only strings). Anything else: ``declared`` as it was."""
    found = _INSERT_VALUES.match(sql)
    if not found or re.search(r"\)\s*,\s*\(", found.group(3)):
        return declared
    try:
        relation = cursor.sql(f"SELECT * FROM {found.group(1)} LIMIT 0")
    except duckdb.Error:
        return declared  # DuckDB says what is wrong when the statement runs
    types = {n.lower(): str(t) for n, t in zip(relation.columns, relation.types, strict=True)}
    names = (
        [n.strip().strip('"').lower() for n in found.group(2).split(",")]
        if found.group(2)
        else [n.lower() for n in relation.columns]
    )
    oids = list(declared)
    for name, item in zip(names, found.group(3).split(","), strict=False):
        parameter = re.fullmatch(r"\s*\$(\d+)\s*", item)
        if parameter is None or name not in types:
            continue
        index = int(parameter.group(1)) - 1
        oids += [None] * (index + 1 - len(oids))
        oid = pg_type(types[name])
        if not oids[index] and oid in _TYPED:
            oids[index] = oid
    return oids


def python_param(oid: int, value: Any) -> Any:
    """pg_mimic hands parameters over as text; DuckDB gets numbers and booleans typed."""
    if value is None or not isinstance(value, str):
        return value
    if oid in _INT_OIDS:
        return int(value)
    if oid in _FLOAT_OIDS:
        return float(value)
    if oid == 16:
        return value.lower() in ("t", "true", "1", "on", "yes")
    return value


# arrays whose text form Arrow writes for a whole batch at once (bool, ints, floats)
TEXT_ARRAYS = {ARRAY_OID[oid] for oid in (16, 20, 21, 23, 700, 701)}


def array_text(column: pa.Array) -> pa.Array:
    """A batch of number arrays as PostgreSQL array literals ``{0.12,-3.5,...}``, vectorized:
    an embedding's 384 floats in one Arrow cast rather than 384 Python reprs."""
    if isinstance(column, pa.FixedSizeListArray):
        size = column.type.list_size
        values = column.values.slice(column.offset * size, len(column) * size)
        offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32) * size)
    else:
        values, offsets = column.values, column.offsets
    texts = pc.cast(values, pa.string())
    if pa.types.is_floating(values.type):  # PostgreSQL's spellings: NaN, Infinity, e-05
        texts = pc.replace_substring_regex(texts, r"e([+-])(\d)$", r"e\10\2")  # RE2: \1, 0
        texts = pc.replace_substring_regex(texts, "^nan$", "NaN")
        texts = pc.replace_substring_regex(texts, "^(-?)inf$", r"\1Infinity")
    texts = pc.fill_null(texts, "NULL")
    lists = pa.ListArray.from_arrays(offsets, texts, mask=column.is_null())
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")
