"""jammi-sql serve's roles and sandbox, with real clients: what the reader and the sandboxed
owner may do, and a list of what they may not (each refused with a SQLSTATE and a ``jammi:``
message naming the role, and nothing changed).

One server for the module (an owner 'jammi' and a reader 'analyst', one --allow-dir); the
read-only server and the limits have their own, small ones.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

import jammi_sql
from jammi_sql.errors import InvalidArgumentError
from jammi_sql.pg.server import Server

PSQL = shutil.which("psql")
OWNER_PW, READER_PW = "owner pw 1", "reader pw 2"


class World:
    """The server's files and a database file, as the tests lay them out."""

    def __init__(self, root: Path, model: Path):
        self.root = root
        self.allowed = root / "allowed"  # the one --allow-dir
        self.outside = root / "outside"  # files no client may reach
        self.dbdir = root / "db"
        for folder in (self.allowed, self.outside, self.dbdir):
            folder.mkdir()
        self.path = self.dbdir / "roles.duckdb"
        self.home = self.dbdir / "roles.duckdb.jammi"
        self.model_inside = Path(shutil.copytree(model, self.allowed / "model"))
        self.model_outside = Path(shutil.copytree(model, self.outside / "model"))
        (self.allowed / "ok.csv").write_text("id,body\n1,allowed text\n")
        (self.outside / "secret.txt").write_text("top secret\n")
        (self.outside / "secret.csv").write_text("id,body\n1,secret row\n")
        (self.outside / "notes.csv").write_text("id,body\n1,the cat plays\n2,a dog runs\n")
        (self.outside / "parts").mkdir()
        for n in (1, 2):
            (self.outside / "parts" / f"{n}.csv").write_text(f"id,body\n{n},part {n}\n")
        (self.dbdir / "password.txt").write_text(OWNER_PW)


@pytest.fixture(scope="module")
def world(tmp_path_factory, _tiny_bert_master) -> World:
    return World(tmp_path_factory.mktemp("roles"), _tiny_bert_master)


@pytest.fixture(scope="module")
def server(world):
    """Set up unsandboxed (the Python API), then served: a file source outside every
    allowed folder, embedded, so jammi's own reads are tested inside the sandbox."""
    db = jammi_sql.connect(str(world.path))
    db.register_model("tiny", str(world.model_inside))
    db.con.execute("CREATE TABLE docs AS SELECT 1 AS id, 'the cat plays' AS body")
    db.con.execute("CREATE SEQUENCE seq")
    db.con.execute(f"SELECT add_source('notes', '{world.outside / 'notes.csv'}')")
    db.con.execute("SELECT generate_text_embeddings('notes', 'tiny', ['body'], 'id')")
    db.con.execute("SELECT add_source('docs', 'docs')")
    db.con.execute(f"SELECT add_source('parts', '{world.outside / 'parts' / '*.csv'}')")
    db.con.execute("CREATE TABLE pairs AS SELECT 'the cat' AS a, 'a dog' AS b FROM range(8)")
    db.con.execute("SELECT add_source('pairs', 'pairs')")
    running = Server(
        db,
        port=0,
        password=OWNER_PW,
        reader="analyst",
        reader_password=READER_PW,
        allow_dirs=[str(world.allowed)],
        audit_log=str(world.root / "audit.log"),
    ).start()
    yield running
    running.stop()
    db.close()


def connect(server: Server, role: str = "jammi", **kwargs) -> psycopg.Connection:
    password = OWNER_PW if role == "jammi" else READER_PW
    return psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        user=role,
        password=password,
        dbname="x",
        autocommit=True,
        connect_timeout=10,
        **kwargs,
    )


@pytest.fixture(scope="module")
def owner(server):
    with connect(server) as conn:
        yield conn


@pytest.fixture(scope="module")
def reader(server):
    with connect(server, "analyst") as conn:
        yield conn


