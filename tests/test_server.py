"""jammi-sql serve with real clients: psql, psycopg 3, asyncpg and SQLAlchemy.

The server runs in this process on a free loopback port (fast); one test spawns the real
command. Tests that need psql skip, saying so, where it is not installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

import jammi_sql
from jammi_sql.errors import InvalidArgumentError
from jammi_sql.pg import copy as wire_copy
from jammi_sql.pg import describe as psql_describe
from jammi_sql.pg.server import Server

PSQL = shutil.which("psql")
needs_psql = pytest.mark.skipif(
    PSQL is None,
    reason="psql is not installed (apt-get install postgresql-client; `make test` does it as root)",
)
ROOT = Path(__file__).resolve().parents[1]


def dsn(server: Server, password: str | None = None, user: str = "jammi") -> str:
    text = f"host=127.0.0.1 port={server.port} user={user} dbname=anything connect_timeout=10"
    return text + (f" password='{password}'" if password is not None else "")


@pytest.fixture
def served(db):
    server = Server(db, port=0).start()
    yield server
    server.stop()


@pytest.fixture
def guarded(db):
    server = Server(db, port=0, password="s3cret pass").start()
    server.pg.failed_login_delay = 0.3
    yield server
    server.stop()


def psql(server: Server, *commands: str, password: str | None = None, **kwargs):
    env = {**os.environ, "PGPASSWORD": password or "", "PGCONNECT_TIMEOUT": "10"}
    args = [PSQL, dsn(server), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, **kwargs)


@needs_psql
def test_psql_runs_jammi_functions_and_gets_an_embedding_as_an_array(served, db):
    done = psql(served, "SELECT embed('tiny', 'the cat plays')", "SELECT 1; SELECT 2")
    assert done.returncode == 0, done.stderr
    array, one, two = done.stdout.split()
    values = np.array([float(x) for x in array.strip("{}").split(",")])
    assert np.allclose(values, db.encode_text("tiny", "the cat plays"), atol=1e-6)
    assert (one, two) == ("1", "2")


@needs_psql
@pytest.mark.slow
def test_psql_runs_the_sql_example_unchanged(tmp_path):
    example = ROOT / "sql" / "examples" / "01_embed_and_search.sql"
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    with jammi_sql.connect(":memory:", home=str(tmp_path / "home")) as db:
        server = Server(db, port=0).start()
        try:
            done = subprocess.run(
                [PSQL, dsn(server), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(example)],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
        finally:
            server.stop()
    assert done.returncode == 0, done.stderr
    assert "Quantum error correction" in done.stdout and "(2 rows)" in done.stdout


@needs_psql
def test_psql_lists_the_jammi_tables(served):
    done = psql(served, r"\dt jammi.*")
    assert done.returncode == 0, done.stderr
    assert "jammi|jobs|table" in done.stdout


@needs_psql
def test_psql_describes_a_table_and_a_view(served, db):
    db.con.execute("CREATE TABLE things (id INTEGER NOT NULL, name VARCHAR DEFAULT 'x')")
    db.con.execute("COMMENT ON COLUMN things.name IS 'what it is called'")
    db.con.execute("CREATE VIEW named AS SELECT name FROM things")
    done = psql(served, r"\d things", r"\d+ things", r"\d+ named", r"\d jammi.models")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "id|integer||not null|" in out and "name|varchar|||'x'" in out
    assert "name|varchar|||'x'|plain|||what it is called" in out  # \d+: storage to comment
    assert "name|varchar||||plain|" in out  # the view's column (-t leaves out its definition)
    assert "model_id|varchar|||" in out  # jammi.models is a view (stored rows + loaded state)
    oid = db.con.execute("SELECT view_oid FROM duckdb_views() WHERE view_name = 'named'").fetchone()
    definition = psql_describe.answer(
        db.con, f"SELECT pg_catalog.pg_get_viewdef('{oid[0]}'::pg_catalog.oid, true);"
    )
    assert definition._rows == [('CREATE VIEW named AS SELECT "name" FROM things;',)]
    missing = psql(served, r"\d nope")
    assert "Did not find any relation named" in missing.stderr


@needs_psql
def test_psql_describes_keys_indexes_checks_and_references(served, db):
    db.con.execute(
        "CREATE TABLE papers (id INTEGER PRIMARY KEY, doi VARCHAR UNIQUE, year INTEGER "
        "CHECK (year > 1900)); CREATE INDEX papers_year ON papers (year);"
        "CREATE TABLE cites (src INTEGER REFERENCES papers(id), dst INTEGER)"
    )
    args = [PSQL, dsn(served), "-X", "-v", "ON_ERROR_STOP=1", "-c", r"\d papers", "-c", r"\d cites"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)  # footers: no -t
    assert done.returncode == 0, done.stderr
    out = [line.strip() for line in done.stdout.splitlines()]
    assert out[out.index("Indexes:") + 1 : out.index("Indexes:") + 4] == [
        '"papers_id_pkey" PRIMARY KEY, art (id)',
        '"papers_doi_key" UNIQUE CONSTRAINT, art (doi)',
        '"papers_year" art (year)',
    ]
    assert '"papers_year_check" CHECK(("year" > 1900))' in out
    reference = 'CONSTRAINT "cites_src_id_fkey" FOREIGN KEY (src) REFERENCES papers(id)'
    assert f'TABLE "cites" {reference}' in out  # papers: Referenced by
    assert '"cites_src_id_fkey" FOREIGN KEY (src) REFERENCES papers(id)' in out  # cites


def test_psycopg_sends_parameters_and_reads_typed_columns(served, db):
    with psycopg.connect(dsn(served), autocommit=True) as conn:
        cur = conn.execute("SELECT embed(%s, %s) AS v", ("tiny", "a dog runs"))
        assert cur.description[0].type_code == 1021  # float4[]
        vector = cur.fetchone()[0]
        assert np.allclose(vector, db.encode_text("tiny", "a dog runs"), atol=1e-6)
        cur = conn.execute(
            "SELECT %s::INTEGER + 1 AS n, {'a': 1, 'b': [1, 2]} AS s, '{\"k\": 2}'::JSON AS j, "
            "TIMESTAMPTZ '2024-01-02 03:04:05+00' AS t, NULL::VARCHAR AS nothing, 1.5::DOUBLE AS d",
            (41,),
        )
        assert [d.type_code for d in cur.description] == [23, 114, 114, 1184, 25, 701]
        n, s, j, t, nothing, d = cur.fetchone()
        assert (n, s, j, nothing, d) == (42, {"a": 1, "b": [1, 2]}, {"k": 2}, None, 1.5)
        assert t.isoformat() == "2024-01-02T03:04:05+00:00"
        cur = conn.execute(
            "SELECT 12345678901234567890::HUGEINT AS h, INTERVAL 1 DAY + INTERVAL 3 HOUR AS i, "
            "['a', 'b'] AS l, MAP([1], [2]) AS m, [[1, 2]] AS nested"
        )
        assert [d.type_code for d in cur.description] == [1700, 1186, 1009, 114, 114]
        h, i, lst, m, nested = cur.fetchone()
        assert (int(h), i.total_seconds(), lst, m, nested) == (
            12345678901234567890,
            97200.0,
            ["a", "b"],
            {"1": 2},
            [[1, 2]],
        )
        binary = conn.cursor(binary=True)  # the other wire format
        binary.execute("SELECT [1.5, 2]::FLOAT[2] AS v, TIMESTAMPTZ '2024-01-01 00:00:00+00' AS t")
        v, t = binary.fetchone()
        assert v == [1.5, 2.0] and t.isoformat() == "2024-01-01T00:00:00+00:00"


def test_every_session_gets_the_jammi_functions_over_one_catalog(served, docs):
    with psycopg.connect(dsn(served), autocommit=True) as a:
        a.execute("SELECT add_source('wire_docs', 'docs')")
        written = a.execute(
            "SELECT generate_text_embeddings('wire_docs', 'tiny', ['body'], 'id')"
        ).fetchone()[0]
        assert written == 3  # the NULL body has nothing to embed
    with psycopg.connect(dsn(served), autocommit=True) as b:
        rows = b.execute(
            "SELECT key, score FROM semantic_search(%s, %s, %s, k := 2)",
            ("wire_docs", "tiny", "the cat plays"),
        ).fetchall()
    expected = docs.search("wire_docs", "tiny", "the cat plays", k=2)
    assert [r[0] for r in rows] == expected.column("key").to_pylist()


def test_a_statement_error_is_a_postgres_error_with_the_jammi_message_and_the_session_goes_on(
    served,
):
    with psycopg.connect(dsn(served), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT embed('no-such-model', 'x')")
        assert str(caught.value).startswith("jammi:") and "no-such-model" in str(caught.value)
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
    with psycopg.connect(dsn(served)) as conn:  # in a transaction: ROLLBACK, then on
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT no_such_column")
        conn.rollback()
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)


def test_postgres_settings_drivers_send_are_kept_per_session(served):
    with psycopg.connect(dsn(served), autocommit=True) as conn:
        conn.execute("SET extra_float_digits = 3")  # as JDBC does; DuckDB has no such setting
        conn.execute("SET application_name TO 'report'")
        assert conn.execute("SHOW extra_float_digits").fetchone() == ("3",)
        assert conn.execute("SHOW application_name").fetchone() == ("report",)
        assert conn.execute("SELECT current_schema()").fetchone() == ("main",)
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'jammi'"
        ).fetchall()
        assert ("jobs",) in tables
        version = conn.execute("SELECT version()").fetchone()[0]
        assert version.startswith("PostgreSQL 16.0 (jammi-sql")
        assert conn.info.server_version >= 160000
        assert conn.execute("SELECT current_setting('jit')").fetchone() == ("off",)
        threads = conn.execute("SELECT current_setting('threads')").fetchone()[0]
        assert int(threads) > 0  # DuckDB's own settings are DuckDB's to answer
        with pytest.raises(psycopg.Error, match="unrecognized configuration parameter"):
            conn.execute("SELECT current_setting('no_such_setting_anywhere')")


def test_transactions_commit_and_roll_back(served, db):
    with psycopg.connect(dsn(served)) as conn:
        conn.execute("CREATE TABLE kept (a INTEGER)")
        conn.execute("INSERT INTO kept VALUES (%s), (%s)", (1, 2))
        conn.commit()
        conn.execute("INSERT INTO kept VALUES (3)")
        conn.rollback()
    assert db.con.execute("SELECT sum(a) FROM kept").fetchone() == (3,)


def test_password_login_with_scram_and_failed_logins_are_refused_slowly_and_logged(guarded, caplog):
    with psycopg.connect(dsn(guarded, "s3cret pass")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.used_password
    caplog.set_level(logging.WARNING, logger="jammi_sql.pg.server")
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(dsn(guarded))  # the server asked for one
    for n, (password, user) in enumerate([("wrong", "jammi"), ("s3cret pass", "postgres")]):
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn(guarded, password, user))
        assert time.monotonic() - started >= guarded.pg.failed_login_delay * 2**n  # doubling
    assert caplog.text.count("failed login") == 2


def test_listening_beyond_loopback_needs_a_password(db):
    with pytest.raises(InvalidArgumentError, match="without a password"):
        Server(db, host="0.0.0.0", port=0)
    from jammi_sql.cli import main

    env_before = os.environ.pop("JAMMI_SERVER_PASSWORD", None)
    try:
        assert main(["serve", ":memory:", "--host", "0.0.0.0", "--port", "0"]) == 2
    finally:
        if env_before is not None:
            os.environ["JAMMI_SERVER_PASSWORD"] = env_before


def test_a_port_already_in_use_is_a_jammi_error_and_creates_no_database(tmp_path, capsys):
    from jammi_sql.cli import main

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", str(tmp_path / "w.duckdb"), "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert f"jammi: cannot listen on 127.0.0.1:{port}" in error
    assert "choose another port with --port" in error
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def readonly_server(tiny_model, tmp_path):
    path = str(tmp_path / "ro.duckdb")
    with jammi_sql.connect(path) as setup:
        setup.register_model("tiny", tiny_model)
        setup.con.execute("CREATE TABLE notes AS SELECT 'the cat plays' AS body")
    db = jammi_sql.connect(path, read_only=True)
    server = Server(db, port=0, readonly=True).start()
    yield server
    server.stop()
    db.close()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT add_source('notes', 'notes')",
        "CREATE TABLE x (a INTEGER)",
        "INSERT INTO notes VALUES ('more')",
        "COPY notes TO '{tmp}/out.csv'",
        "SELECT * FROM read_csv('{tmp}/in.csv')",
        "ATTACH '{tmp}/other.duckdb' AS other",
        "SET enable_external_access = true",
    ],
)
def test_readonly_refuses_writes_ddl_and_file_access(readonly_server, tmp_path, statement):
    (tmp_path / "in.csv").write_text("a\n1\n")
    with psycopg.connect(dsn(readonly_server), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement.format(tmp=tmp_path))
        assert str(caught.value).startswith("jammi: "), caught.value
        if statement.startswith("SET"):  # the server's settings are every session's
            assert "may not change the server's setting" in str(caught.value)
        else:
            assert "read-only" in str(caught.value) or "--readonly" in str(caught.value)
        row = conn.execute("SELECT body, len(embed('tiny', body)) FROM notes").fetchone()
        assert row == ("the cat plays", 32)
    assert not (tmp_path / "out.csv").exists()


def test_readonly_copies_out_but_not_in(readonly_server):
    with psycopg.connect(dsn(readonly_server), autocommit=True) as conn:
        with conn.cursor().copy("COPY notes TO STDOUT") as copy:
            assert list(copy.rows()) == [("the cat plays",)]
        with pytest.raises(psycopg.Error, match="--readonly"):
            with conn.cursor().copy("COPY notes FROM STDIN") as copy:
                copy.write_row(("more",))
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)


@needs_psql
def test_psql_copies_csv_and_text_in_and_out(served, db, tmp_path):
    db.con.execute("CREATE TABLE t (id INTEGER, body VARCHAR, score DOUBLE)")
    (tmp_path / "in.csv").write_text(
        'id,body,score\n1,"hello, world",0.5\n2,"a ""quoted"" word",\n3,,1.5\n4,"",2\n'
    )
    (tmp_path / "in.txt").write_text("10\ttab\\there\t\\N\n11\tback\\\\slash\t3\n")
    done = psql(
        served,
        "\\copy t from 'in.csv' with (format csv, header)",
        "\\copy t from 'in.txt'",
        "\\copy (SELECT * FROM t ORDER BY id) to 'out.csv' csv header",
        "\\copy t (id, body) to 'out.txt'",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = db.con.execute("SELECT * FROM t ORDER BY id").fetchall()
    assert rows == [
        (1, "hello, world", 0.5),
        (2, 'a "quoted" word', None),
        (3, None, 1.5),  # CSV: unquoted empty is NULL, quoted empty is ''
        (4, "", 2.0),
        (10, "tab\there", None),  # text format: backslash escapes, \N is NULL
        (11, "back\\slash", 3.0),
    ]
    out_csv = (tmp_path / "out.csv").read_text().splitlines()
    assert out_csv[:3] == ["id,body,score", '1,"hello, world",0.5', '2,"a ""quoted"" word",']
    assert out_csv[3:5] == ["3,,1.5", '4,"",2.0']
    out_txt = (tmp_path / "out.txt").read_text().splitlines()
    assert out_txt[2:] == ["3\t\\N", "4\t", "10\ttab\\there", "11\tback\\\\slash"]


def test_psycopg_copies_rows_and_bad_copies_change_nothing(served, db):
    db.con.execute("CREATE TABLE t (id INTEGER, body VARCHAR)")
    with psycopg.connect(dsn(served), autocommit=True) as conn:
        with conn.cursor().copy("COPY t (id, body) FROM STDIN") as copy:
            copy.write_row((1, "tab\tand\nnewline"))
            copy.write_row((2, None))
        with conn.cursor().copy("COPY (SELECT * FROM t ORDER BY id) TO STDOUT") as copy:
            assert list(copy.rows()) == [("1", "tab\tand\nnewline"), ("2", None)]
        with pytest.raises(psycopg.Error, match="binary format is not supported"):
            with conn.cursor().copy("COPY t TO STDOUT (FORMAT binary)") as copy:
                list(copy.rows())
        with pytest.raises(psycopg.Error, match="jammi: bad COPY data: line 2"):
            with conn.cursor().copy("COPY t FROM STDIN") as copy:
                copy.write(b"3\tfine\n4\ttoo\tmany\n")
        with pytest.raises(psycopg.Error):  # a value that is no INTEGER: DuckDB's cast error
            with conn.cursor().copy("COPY t FROM STDIN (FORMAT csv)") as copy:
                copy.write(b"5,ok\nsix,bad\n")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)  # nothing half-done


def test_large_results_and_copies_arrive_whole_in_order(served):
    # sent a batch at a time (wire_copy.SEND_ROWS): every batch, none twice, the right count
    n = 3 * wire_copy.SEND_ROWS + 5
    query = f"SELECT i, 'row ' || i AS body FROM range({n}) t(i) ORDER BY i"
    with psycopg.connect(dsn(served), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        cursor = conn.execute(query)  # the simple query protocol, as psql sends it
        assert cursor.fetchall() == [(i, f"row {i}") for i in range(n)]
        assert cursor.rowcount == n
        with conn.cursor().copy(f"COPY ({query}) TO STDOUT") as copy:
            assert list(copy.rows()) == [(str(i), f"row {i}") for i in range(n)]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_when_a_certificate_is_given(db, tmp_path):
    from jammi_sql.pg.server import tls_context

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    server = Server(db, port=0, password="pw", tls=tls_context(str(cert), str(key))).start()
    try:
        with psycopg.connect(dsn(server, "pw") + " sslmode=require") as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT len(embed('tiny', 'x'))").fetchone() == (32,)
    finally:
        server.stop()
    with pytest.raises(InvalidArgumentError, match="go together"):
        tls_context(str(cert), None)


def test_a_job_started_by_one_client_shows_its_progress_to_another(served, db):
    db.con.execute(
        "CREATE TABLE pairs AS SELECT 'the cat plays' AS text_a, "
        "'a dog runs' AS text_b, (i % 2)::DOUBLE AS score FROM range(24) t(i)"
    )
    with psycopg.connect(dsn(served), autocommit=True) as a:
        a.execute("SELECT add_source('pairs', 'pairs')")
        job_id = a.execute(
            "SELECT fine_tune('pairs', 'tiny', ['text_a', 'text_b', 'score'], "
            "config := {'epochs': 1, 'warmup_steps': 0})"
        ).fetchone()[0]
    seen = set()
    with psycopg.connect(dsn(served), autocommit=True) as b:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, model = b.execute(
                "SELECT status, model_id FROM jammi.jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
            seen.add(status)
            if status in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        assert status == "succeeded", seen
        assert b.execute("SELECT len(embed(%s, 'x'))", (model,)).fetchone()[0] > 0


def test_cancel_interrupts_the_running_statement_and_the_session_goes_on(served):
    slow = "SELECT count(*) FROM range(100000000000) a"
    with psycopg.connect(dsn(served), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(slow)
        assert time.monotonic() - started < 20
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)


def no_embedding_tables(db) -> bool:
    names = db.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    return not any(name.startswith("emb_") for (name,) in names)


@needs_psql
def test_psql_ctrl_c_stops_a_long_generate_text_embeddings(served, big):
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    long_call = "SELECT generate_text_embeddings('big', 'tiny', ['body'], 'id')"
    proc = subprocess.Popen(
        [PSQL, dsn(served), "-X", "-c", long_call],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(1.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert "canceling statement" in err or "jammi: the call was cancelled" in err
    assert no_embedding_tables(big)


def test_a_cancelled_jammi_call_rolls_back_and_the_session_goes_on(served, big):
    with psycopg.connect(dsn(served), autocommit=True) as conn:
        threading.Timer(1.5, conn.cancel_safe).start()
        with pytest.raises(psycopg.errors.QueryCanceled):  # within seconds, not minutes
            conn.execute("SELECT generate_text_embeddings('big', 'tiny', ['body'], 'id')")
        assert no_embedding_tables(big)
        assert conn.execute("SELECT count(*) FROM big").fetchone() == (200000,)


@needs_psql
def test_a_client_that_hangs_up_mid_statement_interrupts_it(served):
    proc = subprocess.Popen(
        [PSQL, dsn(served), "-X", "-c", "SELECT count(*) FROM range(100000000000) a"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not served.pg._connections:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()  # no cancel request, no goodbye: the socket just closes
    proc.wait()
    while served.pg._connections:  # the statement would run for minutes if not interrupted
        assert time.monotonic() < deadline, "the statement still runs for a client that left"
        time.sleep(0.05)


def test_asyncpg_prepared_statements_with_parameters(served, db):
    asyncpg = pytest.importorskip("asyncpg")

    async def run():
        conn = await asyncpg.connect(
            host="127.0.0.1", port=served.port, user="jammi", database="x", timeout=10
        )
        try:
            vector = await conn.fetchval("SELECT embed($1, $2)", "tiny", "the cat plays")
            total = await conn.fetchval("SELECT $1::INTEGER * 2", 21)
            with pytest.raises(asyncpg.PostgresError, match="write those arguments as literals"):
                await conn.fetch("SELECT * FROM semantic_search($1, 'tiny', 'x')", "docs")
            async with conn.transaction():  # a cursor: Execute with a row limit, suspended
                rows = [r[0] async for r in conn.cursor("SELECT * FROM range(5000)", prefetch=700)]
            assert rows == list(range(5000))
            return vector, total
        finally:
            await conn.close()

    vector, total = asyncio.run(run())
    assert np.allclose(vector, db.encode_text("tiny", "the cat plays"), atol=1e-6)
    assert total == 42


@pytest.mark.filterwarnings("ignore:Did not recognize type")  # DuckDB's LIST columns
def test_sqlalchemy_reflects_the_jammi_tables_and_queries_them(served):
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(f"postgresql+psycopg://jammi@127.0.0.1:{served.port}/anything")
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            assert "jammi" in inspector.get_schema_names()
            assert {"jobs", "model_records", "sources"} <= set(inspector.get_table_names("jammi"))
            assert "models" in inspector.get_view_names("jammi")
            columns = {c["name"]: c["type"] for c in inspector.get_columns("models", "jammi")}
            assert isinstance(columns["model_id"], sa.String)
            assert isinstance(columns["dimensions"], sa.Integer)
            models = sa.table("models", sa.column("model_id"), sa.column("kind"), schema="jammi")
            query = sa.select(models.c.model_id).where(models.c.kind == sa.bindparam("kind"))
            assert conn.execute(query, {"kind": "base"}).all() == [("tiny",)]
    finally:
        engine.dispose()


@pytest.mark.filterwarnings("ignore:Did not recognize type")  # DuckDB's LIST columns
def test_sqlalchemy_autoloads_keys_and_indexes(served, db):
    """Table(..., autoload_with=...), as BI tools built on SQLAlchemy reflect a table."""
    sa = pytest.importorskip("sqlalchemy")
    db.con.execute(
        "CREATE TABLE papers (id INTEGER PRIMARY KEY, doi VARCHAR UNIQUE, year INTEGER);"
        "CREATE TABLE cites (src INTEGER REFERENCES papers(id), dst INTEGER, "
        "PRIMARY KEY (src, dst)); CREATE INDEX papers_year ON papers (year)"
    )
    engine = sa.create_engine(f"postgresql+psycopg://jammi@127.0.0.1:{served.port}/anything")
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            papers = sa.Table("papers", meta, autoload_with=conn)
            cites = sa.Table("cites", meta, autoload_with=conn)
            jobs = sa.Table("jobs", meta, schema="jammi", autoload_with=conn)
    finally:
        engine.dispose()
    assert [c.name for c in papers.primary_key] == ["id"]
    assert [c.name for c in cites.primary_key] == ["src", "dst"]
    assert {(i.name, tuple(c.name for c in i.columns), i.unique) for i in papers.indexes} == {
        ("papers_year", ("year",), False)
    }
    uniques = [c for c in papers.constraints if isinstance(c, sa.UniqueConstraint)]
    assert [[c.name for c in u.columns] for u in uniques] == [["doi"]]
    (fk,) = cites.foreign_keys
    assert (fk.parent.name, fk.column.table.name, fk.column.name) == ("src", "papers", "id")
    assert "job_id" in jobs.c and "progress" in jobs.c


def test_the_real_command_serves_with_a_password_and_stops_cleanly_on_sigterm(tmp_path, tiny_model):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAMMI_SERVER_PASSWORD": "pw-8k2q", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "jammi_sql.cli", "serve", str(tmp_path / "s.duckdb")]
    audit = tmp_path / "audit.log"
    args += ["--allow-dir", str(tiny_model), "--audit-log", str(audit)]
    proc = subprocess.Popen(
        args + ["--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        conninfo = f"host=127.0.0.1 port={port} user=jammi password=pw-8k2q dbname=x"
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(conninfo, autocommit=True)
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        with conn:
            conn.execute("SELECT register_model('tiny', %s)", (str(tiny_model),))
            conn.execute(
                "CREATE TABLE pairs AS SELECT 'the cat plays' AS a, 'a dog runs' AS b, "
                "(i % 2)::DOUBLE AS score FROM range(24) t(i)"
            )
            conn.execute("SELECT add_source('pairs', 'pairs')")
            job_id = conn.execute(
                "SELECT fine_tune('pairs', 'tiny', ['a', 'b', 'score'], method := 'full', "
                "config := {'epochs': 500, 'warmup_steps': 0, 'early_stopping_patience': 1000})"
            ).fetchone()[0]
            while conn.execute(
                "SELECT status FROM jammi.jobs WHERE job_id = %s", (job_id,)
            ).fetchone() != ("running",):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "scram-sha-256" in proc.stderr.read()
        # marked by the server as it stopped (a read-only open marks nothing itself)
        with jammi_sql.connect(str(tmp_path / "s.duckdb"), read_only=True) as db:
            assert db.job(job_id).status == "interrupted"
        lines = audit.read_text().splitlines()
        assert any("login" in line and "role=jammi outcome=ok" in line for line in lines)
        assert any(
            " job " in line and "call=fine_tune" in line and job_id in line for line in lines
        )
        assert "pw-8k2q" not in audit.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
