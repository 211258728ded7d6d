"""What the wire server adds to pg_mimic: a client session is a DuckDB cursor with jammi.

pg_mimic speaks the PostgreSQL protocol (startup, SCRAM, simple and extended queries,
portals, asyncpg's type probe). What is jammi's own is here: each session runs its SQL on a
cursor of the one shared Database (so every session sees every jammi function over one
catalog, one job runner and one model cache), in a worker thread so that a long call never
blocks the others; DuckDB types become PostgreSQL ones; an error becomes a PostgreSQL error
carrying the ``jammi:`` message; a cancel request interrupts that session's query.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import duckdb
from pg_mimic import PgError, Portal, ResultColumn, Session, Statement, StaticStatement
from pg_mimic.arrays import ARRAY_OID
from pg_mimic.middleware import (
    _SHOW_RE,
    MiddlewareContext,
    _show_statement,
    asyncpg_typeinfo,
    session_functions,
)

from .errors import user_message

BATCH_ROWS = 2048
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
_CAST = re.compile(r"\$(\d+)\s*::\s*(\w+(?:\s*\[\s*\])?)")
_INT_OIDS, _FLOAT_OIDS = {20, 21, 23}, {700, 701, NUMERIC}
_TX_BEGIN = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION)\b", re.IGNORECASE)
_TX_END = re.compile(r"^\s*(COMMIT|END|ROLLBACK|ABORT)\b", re.IGNORECASE)
_SAVEPOINT = re.compile(r"^\s*(SAVEPOINT|RELEASE)\b", re.IGNORECASE)
_ROLLBACK_TO = re.compile(r"^\s*ROLLBACK\s+TO\b", re.IGNORECASE)
_ISOLATION = re.compile(r"^\s*SHOW\s+TRANSACTION\s+ISOLATION\s+LEVEL\s*;?\s*$", re.IGNORECASE)
_PG_SESSION_FUNCTIONS = re.compile(r"\b(current_setting|set_config|pg_backend_pid)\s*\(", re.I)
_VERSION = re.compile(r"^\s*SELECT\s+(pg_catalog\.)?version\(\)\s*;?\s*$", re.IGNORECASE)
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


def _converter(oid: int, duck_type: str):
    """Per-column conversion of Arrow's Python values into what pg_mimic encodes."""
    if oid == JSON and duck_type != "JSON":
        return lambda v: None if v is None else json.dumps(_jsonable(v), default=str)
    if oid == INTERVAL:
        return lambda v: (
            None if v is None else f"{v.months} mons {v.days} days {v.nanoseconds // 1000} us"
        )
    return None


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
    if message.startswith("jammi:"):
        state = "25006" if "read-only" in message else "P0001" if state == "XX000" else state
    return PgError(state, message)


# PostgreSQL spellings in what drivers and psql send, and DuckDB's equivalents
REWRITES = [
    (re.compile(r"::\s*(regtype|regclass|regproc|regnamespace)\b", re.I), ""),
    (re.compile(r"\bAS\s+(REGTYPE|REGCLASS|REGPROC|REGNAMESPACE)\b", re.I), "AS VARCHAR"),
    (re.compile(r"\bAS\s+OID\)", re.I), "AS UINTEGER)"),
    (re.compile(r"OPERATOR\(pg_catalog\.(~|!~|~\*)\)"), r"\1"),
    (re.compile(r"\bpg_catalog\.(\w+)\s*\(", re.I), r"\1("),
    (re.compile(r"\bjson_build_object\s*\(", re.I), "json_object("),
    (re.compile(r"\bformat_type\s*\(", re.I), "pg_type_name("),
    (re.compile(r"\bpg_catalog\.(pg_\w+)\.(\w+)"), r"\1.\2"),  # schema.table.column
    (
        re.compile(r"\bpg_catalog\.pg_collation\b"),  # DuckDB's lacks collnamespace
        "(SELECT *, 0::BIGINT AS collnamespace FROM pg_catalog.pg_collation) AS pg_collation",
    ),
    (re.compile(r"\s+COLLATE\s+pg_catalog\.default", re.I), ""),
]
# functions DuckDB's pg_catalog lacks, as TEMP macros on every session's cursor
PG_MACROS = (
    "CREATE OR REPLACE TEMP MACRO to_regtype(name) AS NULL::UINTEGER;"
    "CREATE OR REPLACE TEMP MACRO pg_get_userbyid(id) AS current_user;"
    "CREATE OR REPLACE TEMP MACRO pg_get_serial_sequence(t, c) AS NULL::VARCHAR;"
    "CREATE OR REPLACE TEMP MACRO pg_collation_is_visible(id) AS true;"
    "CREATE OR REPLACE TEMP MACRO pg_type_name(t, m) AS "  # format_type, in PostgreSQL's words
    "CASE pg_catalog.format_type(t, m) WHEN 'int4' THEN 'integer' WHEN 'int8' THEN 'bigint' "
    "WHEN 'int2' THEN 'smallint' WHEN 'float4' THEN 'real' WHEN 'float8' THEN 'double precision' "
    "WHEN 'bool' THEN 'boolean' WHEN 'varchar' THEN 'character varying' "
    "WHEN 'timestamp' THEN 'timestamp without time zone' "
    "WHEN 'timestamptz' THEN 'timestamp with time zone' WHEN 'struct' THEN 'json' "
    "ELSE pg_catalog.format_type(t, m) END;"
)


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


