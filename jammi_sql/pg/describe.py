"""psql's ``\\d NAME``, answered from DuckDB's own catalog.

psql describes a relation with queries on PostgreSQL's catalog (pg_class columns, pg_attribute,
pg_index, pg_policy, pg_statistic_ext, pg_publication, pg_inherits) that DuckDB's pg_catalog
does not fully have. Here those few queries, recognised by their text, get the answer PostgreSQL
would give for a table or view: its columns with DuckDB's own type names, NOT NULL, defaults
and comments; its primary key, unique constraints and indexes; the foreign keys it has and
those that reference it (its check constraints DuckDB answers itself); and no rules, triggers,
policies, statistics, publications or inheritance (DuckDB has none of those to show). Every
other query goes to DuckDB as before.

The queries are psql's (``describe.c``); their select lists are read item by item, so the
plain and the verbose (``\\d+``) forms of one query both get one value per item.
"""

from __future__ import annotations

import re
from typing import Any

from pg_mimic import ResultColumn, StaticStatement

BOOL, TEXT, INT4 = 16, 25, 23

_RELATION = re.compile(
    r"^\s*SELECT c\.relchecks, c\.relkind, c\.relhasindex\b.*WHERE c\.oid = '(\d+)'", re.S
)
_COLUMNS = re.compile(
    r"^\s*SELECT a\.attname,.*FROM pg_catalog\.pg_attribute a\s+WHERE a\.attrelid = '(\d+)'", re.S
)
_INDEXES = re.compile(
    r"^\s*SELECT c2\.relname, i\.indisprimary\b.*WHERE c\.oid = '(\d+)' AND c\.oid = i\.indrelid",
    re.S,
)
_REFERENCED_BY = re.compile(
    r"^\s*SELECT conname, conrelid::pg_catalog\.regclass AS ontable.*"
    r"WHERE confrelid IN \(SELECT pg_catalog\.pg_partition_ancestors\('(\d+)'\)",
    re.S,
)
_VIEW_DEF = re.compile(r"^\s*SELECT pg_catalog\.pg_get_viewdef\('(\d+)'::pg_catalog\.oid", re.S)
# footers about things DuckDB has none of: an empty answer is PostgreSQL's for such a table
_NOTHING = re.compile(
    r"FROM pg_catalog\.(pg_policy|pg_statistic_ext|pg_publication|pg_inherits|pg_trigger)\b"
    r"|pg_catalog\.pg_inherits i\b",
    re.S,
)

# what each item of psql's select lists is, for a DuckDB table or view (first match wins)
RELATION_ITEMS = [
    ("relchecks", INT4, lambda r: r["checks"]),
    ("relkind", TEXT, lambda r: r["kind"]),
    ("relhasoids", BOOL, lambda r: False),
    ("relhasindex", BOOL, lambda r: r["indexed"]),
    ("relhastriggers", BOOL, lambda r: r["keyed"]),  # psql then asks for foreign keys
    ("relhas", BOOL, lambda r: False),  # relhasrules
    ("rowsecurity", BOOL, lambda r: False),  # relrowsecurity, relforcerowsecurity
    ("relispartition", BOOL, lambda r: False),
    ("reltablespace", INT4, lambda r: 0),
    ("reloftype", TEXT, lambda r: ""),
    ("relpersistence", TEXT, lambda r: "t" if r["temporary"] else "p"),
    ("relreplident", TEXT, lambda r: "d"),
    ("amname", TEXT, lambda r: None if r["kind"] == "v" else "duckdb"),
    ("reloptions", TEXT, lambda r: ""),
]
COLUMN_ITEMS = [
    ("attname", TEXT, lambda c: c["name"]),
    ("format_type", TEXT, lambda c: c["type"]),
    ("pg_get_expr", TEXT, lambda c: c["default"]),
    ("attnotnull", BOOL, lambda c: c["not_null"]),
    ("attcollation", TEXT, lambda c: None),
    ("attidentity", TEXT, lambda c: ""),
    ("attgenerated", TEXT, lambda c: ""),
    ("attstorage", TEXT, lambda c: "p"),
    ("attcompression", TEXT, lambda c: ""),
    ("attstattarget", INT4, lambda c: None),  # the default target
    ("col_description", TEXT, lambda c: c["comment"]),
]
INDEX_ITEMS = [
    ("relname", TEXT, lambda i: i["name"]),
    ("indisprimary", BOOL, lambda i: i["primary"]),
    ("indisunique", BOOL, lambda i: i["unique"]),
    ("indisclustered", BOOL, lambda i: False),
    ("indisvalid", BOOL, lambda i: True),
    ("pg_get_indexdef", TEXT, lambda i: i["definition"]),
    ("pg_get_constraintdef", TEXT, lambda i: i["constraint"]),
    ("contype", TEXT, lambda i: i["contype"]),
    ("condeferrable", BOOL, lambda i: False),
    ("condeferred", BOOL, lambda i: False),
    ("indisreplident", BOOL, lambda i: False),
    ("reltablespace", INT4, lambda i: 0),
]
REFERENCE_ITEMS = [
    ("conname", TEXT, lambda f: f["name"]),
    ("ontable", TEXT, lambda f: f["table"]),
    ("condef", TEXT, lambda f: f["definition"]),
]


