"""Cascades and clean-up: remove_source, remove_model, delete_job leave nothing orphaned and
refuse, naming it, while something depends on what they would remove."""

from __future__ import annotations

import shutil

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


def fine_tuned_file_database(tiny_model, path) -> list[float]:
    """A database file at ``path`` with model 'ft' fine-tuned from 'tiny'; its 'ft' vector."""
    db = jammi_sql.connect(str(path))
    db.register_model("tiny", str(tiny_model))
    db.execute(
        "CREATE TABLE pairs AS SELECT 'the cat ' || i AS a, 'a dog ' || i AS b FROM range(8) r(i)"
    )
    db.add_source("pairs", "pairs")
    db.fine_tune("pairs", "tiny", ["a", "b"], epochs=1, warmup_steps=0, model_name="ft").wait(120)
    vector = db.sql("SELECT embed('ft', 'the cat')").fetchall()[0][0]
    db.close()
    return vector


def test_a_database_moved_with_its_folder_keeps_its_fine_tuned_models(tiny_model, tmp_path):
    (tmp_path / "a").mkdir()
    vector = fine_tuned_file_database(tiny_model, tmp_path / "a" / "work.duckdb")
    shutil.move(tmp_path / "a", tmp_path / "b")  # the file and work.duckdb.jammi/ beside it
    db = jammi_sql.connect(str(tmp_path / "b" / "work.duckdb"))
    assert db.sql("SELECT embed('ft', 'the cat')").fetchall()[0][0] == vector
    db.close()


def test_remove_model_in_a_copied_database_leaves_the_original_files(tiny_model, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "c").mkdir()
    vector = fine_tuned_file_database(tiny_model, tmp_path / "a" / "work.duckdb")
    shutil.copy(tmp_path / "a" / "work.duckdb", tmp_path / "c" / "copy.duckdb")  # not its folder
    copy = jammi_sql.connect(str(tmp_path / "c" / "copy.duckdb"))
    assert "left in place" in copy.remove_model("ft")
    copy.close()
    original = jammi_sql.connect(str(tmp_path / "a" / "work.duckdb"))
    assert original.sql("SELECT embed('ft', 'the cat')").fetchall()[0][0] == vector
    original.close()


def test_remove_embeddings_drops_one_table_and_then_the_model_can_go(trained):
    with pytest.raises(jammi_sql.JammiError, match="remove_embeddings\\(source, model\\)"):
        trained.remove_model("tiny")
    trained.sql("SELECT remove_model('ft')").fetchall()
    assert trained.sql("SELECT remove_embeddings('pairs', 'tiny')").fetchall() == [
        ("jammi.emb_pairs__tiny dropped",)
    ]
    assert count(trained, "SELECT count(*) FROM jammi.embedding_tables") == 0
    assert (
        count(trained, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'emb_pairs__tiny'")
        == 0
    )
    assert count(trained, "SELECT count(*) FROM jammi.sources") == 1  # the source stays
    assert "unregistered" in trained.remove_model("tiny")


def test_rebuilding_with_other_chunking_names_the_difference_and_the_fix(trained):
    with pytest.raises(jammi_sql.JammiError, match="without chunking; use the same, or drop"):
        trained.generate_text_embeddings("pairs", "tiny", ["text_a"], "text_b", chunk_tokens=8)
    trained.remove_embeddings("pairs", "tiny")
    assert trained.generate_text_embeddings("pairs", "tiny", ["text_a"], "text_b", chunk_tokens=8)


def test_a_model_of_the_same_name_from_another_database_is_never_picked_up(tiny_model, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    fine_tuned_file_database(tiny_model, tmp_path / "a" / "work.duckdb")
    fine_tuned_file_database(tiny_model, tmp_path / "b" / "other.duckdb")  # its own 'ft'
    shutil.rmtree(tmp_path / "a" / "work.duckdb.jammi")  # a's files are gone
    db = jammi_sql.connect(
        str(tmp_path / "a" / "work.duckdb"), home=str(tmp_path / "b" / "other.duckdb.jammi")
    )
    with pytest.raises(
        jammi_sql.JammiError, match="the files of fine-tuned model 'ft' are missing"
    ):
        db.sql("SELECT embed('ft', 'the cat')").fetchall()
    db.close()


def test_remove_model_deletes_a_model_named_with_a_slash(trained):
    trained.fine_tune("pairs", "tiny", ["text_a", "text_b"], epochs=1, model_name="team/m").wait(
        120
    )
    folder = trained.home / "models" / "team" / "m"
    assert folder.is_dir()
    assert "with its files" in trained.remove_model("team/m")
    assert not folder.exists()