class JammiSession(Session):
    """One client: its own cursor of the shared database, with jammi's macros on it."""

    def __init__(self, shared: Any):
        self.shared = shared
        self.cursor: duckdb.DuckDBPyConnection | None = None

    middleware = ()  # our own chain below; everything else is DuckDB's to answer

    async def init(self, connection: Any) -> None:
        await super().init(connection)
        self.cursor = await self.run(self.shared.new_cursor)

    async def close(self) -> None:
        if self.cursor is not None:
            await self.run(self.cursor.close)

    async def run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.shared.pool, fn, *args)

    async def prepare(self, sql: str, param_oids_: list[int | None]) -> Statement:
        if _VERSION.match(sql):
            column = ResultColumn("version", TEXT)
            return StaticStatement(sql, [column], [(self.shared.version_text,)])
        if _SAVEPOINT.match(sql):  # accepted; DuckDB has none (see ROLLBACK TO below)
            return StaticStatement(sql, None, [])
        if _ROLLBACK_TO.match(sql):
            return StaticStatement(sql, None, [], self._rollback_all)
        if _ISOLATION.match(sql):  # DuckDB's MVCC: snapshot isolation
            column = ResultColumn("transaction_isolation", TEXT)
            return StaticStatement(sql, [column], [("repeatable read",)])
        show = _SHOW_RE.match(sql)
        if show and self._pg_setting(show.group(1)):
            return _show_statement(self._connection, show.group(1))
        probe = MiddlewareContext(self._connection, sql, param_oids_)
        answer = await asyncpg_typeinfo(probe)
        if answer is None and _PG_SESSION_FUNCTIONS.search(sql):
            answer = await session_functions(probe)  # current_setting('jit') and the like
        return answer or DuckStatement(self, sql, param_oids_)

    def _rollback_all(self) -> None:
        """ROLLBACK TO a savepoint rolls back the whole transaction and begins a new one,
        the only undo DuckDB has; the client stays in a transaction, as it expects."""
        self.cursor.execute("ROLLBACK")
        self.cursor.execute("BEGIN")
        self._connection.tx_status = b"T"

    def _pg_setting(self, name: str) -> bool:
        from pg_mimic.middleware import _DEFAULT_SETTINGS

        key = name.strip('"').lower()
        return key in self._connection.session_vars or key in _DEFAULT_SETTINGS


class DuckStatement(Statement):
    """A statement DuckDB runs. Parameters are counted by DuckDB's parser; their types come
    from the client or from ``$n::type`` casts (see ``param_oids``)."""

    def __init__(self, session: JammiSession, sql: str, declared: list[int | None]):
        self.session, self.sql = session, pg_compatible(sql)
        try:
            parsed = duckdb.extract_statements(self.sql)
        except duckdb.Error:
            parsed = []
        self.kind = parsed[0].type if len(parsed) == 1 else None
        count = len(parsed[0].named_parameters) if len(parsed) == 1 else 0
        self.param_oids = param_oids(self.sql, declared, count)

    async def describe(self) -> list[ResultColumn] | None:
        """Before any Bind (asyncpg): a SELECT's columns as DuckDB binds it with NULLs."""
        if self.kind != duckdb.StatementType.SELECT:
            return None

        def bind() -> Any:
            self.session.shared.sync()
            nulls = [None] * len(self.param_oids)
            return self.session.cursor.sql(self.sql, params=nulls or None)

        try:
            relation = await self.session.run(bind)
        except duckdb.Error:
            return None
        return [
            ResultColumn(n, pg_type(str(t)))
            for n, t in zip(relation.columns, relation.types, strict=True)
        ]

    def bind(self, params: list[Any]) -> Portal:
        values = [python_param(oid, v) for oid, v in zip(self.param_oids, params, strict=False)]
        return DuckPortal(self, values)


