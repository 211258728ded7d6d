"""What clients send on connect and while browsing, answered as PostgreSQL answers it: psql's
\\l, \\df, \\du, \\dx and \\sf; asyncpg's array and integer parameters; PostgreSQL's column
names and REAL text; COPY's row counts; the probes BI tools send. One server per module.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import psycopg
import pytest

from jammi_sql.pg.server import Server

PSQL = shutil.which("psql")
needs_psql = pytest.mark.skipif(PSQL is None, reason="psql is not installed")
READER_PW, OWNER_PW = "reader pw", "owner pw"


@pytest.fixture(scope="module")
def served(tmp_path_factory, _tiny_bert_master):
    import jammi_sql

    root = tmp_path_factory.mktemp("clients")
    db = jammi_sql.connect(str(root / "c.duckdb"))
    db.register_model("tiny", str(_tiny_bert_master))
    db.con.execute(
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, body VARCHAR, v FLOAT[], score REAL)"
    )
    db.con.execute("INSERT INTO docs VALUES (1, 'the cat plays', [0.1, 0.2], 0.1)")
    (root / "out").mkdir()
    server = Server(
        db,
        port=0,
        password=OWNER_PW,
        reader="analyst",
        reader_password=READER_PW,
        allow_dirs=[str(root / "out")],
    ).start()
    server.root = root
    yield server
    server.stop()
    db.close()


def psql(server: Server, *commands: str, user: str = "jammi") -> str:
    env = {**os.environ, "PGPASSWORD": READER_PW if user == "analyst" else OWNER_PW}
    args = [PSQL, f"host=127.0.0.1 port={server.port} user={user} dbname=work", "-X", "-A"]
    for command in commands:
        args += ["-c", command]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_psql
def test_psql_lists_databases_roles_and_extensions(served):
    databases = psql(served, "\\l")
    assert "c|jammi|UTF8|C|C|" in databases and "system|" not in databases
    roles = psql(served, "\\du")
    assert "analyst||{}" in roles and "jammi|" in roles
    extensions = psql(served, "\\dx")
    assert "parquet|" in extensions and "json|" in extensions


@needs_psql
def test_psql_lists_and_shows_the_jammi_functions(served):
    functions = psql(served, "\\df", user="analyst")
    assert "main|embed|float[]|model varchar, text varchar|func" in functions
    assert "main|semantic_search|TABLE|source varchar, model varchar, query varchar" in functions
    assert "upper|" not in functions  # DuckDB's own are pg_catalog's, as PostgreSQL's are
    verbose = psql(served, "\\df+ rrf")
    assert "rrf|double|ranks bigint[], k double DEFAULT 60" in verbose
    definition = psql(served, "\\sf embed")
    assert definition.startswith("CREATE MACRO main.embed(model, text) AS jammi_embed(")
    assert "RETURNS float[]" in psql(served, "\\sf jammi_embed")


def connect(server: Server, **kwargs) -> psycopg.Connection:
    return psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=jammi dbname=work",
        password=OWNER_PW,
        autocommit=True,
        **kwargs,
    )


def test_columns_are_named_as_postgresql_names_them(served):
    with connect(served) as conn:
        cursor = conn.execute("SELECT count(*), count(id), sum(id) FROM docs")
        assert [c.name for c in cursor.description] == ["count", "count", "sum"]
        cursor = conn.execute(
            "SELECT id::REAL, 0.1::REAL, upper(body), id + 1, body AS b, embed('tiny', body) "
            "FROM docs"
        )
        names = [c.name for c in cursor.description]
        assert names == ["id", "float4", "upper", "?column?", "b", "embed"]


def test_real_values_print_as_postgresql_prints_them(served):
    with connect(served) as conn:
        row = conn.execute(
            "SELECT (0.1::REAL)::VARCHAR, 0.1::REAL, 123456789::REAL, 1.5e-7::REAL, "
            "'NaN'::REAL, '-inf'::REAL, score, v FROM docs"
        ).fetchone()
        assert row[0] == "0.1" and row[1:4] == pytest.approx((0.1, 123456792.0, 1.5e-7), rel=1e-6)
    text = psql(
        served,
        "SELECT 0.1::REAL AS a, 123456789::REAL AS b, 1.5e-7::REAL AS c, 'NaN'::REAL AS d, "
        "'-inf'::REAL AS e, 3::REAL AS f, score, v FROM docs",
    )
    assert text.splitlines()[1] == "0.1|1.2345679e+08|1.5e-07|NaN|-Infinity|3|0.1|{0.1,0.2}"


def test_copy_to_a_file_reports_its_rows(served):
    with connect(served) as conn:
        cursor = conn.execute(f"COPY docs TO '{served.root / 'out' / 'docs.csv'}' (HEADER)")
        assert cursor.statusmessage == "COPY 1"
        assert (served.root / "out" / "docs.csv").read_text().startswith("id,body,v,score")


def test_asyncpg_sends_arrays_integers_and_executemany(served):
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio

    async def run():
        conn = await asyncpg.connect(
            host="127.0.0.1", port=served.port, user="jammi", password=OWNER_PW, database="work"
        )
        try:
            await conn.execute("CREATE TABLE many (n INTEGER, x DOUBLE, tags VARCHAR[], v FLOAT[])")
            await conn.executemany(
                "INSERT INTO many VALUES ($1, $2, $3, $4)",
                [(1, 0.5, ["a", "b"], [0.1, 0.2]), (2, 1.5, [], [1.0])],
            )
            assert await conn.fetchval("SELECT sum(n) FROM many") == 3
            await conn.executemany("INSERT INTO many (n) VALUES ($1)", [(3,), (4,)])
            assert await conn.fetchval("SELECT count(*) FROM many") == 4
            length = await conn.fetchval("SELECT len($1::FLOAT[])", [0.25, 0.5, 0.75])
            assert length == 3
            vector = await conn.fetchval("SELECT embed('tiny', 'the cat')")
            same = await conn.fetchval(
                "SELECT list_cosine_similarity(embed('tiny', 'the cat'), $1::FLOAT[])", vector
            )
            assert same == pytest.approx(1.0, abs=1e-5)
            tags = await conn.fetchval("SELECT tags FROM many WHERE n = $1::INTEGER", 1)
            assert tags == ["a", "b"]
        finally:
            await conn.execute("DROP TABLE IF EXISTS many")
            await conn.close()

    asyncio.run(run())


# What these tools send, after their public sources: Metabase (pgJDBC and its sync queries),
# Superset (SQLAlchemy's PostgreSQL dialect), Tableau (its libpq probes), DBeaver (its
# PostgreSQL plugin's navigator queries, as another PostgreSQL-wire project recorded them).
BI_PROBES = [  # what each tool sends on connect and while browsing a schema
    # Metabase / pgJDBC
    "SET extra_float_digits = 3",
    "SET application_name = 'Metabase v0.50'",
    "SELECT current_database()",
    "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'",
    "SELECT n.nspname AS schema, c.relname AS name, CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS type, d.description AS description, stat.n_live_tup AS estimated_row_count FROM pg_catalog.pg_class c INNER JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid LEFT JOIN pg_catalog.pg_description d ON c.oid = d.objoid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass LEFT OUTER JOIN pg_stat_user_tables stat ON c.oid = stat.relid WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'f', 'm') AND n.nspname !~ '^information_schema|catalog_history|pg_'",
    "SELECT has_table_privilege('docs', 'SELECT')",
    "SELECT has_schema_privilege('main', 'USAGE')",
    # Superset / SQLAlchemy psycopg2
    "select pg_catalog.version()",
    "select current_schema()",
    "show standard_conforming_strings",
    "SELECT CAST('test plain returns' AS VARCHAR(60)) AS anon_1",
    "SELECT CAST('test unicode returns' AS VARCHAR(60)) AS anon_1",
    "show transaction isolation level",
    "SELECT pg_catalog.pg_namespace.nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.pg_namespace.nspname NOT LIKE 'pg_%' ORDER BY pg_catalog.pg_namespace.nspname",
    # Tableau
    "SET DateStyle = 'ISO'",
    "SET extra_float_digits = 2",
    "show transaction_isolation",
    "select oid, typbasetype from pg_type where typname = 'lo'",
    "select nspname from pg_namespace where nspname not like 'pg_%'",
    "select relname, nspname, relkind from pg_class c, pg_namespace n where relkind in ('r', 'v', 'm', 'f', 'p') and nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'pg_temp_1') and n.oid = relnamespace order by nspname, relname",
    "select pg_get_viewdef(c.oid) from pg_class c where false",
    # DBeaver
    "SELECT current_schema(),session_user",
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='c'",
    "SHOW search_path",
    "select * from pg_catalog.pg_settings where name='max_index_keys'",
    "SELECT e.oid, e.extname FROM pg_catalog.pg_extension e",
    "SELECT r.oid,r.* FROM pg_catalog.pg_roles r ORDER BY r.oid",
    "select string_agg(word, ',') from pg_catalog.pg_get_keywords() where word <> ALL ('{a,abs,absolute}'::text[])",
    "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass WHERE c.relnamespace=(SELECT oid FROM pg_catalog.pg_namespace WHERE nspname='main') AND c.relkind not in ('i','I','c')",
    "select c.oid,pg_catalog.pg_total_relation_size(c.oid) as total_rel_size,pg_catalog.pg_relation_size(c.oid) as rel_size FROM pg_class c WHERE c.relnamespace=(SELECT oid FROM pg_catalog.pg_namespace WHERE nspname='main')",
    # DBeaver's navigator, as it opens a connection and a schema
    "SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = 1034",
    "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp ON sp.nspoid = typnamespace WHERE pg_type.oid = 1034 ORDER BY sp.r, pg_type.oid DESC",
    "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'",
    "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1",
    "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1",
    "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN pg_catalog.pg_description d ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') AND (et.typcategory IS NULL OR et.typcategory <> 'C')",
    "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr, pg_catalog.pg_get_partkeydef(c.oid) as partition_key FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass WHERE c.relnamespace=11 AND c.relkind not in ('i','I','c')",
    "SELECT i.*,i.indkey as keys,c.relname,c.relnamespace,c.relam,c.reltablespace,tc.relname as tabrelname,dsc.description,pg_catalog.pg_get_expr(i.indpred, i.indrelid) as pred_expr,pg_catalog.pg_get_expr(i.indexprs, i.indrelid, true) as expr,pg_catalog.pg_relation_size(i.indexrelid) as index_rel_size,pg_catalog.pg_stat_get_numscans(i.indexrelid) as index_num_scans FROM pg_catalog.pg_index i INNER JOIN pg_catalog.pg_class c ON c.oid=i.indexrelid INNER JOIN pg_catalog.pg_class tc ON tc.oid=i.indrelid LEFT OUTER JOIN pg_catalog.pg_description dsc ON i.indexrelid=dsc.objoid WHERE i.indrelid=1 ORDER BY tabrelname, c.relname",
    "SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace,d.description, case when c.contype='c' then \"substring\"(pg_get_constraintdef(c.oid), 7) else null end consrc_copy FROM pg_catalog.pg_constraint c INNER JOIN pg_catalog.pg_class t ON t.oid=c.conrelid LEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_constraint'::regclass WHERE c.conrelid=1 ORDER BY c.oid",
]


@pytest.mark.parametrize("sql", BI_PROBES)
def test_the_queries_bi_tools_send_on_connect_are_answered(served, sql):
    with connect(served) as conn:
        cursor = conn.execute(sql)
        if cursor.description is not None:
            cursor.fetchall()


def test_sqlalchemy_reflects_list_columns_as_arrays(served):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.dialects import postgresql

    url = f"postgresql+psycopg://jammi:owner%20pw@127.0.0.1:{served.port}/c"
    engine = sqlalchemy.create_engine(url)
    try:
        columns = {c["name"]: c["type"] for c in sqlalchemy.inspect(engine).get_columns("docs")}
    finally:
        engine.dispose()
    assert isinstance(columns["v"], postgresql.ARRAY)
    assert isinstance(columns["v"].item_type, sqlalchemy.REAL)
    assert isinstance(columns["score"], sqlalchemy.REAL)