def answer(cursor: Any, sql: str) -> StaticStatement | None:
    """The answer to one of psql's describe queries, or None for any other statement."""
    if "pg_catalog" not in sql:
        return None
    queries = (
        (_RELATION, _relation),
        (_COLUMNS, _columns),
        (_VIEW_DEF, _view),
        (_INDEXES, _indexes),
        (_REFERENCED_BY, _referenced_by),
    )
    for pattern, build in queries:
        found = pattern.match(sql)
        if found:
            return build(cursor, sql, int(found.group(1)))
    if sql.lstrip().upper().startswith("SELECT") and _NOTHING.search(sql):
        return StaticStatement(sql, [ResultColumn(n, TEXT) for n in _names(sql)], [])
    return None


def _relation(cursor: Any, sql: str, oid: int) -> StaticStatement:
    found = cursor.execute(
        "SELECT 'r', temporary FROM duckdb_tables() WHERE table_oid = $1 UNION ALL "
        "SELECT 'v', temporary FROM duckdb_views() WHERE view_oid = $1",
        [oid],
    ).fetchall()
    counts = cursor.execute(
        "SELECT count(*) FILTER (constraint_type IN ('PRIMARY KEY', 'UNIQUE')) + (SELECT count(*) "
        "FROM duckdb_indexes() WHERE table_oid = $1), count(*) FILTER (constraint_type = 'CHECK'), "
        "count(*) FILTER (constraint_type = 'FOREIGN KEY') + (SELECT count(*) FROM "
        "duckdb_constraints() r JOIN duckdb_tables() t ON r.referenced_table = t.table_name AND "
        "r.schema_name = t.schema_name AND r.database_name = t.database_name "
        "WHERE t.table_oid = $1) FROM duckdb_constraints() WHERE table_oid = $1",
        [oid],
    ).fetchone()
    rows = [
        {
            "kind": kind,
            "temporary": temp,
            "indexed": counts[0] > 0,
            "checks": counts[1],
            "keyed": counts[2] > 0,
        }
        for kind, temp in found[:1]
    ]
    return _static(sql, RELATION_ITEMS, rows)


