"""Who may do what on the server: the roles, the sandbox, and the check every statement passes.

Two roles: the owner (``--user``, default ``jammi``) and an optional reader (``--reader``).
The reader runs queries and the jammi functions that only read; the registry's
``writes=True`` functions, DDL and DML are refused. Every client session, the owner's too
unless the server trusts clients (``--trust-clients``), is sandboxed: DuckDB's own file
access is limited to the allowed directories (``--allow-dir``, the database's folder, jammi's
home) and its configuration is locked, and here statements that would reach beyond them
(ATTACH, INSTALL/LOAD, COPY or EXPORT to a file outside ``--allow-dir``, a SET of a DuckDB
setting, a model loaded from a path) are refused before DuckDB sees them. A refusal is a
PostgreSQL error (SQLSTATE 42501, or 25006 on ``--readonly``) whose ``jammi:`` message
names the role and what it may not do; nothing has run.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from pg_mimic import PgError

OWNER, READER = "owner", "reader"
DENIED, READ_ONLY_STATE = "42501", "25006"
# what a reader may run: queries, and statements that change only its own session
_READER_TYPES = {"SELECT", "EXPLAIN", "TRANSACTION", "SET", "VARIABLE_SET", "PREPARE"}
_READER_TYPES |= {"EXECUTE", "CALL"}
_NEVER = {  # statement types no sandboxed session runs, and why
    "ATTACH": "attach another database file (ATTACH)",
    "DETACH": "detach a database (DETACH)",
    "LOAD": "install or load DuckDB extensions (INSTALL, LOAD)",
    "COPY_DATABASE": "copy a whole database (COPY FROM DATABASE)",
}
_SETTING = re.compile(
    r"^\s*(?:(SET|RESET|PRAGMA)\s+(?:(GLOBAL|SESSION|LOCAL)\s+)?|(USE)\b)\s*\"?([\w.]*)\"?",
    re.IGNORECASE,
)
_SESSION_SETTINGS = {"search_path", "schema"}  # DuckDB scopes these to the connection
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALYZE\s+|\(\s*[^)]*\)\s*)?", re.IGNORECASE)
_PREPARE = re.compile(r"^\s*PREPARE\s+\w+\s*(?:\([^)]*\))?\s+AS\s+", re.IGNORECASE)
_IMPORT = re.compile(r"^\s*IMPORT\s+DATABASE\b", re.IGNORECASE)
_READ_PRAGMAS = re.compile(
    r"^\s*PRAGMA\s+(table_info|show_tables|show_tables_expanded|database_list|version|"
    r"storage_info|functions|show|database_size|metadata_info|platform|user_agent|collations)"
    r"\b\s*(\(|;|$)",
    re.IGNORECASE,
)
_CHECKPOINT = re.compile(r"^\s*(?:FORCE\s+)?CHECKPOINT\b", re.IGNORECASE)
_SECRET = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:\w+\s+)*SECRET\b", re.IGNORECASE)
# functions that write although no jammi function: the reader may not call them
_READER_NEVER_CALLS = {"checkpoint", "force_checkpoint", "nextval", "setval"}
# functions that run SQL given as a string, which no token check could see into
_READER_NEVER_CALLS |= {"query", "query_table", "json_execute_serialized_sql"}
_WRITES = "it writes to the database or its files"
_WHY = {
    "nextval": "it changes a sequence",
    "setval": "it changes a sequence",
    "query": "it runs SQL from a string, which the server cannot check beforehand",
    "query_table": "it runs SQL from a string, which the server cannot check beforehand",
    "json_execute_serialized_sql": "it runs SQL the server cannot check beforehand",
}


@dataclass(frozen=True)
class Role:
    name: str
    kind: str  # OWNER or READER
    password: str | None
    sandboxed: bool


class Policy:
    """The rules of one server: its roles, its allowed directories, whether it is read-only.

    ``check(role, sql)`` raises a ``PgError`` for a statement the role may not run (before
    DuckDB sees it); ``guard(ctx)`` hooks jammi's own checks (a writing function, a model
    from a path) so that they know the role whose statement runs: the session's worker
    thread names it (``acting``), and where DuckDB runs a call on a thread of its own, the
    roles running statements at that moment do. A reader's cursor also carries
    ``reader_shadows``.
    """

    def __init__(self, roles: list[Role], allow_dirs: list[str], readonly: bool):
        self.roles = {r.name: r for r in roles}
        self.allow_dirs = [_dir(d) for d in allow_dirs]
        self.readonly = readonly
        self.sandboxed = any(r.sandboxed for r in roles)
        self.local = threading.local()
        self.active: dict[int, Role] = {}  # worker thread -> the role whose statement it runs
        self._writers = _writer_names()
        self._settings: set[str] = set()

    # -- the sandbox, set once on the database ---------------------------------------------

    def seal(self, db: Any) -> None:
        """Lock the database down: DuckDB's file access only inside the allowed directories,
        jammi's home and the files of the sources already in the catalog; configuration
        locked. It holds for every cursor of the database, jammi's own too."""
        con = db.con
        self._settings = {
            r[0].lower() for r in con.execute("SELECT name FROM duckdb_settings()").fetchall()
        }
        if not self.sandboxed:
            if self.readonly:
                con.execute("SET enable_external_access = false")
            return
        # not the database's folder: DuckDB needs none of it (its file, WAL and spill folder
        # are open or exempt), and a password file may lie there
        folders = [*self.allow_dirs, _dir(str(db.ctx.home))]
        files = []
        for source in db.ctx.catalog.sources():
            if source.kind == "file":  # a glob source: the pattern and what it matches
                files += [source.url, *(os.path.abspath(f) for f in glob.glob(source.url))]
        con.execute("SET allowed_directories = ?", [sorted(set(folders))])
        if files:
            con.execute("SET allowed_paths = ?", [sorted(set(files))])
        con.execute("SET enable_external_access = false")
        con.execute("SET python_enable_replacements = false")  # no scans of Python variables
        con.execute("SET lock_configuration = true")

    # -- statements ------------------------------------------------------------------------

    def setting(self, role: Role, sql: str) -> str | None:
        """For a SET/RESET of a PostgreSQL setting DuckDB does not have: its name (the session
        keeps it); None for any other statement. Refuses a SET of DuckDB's settings in a
        sandboxed session, save those DuckDB scopes to the session."""
        found = _SETTING.match(sql)
        if not found or found.group(3):  # USE: this session's default schema
            return None
        verb, scope, name = found.group(1).upper(), (found.group(2) or "").upper(), found.group(4)
        key = name.lower()
        if key in _SESSION_SETTINGS or key == "variable":
            return None
        if verb == "PRAGMA" and key not in self._settings:
            return None  # a pragma that is no setting (table_info, checkpoint): check() says
        if not role.sandboxed:
            return None if key in self._settings or verb == "PRAGMA" else key
        if scope == "GLOBAL" or key in self._settings or verb == "PRAGMA":
            raise refuse(
                role,
                f"change the server's setting {name or verb} ({verb} changes it for every "
                "session; only search_path and schema are per session)",
            )
        return key

    def check(self, role: Role, sql: str) -> None:
        """Raise a ``PgError`` when ``role`` may not run ``sql`` (every statement in it)."""
        if not role.sandboxed and role.kind == OWNER and not self.readonly:
            return
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error:
            return  # DuckDB's parser error is the answer
        except ValueError:  # a statement type this DuckDB binding has no name for
            raise refuse(role, "run this kind of statement") from None
        for statement in statements:
            self._check_one(role, statement.type.name, statement.query)

    def _check_one(self, role: Role, kind: str, sql: str) -> None:
        if role.sandboxed and kind in _NEVER:
            raise refuse(role, _NEVER[kind], self.readonly)
        if role.sandboxed and _IMPORT.match(sql):
            raise refuse(
                role, "run IMPORT DATABASE (it runs the SQL files it finds)", self.readonly
            )
        if role.sandboxed and kind == "CREATE" and _SECRET.match(sql):
            raise refuse(role, "create secrets (credentials for remote files)")
        writer = self._calls_writer(sql, role)
        held = role.kind == READER or self.readonly  # to the reader's rules
        if held and writer:
            raise refuse(role, f"call {writer}(): {_WHY.get(writer, _WRITES)}", self.readonly)
        if held and _CHECKPOINT.match(sql):
            raise refuse(role, "call checkpoint(): it writes the database file", self.readonly)
        if held and kind not in _READER_TYPES and not _READ_PRAGMAS.match(sql):
            what = "change the database (DDL, DML, COPY FROM, VACUUM)"
            if kind == "COPY" and re.search(r"\bTO\b", sql, re.IGNORECASE):
                what = "write files (COPY ... TO a file; COPY ... TO STDOUT sends rows to you)"
            if kind == "EXPORT":
                what = "write files (EXPORT DATABASE)"
            raise refuse(role, what, self.readonly)
        if kind in ("COPY", "EXPORT") and role.sandboxed:
            self._check_target(role, kind, sql)
        if held and kind == "EXPLAIN":
            inner = _EXPLAIN.sub("", sql, count=1)
            if inner != sql:
                self.check(role, inner)
        if held and kind == "PREPARE":
            inner = _PREPARE.sub("", sql, count=1)
            if inner != sql:
                self.check(role, inner)

    def _check_target(self, role: Role, kind: str, sql: str) -> None:
        """COPY ... TO 'file' and EXPORT DATABASE 'folder' only into an --allow-dir folder
        (never the database's folder or jammi's home: those hold what jammi loads)."""
        target = _target(sql, kind)
        if target is None:
            return  # COPY ... FROM a file: DuckDB's sandbox says where it may read
        if not target:
            raise refuse(role, "write files to a path the statement does not spell out")
        path = os.path.realpath(os.path.expanduser(target))
        if not any(_dir(path).startswith(d) for d in self.allow_dirs):
            where = ", ".join(self.allow_dirs) or "nowhere: the server has no --allow-dir"
            raise refuse(role, f"write files outside the allowed directories ({where})")

    def _calls_writer(self, sql: str, role: Role) -> str | None:
        """The first jammi function that writes (or DuckDB's checkpoint, for a reader) this
        statement calls, by its tokens: a quoted name or a comment between the name and
        its parenthesis does not hide it."""
        try:
            tokens = duckdb.tokenize(sql)
        except duckdb.Error:
            return None
        words = []
        for (start, kind), following in zip(tokens, tokens[1:] + [(len(sql), None)], strict=True):
            if kind == duckdb.token_type.comment:
                continue
            words.append((sql[start : following[0]].strip(), kind))
        names = self._writers | (_READER_NEVER_CALLS if role.kind == READER else set())
        for (word, kind), (after, _) in zip(words, words[1:], strict=False):
            if kind in (duckdb.token_type.identifier, duckdb.token_type.keyword):
                name = word.strip('"').lower().rsplit(".", 1)[-1]
                bare = re.sub(r"_\d+$", "", name)  # a second connection's UDF names
                if after.startswith("(") and (name in names or bare in names):
                    return bare.removeprefix("jammi_")
        return None

    def translate(self, role: Role, exc: BaseException) -> PgError | None:
        """DuckDB's own refusal (the sandbox, the locked configuration, a read-only file) as
        a refusal that names the role; None for any other error."""
        text = str(exc)
        detail = f" (DuckDB: {text.splitlines()[0]})" if text else ""
        where = ", ".join(self.allow_dirs) or "none: the server has no --allow-dir"
        if isinstance(exc, duckdb.PermissionException) or "Permission Error: " in text:
            if "extension" in text.lower():
                what = "install or load DuckDB extensions (INSTALL, LOAD)"
            else:
                what = f"read or write files outside the allowed directories ({where})"
            error = refuse(role, what, self.readonly)
        elif "configuration has been locked" in text:
            error = refuse(role, "change the server's settings (they are every session's)")
        elif self.readonly and "read-only mode" in text:
            error = refuse(role, "change the database", True)
        else:
            return None
        return PgError(error.sqlstate, error.message + detail)

    # -- jammi's own refusals, per session -------------------------------------------------

    def acting(self, role: Role | None) -> None:
        """Name the role whose statement this worker thread runs (None: none)."""
        self.local.role = role
        if role is None:
            self.active.pop(threading.get_ident(), None)
        else:
            self.active[threading.get_ident()] = role

    def current(self) -> Role | None:
        return getattr(self.local, "role", None)

    def guard(self, ctx: Any) -> None:
        """Hook jammi's checks on this database: a writing function refuses a reader; a model
        named by a path outside the allowed directories refuses a sandboxed session."""
        require_writable = ctx.require_writable

        def writable(what: str) -> None:
            role = self.current()
            running = set(tuple(self.active.values()))  # tuple(): one step under the GIL
            if (
                role is None
                and _duckdb_thread()
                and running
                and all(r.kind == READER for r in running)
            ):
                role = next(iter(running))  # DuckDB's own thread, while only readers run
            if role is not None and role.kind == READER:
                raise _jammi_denied(role, f"call {what}(): it writes to the database or its files")
            require_writable(what)

        ctx.require_writable = writable
        ctx.check_write_path = self._check_write_path
        self._guard_models(ctx.models)
        if getattr(ctx, "_jobs", None) is not None:  # the job runner resolves its own
            self._guard_models(ctx._jobs.models)
        start = getattr(ctx, "_start_runner", None)
        if start is not None:

            def guarded_start(catalog: Any, models: Any, home: Any) -> Any:
                self._guard_models(models)
                return start(catalog, models, home)

            ctx._start_runner = guarded_start

    def _guard_models(self, models: Any) -> None:
        """A model registry that refuses model paths outside the allowed directories."""
        resolve, register, known = models.resolve, models.register, models.known_ids

        def checked_resolve(model_id: str) -> Any:
            self._check_model(model_id, known)
            return resolve(model_id)

        def checked_register(model_id: str, path: str, *rest: Any, **options: Any) -> Any:
            self._check_model_path(path)
            return register(model_id, path, *rest, **options)

        models.resolve, models.register = checked_resolve, checked_register

    def _sandboxed_now(self) -> Role | None:
        role = self.current()
        if role is not None:
            return role if role.sandboxed else None
        if not _duckdb_thread():  # the server's own Python (the job runner, the API)
            return None
        # a call DuckDB runs on a thread of its own: the role running statements now if one,
        # else the strictest sandboxed role
        running = set(tuple(self.active.values()))  # tuple(): one step under the GIL
        if len(running) == 1:
            only = running.pop()
            return only if only.sandboxed else None
        ranked = sorted(self.roles.values(), key=lambda r: r.kind != READER)
        return next((r for r in ranked if r.sandboxed), None)

    def _check_model(self, model_id: Any, known: Any) -> None:
        if not isinstance(model_id, str) or self._sandboxed_now() is None:
            return
        if not _looks_like_path(model_id) or model_id in known():
            return  # the catalog's, the bundled one, or a Hugging Face cache id
        self._check_model_path(model_id)

    def _check_write_path(self, path: Any) -> None:
        """export_model and the like write only inside the allowed directories."""
        self._check_inside(path, "write files to {path}: only inside the allowed directories")

    def _check_model_path(self, path: Any) -> None:
        self._check_inside(
            path,
            "load a model from {path}: models come from the catalog or the allowed directories",
        )

    def _check_inside(self, path: Any, refusal: str) -> None:
        """A sandboxed session names only paths inside the allowed directories."""
        role = self._sandboxed_now()
        if role is None or not isinstance(path, str):
            return
        real = _dir(os.path.realpath(os.path.expanduser(path)))
        if not any(real.startswith(d) for d in self.allow_dirs):
            where = ", ".join(self.allow_dirs) or "none: the server has no --allow-dir"
            raise _jammi_denied(role, refusal.format(path=path) + f" ({where})")


