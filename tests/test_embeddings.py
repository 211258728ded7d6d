"""generate_text_embeddings: materialized embedding tables, incremental runs, chunking, and
semantic search over them."""

import pytest
from conftest import catalog_snapshot


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
    assert cols == ["key", "column_name", "text", "text_hash", "embedding", "vid"]


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


LONG = " ".join(["the cat plays piano"] * 40)  # 160 words: past the tiny model's 64 tokens


@pytest.fixture
def long_docs(db):
    db.sql("CREATE TABLE long_docs (id INTEGER, body VARCHAR)").fetchall()
    db.sql(
        "INSERT INTO long_docs VALUES (1, ?), (2, 'a dog runs'), (3, ?)",
        params=[LONG + " solar energy battery", LONG + " quantum computing physics"],
    ).fetchall()
    db.sql("SELECT add_source('long_docs', 'long_docs')").fetchall()
    return db


def test_texts_cut_at_the_models_limit_are_counted(long_docs):
    written = long_docs.generate_text_embeddings("long_docs", "tiny", ["body"], "id")
    assert written == 3 and written.truncated == 2
    assert long_docs.sql("SELECT truncated FROM jammi.embedding_tables").fetchall() == [(2,)]
    # cut at the limit, the two long texts embed alike although their endings differ
    same = long_docs.sql(
        "SELECT list_cosine_similarity(a.embedding, b.embedding) FROM jammi.emb_long_docs__tiny a, "
        "jammi.emb_long_docs__tiny b WHERE a.key = 1 AND b.key = 3"
    ).fetchall()[0][0]
    assert same == pytest.approx(1.0, abs=1e-5)


def test_chunk_tokens_stores_one_row_per_overlapping_window(long_docs):
    written = long_docs.sql(
        "SELECT generate_text_embeddings('long_docs', 'tiny', ['body'], 'id', chunk_tokens := 40, "
        "chunk_overlap := 8)"
    ).fetchall()[0][0]
    rows = long_docs.sql(
        "SELECT key, chunk, text FROM jammi.emb_long_docs__tiny ORDER BY key, chunk"
    ).fetchall()
    assert written == len(rows) and {k for k, _, _ in rows} == {1, 2, 3}
    for key in (1, 3):  # 0-based positions; the windows cover the text, start to end
        chunks = [(c, t) for k, c, t in rows if k == key]
        assert [c for c, _ in chunks] == list(range(len(chunks))) and len(chunks) > 2
        assert LONG.startswith(chunks[0][1]) and chunks[-1][1].endswith(("battery", "physics"))
    assert [(c, t) for k, c, t in rows if k == 2] == [(0, "a dog runs")]
    table = long_docs.sql(
        "SELECT truncated, chunk_tokens, chunk_overlap FROM jammi.embedding_tables"
    ).fetchall()
    assert table == [(0, 40, 8)]


def test_chunked_search_returns_each_key_once_with_its_best_chunk(long_docs):
    long_docs.generate_text_embeddings(
        "long_docs", "tiny", ["body"], "id", chunk_tokens=24, chunk_overlap=4
    )
    rows = long_docs.sql(
        "SELECT key, text, score FROM semantic_search('long_docs', 'tiny', 'quantum computing physics', k := 10)"
    ).fetchall()
    assert sorted(k for k, _, _ in rows) == [1, 2, 3]
    best = long_docs.sql(
        "SELECT max(list_cosine_similarity(embedding, embed_query('tiny', 'quantum computing physics'))) "
        "FROM jammi.emb_long_docs__tiny WHERE key = 3"
    ).fetchall()[0][0]
    key, text, score = next(r for r in rows if r[0] == 3)
    assert score == pytest.approx(best, abs=1e-5) and text.endswith("quantum computing physics")


def test_chunking_settings_must_fit_the_model_and_match_the_table(long_docs):
    before = catalog_snapshot(long_docs)
    for call, message in [
        ("chunk_tokens := 500", "does not fit model 'tiny'.*give 1 to 62"),
        ("chunk_tokens := 0", "does not fit"),
        ("chunk_tokens := 20, chunk_overlap := 20", "below chunk_tokens"),
    ]:
        with pytest.raises(Exception, match=f"jammi: chunk.*{message}"):
            long_docs.sql(
                f"SELECT generate_text_embeddings('long_docs', 'tiny', ['body'], 'id', {call})"
            ).fetchall()
    assert catalog_snapshot(long_docs) == before
    long_docs.generate_text_embeddings("long_docs", "tiny", ["body"], "id")
    with pytest.raises(Exception, match="was built with key 'id' and columns"):
        long_docs.generate_text_embeddings("long_docs", "tiny", ["body"], "id", chunk_tokens=20)


