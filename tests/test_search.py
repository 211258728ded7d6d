"""Search: exact and indexed semantic search, filters before the top k, keyword and hybrid
search, joining back to the source, and an index that survives a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jammi_sql

WORDS = ["cat", "dog", "bird", "fish", "lion", "wolf", "bear", "frog", "crab", "seal"]
PLACES = ["garden", "river", "forest", "city", "desert", "ocean", "mountain", "farm"]
ROWS = 2000


def _corpus_sql(n: int = ROWS, name: str = "docs") -> str:
    """Rows like 'cat in the garden with a wolf near the farm number 17'; pct = id % 100 and
    tenth = id % 10 make filters keeping 1% and 10%. Two animals and two places per row keep
    the tiny model's vectors apart (near-duplicate vectors are HNSW's worst case)."""
    pick = lambda words, seed: f"list_extract({words}, (hash(i * {seed}) % {len(words)})::INT + 1)"  # noqa: E731
    return (
        f"CREATE OR REPLACE TABLE {name} AS SELECT i AS id, "
        f"{pick(WORDS, 1)} || ' in the ' || {pick(PLACES, 3)} || ' with a ' || {pick(WORDS, 5)} "
        f"|| ' near the ' || {pick(PLACES, 7)} || ' number ' || i AS body, "
        f"i % 100 AS pct, i % 10 AS tenth FROM range({n}) r(i)"
    )


@pytest.fixture
def corpus(db):
    db.con.execute(_corpus_sql())
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    db.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    return db


def _keys(db, sql: str) -> list:
    return [r[0] for r in db.sql(sql).fetchall()]


def _stored(db) -> tuple[np.ndarray, np.ndarray]:
    rows = db.sql("SELECT key, embedding FROM jammi.emb_docs__tiny ORDER BY key").fetchall()
    keys = np.array([r[0] for r in rows])
    matrix = np.array([r[1] for r in rows], dtype=np.float32)
    return keys, matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _numpy_scores(db, query: str, where=None) -> dict:
    """Every key's cosine score for ``query`` by a numpy matrix product (the reference)."""
    keys, matrix = _stored(db)
    q = np.array(db.encode_text_query("tiny", query), dtype=np.float32)
    scores = matrix @ (q / np.linalg.norm(q))
    keep = np.ones(len(keys), bool) if where is None else where(keys)
    return {int(k): float(s) for k, s, ok in zip(keys, scores, keep, strict=True) if ok}


def assert_exact_top(got: list[tuple], reference: dict, k: int) -> None:
    """``got`` (key, score) rows are a top k of ``reference`` (ties in any order)."""
    best = sorted(reference.values(), reverse=True)[:k]
    assert [s for _, s in got] == pytest.approx(best, abs=1e-5)
    assert all(reference[key] == pytest.approx(s, abs=1e-5) for key, s in got)


def recall(reference: dict, keys: list, k: int = 10, tolerance: float = 2e-3) -> float:
    """Share of ``keys`` that belong in the exact top k: scored within ``tolerance`` of the
    k-th best (the tiny random model scores many rows alike, and f16 storage rounds)."""
    kth = sorted(reference.values(), reverse=True)[k - 1]
    return sum(reference[key] >= kth - tolerance for key in keys) / k


def _scored(db, sql: str) -> list[tuple]:
    return [(r[0], r[-1]) for r in db.sql(sql).fetchall()]


def test_exact_search_is_the_numpy_matrix_product_over_the_stored_vectors(corpus):
    for query in ["a cat in the garden", "wolf by the river", "number 17"]:
        got = _scored(corpus, f"SELECT * FROM semantic_search('docs', 'tiny', '{query}', k := 10)")
        assert_exact_top(got, _numpy_scores(corpus, query), 10)


def test_small_tables_have_no_index_until_asked_and_then_show_it(corpus):
    row = corpus.sql("SELECT index_kind, index_state, keyword_index FROM jammi.embedding_tables")
    assert row.fetchall() == [("none", None, True)]
    assert corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall() == [("ready",)]
    kind, state, size, settings = corpus.sql(
        "SELECT index_kind, index_state, index_bytes, index_settings FROM jammi.embedding_tables"
    ).fetchall()[0]
    assert (kind, state) == ("hnsw", "ready") and size > 0
    assert '"connectivity": 16' in settings and '"storage": "f16"' in settings
    files = list((Path(corpus.home) / "indexes" / "emb_docs__tiny").glob("hnsw-*.usearch"))
    assert len(files) == 1 and files[0].stat().st_size == size