class DuckPortal(Portal):
    """Bound parameters; ``start`` binds the statement in DuckDB (a SELECT runs lazily, at
    Execute; other statements run here), and rows stream in Arrow batches."""

    def __init__(self, statement: DuckStatement, params: list[Any]):
        self.statement, self.params = statement, params
        self.columns: list[ResultColumn] | None = None
        self.relation: Any = None
        self.reader: Any = None
        self.pending: list[tuple] = []
        self.count: int | None = None  # rows an INSERT/UPDATE/DELETE changed
        self._converters: list[Any] = []

    async def start(self) -> list[ResultColumn] | None:
        session = self.statement.session
        try:
            self.relation = await session.run(self._bind)
        except BaseException as exc:
            if _is_set(self.statement.sql) and isinstance(exc, duckdb.CatalogException):
                return self._remember_setting(session)
            raise pg_error(exc, session.shared.readonly) from None
        self._track_transaction(session)
        return self.columns

    def _bind(self) -> Any:
        shared = self.statement.session.shared
        shared.sync()
        relation = self.statement.session.cursor.sql(self.statement.sql, params=self.params or None)
        if relation is None:
            return None
        names, types = relation.columns, [str(t) for t in relation.types]
        kind = self.statement.kind
        if names in (["Success"], ["Count"]) and kind not in _ROWS:
            self.count = relation.fetchall()[0][0] if kind in _WRITES else None
            return None
        self.columns = [ResultColumn(n, pg_type(t)) for n, t in zip(names, types, strict=True)]
        self._converters = [_converter(c.oid, t) for c, t in zip(self.columns, types, strict=True)]
        return relation

    def _remember_setting(self, session: JammiSession) -> None:
        """A PostgreSQL setting DuckDB does not have (extra_float_digits, DateStyle, ...):
        kept per session, as SHOW reports it."""
        found = re.match(
            r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?(\w+)\s*(?:TO|=)\s*(.+?)\s*;?\s*$",
            self.statement.sql,
            re.IGNORECASE,
        )
        if found:
            session._connection.session_vars[found.group(1).lower()] = found.group(2).strip("'\"")
        return None

    def _track_transaction(self, session: JammiSession) -> None:
        if _TX_BEGIN.match(self.statement.sql):
            session._connection.tx_status = b"T"
        elif _TX_END.match(self.statement.sql):
            session._connection.tx_status = b"I"

    async def execute(self, max_rows: int) -> tuple[list[tuple], bool]:
        if self.relation is None:
            return [], False
        try:
            return await self.statement.session.run(self._fetch, max_rows)
        except BaseException as exc:
            raise pg_error(exc, self.statement.session.shared.readonly) from None

    def _fetch(self, max_rows: int) -> tuple[list[tuple], bool]:
        if self.reader is None:
            self.reader = self.relation.to_arrow_reader(BATCH_ROWS)
        rows = self.pending
        while max_rows <= 0 or len(rows) < max_rows:
            try:
                batch = self.reader.read_next_batch()
            except StopIteration:
                break
            columns = []
            for column, convert in zip(batch.columns, self._converters, strict=True):
                values = column.to_pylist()
                columns.append(values if convert is None else [convert(v) for v in values])
            rows.extend(zip(*columns, strict=True))
        if max_rows > 0 and len(rows) > max_rows:
            rows, self.pending = rows[:max_rows], rows[max_rows:]
            return rows, True
        self.pending = []
        return rows, max_rows > 0 and len(rows) == max_rows


_WRITES = {duckdb.StatementType.INSERT, duckdb.StatementType.UPDATE, duckdb.StatementType.DELETE}
_ROWS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}
_ROWS |= {duckdb.StatementType.CALL, None}


def _is_set(sql: str) -> bool:
    return bool(re.match(r"^\s*SET\s", sql, re.IGNORECASE))