def snapshot(server: Server, world: World) -> tuple:
    """What a refused statement must leave as it was: tables, catalog, settings, files."""
    con = server.shared.db.con.cursor()
    try:
        tables = con.execute(
            "SELECT database_name, schema_name, table_name, estimated_size FROM duckdb_tables() "
            "WHERE NOT temporary ORDER BY ALL"
        ).fetchall()
        docs = con.execute(
            "SELECT * FROM docs ORDER BY ALL" if "docs" in str(tables) else "SELECT 1"
        ).fetchall()
        models = con.execute("SELECT model_id FROM jammi.models ORDER BY 1").fetchall()
        sources = con.execute("SELECT name FROM jammi.sources ORDER BY 1").fetchall()
        settings = con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads', "
            "'enable_external_access', 'allowed_directories', 'lock_configuration', "
            "'temp_directory', 'autoload_known_extensions') ORDER BY 1"
        ).fetchall()
        databases = con.execute("SELECT database_name FROM duckdb_databases() ORDER BY 1")
        databases = databases.fetchall()
    finally:
        con.close()
    files = sorted(str(p) for p in world.root.rglob("*") if "audit.log" not in p.name)
    return tables, docs, models, sources, settings, databases, files


# What neither the reader nor the sandboxed owner may do: SQL, and what its message says.
# {out} is a folder outside every allowed one, {allowed} the --allow-dir, {db} the
# database's folder, {home} jammi's home.
EVERYONE_REFUSED = [
    ("SELECT * FROM read_text('/etc/passwd')", "files outside the allowed directories"),
    ("SELECT * FROM read_text('/proc/self/environ')", "files outside the allowed directories"),
    ("SELECT * FROM read_blob('{out}/secret.txt')", "files outside the allowed directories"),
    ("SELECT * FROM read_csv('{out}/secret.csv')", "files outside the allowed directories"),
    ("SELECT * FROM read_csv_auto('{out}/secret.csv')", "files outside the allowed directories"),
    ("SELECT * FROM '{out}/secret.csv'", "files outside the allowed directories"),
    ("SELECT * FROM read_parquet('{out}/x.parquet')", "files outside the allowed directories"),
    ("SELECT * FROM parquet_metadata('{out}/x.parquet')", "files outside the allowed"),
    ("SELECT * FROM read_json('{out}/x.json')", "files outside the allowed directories"),
    ("SELECT * FROM read_json_auto('{out}/x.json')", "files outside the allowed directories"),
    ("SELECT * FROM read_ndjson('{out}/x.json')", "files outside the allowed directories"),
    ("SELECT * FROM glob('/root/*')", "files outside the allowed directories"),
    ("SELECT * FROM glob('{out}/*')", "files outside the allowed directories"),
    ("SELECT * FROM sniff_csv('{out}/secret.csv')", "files outside the allowed directories"),
    ("SELECT * FROM read_text('{db}/password.txt')", "files outside the allowed directories"),
    ("SELECT * FROM read_text('{allowed}/../outside/secret.txt')", "files outside the allowed"),
    ("SELECT * FROM read_text(['{allowed}/ok.csv', '{out}/secret.txt'])", "files outside"),
    ("SELECT * FROM read_text('{home}/../../outside/secret.txt')", "files outside the allowed"),
    ("COPY (SELECT 1) TO '{out}/x.csv'", "write files"),
    ("COPY (SELECT 1) TO '{home}/planted.csv'", "write files"),
    ("COPY (SELECT 1) TO '{allowed}/../outside/y.csv'", "write files"),
    ("COPY docs TO '{db}/x.parquet' (FORMAT parquet)", "write files"),
    ("COPY (SELECT 1) TO $1", "write files"),
    ("COPY (SELECT 'TO' AS x) /* TO '{allowed}/a' */ TO '{out}/y.csv'", "write files"),
    ("EXPORT DATABASE '{out}/exported'", "write files"),
    ("ATTACH '{out}/other.duckdb' AS other", "ATTACH"),
    ("ATTACH ':memory:' AS scratch", "ATTACH"),
    ("INSTALL httpfs", "extensions"),
    ("LOAD httpfs", "extensions"),
    ("FORCE INSTALL json", "extensions"),
    ("SET memory_limit = '8MB'", "setting memory_limit"),
    ("SET GLOBAL threads = 1", "setting threads"),
    ("SET threads = 1", "setting threads"),
    ("SET SESSION memory_limit = '8MB'", "setting memory_limit"),
    ("SET enable_external_access = true", "setting enable_external_access"),
    ("SET allowed_directories = ['/']", "setting allowed_directories"),
    ("SET lock_configuration = false", "setting lock_configuration"),
    ("RESET memory_limit", "setting memory_limit"),
    ("PRAGMA threads = 1", "setting threads"),
    ("SET profiling_output = '{out}/profile.json'", "setting profiling_output"),
    ("SET temp_directory = '{out}'", "setting temp_directory"),
    ("SET GLOBAL application_name = 'x'", "setting application_name"),
    ("SELECT embed('{out}/model', 'x')", "load a model from"),
    ("SELECT embed_query('{out}/model', 'x')", "load a model from"),
    ("SELECT * FROM semantic_search('notes', '{out}/model', 'cat')", "load a model from"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", "secrets"),
    ("IMPORT DATABASE '{allowed}'", "IMPORT DATABASE"),
]
# What the reader may not do, beyond the above: anything that writes.
READER_REFUSED = [
    ("CREATE TABLE x (a INTEGER)", "change the database"),
    ("CREATE TEMP TABLE t AS SELECT * FROM range(1000)", "change the database"),
    ("CREATE VIEW v AS SELECT 1", "change the database"),
    ("CREATE OR REPLACE TEMP MACRO current_user() AS 'jammi'", "change the database"),
    ("INSERT INTO docs VALUES (2, 'more')", "change the database"),
    ("UPDATE docs SET body = 'changed'", "change the database"),
    ("DELETE FROM docs", "change the database"),
    ("DROP TABLE docs", "change the database"),
    ("ALTER TABLE docs ADD COLUMN extra INTEGER", "change the database"),
    ("VACUUM", "change the database"),
    ("CHECKPOINT", "call checkpoint()"),
    ("SELECT nextval('seq')", "call nextval()"),
    ("EXPLAIN ANALYZE DELETE FROM docs", "change the database"),
    ("PREPARE wipe AS DELETE FROM docs", "change the database"),
    ("COPY docs TO '{allowed}/r.csv'", "write files"),
    ("SELECT add_source('again', 'docs')", "call add_source()"),
    ("SELECT add_source('s', '{allowed}/ok.csv')", "call add_source()"),
    ("SELECT remove_source('docs')", "call remove_source()"),
    ("SELECT \"remove_source\"('docs')", "call remove_source()"),
    ("SELECT remove_source /* hidden? */ ('docs')", "call remove_source()"),
    ("SELECT jammi_remove_model('tiny')", "call remove_model()"),
    ("SELECT main.remove_model('tiny')", "call remove_model()"),
    ("SELECT register_model('m2', '{allowed}/model')", "call register_model()"),
    ("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')", "generate_text_embed"),
    ("SELECT fine_tune('docs', 'tiny', ['body', 'body'])", "call fine_tune()"),
    ("SELECT cancel_job('nope')", "call cancel_job()"),
    ("SELECT delete_job('nope')", "call delete_job()"),
    ("SELECT remove_embeddings('notes', 'tiny')", "call remove_embeddings()"),
    ("SELECT create_vector_index('notes', 'tiny')", "call create_vector_index()"),
    ("SELECT x FROM (SELECT drop_vector_index('notes', 'tiny') AS x)", "drop_vector_index"),
    ("SELECT * FROM query('SELECT remove_model(''tiny'')')", "call query()"),
    (
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql("
        "'SELECT jammi_remove_source(''docs'', false)'))",
        "call json_execute_serialized_sql()",
    ),
    ("PRAGMA force_checkpoint", "change the database"),
]
# What the sandboxed owner may not do that a reader's refusal above does not already cover
OWNER_REFUSED = [
    ("SELECT * FROM query('SELECT * FROM read_text(''/etc/hostname'')')", "files outside"),
    ("SELECT register_model('evil', '{out}/model')", "load a model from"),
    ("SELECT fine_tune('pairs', '{out}/model', ['a', 'b'])", "load a model from"),
    ("SELECT mine_hard_negatives('docs', '{out}/model', 'body', 'body')", "load a model from"),
    ("SELECT add_source('leak', '{out}/secret.csv')", "files outside the allowed"),
    ("SELECT export_model('tiny', '{out}/exported')", "write files to"),
]


def fill(sql: str, world: World) -> str:
    return sql.format(out=world.outside, allowed=world.allowed, db=world.dbdir, home=world.home)


def refused(conn: psycopg.Connection, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    return caught.value


@pytest.mark.parametrize(("sql", "why"), EVERYONE_REFUSED + READER_REFUSED)
def test_the_reader_is_refused_and_nothing_changes(server, world, reader, sql, why):
    before = snapshot(server, world)
    error = refused(reader, fill(sql, world))
    assert error.sqlstate in ("42501", "25006"), (error.sqlstate, str(error))
    assert str(error).startswith("jammi: role 'analyst' (reader) may not "), str(error)
    assert why in str(error), str(error)
    assert snapshot(server, world) == before
    assert reader.execute("SELECT current_user").fetchone() == ("analyst",)


@pytest.mark.parametrize(("sql", "why"), EVERYONE_REFUSED + OWNER_REFUSED)
def test_the_sandboxed_owner_is_refused_and_nothing_changes(server, world, owner, sql, why):
    before = snapshot(server, world)
    error = refused(owner, fill(sql, world))
    assert error.sqlstate == "42501", (error.sqlstate, str(error))
    assert str(error).startswith("jammi: role 'jammi' (owner) may not "), str(error)
    assert why in str(error), str(error)
    assert snapshot(server, world) == before


def test_a_model_folder_in_the_servers_current_folder_is_no_model(
    server, world, owner, monkeypatch
):
    monkeypatch.chdir(world.outside)  # holds the folder 'model'
    error = refused(owner, "SELECT embed('model', 'x')")
    assert error.sqlstate == "42501" and "may not load a model from model" in str(error)


def test_there_are_at_least_forty_forbidden_actions():
    assert len({s for s, _ in EVERYONE_REFUSED + READER_REFUSED + OWNER_REFUSED}) >= 40


def test_the_reader_queries_and_runs_the_functions_that_only_read(server, world, reader):
    assert reader.execute("SELECT current_user, session_user").fetchone() == ("analyst",) * 2
    assert reader.execute("SELECT body FROM docs").fetchall() == [("the cat plays",)]
    assert len(reader.execute("SELECT embed('tiny', 'a cat')").fetchone()[0]) == 32
    assert len(reader.execute("SELECT embed_query('tiny', 'a cat')").fetchone()[0]) == 32
    hits = reader.execute("SELECT key FROM semantic_search('notes', 'tiny', 'cat', k := 2)")
    assert sorted(hits.fetchall()) == [("1",), ("2",)] or len(hits.fetchall()) == 0
    assert reader.execute("SELECT count(*) FROM keyword_search('notes', 'cat')").fetchone()[0] >= 1
    # a file source outside every allowed folder stays readable through jammi
    assert reader.execute("SELECT count(*) FROM read_source('notes')").fetchone() == (2,)
    assert reader.execute("SELECT count(*) FROM read_source('parts')").fetchone() == (2,)
    assert reader.execute(f"SELECT * FROM read_csv('{world.allowed}/ok.csv')").fetchall() == [
        (1, "allowed text")
    ]
    assert reader.execute("SELECT count(*) FROM jammi.models").fetchone()[0] >= 1
    assert ("body",) in [r[1:2] for r in reader.execute("PRAGMA table_info('docs')").fetchall()]
    reader.execute("SET search_path = 'main'")  # session settings DuckDB scopes to it
    reader.execute("SET application_name = 'metabase'")  # PostgreSQL's, kept by the session
    assert reader.execute("SHOW application_name").fetchone() == ("metabase",)
    reader.execute("BEGIN")
    reader.execute("SELECT 1")
    reader.execute("COMMIT")
    with reader.cursor().copy("COPY docs TO STDOUT") as copy:
        assert list(copy.rows()) == [("1", "the cat plays")]


def test_a_writing_function_behind_the_owners_view_still_refuses_the_reader(owner, reader):
    owner.execute("CREATE OR REPLACE VIEW sneaky AS SELECT cancel_job('no-such-job') AS x")
    try:
        error = refused(reader, "SELECT * FROM sneaky")
        assert error.sqlstate == "42501", str(error)
        assert "role 'analyst' (reader) may not call cancel_job()" in str(error)
    finally:
        owner.execute("DROP VIEW sneaky")


def test_a_writing_function_behind_the_owners_macro_refuses_the_reader_while_the_owner_works(
    server, owner, reader
):
    owner.execute("CREATE OR REPLACE MACRO sneaky_macro() AS jammi_cancel_job('no-such-job')")
    try:
        busy = threading.Thread(target=lambda: connect(server).execute("SELECT 1, sleep_ms(2000)"))
        busy.start()  # an owner statement running meanwhile: no thread-based guess helps here
        time.sleep(0.3)
        error = refused(reader, "SELECT sneaky_macro()")
        busy.join()
        assert error.sqlstate == "42501", str(error)
        assert "role 'analyst' (reader) may not call cancel_job()" in str(error)
    finally:
        owner.execute("DROP MACRO sneaky_macro")


def test_the_reader_may_not_copy_rows_in(reader):
    with pytest.raises(psycopg.Error) as caught:
        with reader.cursor().copy("COPY docs FROM STDIN") as copy:
            copy.write_row((5, "more"))
    assert caught.value.sqlstate == "42501"
    assert "role 'analyst' (reader) may not change the database" in str(caught.value)
    assert reader.execute("SELECT count(*) FROM docs").fetchone() == (1,)


def test_the_sandboxed_owner_keeps_its_powers_inside_the_allowed_folders(server, world, owner):
    assert owner.execute("SELECT current_user").fetchone() == ("jammi",)
    owner.execute(
        "CREATE TABLE scratch AS SELECT * FROM read_csv(%s)", (f"{world.allowed}/ok.csv",)
    )
    owner.execute(f"COPY scratch TO '{world.allowed}/scratch.csv' (HEADER)")
    assert (world.allowed / "scratch.csv").read_text().splitlines()[1] == "1,allowed text"
    assert owner.execute(
        "SELECT register_model('inside', %s)", (str(world.model_inside),)
    ).fetchone()
    assert len(owner.execute("SELECT embed('inside', 'x')").fetchone()[0]) == 32
    assert owner.execute("SELECT add_source('scratch', 'scratch')").fetchone()
    count = owner.execute("SELECT generate_text_embeddings('scratch', 'tiny', ['body'], 'id')")
    assert count.fetchone() == (1,)
    owner.execute("SET statement_timeout = 0")  # PostgreSQL's: kept per session
    owner.execute("DROP TABLE scratch CASCADE")
    owner.execute("SELECT remove_source('scratch', cascade := true)")
    owner.execute("SELECT remove_model('inside')")


def test_every_refusal_and_login_is_in_the_audit_log_without_a_password(server, world):
    with connect(server, "analyst") as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM read_text('/etc/passwd')")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=server.port, user="analyst", password="wrong", dbname="x"
        )
    text = (world.root / "audit.log").read_text()
    assert "login address=127.0.0.1 role=analyst outcome=ok" in text
    assert 'login address=127.0.0.1 role=analyst outcome="bad password"' in text
    refusal = [line for line in text.splitlines() if "refused" in line and "passwd" in line]
    assert refusal and "role=analyst" in refusal[-1] and "sqlstate=42501" in refusal[-1]
    assert OWNER_PW not in text and READER_PW not in text and "wrong" not in text


def test_asyncpg_and_sqlalchemy_log_in_as_the_reader(server):
    asyncpg = pytest.importorskip("asyncpg")

    async def run():
        conn = await asyncpg.connect(
            host="127.0.0.1", port=server.port, user="analyst", password=READER_PW, database="x"
        )
        try:
            assert await conn.fetchval("SELECT current_user") == "analyst"
            with pytest.raises(asyncpg.PostgresError) as caught:
                await conn.execute("DELETE FROM docs")
            assert caught.value.sqlstate == "42501"
            assert "role 'analyst' (reader)" in str(caught.value)
        finally:
            await conn.close()

    asyncio.run(run())
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from urllib.parse import quote

    url = f"postgresql+psycopg://analyst:{quote(READER_PW)}@127.0.0.1:{server.port}/x"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT body FROM docs")).fetchall() == [
                ("the cat plays",)
            ]
            with pytest.raises(sqlalchemy.exc.DBAPIError, match="may not change the database"):
                conn.execute(sqlalchemy.text("DROP TABLE docs"))
    finally:
        engine.dispose()


@pytest.mark.skipif(PSQL is None, reason="psql is not installed")
def test_psql_as_the_reader(server):
    env = {**os.environ, "PGPASSWORD": READER_PW}
    dsn = f"host=127.0.0.1 port={server.port} user=analyst dbname=x"
    done = subprocess.run(
        [PSQL, dsn, "-X", "-A", "-t", "-c", "SELECT current_user", "-c", "DROP TABLE docs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.stdout.strip() == "analyst"
    assert "jammi: role 'analyst' (reader) may not change the database" in done.stderr


def test_wrong_role_or_password_never_logs_in(server):
    for user, password in [("analyst", OWNER_PW), ("jammi", READER_PW), ("postgres", OWNER_PW)]:
        server.pg.failed_login_delay = 0.01
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host="127.0.0.1", port=server.port, user=user, password=password, dbname="x"
            )
    server.pg.failures.clear()


def test_a_reader_needs_a_password_and_trusting_clients_excludes_a_reader(db):
    with pytest.raises(InvalidArgumentError, match="needs a password"):
        Server(db, port=0, reader="analyst")
    with pytest.raises(InvalidArgumentError, match="--trust-clients cannot go with --reader"):
        Server(db, port=0, password="o", reader="r", reader_password="x", trust_clients=True)
    with pytest.raises(InvalidArgumentError, match="needs the owner to have a password too"):
        Server(db, port=0, reader="analyst", reader_password="x")
    with pytest.raises(InvalidArgumentError, match="is not a folder"):
        Server(db, port=0, allow_dirs=["/no/such/folder"])


def test_a_trusted_owner_reaches_files_as_before(db, tmp_path):
    (tmp_path / "elsewhere.csv").write_text("a\n1\n")
    server = Server(db, port=0, trust_clients=True).start()
    try:
        with psycopg.connect(
            host="127.0.0.1", port=server.port, user="jammi", dbname="x", autocommit=True
        ) as conn:
            rows = conn.execute(f"SELECT * FROM read_csv('{tmp_path}/elsewhere.csv')").fetchall()
            assert rows == [(1,)]
            conn.execute("SET threads = 1")
    finally:
        server.stop()


def test_the_sandbox_adds_no_catalog_query_to_an_embed(db, tmp_path):
    """The sandbox's check of a model id costs one string test and one stat per call: the
    catalog's list of models (a query) is read only for an id that looks like a path."""
    listed = []
    known = db.ctx.models.known_ids
    db.ctx.models.known_ids = lambda: listed.append(1) or known()  # before guard() wraps it
    server = Server(db, port=0).start()
    try:
        with psycopg.connect(
            host="127.0.0.1", port=server.port, user="jammi", dbname="x", autocommit=True
        ) as conn:
            for n in range(5):
                assert len(conn.execute("SELECT embed('tiny', %s)", (f"t {n}",)).fetchone()[0])
            assert listed == []
            elsewhere = tmp_path / "elsewhere"
            with pytest.raises(psycopg.Error, match="may not load a model from") as refused:
                conn.execute(f"SELECT embed('{elsewhere}', 'x')")
            assert refused.value.sqlstate == "42501"
            assert listed  # a path: looked up among the known ids, then refused
    finally:
        server.stop()


# -- --readonly ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readonly(tmp_path_factory, _tiny_bert_master):
    world = World(tmp_path_factory.mktemp("readonly"), _tiny_bert_master)
    with jammi_sql.connect(str(world.path)) as setup:
        setup.register_model("tiny", str(world.model_inside))
        setup.con.execute(f"SELECT add_source('notes', '{world.outside / 'notes.csv'}')")
        setup.con.execute("SELECT generate_text_embeddings('notes', 'tiny', ['body'], 'id')")
    db = jammi_sql.connect(str(world.path), read_only=True)
    running = Server(db, port=0, readonly=True, allow_dirs=[str(world.allowed)]).start()
    yield running, world
    running.stop()
    db.close()


READONLY_REFUSED = [
    "CREATE TEMP TABLE spill AS SELECT * FROM range(10000000)",
    "CREATE TABLE x (a INTEGER)",
    "COPY (SELECT 1) TO '{allowed}/x.csv'",
    "SELECT embed('{out}/model', 'x')",
    "SELECT register_model('m', '{allowed}/model')",
    "SET memory_limit = '8MB'",
    "SELECT * FROM read_text('{out}/secret.txt')",
    "ATTACH '{allowed}/other.duckdb'",
]


@pytest.mark.parametrize("sql", READONLY_REFUSED)
def test_readonly_refuses_writes_for_the_owner_too(readonly, sql):
    server, world = readonly
    with connect(server) as conn:
        before = snapshot(server, world)
        error = refused(conn, fill(sql, world))
        assert error.sqlstate in ("25006", "42501"), (error.sqlstate, str(error))
        assert str(error).startswith("jammi: "), str(error)
        assert "role 'jammi'" in str(error) or "read-only" in str(error), str(error)
        assert snapshot(server, world) == before


def test_readonly_still_reads_sources_and_searches_stored_vectors(readonly):
    server, world = readonly
    with connect(server) as conn:
        assert conn.execute("SELECT count(*) FROM read_source('notes')").fetchone() == (2,)
        hits = conn.execute("SELECT count(*) FROM semantic_search('notes', 'tiny', 'cat', k := 2)")
        assert hits.fetchone() == (2,)
        rows = conn.execute(f"SELECT * FROM read_csv('{world.allowed}/ok.csv')").fetchall()
        assert rows == [(1, "allowed text")]


# -- limits before login and while connected ----------------------------------------------


@pytest.fixture
def limited(db):
    server = Server(db, port=0, password="pw", max_connections=3, statement_timeout=0.5).start()
    server.pg.auth_timeout = 0.5
    server.pg.failed_login_delay = 0.2
    yield server
    server.stop()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_an_oversized_startup_message_is_refused_before_it_is_read(limited):
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(struct.pack("!ii", 200_000_000, 196608) + b"x" * 100_000)
        sock.settimeout(5)
        answer = sock.recv(4096)
        assert answer[:1] == b"E" and b"startup message of 200000000 bytes" in answer
        assert closed_by_server(sock, 5)
    assert limited.pg.open == 0


def test_garbage_before_login_ends_that_connection_and_no_other(limited):
    dsn = f"host=127.0.0.1 port={limited.port} user=jammi password=pw dbname=x"
    with psycopg.connect(dsn) as conn:
        for garbage in [
            os.urandom(64),
            struct.pack("!ii", 40, 196608) + os.urandom(32),
            struct.pack("!ii", -5, 0),
            b"GET / HTTP/1.1\r\n\r\n",
        ]:
            with socket.create_connection(("127.0.0.1", limited.port)) as sock:
                sock.sendall(garbage)
                assert closed_by_server(sock, 5)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    deadline = time.monotonic() + 5
    while limited.pg.open and time.monotonic() < deadline:  # the last one's handler ends
        time.sleep(0.01)
    assert limited.pg.open == 0


def test_silent_sockets_are_dropped_and_the_connection_cap_refuses_clearly(limited):
    silent = [socket.create_connection(("127.0.0.1", limited.port)) for _ in range(3)]
    try:
        time.sleep(0.1)
        with pytest.raises(psycopg.OperationalError, match="too many clients already"):
            psycopg.connect(f"host=127.0.0.1 port={limited.port} user=jammi password=pw dbname=x")
        assert all(closed_by_server(s, 5) for s in silent)  # the login timeout
    finally:
        for s in silent:
            s.close()
    time.sleep(0.1)
    dsn = f"host=127.0.0.1 port={limited.port} user=jammi password=pw dbname=x"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_failed_logins_in_parallel_wait_in_line(limited):
    done: list[float] = []
    started = time.monotonic()

    def guess() -> None:
        try:
            psycopg.connect(
                f"host=127.0.0.1 port={limited.port} user=jammi password=wrong dbname=x "
                "connect_timeout=30"
            )
        except psycopg.OperationalError:
            done.append(time.monotonic() - started)

    limited.pg.auth_timeout = 30
    threads = [threading.Thread(target=guess) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # 0.2 + 0.4 + 0.8 s one after another, not 0.2 s all at once
    assert len(done) == 3 and max(done) >= 1.3, done


def test_statement_timeout_cancels_a_long_query_and_the_session_goes_on(limited):
    dsn = f"host=127.0.0.1 port={limited.port} user=jammi password=pw dbname=x"
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT count(*) FROM range(100000000000) a")
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.execute("SET statement_timeout = 100")  # ms, as PostgreSQL's
        with pytest.raises(psycopg.errors.QueryCanceled, match=r"statement timeout \(0.1 s\)"):
            conn.execute("SELECT count(*) FROM range(100000000000) a")
        conn.execute("SET statement_timeout = 0")  # none: the server's limit still holds
        with pytest.raises(psycopg.errors.QueryCanceled, match=r"statement timeout \(0.5 s\)"):
            conn.execute("SELECT count(*) FROM range(100000000000) a")


def test_the_command_refuses_a_reader_without_password_and_reads_it_from_a_file(
    tmp_path, capsys, monkeypatch
):
    from jammi_sql.pg import server as serve

    monkeypatch.delenv("JAMMI_READER_PASSWORD", raising=False)
    monkeypatch.delenv("JAMMI_SERVER_PASSWORD", raising=False)
    db = str(tmp_path / "x.duckdb")
    assert serve.main([db, "--port", "0", "--reader", "analyst"]) == 2
    assert "--reader analyst needs a password" in capsys.readouterr().err
    secret = tmp_path / "reader.txt"
    secret.write_text("pw\n")
    args = [db, "--port", "0", "--reader", "analyst", "--reader-password-file", str(secret)]
    assert serve.main(args) == 2
    assert "needs the owner to have a password too" in capsys.readouterr().err
    monkeypatch.setenv("JAMMI_SERVER_PASSWORD", "owner")
    assert serve.main([*args, "--trust-clients"]) == 2
    assert "--trust-clients cannot go with --reader" in capsys.readouterr().err
    assert serve.main([*args, "--allow-dir", str(tmp_path / "nope")]) == 2
    assert "--allow-dir" in capsys.readouterr().err
    assert not (tmp_path / "x.duckdb").exists()  # refused before the database is created
