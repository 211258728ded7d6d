"""Cascades and clean-up: remove_source, remove_model, delete_job leave nothing orphaned and
refuse, naming it, while something depends on what they would remove."""

from __future__ import annotations

import pytest

import jammi_sql


@pytest.fixture
def trained(db):
    """A source, an embedding table over it, and a model fine-tuned from 'tiny'."""
    db.execute(
        "CREATE TABLE pairs AS SELECT 'the cat ' || i AS text_a, 'a dog ' || i AS text_b, "
        "(i % 5) / 5 AS score FROM range(20) r(i)"
    )
    db.add_source("pairs", "pairs")
    job = db.fine_tune(
        "pairs", "tiny", ["text_a", "text_b", "score"], epochs=1, warmup_steps=0, model_name="ft"
    ).wait(120)
    db.generate_text_embeddings("pairs", "tiny", ["text_a"], "text_b")
    db.job_id = job.job_id
    return db


def count(db, sql: str) -> int:
    return db.sql(sql).fetchall()[0][0]


def test_remove_source_with_cascade_drops_its_embedding_tables(trained):
    with pytest.raises(jammi_sql.JammiError, match="jammi.emb_pairs__tiny"):
        trained.sql("SELECT remove_source('pairs')").fetchall()
    message = trained.sql("SELECT remove_source('pairs', cascade := true)").fetchall()[0][0]
    assert "with jammi.emb_pairs__tiny" in message
    assert count(trained, "SELECT count(*) FROM jammi.embedding_tables") == 0
    assert (
        count(trained, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'emb_pairs__tiny'")
        == 0
    )
    assert count(trained, "SELECT count(*) FROM jammi.sources") == 0
    assert count(trained, "SELECT count(*) FROM pairs") == 20  # the data itself stays


def test_remove_model_refuses_while_used_then_removes_files(trained):
    with pytest.raises(jammi_sql.JammiError, match="used by jammi.emb_pairs__tiny, model 'ft'"):
        trained.sql("SELECT remove_model('tiny')").fetchall()
    folder = trained.home / "models" / "ft"
    assert folder.is_dir()
    assert "with its files" in trained.sql("SELECT remove_model('ft')").fetchall()[0][0]
    assert not folder.exists()
    assert count(trained, "SELECT count(*) FROM jammi.models WHERE model_id = 'ft'") == 0
    # the job that trained it stays, naming a model that is gone
    assert count(trained, "SELECT count(*) FROM jammi.jobs") == 1
    trained.remove_source("pairs", cascade=True)
    assert "unregistered" in trained.remove_model("tiny")
    assert count(trained, "SELECT count(*) FROM jammi.models") == 0


def test_delete_job_keeps_the_model_it_produced(trained):
    message = trained.delete_job(trained.job_id)
    assert "its model 'ft' stays" in message
    assert count(trained, "SELECT count(*) FROM jammi.jobs") == 0
    assert count(trained, "SELECT count(*) FROM jammi.job_metrics") == 0
    assert len(trained.sql("SELECT embed('ft', 'the cat')").fetchall()[0][0]) == 32
