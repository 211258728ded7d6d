"""evaluate_similarity and evaluate_retrieval over sources (the metrics themselves:
test_metrics.py)."""

import os

import numpy as np
import pytest
from conftest import catalog_snapshot

from jammi_sql.evaluation.metrics import similarity_metrics
from jammi_sql.inference.encoder import Encoder

DOCS = [
    "the cat plays piano",
    "a dog runs",
    "solar energy battery",
    "quantum computing physics",
    "the car and the bike",
    "protein gene cell",
]


@pytest.fixture
def retrieval(db):
    db.con.execute(
        "CREATE TABLE corpus AS SELECT 'd' || i AS doc_id, t AS text FROM (SELECT unnest(?) AS t, "
        "generate_subscripts(?, 1) AS i)",
        [DOCS, DOCS],
    )
    db.con.execute("CREATE TABLE queries (query_id VARCHAR, text VARCHAR)")
    db.con.execute(
        "INSERT INTO queries VALUES ('q1', 'cat piano'), ('q2', 'energy from the sun'), "
        "('q3', 'dog'), ('q4', 'a query with no qrels')"
    )
    db.con.execute("CREATE TABLE qrels (query_id VARCHAR, doc_id VARCHAR, score INTEGER)")
    db.con.execute(
        "INSERT INTO qrels VALUES ('q1', 'd1', 1), ('q2', 'd3', 1), ('q2', 'd4', 1), ('q3', 'd2', 1), "
        "('q3', 'd5', 0)"
    )
    for name in ("corpus", "queries", "qrels"):
        db.sql(f"SELECT add_source('{name}', '{name}')").fetchall()
    return db


