"""What the wire server adds to pg_mimic: a client session is a DuckDB cursor with jammi.

pg_mimic speaks the PostgreSQL protocol (startup, SCRAM, simple and extended queries,
portals, asyncpg's type probe). What is jammi's own is here: each session runs its SQL on a
cursor of the one shared Database (so every session sees every jammi function over one
catalog, one job runner and one model cache), in a worker thread so that a long call never
blocks the others; DuckDB types become PostgreSQL ones; an error becomes a PostgreSQL error
carrying the ``jammi:`` message; a cancel request interrupts that session's query. Each
session acts as one role: every statement passes the role's check (roles.py) before DuckDB
sees it, and runs under the statement timeout.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import duckdb
from pg_mimic import PgError, Portal, ResultColumn, Session, Statement, StaticStatement, messages
from pg_mimic.connection import Connection, PortalEntry, command_tag
from pg_mimic.middleware import (
    _SHOW_RE,
    MiddlewareContext,
    _show_statement,
    asyncpg_typeinfo,
    is_transaction_end,
    session_functions,
)
from pg_mimic.results import encode_row, format_code_for

from .. import progress
from ..errors import user_message
from . import copy as wire_copy
from . import describe as psql_describe
from .dialect import (
    TEXT,
    TEXT_ARRAYS,
    array_text,
    converter,
    insert_targets,
    param_oids,
    pg_column_name,
    pg_compatible,
    pg_error,
    pg_type,
    python_param,
    real_text,
    session_macros,
)
from .roles import READER, reader_shadows

BATCH_ROWS = 2048
WATCH_S = 0.25  # how often a running statement checks that its client is still there
_TX_BEGIN = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION)\b", re.IGNORECASE)
_TX_END = re.compile(r"^\s*(COMMIT|END|ROLLBACK|ABORT)\b", re.IGNORECASE)
_SAVEPOINT = re.compile(r"^\s*(SAVEPOINT|RELEASE)\b", re.IGNORECASE)
_ROLLBACK_TO = re.compile(r"^\s*ROLLBACK\s+TO\b", re.IGNORECASE)
_ISOLATION = re.compile(
    r"^\s*SHOW\s+(TRANSACTION\s+ISOLATION\s+LEVEL|transaction_isolation)\s*;?\s*$", re.I
)
_PG_SESSION_FUNCTIONS = re.compile(r"\b(current_setting|set_config|pg_backend_pid)\s*\(", re.I)
_DEALLOCATE = re.compile(r'^\s*DEALLOCATE\s+(?:PREPARE\s+)?(\w+|"[^"]+")\s*;?\s*$', re.I)
_VERSION = re.compile(r"^\s*SELECT\s+(pg_catalog\.)?version\(\)\s*;?\s*$", re.IGNORECASE)
_SET_VALUE = re.compile(
    r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?\"?(\w+)\"?\s*(?:TO|=)\s*(.+?)\s*;?\s*$", re.I | re.S
)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\b", re.IGNORECASE)
REAL = 700
_JOB_CALLS = re.compile(r"\b(fine_tune|resume_job|cancel_job|delete_job)\s*\(", re.IGNORECASE)


class JammiSession(Session):
    """One client: its own cursor of the shared database, with jammi's macros on it."""

    def __init__(self, shared: Any):
        self.shared = shared
        self.role: Any = None  # the Role it logged in as
        self.address = "?"
        self.cursor: duckdb.DuckDBPyConnection | None = None
        self.portal: DuckPortal | None = None  # the one whose result is open on the cursor
        self.thread: int | None = None  # the worker thread running its statement, if any

    middleware = ()  # our own chain below; everything else is DuckDB's to answer

    async def init(self, connection: Any) -> None:
        await super().init(connection)
        self.role = self.shared.policy.roles[connection.username]
        self.address = getattr(connection, "address", "?")
        self.cursor = await self.run(self.shared.new_cursor)
        roles = list(self.shared.policy.roles.values())
        macros = session_macros(roles, self.role, self.shared.extensions)
        if self.role.kind == READER:  # writing functions refuse, however they are reached
            macros += reader_shadows(self.role, self.shared.db.ctx.suffix)
        await self.run(  # current_user is the role; pg_roles, pg_extension this server's
            self.cursor.execute, macros
        )
        self.shared.sessions.add(self)

    async def close(self) -> None:
        self.shared.sessions.discard(self)
        if self.cursor is not None:
            await self.run(self.cursor.close)

    async def run(self, fn: Any, *args: Any) -> Any:
        """``fn`` in a worker thread. A client that hangs up meanwhile interrupts it, as
        PostgreSQL ends a backend whose client is gone (a jammi function stops after its
        batch and writes nothing half-done)."""

        policy = self.shared.policy

        def on_worker() -> Any:
            self.thread = threading.get_ident()
            policy.acting(self.role)
            try:
                return fn(*args)
            finally:
                policy.acting(None)
                self.thread = None

        work = asyncio.get_running_loop().run_in_executor(self.shared.pool, on_worker)
        limit, started, timed_out = self.statement_timeout(), time.monotonic(), False
        while True:
            done, _ = await asyncio.wait({work}, timeout=WATCH_S if limit is None else 0.05)
            if done:
                try:
                    return work.result()
                except duckdb.InterruptException:
                    if timed_out:
                        raise PgError(
                            "57014",
                            f"jammi: canceling statement due to statement timeout ({limit:g} s); "
                            "SET statement_timeout (ms) for this session, or narrow the query",
                        ) from None
                    raise
            if self._client_gone():
                self.interrupt()
            elif limit is not None and not timed_out and time.monotonic() - started > limit:
                timed_out = True
                self.interrupt()

    def statement_timeout(self) -> float | None:
        """Seconds: the server's ``--statement-timeout``, or less where the session's ``SET
        statement_timeout`` (PostgreSQL's milliseconds, or '5s'; 0 is none) says so. A
        session may shorten the server's limit, never lift it."""
        limit = self.shared.statement_timeout
        given = self._connection.session_vars.get("statement_timeout") if self._connection else None
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min)?\s*", str(given or ""))
        if not found:
            return limit
        value = float(found.group(1)) * {"ms": 1e-3, "s": 1.0, "min": 60.0}[found.group(2) or "ms"]
        if not value:
            return limit
        return value if limit is None else min(value, limit)

    def interrupt(self) -> None:
        """Stop this session's statement: DuckDB's work at its next chunk, a long jammi call
        (generate_text_embeddings, embed, evaluate_*) after its current micro-batch, rolling
        back what it wrote. Other sessions' calls go on."""
        thread = self.thread
        if thread is not None:
            progress.cancel(thread=thread)
            # DuckDB may run the call on a thread of its own, which only the call's owner (the
            # shared Context) names: cancel by owner when no other session is running anything
            if not any(s.thread is not None for s in self.shared.sessions if s is not self):
                progress.cancel(owner=self.shared.db.ctx)
        if self.cursor is not None:
            self.cursor.interrupt()

    def _client_gone(self) -> bool:
        reader = self._connection.stream.reader if self._connection else None
        return bool(reader is not None and getattr(reader, "_eof", False))

    async def prepare(self, sql: str, param_oids_: list[int | None]) -> Statement:
        setting = self.check(sql)
        if setting is not None:  # a PostgreSQL setting DuckDB has not: kept by the session
            return StaticStatement(sql, None, [], lambda: self._keep_setting(setting, sql))
        if _VERSION.match(sql):
            column = ResultColumn("version", TEXT)
            return StaticStatement(sql, [column], [(self.shared.version_text,)])
        if _SAVEPOINT.match(sql):  # accepted; DuckDB has none (see ROLLBACK TO below)
            return StaticStatement(sql, None, [])
        if _ROLLBACK_TO.match(sql):
            return StaticStatement(sql, None, [], self._rollback_all)
        deallocate = _DEALLOCATE.match(sql)
        if deallocate:  # psycopg sends DEALLOCATE ALL when its prepared statements go stale
            return StaticStatement(sql, None, [], lambda: self._deallocate(deallocate.group(1)))
        if _ISOLATION.match(sql):  # DuckDB's MVCC: snapshot isolation
            column = ResultColumn("transaction_isolation", TEXT)
            return StaticStatement(sql, [column], [("repeatable read",)])
        show = _SHOW_RE.match(sql)
        if show and self._pg_setting(show.group(1)):
            return _show_statement(self._connection, show.group(1))
        if "pg_catalog" in sql:  # psql's \d NAME: queries DuckDB's pg_catalog cannot answer
            described = await self.run(psql_describe.answer, self.cursor, sql)
            if described is not None:
                return described
        probe = MiddlewareContext(self._connection, sql, param_oids_)
        answer = await asyncpg_typeinfo(probe)
        if answer is None and self._pg_session_function(sql):
            answer = await session_functions(probe)  # current_setting('jit') and the like
        if answer is None and "$" in sql and _INSERT.match(sql):  # executemany's parameters
            self.close_portal(None)
            param_oids_ = await self.run(insert_targets, self.cursor, sql, param_oids_)
        return answer or DuckStatement(self, sql, param_oids_)

    def check(self, sql: str) -> str | None:
        """Refuse what this session's role may not run (logged to the audit log); the name
        of a PostgreSQL-only setting a SET or RESET changes, else None."""
        policy = self.shared.policy
        try:
            setting = policy.setting(self.role, sql)
            if setting is None:
                policy.check(self.role, sql)
            return setting
        except PgError as exc:
            self.shared.audit.write(
                "refused",
                address=self.address,
                role=self.role.name,
                sqlstate=exc.sqlstate,
                why=exc.message,
                sql=sql.strip(),
            )
            raise

    def error(self, exc: BaseException) -> PgError:
        """The PostgreSQL error for what a statement raised; DuckDB's sandbox refusals name
        this session's role."""
        if isinstance(exc, PgError):
            return exc
        refused = self.shared.policy.translate(self.role, exc) if self.role else None
        return refused or pg_error(exc, self.shared.readonly)

    def _keep_setting(self, name: str, sql: str) -> None:
        found = _SET_VALUE.match(sql)
        variables = self._connection.session_vars
        if found:
            variables[name] = found.group(2).strip("'\"")
        else:  # RESET
            variables.pop(name, None)

    def close_portal(self, then: DuckPortal | None) -> None:
        """A statement left with rows unread (a client that stopped fetching) gives way to
        the next one, as a PostgreSQL portal is closed when the transaction moves on."""
        if self.portal is not None and self.portal is not then:
            self.portal.close()
        self.portal = then

    def _rollback_all(self) -> None:
        """ROLLBACK TO a savepoint rolls back the whole transaction and begins a new one,
        the only undo DuckDB has; the client stays in a transaction, as it expects."""
        self.close_portal(None)
        self.cursor.execute("ROLLBACK")
        self.cursor.execute("BEGIN")
        self._connection.tx_status = b"T"

    def _deallocate(self, name: str) -> None:
        statements = self._connection.statements
        if name.upper() == "ALL":
            for key in [k for k in statements if k]:  # the unnamed one is the current one
                del statements[key]
        else:
            statements.pop(name.strip('"'), None)

    def _pg_session_function(self, sql: str) -> bool:
        """pg_backend_pid(), set_config(), or current_setting() of PostgreSQL's settings
        (DuckDB answers current_setting() of its own)."""
        if not _PG_SESSION_FUNCTIONS.search(sql):
            return False
        keys = re.findall(r"current_setting\s*\(\s*'([^']*)'", sql, re.IGNORECASE)
        return all(self._pg_setting(key) for key in keys)

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
        """Before any Bind (asyncpg): a SELECT's columns as DuckDB binds it with NULLs for
        the parameters."""
        if self.kind != duckdb.StatementType.SELECT:
            return None

        def bind() -> Any:
            self.session.close_portal(None)
            nulls = [None] * len(self.param_oids)
            return self.session.cursor.sql(self.sql, params=nulls or None)

        try:
            relation = await self.session.run(bind)
        except duckdb.Error as exc:  # better said now than as a row the client did not expect
            raise PgError(
                "42P18",
                "jammi: the columns of this statement depend on its parameter values, and this "
                "client asks for them before it sends any; write those arguments as literals "
                "(e.g. semantic_search's source and model) or use psycopg, which asks after "
                f"binding ({user_message(exc) or str(exc).splitlines()[0]})",
            ) from None
        return _columns(relation.columns, [str(t) for t in relation.types])

    def bind(self, params: list[Any]) -> Portal:
        values = [python_param(oid, v) for oid, v in zip(self.param_oids, params, strict=False)]
        return DuckPortal(self, values)