def _indexes(cursor: Any, sql: str, oid: int) -> StaticStatement:
    """Primary key and unique constraints (each is an index in PostgreSQL), then indexes."""
    found = cursor.execute(
        "SELECT constraint_name, constraint_type = 'PRIMARY KEY', true, "
        "'CREATE UNIQUE INDEX ' || constraint_name || ' ON ' || table_name || ' USING art (' || "
        "array_to_string(constraint_column_names, ', ') || ')', constraint_text, "
        "CASE constraint_type WHEN 'PRIMARY KEY' THEN 'p' ELSE 'u' END "
        "FROM duckdb_constraints() WHERE table_oid = $1 "
        "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE') UNION ALL "
        "SELECT index_name, is_primary, is_unique, 'CREATE ' || CASE WHEN is_unique THEN "
        "'UNIQUE ' ELSE '' END || 'INDEX ' || index_name || ' ON ' || table_name || ' USING art ("
        "' || array_to_string(list_transform(expressions::VARCHAR[], lambda e: trim(e, '\"')), "
        "', ') || ')', NULL, NULL FROM duckdb_indexes() WHERE table_oid = $1 ORDER BY 2 DESC, 1",
        [oid],
    ).fetchall()
    keys = ("name", "primary", "unique", "definition", "constraint", "contype")
    return _static(sql, INDEX_ITEMS, [dict(zip(keys, r, strict=True)) for r in found])


def _referenced_by(cursor: Any, sql: str, oid: int) -> StaticStatement:
    """Foreign keys of other tables that reference this one."""
    found = cursor.execute(
        "SELECT r.constraint_name, r.table_name, r.constraint_text FROM duckdb_constraints() r "
        "JOIN duckdb_tables() t ON r.referenced_table = t.table_name AND "
        "r.schema_name = t.schema_name AND r.database_name = t.database_name "
        "WHERE t.table_oid = $1 AND r.constraint_type = 'FOREIGN KEY' ORDER BY 1",
        [oid],
    ).fetchall()
    keys = ("name", "table", "definition")
    return _static(sql, REFERENCE_ITEMS, [dict(zip(keys, r, strict=True)) for r in found])


def _columns(cursor: Any, sql: str, oid: int) -> StaticStatement:
    found = cursor.execute(
        "SELECT column_name, lower(data_type), column_default, NOT is_nullable, comment "
        "FROM duckdb_columns() WHERE table_oid = $1 ORDER BY column_index",
        [oid],
    ).fetchall()
    keys = ("name", "type", "default", "not_null", "comment")
    return _static(sql, COLUMN_ITEMS, [dict(zip(keys, r, strict=True)) for r in found])


def _view(cursor: Any, sql: str, oid: int) -> StaticStatement:
    found = cursor.execute("SELECT sql FROM duckdb_views() WHERE view_oid = $1", [oid]).fetchall()
    return StaticStatement(sql, [ResultColumn("pg_get_viewdef", TEXT)], found[:1])


def _static(sql: str, items: list, records: list[dict]) -> StaticStatement:
    """One value per select-list item: the first entry of ``items`` whose key it mentions."""
    picked = []
    for item in _select_list(sql):
        match = next((i for i in items if i[0] in item), None)
        picked.append(match or (item, TEXT, lambda r: None))
    columns = [
        ResultColumn(_alias(item, key), oid)
        for item, (key, oid, _) in zip(_select_list(sql), picked, strict=True)
    ]
    rows = [tuple(value(r) for _, _, value in picked) for r in records]
    return StaticStatement(sql, columns, rows)


def _select_list(sql: str) -> list[str]:
    """The top-level items between SELECT and its FROM (psql's queries only: no strings with
    parentheses or commas in them that would matter)."""
    body = sql.lstrip()[len("SELECT") :]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch == ",":
            items.append(body[start:i])
            start = i + 1
        elif depth == 0 and re.match(r"\s+FROM\s", body[i : i + 7], re.I):
            items.append(body[start:i])
            return [x.strip() for x in items]
    items.append(body[start:])
    return [x.strip() for x in items]


def _names(sql: str) -> list[str]:
    return [_alias(item, item) for item in _select_list(sql)]


def _alias(item: str, fallback: str) -> str:
    found = re.search(r"\bAS\s+\"?(\w+)\"?\s*$", item, re.I)
    if found:
        return found.group(1)
    bare = re.fullmatch(r"(?:\w+\.)?(\w+)", item)
    return bare.group(1) if bare else re.sub(r"\W+", "_", fallback).strip("_")[:63] or "?column?"
