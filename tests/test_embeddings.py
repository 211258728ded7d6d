import pytest
from conftest import catalog_snapshot


@pytest.fixture
def docs(db):
    db.sql("CREATE TABLE docs (id INTEGER, title VARCHAR, body VARCHAR)").fetchall()
    db.sql("""INSERT INTO docs VALUES (1, 'cats', 'the cat plays piano'), (2, 'dogs', 'a dog runs'),
              (3, 'energy', 'solar energy battery'), (4, 'empty', NULL)""").fetchall()
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    return db


def test_generate_text_embeddings_writes_a_listed_table(docs):
    written = docs.sql(
        "SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')"
    ).fetchall()[0][0]
    assert written == 3  # the NULL body has nothing to embed
    table, source, model, columns, key, dims, count = docs.sql(
        "SELECT table_name, source, model_id, columns, key, dimensions, row_count FROM jammi.embedding_tables"
    ).fetchall()[0]
    assert (source, model, columns, key, dims, count) == ("docs", "tiny", ["body"], "id", 32, 3)
    cols = [r[0] for r in docs.sql(f"DESCRIBE {table}").fetchall()]
    assert cols == ["key", "column_name", "text", "text_hash", "embedding"]


def test_a_second_run_embeds_only_new_or_changed_rows_and_drops_gone_keys(docs):
    generate = "SELECT generate_text_embeddings('docs', 'tiny', ['title', 'body'], 'id')"
    assert docs.sql(generate).fetchall()[0][0] == 7
    assert docs.sql(generate).fetchall()[0][0] == 0
    docs.sql("UPDATE docs SET body = 'a dog walks' WHERE id = 2").fetchall()
    docs.sql("INSERT INTO docs VALUES (5, 'new', 'quantum computing')").fetchall()
    docs.sql("DELETE FROM docs WHERE id = 3").fetchall()
    assert docs.sql(generate).fetchall()[0][0] == 3  # changed body, new title, new body
    table = docs.sql("SELECT table_name FROM jammi.embedding_tables").fetchall()[0][0]
    rows = docs.sql(
        f"SELECT key, column_name, text FROM {table} ORDER BY key, column_name"
    ).fetchall()
    assert (2, "body", "a dog walks") in rows and (5, "body", "quantum computing") in rows
    assert not any(key == 3 for key, _, _ in rows)
    assert docs.sql("SELECT row_count FROM jammi.embedding_tables").fetchall()[0][0] == len(rows)


def test_semantic_search_returns_top_k_highest_first_and_joins(docs):
    docs.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    rows = docs.sql(
        "SELECT * FROM semantic_search('docs', 'tiny', 'the cat plays piano', k := 2)"
    ).fetchall()
    assert len(rows) == 2
    assert rows[0][:3] == (1, "body", "the cat plays piano")
    assert rows[0][3] == pytest.approx(1.0, abs=1e-5) and rows[0][3] >= rows[1][3]
    joined = docs.sql(
        "SELECT d.title FROM semantic_search('docs', 'tiny', 'solar energy battery', k := 1) s "
        "JOIN docs d ON d.id = s.key"
    ).fetchall()
    assert joined == [("energy",)]


def test_python_search_returns_a_pyarrow_table(docs):
    assert (
        docs.generate_text_embeddings(source="docs", model="tiny", columns=["body"], key="id") == 3
    )
    table = docs.search(source="docs", model="tiny", query="a dog runs", k=3)
    assert table.column_names == ["key", "column_name", "text", "score"]
    assert table.column("key").to_pylist()[0] == 2


@pytest.mark.parametrize(
    "setup, call, message",
    [
        ("INSERT INTO docs VALUES (NULL, 'x', 'y')", "['body'], 'id'", "has 1 NULL values"),
        ("INSERT INTO docs VALUES (1, 'x', 'y')", "['body'], 'id'", "duplicate values"),
        ("DELETE FROM docs", "['body'], 'id'", "is empty"),
        ("", "['id'], 'title'", "column 'id' of source 'docs' is INTEGER, not text"),
        ("", "['nope'], 'id'", "no column 'nope'; its columns are id, title, body"),
        ("", "['body'], 'nope'", "no column 'nope'"),
    ],
)
def test_bad_embedding_requests_are_clear_errors_that_change_nothing(docs, setup, call, message):
    if setup:
        docs.sql(setup).fetchall()
    before = catalog_snapshot(docs)
    with pytest.raises(Exception, match="jammi: ") as err:
        docs.sql(f"SELECT generate_text_embeddings('docs', 'tiny', {call})").fetchall()
    assert message in str(err.value)
    assert catalog_snapshot(docs) == before


def test_unknown_source_and_missing_embeddings_are_clear_errors(docs):
    with pytest.raises(Exception, match="jammi: unknown source 'nope'"):
        docs.sql("SELECT generate_text_embeddings('nope', 'tiny', ['body'], 'id')").fetchall()
    with pytest.raises(Exception, match="jammi: source 'docs' has no embeddings for model 'tiny'"):
        docs.sql("SELECT * FROM semantic_search('docs', 'tiny', 'cat')").fetchall()
