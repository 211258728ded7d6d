"""A query-side head: embed_query applies it, embed does not, and search and evaluation reuse the
base model's materialized corpus (counted: no document is embedded again)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import NOUNS, sql_list

import jammi_sql
from jammi_sql.inference.encoder import Encoder


@pytest.fixture
def trained(db):
    """Documents embedded with the base; a query-side head trained on (question, document)."""
    words = sql_list(NOUNS)
    db.con.execute(
        f"CREATE TABLE docs AS SELECT 'd' || i AS doc_id, 'the ' || [{words}][1 + i % 11] || "
        f"' and a ' || [{words}][1 + (i * 3) % 11] || ' ' || i AS text FROM range(60) t(i)"
    )
    db.con.execute(
        f"CREATE TABLE questions AS SELECT i::VARCHAR AS query_id, 'which ' || "
        f"[{words}][1 + (i * 3) % 11] || ' ' || i AS text FROM range(60) t(i)"
    )
    db.con.execute(
        "CREATE TABLE qa AS SELECT q.text AS question, d.text AS document FROM questions q "
        "JOIN docs d ON d.doc_id = 'd' || q.query_id"
    )
    db.con.execute(
        "CREATE TABLE qrels AS SELECT query_id, 'd' || query_id AS doc_id, 1 AS score FROM questions"
    )
    for name in ("docs", "questions", "qa", "qrels"):
        db.add_source(name, name)
    db.generate_text_embeddings("docs", "tiny", ["text"], "doc_id")
    job = db.fine_tune(
        "qa",
        "tiny",
        ["question", "document"],
        applies_to="query",
        epochs=30,
        trials=1,
        learning_rate=3e-3,
        weight_decay=0.0,
        validation_fraction=0.0,
        model_name="tiny-q",
    ).wait()
    assert job.status == "succeeded"
    return db


def test_a_query_side_head_changes_queries_only_and_says_so(trained):
    db = trained
    folder = Path(db.ctx.models.resolve("tiny-q").adapter_folder)
    assert json.loads((folder / "adapter_config.json").read_text())["applies_to"] == "query"
    texts = ["the cat and a dog", "solar cell"]
    assert np.allclose(db.encode_text("tiny-q", texts), db.encode_text("tiny", texts), atol=1e-6)
    assert not np.allclose(
        db.encode_text_query("tiny-q", texts), db.encode_text_query("tiny", texts)
    )


def test_search_and_evaluation_reuse_the_base_corpus_and_training_helped(trained, monkeypatch):
    db = trained
    base = db.evaluate_retrieval("tiny", "questions", "docs", "qrels")
    embedded = {"query": 0, "document": 0}
    encode = Encoder.encode

    def counting(self, texts, *, query=False, **kw):
        embedded["query" if query else "document"] += len(texts)
        return encode(self, texts, query=query, **kw)

    monkeypatch.setattr(Encoder, "encode", counting)
    tuned = db.evaluate_retrieval("tiny-q", "questions", "docs", "qrels")
    hits = db.sql(
        "SELECT * FROM semantic_search('docs', 'tiny-q', 'which cat 0', k := 3)"
    ).fetchall()
    assert db.generate_text_embeddings("docs", "tiny-q", ["text"], "doc_id") == 0
    assert embedded == {"query": 61, "document": 0}  # 60 questions and one search
    assert len(hits) == 3
    tables = db.sql("SELECT model_id FROM jammi.embedding_tables").fetchall()
    assert tables == [("tiny",)]  # no table of the fine-tuned model was written
    assert tuned["ndcg_at_10"] > base["ndcg_at_10"] + 0.05, (base, tuned)
    with pytest.raises(jammi_sql.JammiError, match="remove_embeddings\\('docs', 'tiny'\\)"):
        db.remove_embeddings("docs", "tiny-q")  # its documents are the base's table
    assert db.sql("SELECT count(*) FROM jammi.embedding_tables").fetchall() == [(1,)]


def test_applies_to_query_is_refused_where_there_is_no_query_side(db):
    db.con.execute(
        "CREATE TABLE sts AS SELECT 'a ' || i AS a, 'b ' || i AS b, i % 5 AS s FROM range(20) t(i)"
    )
    db.add_source("sts", "sts")
    with pytest.raises(Exception, match="jammi: config applies_to = 'query'"):
        db.fine_tune("sts", "tiny", ["a", "b", "s"], applies_to="query")
    with pytest.raises(Exception, match="jammi: config applies_to = 'query'"):
        db.fine_tune("sts", "tiny", ["a", "b"], applies_to="query", target_modules=["query"])