def test_the_index_finds_what_exact_search_finds(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    found = []
    for query in [f"{w} in the {p}" for w in WORDS[:5] for p in PLACES[:4]]:
        approx = _keys(corpus, f"SELECT * FROM semantic_search('docs', 'tiny', '{query}')")
        assert len(approx) == 10
        found.append(recall(_numpy_scores(corpus, query), approx))
    assert np.mean(found) >= 0.95


def test_the_index_follows_added_changed_and_removed_rows(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    corpus.con.execute("DELETE FROM docs WHERE id < 500")
    corpus.con.execute("UPDATE docs SET body = 'zebra zebra zebra' WHERE id = 700")
    corpus.con.execute("INSERT INTO docs VALUES (5000, 'okapi okapi okapi', 0, 0)")
    corpus.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    state, rows = corpus.sql(
        "SELECT index_state, row_count FROM jammi.embedding_tables"
    ).fetchall()[0]
    assert (state, rows) == ("ready", ROWS - 500 + 1)
    top = corpus.sql(
        "SELECT key, text FROM semantic_search('docs', 'tiny', 'zebra zebra zebra', k := 1)"
    )
    assert top.fetchall() == [(700, "zebra zebra zebra")]
    assert _keys(
        corpus, "SELECT * FROM semantic_search('docs', 'tiny', 'okapi okapi okapi', k := 1)"
    ) == [5000]
    seen = set()
    for query in [f"{w} in the {p}" for w in WORDS for p in PLACES[:3]]:
        seen |= set(
            _keys(corpus, f"SELECT * FROM semantic_search('docs', 'tiny', '{query}', k := 50)")
        )
    assert seen and min(seen) >= 500  # no removed key comes back


@pytest.mark.parametrize(
    "share, condition", [(0.01, "pct = 7"), (0.1, "tenth = 3"), (0.9, "tenth <> 3")]
)
@pytest.mark.parametrize("indexed", [False, True])
def test_a_filter_applies_before_the_top_k(corpus, share, condition, indexed):
    if indexed:
        corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    got = corpus.sql(
        f"SELECT s.key, d.pct, d.tenth FROM semantic_search('docs', 'tiny', 'a cat in the garden', "
        f"k := 10, filter := '{condition}') s JOIN docs d ON d.id = s.key"
    ).fetchall()
    assert len(got) == 10  # ROWS * share >= 20 rows match
    matches = corpus.sql(f"SELECT count(*) FROM docs WHERE {condition}").fetchall()[0][0]
    assert matches == ROWS * share
    assert all(
        eval(
            condition.replace("=", "==")
            .replace("<>", "!=")
            .replace("pct", str(p))
            .replace("tenth", str(t))
        )
        for _, p, t in got
    )
    if not indexed:
        keep = list(_keys(corpus, f"SELECT id FROM docs WHERE {condition}"))
        reference = _numpy_scores(corpus, "a cat in the garden", lambda ks: np.isin(ks, keep))
        scored = _scored(
            corpus,
            f"SELECT * FROM semantic_search('docs', 'tiny', 'a cat in the garden', "
            f"filter := '{condition}')",
        )
        assert_exact_top(scored, reference, 10)


def test_a_filter_matching_fewer_than_k_rows_returns_them_all(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    got = _keys(
        corpus,
        "SELECT * FROM semantic_search('docs', 'tiny', 'cat', filter := 'id IN (3, 14, 15)')",
    )
    assert sorted(got) == [3, 14, 15]
    assert (
        _keys(corpus, "SELECT * FROM semantic_search('docs', 'tiny', 'cat', filter := 'id < 0')")
        == []
    )


def test_a_query_vector_searches_like_its_text(corpus):
    vector = corpus.encode_text_query("tiny", "bear in the forest")
    by_text = corpus.semantic_search("docs", "tiny", "bear in the forest").column("key").to_pylist()
    by_vector = corpus.semantic_search("docs", "tiny", list(vector)).column("key").to_pylist()
    assert by_vector == by_text
    sql = corpus.sql(
        "SELECT key FROM semantic_search('docs', 'tiny', embed_query('tiny', 'bear in the forest'))"
    ).fetchall()
    assert [r[0] for r in sql] == by_text


def test_search_reads_the_stored_vectors_not_the_source_and_joins_back_to_a_file(db, tmp_path):
    csv = tmp_path / "tickets.csv"
    csv.write_text(
        "id,title\n1,refund for a broken phone\n2,password reset link\n3,late delivery\n"
    )
    db.sql(f"SELECT add_source('tickets', '{csv}')").fetchall()
    db.sql("SELECT generate_text_embeddings('tickets', 'tiny', ['title'], 'id')").fetchall()
    joined = db.sql(
        "SELECT t.id, t.title, s.score FROM semantic_search('tickets', 'tiny', 'password', k := 3) s "
        "JOIN read_source('tickets') t ON t.id = s.key"
    ).fetchall()
    assert sorted(r[0] for r in joined) == [1, 2, 3]
    assert {r[1] for r in joined} >= {"password reset link"}
    csv.unlink()  # the source is gone; its stored vectors are not
    assert (
        len(_keys(db, "SELECT * FROM semantic_search('tickets', 'tiny', 'password', k := 2)")) == 2
    )
    assert len(_keys(db, "SELECT * FROM keyword_search('tickets', 'password')")) == 1


def test_keyword_search_ranks_by_bm25_with_stemming(corpus):
    got = corpus.sql(
        "SELECT key, text FROM keyword_search('docs', 'lions in the mountains', k := 5)"
    ).fetchall()
    assert len(got) == 5 and all("lion" in text and "mountain" in text for _, text in got)
    assert _keys(corpus, "SELECT * FROM keyword_search('docs', 'unicorn')") == []
    filtered = _keys(corpus, "SELECT * FROM keyword_search('docs', 'lion', filter := 'pct = 4')")
    assert filtered and all(k % 100 == 4 for k in filtered)


def test_hybrid_search_fuses_both_rankings_by_reciprocal_rank(corpus):
    query = "crab in the desert number 1234"
    dense = _keys(corpus, f"SELECT * FROM semantic_search('docs', 'tiny', '{query}', k := 100)")
    sparse = _keys(corpus, f"SELECT * FROM keyword_search('docs', '{query}', k := 100)")
    fused = corpus.sql(f"SELECT key, score FROM hybrid_search('docs', 'tiny', '{query}', k := 5)")
    fused = fused.fetchall()

    def rrf(key):
        return sum(1 / (60 + lst.index(key) + 1) for lst in (dense, sparse) if key in lst)

    fused_scores = {key: rrf(key) for key in set(dense) | set(sparse)}
    assert_exact_top(fused, fused_scores, 5)  # the top 5 by fused score (ties in any order)
    only_words = _scored(
        corpus,
        f"SELECT * FROM hybrid_search('docs', 'tiny', '{query}', k := 5, vector_weight := 0)",
    )
    assert [k for k, _ in only_words] == sparse[:5]


def test_rrf_fuses_any_ranked_lists_in_sql(db):
    assert db.sql("SELECT rrf([1, NULL, 3])").fetchall()[0][0] == pytest.approx(1 / 61 + 1 / 63)
    assert db.sql("SELECT rrf([2], k := 0), rrf([NULL])").fetchall() == [(0.5, 0.0)]


def test_chunked_tables_search_by_their_best_chunk_with_and_without_the_index(db):
    db.con.execute(
        "CREATE TABLE long AS SELECT i AS id, repeat('filler words here ', 20) || "
        "CASE WHEN i = 42 THEN 'the secret is a purple giraffe' ELSE 'nothing to see' END AS body "
        "FROM range(300) r(i)"
    )
    db.sql("SELECT add_source('long', 'long')").fetchall()
    db.sql(
        "SELECT generate_text_embeddings('long', 'tiny', ['body'], 'id', chunk_tokens := 16, chunk_overlap := 4)"
    ).fetchall()
    exact = db.sql(
        "SELECT key FROM semantic_search('long', 'tiny', 'purple giraffe', k := 20, exact := true)"
    )
    exact = [r[0] for r in exact.fetchall()]
    assert len(exact) == len(set(exact)) == 20  # one row per key
    db.sql("SELECT create_vector_index('long', 'tiny')").fetchall()
    approx = _keys(db, "SELECT key FROM semantic_search('long', 'tiny', 'purple giraffe', k := 20)")
    assert len(approx) == len(set(approx)) == 20
    everyone = dict(
        db.sql(
            "SELECT key, score FROM semantic_search('long', 'tiny', 'purple giraffe', k := 300, "
            "exact := true)"
        ).fetchall()
    )
    assert recall(everyone, approx, 20) >= 0.9
    words = db.sql("SELECT key, text FROM keyword_search('long', 'purple giraffe')").fetchall()
    assert words[0] == (42, words[0][1]) and "giraffe" in words[0][1] and len(words) == 1


def test_matryoshka_dims_search_exactly_even_with_an_index(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    got = _scored(
        corpus, "SELECT * FROM semantic_search('docs', 'tiny', 'seal in the ocean', dims := 8)"
    )
    keys, matrix = _stored(corpus)
    q = np.array(corpus.encode_text_query("tiny", "seal in the ocean"), dtype=np.float32)[:8]
    cut = matrix[:, :8] / np.linalg.norm(matrix[:, :8], axis=1, keepdims=True)
    scores = cut @ (q / np.linalg.norm(q))
    assert_exact_top(got, {int(k): float(s) for k, s in zip(keys, scores, strict=True)}, 10)


def test_drop_vector_index_removes_it_and_search_stays_right(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    assert corpus.sql("SELECT drop_vector_index('docs', 'tiny')").fetchall() == [("none",)]
    assert not list((Path(corpus.home) / "indexes" / "emb_docs__tiny").glob("*.usearch"))
    corpus.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    row = corpus.sql("SELECT index_kind FROM jammi.embedding_tables").fetchall()
    assert row == [("none",)]
    got = _scored(corpus, "SELECT * FROM semantic_search('docs', 'tiny', 'frog in the farm')")
    assert_exact_top(got, _numpy_scores(corpus, "frog in the farm"), 10)


def test_index_settings_are_kept_per_table_and_checked(corpus):
    corpus.create_vector_index("docs", "tiny", connectivity=8, storage="f32", expansion_search=200)
    settings = corpus.sql("SELECT index_settings FROM jammi.embedding_tables").fetchall()[0][0]
    assert '"connectivity": 8' in settings and '"storage": "f32"' in settings
    with pytest.raises(jammi_sql.JammiError, match="expansion_add := 2 is out of range"):
        corpus.create_vector_index("docs", "tiny", expansion_add=2)
    with pytest.raises(jammi_sql.JammiError, match="create_vector_index has no argument .ef."):
        corpus.create_vector_index("docs", "tiny", ef=2)
    assert (
        corpus.sql("SELECT index_settings FROM jammi.embedding_tables").fetchall()[0][0] == settings
    )


def test_a_corrupt_or_missing_index_file_is_rebuilt_not_an_error(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    reference = _numpy_scores(corpus, "cat")
    folder = Path(corpus.home) / "indexes" / "emb_docs__tiny"
    from jammi_sql.search import index

    (path,) = folder.glob("hnsw-*.usearch")
    path.write_bytes(b"not an index")
    index._LOADED.clear()  # as a new process would find it
    got = _keys(corpus, "SELECT * FROM semantic_search('docs', 'tiny', 'cat')")
    assert recall(reference, got) >= 0.9
    (folder / "current.json").unlink()
    index._LOADED.clear()
    assert len(_keys(corpus, "SELECT * FROM semantic_search('docs', 'tiny', 'cat')")) == 10
    assert corpus.sql("SELECT index_state FROM jammi.embedding_tables").fetchall() == [("ready",)]


KILLED = """
import sys, jammi_sql
db = jammi_sql.connect(sys.argv[1], home=sys.argv[2])
i = int(sys.argv[3])  # this worker's first round; rounds never repeat across workers
while True:
    i += 1
    db.con.execute(f"UPDATE docs SET body = 'round {{i}} ' || body WHERE id % 7 = {{i % 7}}")
    db.con.execute(f"DELETE FROM docs WHERE id = {{i}}")
    db.con.execute(f"INSERT INTO docs VALUES ({{10000 + i}}, 'fresh row {{i}}', 1, 1)")
    db.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    print(i, flush=True)
"""


def test_a_kill_during_index_updates_never_gives_wrong_results(tiny_model, tmp_path):
    path, home = str(tmp_path / "k.duckdb"), str(tmp_path / "home")
    db = jammi_sql.connect(path, home=home)
    db.sql(f"SELECT register_model('tiny', '{tiny_model}')").fetchall()
    db.con.execute(_corpus_sql(3000))
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    db.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    db.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    db.close()
    rng = np.random.default_rng(0)
    for run in range(2):
        worker = subprocess.Popen(
            [sys.executable, "-c", KILLED.format(), path, home, str(1000 * run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = worker.stdout.readline()  # it has updated the table and its index once
        assert line, worker.stderr.read()
        time.sleep(rng.uniform(0.0, 1.5))  # then dies at some point of a later update
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    db = jammi_sql.connect(path, home=home)  # as left: the index may be stale or half-written
    stored = dict(db.sql("SELECT key, text FROM jammi.emb_docs__tiny").fetchall())
    for query in ["fresh row", "round 3 cat in the garden", "wolf"]:
        approx = db.sql(f"SELECT key, text, score FROM semantic_search('docs', 'tiny', '{query}')")
        approx = approx.fetchall()
        reference = dict(
            db.sql(
                f"SELECT key, score FROM semantic_search('docs', 'tiny', '{query}', k := 10000, "
                "exact := true)"
            ).fetchall()
        )
        assert len(reference) == len(stored)
        assert all(stored[k] == text for k, text, _ in approx)  # never a stale or removed row
        assert all(reference[k] == pytest.approx(s, abs=2e-3) for k, _, s in approx)
        assert len(approx) == 10  # (how many of the best it finds: the recall tests above)
    state = db.sql("SELECT index_state FROM jammi.embedding_tables").fetchall()
    assert state == [("ready",)]
    db.close()


def _indexed_file(path: str, home: str, tiny_model) -> jammi_sql.Database:
    """A database file with 500 docs embedded by 'tiny' and a vector index on them."""
    db = jammi_sql.connect(path, home=home)
    db.sql(f"SELECT register_model('tiny', '{tiny_model}')").fetchall()
    db.con.execute(_corpus_sql(500))
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    db.sql("SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id')").fetchall()
    db.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    return db


def test_an_index_written_whole_before_a_kill_is_used_and_shown_ready(tiny_model, tmp_path):
    """Killed after the index file and current.json were written but before the catalog said
    so: on the next connect the state reads stale, and the first search finds the file current
    (same generation), uses it and records it ready, without building it again."""
    path, home = str(tmp_path / "w.duckdb"), str(tmp_path / "home")
    with _indexed_file(path, home, tiny_model) as db:
        expected = _keys(db, "SELECT * FROM semantic_search('docs', 'tiny', 'wolf')")
        db.con.execute("UPDATE jammi.embedding_tables SET index_state = 'building'")  # the kill
    files = sorted(p.name for p in (Path(home) / "indexes").rglob("*"))
    with jammi_sql.connect(path, home=home) as db:
        state = "SELECT index_state FROM jammi.embedding_tables"
        assert db.sql(state).fetchall() == [("stale",)]
        assert _keys(db, "SELECT * FROM semantic_search('docs', 'tiny', 'wolf')") == expected
        assert db.sql(state).fetchall() == [("ready",)]
    assert sorted(p.name for p in (Path(home) / "indexes").rglob("*")) == files


def test_a_read_only_database_searches_with_its_indexes(tiny_model, tmp_path):
    path, home = str(tmp_path / "r.duckdb"), str(tmp_path / "home")
    with _indexed_file(path, home, tiny_model) as db:
        expected = _keys(db, "SELECT * FROM semantic_search('docs', 'tiny', 'wolf')")
        words = _keys(db, "SELECT * FROM keyword_search('docs', 'wolf', k := 5)")
    with jammi_sql.connect(path, home=home, read_only=True) as db:
        assert _keys(db, "SELECT * FROM semantic_search('docs', 'tiny', 'wolf')") == expected
        assert _keys(db, "SELECT * FROM keyword_search('docs', 'wolf', k := 5)") == words


def test_removing_a_source_with_cascade_removes_its_index_files(corpus):
    corpus.sql("SELECT create_vector_index('docs', 'tiny')").fetchall()
    folder = Path(corpus.home) / "indexes" / "emb_docs__tiny"
    assert any(folder.iterdir())
    corpus.sql("SELECT remove_source('docs', cascade := true)").fetchall()
    assert not folder.exists()