def reader_shadows(role: Role, suffix: str) -> str:
    """TEMP macros, on a reader's cursor only, that take the names of the functions that
    write (the macro and the Python UDF under it) and refuse: DuckDB resolves a TEMP macro
    before a function of the database, so a writing call the reader reaches by any road (an
    owner's view or macro, ``query()``) fails as it is bound, before it runs."""
    from ..functions.registry import FUNCTIONS

    sql = []
    for fn in FUNCTIONS:
        if not fn.writes:
            continue
        message = refuse(role, f"call {fn.name}(): {_WRITES}").message.replace("'", "''")
        names = {fn.name: fn.macro_heads(), fn.udf_name + suffix: [p.name for p in fn.params]}
        for name, params in names.items():
            sql.append(
                f"CREATE OR REPLACE TEMP MACRO {name}({', '.join(params)}) AS error('{message}');"
            )
    return "".join(sql)


def refuse(role: Role, what: str, readonly: bool = False) -> PgError:
    if readonly:
        return PgError(
            READ_ONLY_STATE,
            f"jammi: this server was started with --readonly, so role '{role.name}' may not "
            f"{what}; read-only: queries only (no DDL or DML, no file access, no jammi function "
            "that writes)",
        )
    fix = (
        "connect as the owner to change things"
        if role.kind == READER
        else "ask whoever runs the server to add --allow-dir or to trust clients"
    )
    return PgError(DENIED, f"jammi: role '{role.name}' ({role.kind}) may not {what}; {fix}")