class DuckPortal(Portal):
    """Bound parameters; ``start`` binds the statement in DuckDB (a SELECT runs lazily, at
    Execute; other statements run here), and rows stream in Arrow batches."""

    def __init__(self, statement: DuckStatement, params: list[Any]):
        self.statement, self.params = statement, params
        self.formats: list[int] = []  # result formats the client asked for (0 text, 1 binary)
        self.columns: list[ResultColumn] | None = None
        self.relation: Any = None
        self.reader: Any = None
        self.pending: list[tuple] = []
        self.done = False  # every row read from DuckDB
        self.count: int | None = None  # rows an INSERT/UPDATE/DELETE changed
        self._converters: list[Any] = []

    async def start(self) -> list[ResultColumn] | None:
        session = self.statement.session
        try:
            self.relation = await session.run(self._bind)
        except BaseException as exc:
            if _is_set(self.statement.sql) and isinstance(exc, duckdb.CatalogException):
                return self._remember_setting(session)
            error = session.error(exc)
            if error.sqlstate in ("42501", "25006"):  # refused by DuckDB or a jammi function
                session.shared.audit.write(
                    "refused",
                    address=session.address,
                    role=session.role.name,
                    sqlstate=error.sqlstate,
                    why=error.message,
                    sql=self.statement.sql.strip(),
                )
            raise error from None
        self._track_transaction(session)
        job = _JOB_CALLS.search(self.statement.sql)
        if job is not None:
            session.shared.audit.write(
                "job",
                address=session.address,
                role=session.role.name,
                call=job.group(1).lower(),
                result=self.pending[0][0] if self.pending and self.pending[0] else "",
                sql=self.statement.sql.strip(),
            )
        return self.columns

    def _bind(self) -> Any:
        self.statement.session.close_portal(self)
        relation = self.statement.session.cursor.sql(self.statement.sql, params=self.params or None)
        if relation is None:
            return None
        names, types = relation.columns, [str(t) for t in relation.types]
        kind = self.statement.kind
        if names in (["Success"], ["Count"]) and kind not in _ROWS:
            self.count = relation.fetchall()[0][0] if kind in _COUNTED else None
            return None
        self.columns = _columns(names, types)
        self._converters = [converter(c.oid, t) for c, t in zip(self.columns, types, strict=True)]
        for i, column in enumerate(self.columns):  # number arrays sent as text: Arrow writes them
            if column.oid in TEXT_ARRAYS and format_code_for(self.formats, i) == 0:
                self._converters[i] = array_text
            elif column.oid == REAL and format_code_for(self.formats, i) == 0:
                self._converters[i] = real_text
        self.reader = relation.to_arrow_reader(BATCH_ROWS)  # runs the query
        self._read_batch()
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
        if not self.done and (max_rows <= 0 or len(self.pending) < max_rows):
            try:  # more batches; most results came whole with the first, read at Bind
                await self.statement.session.run(self._fill, max_rows)
            except BaseException as exc:
                raise self.statement.session.error(exc) from None
        if max_rows <= 0:
            rows, self.pending = self.pending, []
            return rows, False
        rows, self.pending = self.pending[:max_rows], self.pending[max_rows:]
        return rows, bool(self.pending) or not self.done

    def close(self) -> None:
        """Release DuckDB's result (the cursor runs nothing else while one is open)."""
        self.done = True
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _fill(self, max_rows: int) -> None:
        while not self.done and (max_rows <= 0 or len(self.pending) < max_rows):
            self._read_batch()

    def _read_batch(self) -> None:
        try:
            batch = self.reader.read_next_batch()
        except StopIteration:
            self.close()
            return
        columns = []
        for column, convert in zip(batch.columns, self._converters, strict=True):
            if convert is array_text:
                columns.append(array_text(column).to_pylist())
                continue
            values = column.to_pylist()
            columns.append(values if convert is None else [convert(v) for v in values])
        self.pending.extend(zip(*columns, strict=True))


