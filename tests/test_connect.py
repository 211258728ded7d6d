"""connect() and install(): the jammi schema, the home folder, and no torch at import."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import jammi_sql
from jammi_sql.catalog.tables import sql_dir

MIGRATIONS = len(list((sql_dir() / "schema").glob("*.sql")))  # each applied exactly once


def test_connect_creates_the_jammi_schema_with_a_version(tmp_path):
    db = jammi_sql.connect(str(tmp_path / "work.duckdb"))
    tables = {
        r[0]
        for r in db.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'jammi'"
        ).fetchall()
    }
    assert {
        "sources",
        "model_records",  # jammi.models is a view over it (what this process loaded laid over)
        "jobs",
        "job_metrics",
        "embedding_tables",
        "schema_version",
    } <= tables
    assert db.sql("SELECT max(version) FROM jammi.schema_version").fetchall()[0][0] >= 1
    assert db.sql("SELECT count(*) FROM duckdb_views() WHERE view_name = 'models'").fetchall() == [
        (1,)
    ]
    db.close()


def test_the_catalog_survives_closing_and_reopening(tmp_path):
    path = str(tmp_path / "work.duckdb")
    csv = tmp_path / "pairs.csv"
    csv.write_text("text_a,text_b,score\na cat,a dog,0.5\n")
    db = jammi_sql.connect(path)
    db.sql(f"SELECT add_source('training', '{csv}')").fetchall()
    db.close()
    db = jammi_sql.connect(path)
    assert db.sql("SELECT name, kind, format, columns FROM jammi.sources").fetchall() == [
        ("training", "file", "csv", ["text_a", "text_b", "score"])
    ]
    assert db.sql("SELECT count(*) FROM jammi.schema_version").fetchall()[0][0] == MIGRATIONS
    db.close()


def test_install_is_idempotent_on_an_existing_connection(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    jammi_sql.install(con)
    jammi_sql.install(con)
    assert con.execute("SELECT count(*) FROM jammi.schema_version").fetchall()[0][0] == MIGRATIONS
    con.close()


def test_home_folder_sits_beside_the_database_file(tmp_path):
    db = jammi_sql.connect(str(tmp_path / "work.duckdb"))
    assert db.home == (tmp_path / "work.duckdb.jammi").resolve()
    db.close()


def test_home_can_be_chosen_with_jammi_home(tmp_path, monkeypatch):
    monkeypatch.setenv("JAMMI_HOME", str(tmp_path / "elsewhere"))
    db = jammi_sql.connect(":memory:")
    assert db.home == (tmp_path / "elsewhere").resolve()
    db.close()


def test_importing_jammi_sql_does_not_import_torch():
    code = "import sys, jammi_sql; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_install_into_an_in_memory_connection_leaves_no_folder_and_no_warnings(tmp_path):
    code = (
        "import duckdb, jammi_sql\n"
        "con = duckdb.connect()\n"
        "ctx = jammi_sql.install(con)\n"
        'con.sql("SELECT count(*) FROM jammi.models").fetchall()\n'
        "print(ctx.home)\n"  # no con.close(): the script just ends
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(tmp_path))
    assert not Path(out.stdout.strip()).exists()
    assert "leaked" not in out.stderr


def test_df_without_pandas_is_a_jammi_error_that_says_how_to_install_it(tmp_path, monkeypatch):
    import pytest

    from jammi_sql.errors import MissingPackageError

    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with jammi_sql.connect(":memory:", home=str(tmp_path / "home")) as db:
        relation = db.sql("SELECT 1 AS one")
        for fetch in (relation.df, relation.fetchdf, relation.to_df):
            with pytest.raises(MissingPackageError) as err:
                fetch()
            assert str(err.value).startswith("jammi: .")
            assert "pip install pandas" in str(err.value) and "jammi-sql[pandas]" in str(err.value)
            assert isinstance(err.value, ModuleNotFoundError)
        assert relation.fetchall() == [(1,)]


@pytest.mark.parametrize("read_only", [False, True])
def test_a_catalog_a_newer_jammi_wrote_is_refused_and_left_as_it_was(tmp_path, read_only):
    path = str(tmp_path / "newer.duckdb")
    jammi_sql.connect(path, home=str(tmp_path / "home")).close()
    with duckdb.connect(path) as con:  # what a later jammi-sql would have recorded
        con.execute("INSERT INTO jammi.schema_version (version) VALUES (999)")
        before = con.execute("SELECT version FROM jammi.schema_version ORDER BY 1").fetchall()
    with pytest.raises(jammi_sql.JammiError, match="schema version 999, newer than this jammi-sql"):
        jammi_sql.connect(path, home=str(tmp_path / "home"), read_only=read_only)
    # the refused connect let go of the file: another process may open it for writing at once
    opened = subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({path!r})"])
    assert opened.returncode == 0
    with duckdb.connect(path) as con:
        assert (
            con.execute("SELECT version FROM jammi.schema_version ORDER BY 1").fetchall() == before
        )