def test_evaluate_similarity_is_cosine_against_the_score(db, tiny_model):
    rows = [
        ("a cat", "a dog", 1.0),
        ("the cat plays", "the cat plays", 5.0),
        ("solar energy", "a gene", 0.0),
        ("a man runs", "a woman runs", 3.0),
    ]
    db.con.execute("CREATE TABLE sts (text_a VARCHAR, text_b VARCHAR, score DOUBLE)")
    db.con.executemany("INSERT INTO sts VALUES (?, ?, ?)", rows)
    db.sql("SELECT add_source('sts', 'sts')").fetchall()
    result = db.sql("SELECT evaluate_similarity('tiny', 'sts')").fetchall()[0][0]
    enc = Encoder.from_folder(tiny_model)
    expected = similarity_metrics(
        enc.encode([r[0] for r in rows]),
        enc.encode([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
    )
    assert result["n"] == 4
    assert result["spearman"] == pytest.approx(expected["spearman"], abs=1e-6)
    assert result["pearson"] == pytest.approx(expected["pearson"], abs=1e-5)
    assert db.evaluate_similarity("tiny", "sts", ["text_a", "text_b", "score"])["n"] == 4


def test_evaluate_retrieval_returns_every_metric_and_counts_queries_without_qrels(retrieval):
    result = retrieval.sql(
        "SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels')"
    ).fetchall()[0][0]
    assert result["n_queries"] == 3 and result["skipped_queries"] == 1
    for key in (
        "ndcg_at_10",
        "mrr_at_10",
        "recall_at_1",
        "recall_at_10",
        "recall_at_100",
        "map_at_100",
    ):
        assert 0.0 <= result[key] <= 1.0
    assert result["recall_at_10"] == 1.0  # six documents: every relevant one is in the top 10


def test_per_query_results_are_written_to_a_table(retrieval):
    retrieval.sql(
        "SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels', per_query := 'pq')"
    ).fetchall()
    rows = retrieval.sql(
        "SELECT query_id, ndcg_at_10, first_relevant_rank FROM pq ORDER BY query_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["q1", "q2", "q3"]
    assert all(1 <= r[2] <= 6 for r in rows)


def test_a_second_evaluation_only_embeds_the_queries(retrieval, monkeypatch):
    seen = []
    original = Encoder.encode

    def counting(self, texts, **kw):
        seen.append(len(texts))
        return original(self, texts, **kw)

    monkeypatch.setattr(Encoder, "encode", counting)
    retrieval.evaluate_retrieval("tiny", "queries", "corpus", "qrels")
    first = sum(seen)
    seen.clear()
    retrieval.evaluate_retrieval("tiny", "queries", "corpus", "qrels")
    assert first == len(DOCS) + 4 and sum(seen) == 4


def test_what_an_evaluation_embeds_shows_as_a_progress_bar(retrieval, bars):
    from jammi_sql import progress

    retrieval.evaluate_retrieval("tiny", "queries", "corpus", "qrels")
    shown = {t.description: (t.done, t.total) for t in bars}
    assert shown["embedding queries of queries"] == (4, 4)
    assert shown["embedding corpus with tiny"] == (len(DOCS), len(DOCS))
    retrieval.con.execute("CREATE TABLE pairs AS SELECT 'a cat' a, 'a dog' b, 0.5 s FROM range(3)")
    retrieval.add_source("pairs", "pairs")
    retrieval.evaluate_similarity("tiny", "pairs", ["a", "b", "s"])
    assert (bars[-1].description, bars[-1].done) == ("embedding pairs of pairs", 6)
    assert progress.active() == []


def test_search_and_evaluation_at_a_matryoshka_cut_use_the_first_dimensions(retrieval):
    enc = Encoder.from_folder(
        retrieval.sql("SELECT artifact_path FROM jammi.models WHERE model_id = 'tiny'").fetchall()[
            0
        ][0]
    )
    cut = 8
    docs, query = (
        enc.encode(DOCS)[:, :cut],
        enc.encode(["energy from the sun"], query=True)[0, :cut],
    )
    scores = docs @ query / np.linalg.norm(docs, axis=1) / np.linalg.norm(query)
    retrieval.generate_text_embeddings("corpus", "tiny", ["text"], "doc_id")
    found = retrieval.search("corpus", "tiny", "energy from the sun", k=6, dims=cut)
    assert found.column("key").to_pylist() == [f"d{i + 1}" for i in np.argsort(-scores)]
    assert found.column("score").to_pylist() == pytest.approx(sorted(scores, reverse=True), 1e-5)
    full = retrieval.search("corpus", "tiny", "energy from the sun", k=6)
    assert full.column("score").to_pylist() != pytest.approx(found.column("score").to_pylist())

    at_cut = retrieval.evaluate_retrieval("tiny", "queries", "corpus", "qrels", dims=cut)
    sql = retrieval.sql(
        f"SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels', dims := {cut})"
    ).fetchall()[0][0]
    assert sql["ndcg_at_10"] == pytest.approx(at_cut["ndcg_at_10"])
    before = catalog_snapshot(retrieval)
    with pytest.raises(Exception, match="jammi: dims := 999 must be a whole number from 1"):
        retrieval.evaluate_retrieval("tiny", "queries", "corpus", "qrels", dims=999)
    with pytest.raises(Exception, match="jammi: dims must be at least 1"):
        retrieval.search("corpus", "tiny", "sun", dims=0)
    wider = "jammi: dims := 999 must be a whole number from 1 to the model's width \\(32\\)"
    with pytest.raises(Exception, match=wider):
        retrieval.search("corpus", "tiny", "sun", dims=999)
    with pytest.raises(Exception, match=wider):
        retrieval.encode_text("tiny", "sun", dims=999)
    with pytest.raises(Exception, match="jammi: encode_text needs a text or a list of texts"):
        retrieval.encode_text("tiny", None)
    assert retrieval.encode_text("tiny", "sun", dims=cut).shape == (cut,)
    assert catalog_snapshot(retrieval) == before


@pytest.mark.parametrize(
    "setup, message",
    [
        ("DELETE FROM corpus", "corpus source 'corpus' is empty"),
        ("DELETE FROM queries", "queries source 'queries' is empty"),
        (
            "INSERT INTO qrels VALUES ('q1', 'd99', 1), ('q1', 'd98', 1)",
            "missing from corpus 'corpus' (e.g. d98, d99",
        ),
        ("INSERT INTO corpus VALUES ('d1', 'again')", "duplicate doc_id values"),
        ("INSERT INTO queries VALUES ('q1', 'again')", "duplicate query_id values"),
        ("ALTER TABLE qrels ALTER score TYPE VARCHAR", "scores must be numbers"),
    ],
)
def test_bad_evaluation_inputs_are_clear_errors_that_write_nothing(retrieval, setup, message):
    retrieval.sql(setup).fetchall()
    before = catalog_snapshot(retrieval)
    with pytest.raises(Exception, match="jammi: ") as err:
        retrieval.sql(
            "SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels', per_query := 'pq')"
        ).fetchall()
    assert message in str(err.value)
    assert catalog_snapshot(retrieval) == before
    assert not retrieval.sql("SELECT * FROM duckdb_tables() WHERE table_name = 'pq'").fetchall()


# ---- the bundled model against sentence-transformers' evaluators -------------------------
DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.mark.slow
def test_similarity_on_stsb_dev_reproduces_sentence_transformers(bundled_model_folder):
    import csv

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    import jammi_sql

    with open(os.path.join(DATA, "stsb", "sts-dev.csv"), newline="", encoding="utf-8") as f:
        rows = [
            (r[5], r[6], float(r[4])) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ][::6]  # a sample of 250 pairs checks the same maths as all 1,500
    db = jammi_sql.connect(":memory:")
    db.con.execute("CREATE TABLE dev (text_a VARCHAR, text_b VARCHAR, score DOUBLE)")
    db.con.executemany("INSERT INTO dev VALUES (?, ?, ?)", rows)
    db.add_source("dev", "dev")
    ours = db.evaluate_similarity("all-MiniLM-L6-v2", "dev")
    st = SentenceTransformer(str(bundled_model_folder), device="cpu")
    evaluator = EmbeddingSimilarityEvaluator(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] / 5 for r in rows],
        main_similarity="cosine",
    )
    theirs = evaluator(st)
    assert ours["n"] == len(rows)
    spearman = next(v for k, v in theirs.items() if k.endswith("spearman_cosine"))
    pearson = next(v for k, v in theirs.items() if k.endswith("pearson_cosine"))
    assert ours["spearman"] == pytest.approx(spearman, abs=1e-4)
    assert ours["pearson"] == pytest.approx(pearson, abs=1e-4)
    db.close()


@pytest.mark.slow
def test_retrieval_on_a_scifact_split_reproduces_sentence_transformers(bundled_model_folder):
    import json

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    import jammi_sql

    with open(os.path.join(DATA, "scifact", "corpus.jsonl"), encoding="utf-8") as f:
        corpus = {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in map(json.loads, f)}
    with open(os.path.join(DATA, "scifact", "queries.jsonl"), encoding="utf-8") as f:
        queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
    qrels: dict[str, set[str]] = {}
    with open(os.path.join(DATA, "scifact", "qrels", "train.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.split()
            if float(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    held_out = sorted(qrels)[:30]  # a split: the first 30 train queries by id
    queries = {q: queries[q] for q in held_out}
    qrels = {q: qrels[q] for q in held_out}
    # their relevant documents and 75 others: 103 in all, so recall@100 still ranks
    docs = sorted({d for ds in qrels.values() for d in ds} | set(sorted(corpus)[:75]))
    corpus = {d: corpus[d] for d in docs}

    db = jammi_sql.connect(":memory:")
    db.con.execute(
        "CREATE TABLE c AS SELECT unnest(?) AS doc_id, unnest(?) AS text",
        [list(corpus), list(corpus.values())],
    )
    db.con.execute(
        "CREATE TABLE q AS SELECT unnest(?) AS query_id, unnest(?) AS text",
        [list(queries), list(queries.values())],
    )
    pairs = [(q, d) for q, ds in qrels.items() for d in ds]
    db.con.execute(
        "CREATE TABLE r AS SELECT unnest(?) AS query_id, unnest(?) AS doc_id, 1 AS score",
        [[p[0] for p in pairs], [p[1] for p in pairs]],
    )
    for name in ("c", "q", "r"):
        db.add_source(name, name)
    ours = db.evaluate_retrieval("all-MiniLM-L6-v2", "q", "c", "r")
    st = SentenceTransformer(str(bundled_model_folder), device="cpu")
    evaluator = InformationRetrievalEvaluator(
        queries,
        corpus,
        qrels,
        precision_recall_at_k=[1, 10, 100],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[100],
        accuracy_at_k=[1],
    )
    theirs = evaluator(st)

    def pick(suffix):
        return next(v for k, v in theirs.items() if k.endswith("cosine_" + suffix))

    assert ours["n_queries"] == len(queries)
    for ours_key, suffix in [
        ("ndcg_at_10", "ndcg@10"),
        ("mrr_at_10", "mrr@10"),
        ("recall_at_1", "recall@1"),
        ("recall_at_10", "recall@10"),
        ("recall_at_100", "recall@100"),
        ("map_at_100", "map@100"),
    ]:
        assert ours[ours_key] == pytest.approx(pick(suffix), abs=1e-4), ours_key
    db.close()