_WRITES = {duckdb.StatementType.INSERT, duckdb.StatementType.UPDATE, duckdb.StatementType.DELETE}
_COUNTED = _WRITES | {duckdb.StatementType.COPY}  # COPY ... TO a file: its row count
_ROWS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}
_ROWS |= {duckdb.StatementType.CALL, None}


def _is_set(sql: str) -> bool:
    return bool(re.match(r"^\s*SET\s", sql, re.IGNORECASE))


class JammiConnection(Connection):
    """pg_mimic's connection, with statements that DuckDB runs: a simple query is split by
    DuckDB's parser, and Bind binds the statement in DuckDB (so Describe is exact)."""

    async def _handle_simple_query(self, sql: str) -> None:
        try:
            parts = [s.query for s in duckdb.extract_statements(sql)] or [sql]
        except (duckdb.Error, ValueError):
            parts = [sql]  # PostgreSQL syntax DuckDB cannot parse: one statement, answered below
        for part in parts:
            await self._execute_one_simple_statement(part)

    async def _execute_one_simple_statement(self, sql: str) -> None:
        if self.tx_status == b"E" and not is_transaction_end(sql):
            raise PgError("25P02", "current transaction is aborted, commands ignored")
        if not sql.strip():
            self.stream.write(messages.make_empty_query_response())
            return
        copy = wire_copy.parse(sql)
        if copy is not None:  # psql's \copy, drivers' cursor.copy()
            self.session.check(  # what it reads, or the insert it is
                f"INSERT INTO {copy.table[0]} SELECT 1" if copy.into else copy.query
            )
            run = wire_copy.copy_in if copy.into else wire_copy.copy_out
            count = await run(self, copy)
            self.stream.write(messages.make_command_complete(f"COPY {count}"))
            return
        statement = await self.session.prepare(sql, [])
        portal = statement.bind([])
        columns = await (portal.start() if isinstance(portal, DuckPortal) else statement.describe())
        if columns is not None:
            self.stream.write(messages.make_row_description(_specs(columns)))
        sent = 0
        async for rows in wire_copy.batches(portal):  # a large result never sits whole in memory
            for row in rows:
                self.stream.write(messages.make_data_row(encode_row(row, columns)))
            sent += len(rows)
            await self.stream.drain()
        count = portal.count if isinstance(portal, DuckPortal) and portal.count else sent
        self.stream.write(messages.make_command_complete(command_tag(sql, count)))

    async def _handle_bind(self, parsed: Any) -> None:
        statement = self._get_statement(parsed.statement_name)
        if not isinstance(statement, DuckStatement):
            return await super()._handle_bind(parsed)
        params = [
            self._decode_param(
                v, format_code_for(parsed.param_format_codes, i), statement.param_oids, i
            )
            for i, v in enumerate(parsed.params)
        ]
        portal = statement.bind(params)
        portal.formats = parsed.result_format_codes or []
        columns = await portal.start()
        entry = PortalEntry(portal, columns, statement.sql, parsed.result_format_codes)
        entry.rows_returned = portal.count or 0
        self.portals[parsed.portal_name] = entry
        self.stream.write(messages.make_bind_complete())


def _columns(names: list[str], types: list[str]) -> list[ResultColumn]:
    columns = []
    for name, duck_type in zip(names, types, strict=True):
        oid = pg_type(duck_type)
        columns.append(ResultColumn(pg_column_name(name, oid), oid))
    return columns


def _specs(columns: list) -> list:
    return [messages.FieldSpec(name=c.name, oid=c.oid, format_code=0) for c in columns]
