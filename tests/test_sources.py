"""add_source and remove_source: files, globs, tables, views and queries as named sources."""

import json

import pytest
from conftest import catalog_snapshot


def sources(db):
    return db.sql("SELECT name, kind, format, columns FROM jammi.sources ORDER BY name").fetchall()


def test_add_source_reads_csv_parquet_json_and_jsonl(db, tmp_path):
    (tmp_path / "a.csv").write_text("id,body\n1,hello\n")
    db.sql(
        f"COPY (SELECT 1 AS id, 'hello' AS body) TO '{tmp_path / 'a.parquet'}' (FORMAT parquet)"
    ).fetchall()
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": 1, "body": "hello"}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([{"id": 1, "body": "hello"}]))
    for name, file in [("c", "a.csv"), ("p", "a.parquet"), ("l", "a.jsonl"), ("j", "b.json")]:
        db.sql(f"SELECT add_source('{name}', '{tmp_path / file}')").fetchall()
    assert sources(db) == [
        ("c", "file", "csv", ["id", "body"]),
        ("j", "file", "json", ["id", "body"]),
        ("l", "file", "jsonl", ["id", "body"]),
        ("p", "file", "parquet", ["id", "body"]),
    ]


def test_add_source_accepts_globs_tables_views_and_queries(db, tmp_path):
    for i in range(2):
        (tmp_path / f"part{i}.csv").write_text(f"id,body\n{i},text {i}\n")
    db.sql("CREATE TABLE docs AS SELECT 1 AS id, 'x' AS body").fetchall()
    db.sql("CREATE VIEW docs_view AS SELECT * FROM docs").fetchall()
    db.sql(f"SELECT add_source('parts', '{tmp_path}/part*.csv')").fetchall()
    db.sql("SELECT add_source('t', 'docs')").fetchall()
    db.sql("SELECT add_source('v', 'docs_view')").fetchall()
    db.sql(
        "SELECT add_source('q', 'SELECT id, upper(body) AS body FROM docs', format := 'query')"
    ).fetchall()
    assert [(n, k) for n, k, _, _ in sources(db)] == [
        ("parts", "file"),
        ("q", "query"),
        ("t", "table"),
        ("v", "table"),
    ]
    assert (
        db.sql("SELECT count(*) FROM jammi.sources WHERE columns = ['id', 'body']").fetchall()[0][0]
        == 4
    )


def test_python_add_source_mirrors_sql(db, tmp_path):
    (tmp_path / "pairs.csv").write_text("text_a,text_b,score\na,b,1.0\n")
    source = db.add_source("training", path=str(tmp_path / "pairs.csv"), format="csv")
    assert source.columns == ["text_a", "text_b", "score"]


def test_remove_source_unregisters_it(db):
    db.sql("CREATE TABLE docs AS SELECT 1 AS id").fetchall()
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    db.sql("SELECT remove_source('docs')").fetchall()
    assert sources(db) == []


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT add_source('x', '/no/such/file.csv')", "no file matches"),
        ("SELECT add_source('x', '{tmp}/data.xlsx')", "unsupported file format '.xlsx'"),
        ("SELECT add_source('x', 'no_such_table')", "neither a file nor a table"),
        ("SELECT add_source('x', '{tmp}/a.csv', format := 'avro')", "unsupported format 'avro'"),
        ("SELECT add_source('bad name', '{tmp}/a.csv')", "source name 'bad name' is invalid"),
        ("SELECT remove_source('nope')", "unknown source 'nope'"),
    ],
)
def test_bad_sources_are_clear_errors_that_change_nothing(db, tmp_path, sql, message):
    (tmp_path / "a.csv").write_text("id,body\n1,x\n")
    (tmp_path / "data.xlsx").write_text("not really")
    before = catalog_snapshot(db)
    with pytest.raises(Exception, match="jammi: ") as err:
        db.sql(sql.format(tmp=tmp_path)).fetchall()
    assert message in str(err.value)
    assert catalog_snapshot(db) == before


def test_duplicate_source_name_is_refused(db, tmp_path):
    (tmp_path / "a.csv").write_text("id,body\n1,x\n")
    db.sql(f"SELECT add_source('a', '{tmp_path / 'a.csv'}')").fetchall()
    before = catalog_snapshot(db)
    with pytest.raises(Exception, match="jammi: source 'a' already exists"):
        db.sql(f"SELECT add_source('a', '{tmp_path / 'a.csv'}')").fetchall()
    assert catalog_snapshot(db) == before