def test_batches_are_committed_to_staging_and_go_live_in_one_step(db):
    """Each batch is committed as it is embedded (memory stays flat: an open transaction would
    hold every row until its end), yet readers see no table until the whole run is in."""
    import threading
    import time

    from jammi_sql.search.embeddings import BATCH

    rows = 6 * BATCH
    db.sql(f"CREATE TABLE many AS SELECT i AS id, 'text ' || i AS body FROM range({rows}) t(i)")
    db.sql("SELECT add_source('many', 'many')").fetchall()
    seen: dict = {}

    def watch() -> None:
        reader = db.con.cursor()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            staged = reader.execute(
                "SELECT estimated_size FROM duckdb_tables() "
                "WHERE schema_name = 'jammi' AND table_name = '_building_emb_many__tiny'"
            ).fetchall()
            if staged and staged[0][0] > 0:
                seen["staged"] = reader.execute(
                    "SELECT count(*) FROM jammi._building_emb_many__tiny"
                ).fetchall()[0][0]
                seen["live"] = reader.execute(
                    "SELECT count(*) FROM jammi.embedding_tables"
                ).fetchall()[0][0]
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert db.generate_text_embeddings("many", "tiny", ["body"], "id") == rows
    watcher.join()
    assert 0 < seen["staged"] < rows and seen["live"] == 0
    tables = db.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'jammi'")
    names = {name for (name,) in tables.fetchall()}
    assert "emb_many__tiny" in names and not any(n.startswith("_building_") for n in names)
    assert db.sql("SELECT count(*) FROM jammi.emb_many__tiny").fetchall() == [(rows,)]


def test_a_killed_runs_staging_table_is_cleared_by_the_next_run(docs):
    docs.sql(
        "CREATE TABLE jammi._building_emb_docs__tiny AS SELECT 99 AS key, 'junk' AS column_name"
    ).fetchall()
    assert docs.generate_text_embeddings("docs", "tiny", ["body"], "id") == 3
    keys = docs.sql("SELECT key FROM jammi.emb_docs__tiny ORDER BY key").fetchall()
    assert keys == [(1,), (2,), (3,)]
    left = docs.sql(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '\\_building\\_%' ESCAPE '\\'"
    )
    assert left.fetchall() == [(0,)]


@pytest.mark.parametrize(
    "key_type", ["INTEGER", "VARCHAR", "UUID", "DATE", "DECIMAL(10, 2)", "TIMESTAMPTZ"]
)
def test_paged_reads_embed_every_row_once_whatever_the_key_type(db, monkeypatch, key_type):
    from jammi_sql.search import embeddings

    monkeypatch.setattr(embeddings, "PAGE", 4)  # pages of 4 rows, batches of 2: many pages
    monkeypatch.setattr(embeddings, "BATCH", 2)
    keys = {
        "INTEGER": "i",
        "VARCHAR": "'k' || i",
        "UUID": "('00000000-0000-0000-0000-' || lpad(i::VARCHAR, 12, '0'))::UUID",
        "DATE": "DATE '2020-01-01' + i::INTEGER",
        "DECIMAL(10, 2)": "(i / 4)::DECIMAL(10, 2)",
        "TIMESTAMPTZ": "TIMESTAMPTZ '2020-01-01 00:00:00+00' + to_seconds(i)",
    }
    db.sql(
        f"CREATE TABLE keyed AS SELECT ({keys[key_type]})::{key_type} AS id, "
        "'title ' || i AS title, 'body ' || i AS body FROM range(11) t(i)"
    )
    db.sql("SELECT add_source('keyed', 'keyed')").fetchall()
    assert db.generate_text_embeddings("keyed", "tiny", ["title", "body"], "id") == 22
    rows = db.sql("SELECT key::VARCHAR, column_name, text FROM jammi.emb_keyed__tiny").fetchall()
    assert len(set(rows)) == 22
    db.sql("UPDATE keyed SET body = 'changed' WHERE title = 'title 7'")
    assert db.generate_text_embeddings("keyed", "tiny", ["title", "body"], "id") == 1
    assert db.sql("SELECT count(*) FROM jammi.emb_keyed__tiny").fetchall() == [(22,)]