def _jammi_denied(role: Role, what: str) -> Exception:
    """A refusal raised inside a jammi function: DuckDB carries it to the client."""
    from ..errors import ReadOnlyError

    return ReadOnlyError(refuse(role, what).message)


def _target(sql: str, kind: str) -> str | None:
    """The file a COPY ... TO or EXPORT DATABASE writes: the string right after the top-level
    TO (or DATABASE), by DuckDB's tokens; "" where something else stands there (a parameter:
    refused, as no check can read it); None for a COPY ... FROM."""
    tokens = duckdb.tokenize(sql)
    depth, previous, previous_depth, writes = 0, "", 0, kind == "EXPORT"
    for i, (start, token_kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        word = sql[start:end].strip()
        if token_kind == duckdb.token_type.comment:
            continue
        if token_kind == duckdb.token_type.operator:
            depth += word.count("(") - word.count(")")
        after = previous == ("DATABASE" if kind == "EXPORT" else "TO")
        if depth == 0 and after and previous_depth == 0:
            if token_kind == duckdb.token_type.string_const:
                return word[1:-1].replace("''", "'")
            return ""
        writes = writes or (depth == 0 and word.upper() == "TO")
        previous, previous_depth = word.upper(), depth
    return "" if writes else None


def _duckdb_thread() -> bool:
    """Whether this thread is one of DuckDB's own (Python sees it as a dummy thread), where a
    session's call may run; the job runner's and the caller's are Python's."""
    return isinstance(threading.current_thread(), threading._DummyThread)


def _dir(path: str) -> str:
    return os.path.join(os.path.realpath(os.path.expanduser(path)), "")


def _looks_like_path(model_id: str) -> bool:
    """A model id that would load a folder by its path (from the server's current folder
    too), rather than name a model of the catalog or the Hugging Face cache."""
    try:
        return model_id.startswith(("/", ".", "~")) or Path(model_id).expanduser().exists()
    except (OSError, ValueError):  # a name no filesystem takes is no path
        return False


def _writer_names() -> set[str]:
    from ..functions.registry import FUNCTIONS

    return {n for f in FUNCTIONS if f.writes for n in (f.name, f.udf_name)}
