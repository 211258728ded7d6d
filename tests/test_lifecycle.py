"""One job lifecycle, and sharing the file: jobs a gone process left are interrupted on open,
an exiting process marks its jobs interrupted cleanly, read-only opens, the lock message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

import jammi_sql
from jammi_sql.cli import main
from jammi_sql.errors import LockedError, NotFoundError, ReadOnlyError

PAIRS = (
    "CREATE TABLE pairs AS SELECT 'the cat ' || i AS text_a, 'a dog ' || i AS text_b, "
    "(i % 5) / 5 AS score FROM range(40) r(i)"
)
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def make_db(path: Path, tiny_model: Path) -> None:
    db = jammi_sql.connect(str(path))
    db.register_model("tiny", tiny_model)
    db.execute(PAIRS)
    db.add_source("pairs", "pairs")
    db.close()


def status_of(path: Path) -> list[tuple]:
    con = duckdb.connect(str(path))
    try:
        return con.execute("SELECT status FROM jammi.jobs ORDER BY created_at").fetchall()
    finally:
        con.close()


def test_a_script_that_exits_without_waiting_leaves_its_job_interrupted_and_resumable(
    tiny_model, tmp_path
):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    script = textwrap.dedent(f"""
        import jammi_sql
        db = jammi_sql.connect({str(path)!r})
        job = db.fine_tune("pairs", "tiny", ["text_a", "text_b", "score"], epochs=2,
                           warmup_steps=0)
        print(job.job_id)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "atexit" not in out.stderr
    assert "marked interrupted and resume_job continues them" in out.stderr
    job_id = out.stdout.strip()
    assert status_of(path) == [("interrupted",)]

    db = jammi_sql.connect(str(path))
    assert db.sql(f"SELECT resume_job('{job_id}')").fetchall()[0][0] == job_id
    assert db.wait_job(job_id, 120) == "succeeded"
    db.close()


def test_jobs_left_running_are_interrupted_as_soon_as_the_database_opens(tiny_model, tmp_path):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    con = duckdb.connect(str(path))
    for job_id, status in [("a1", "running"), ("b2", "queued"), ("c3", "succeeded")]:
        con.execute(
            "INSERT INTO jammi.jobs (job_id, status, source, base_model, method, task, columns, "
            "loss, config) VALUES (?, ?, 'pairs', 'tiny', 'lora', 'text_embedding', "
            "['text_a', 'text_b'], 'multiple_negatives_ranking', '{}')",
            [job_id, status],
        )
    con.close()
    db = jammi_sql.connect(str(path))
    # read on the raw connection, before anything has started the job runner
    rows = db.con.execute("SELECT job_id, status, error FROM jammi.jobs ORDER BY job_id").fetchall()
    assert [r[:2] for r in rows] == [
        ("a1", "interrupted"),
        ("b2", "interrupted"),
        ("c3", "succeeded"),
    ]
    assert "resume_job continues it" in rows[0][2]
    with pytest.raises(jammi_sql.JammiError, match="read by unfinished job a1, b2"):
        db.remove_source("pairs")  # resuming them reads it again
    with pytest.raises(jammi_sql.JammiError, match="used by job a1, job b2"):
        db.remove_model("tiny")
    db.close()


def test_a_second_connection_in_the_same_process_leaves_live_jobs_alone(tiny_model, tmp_path):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    db = jammi_sql.connect(str(path))
    job = db.fine_tune(
        "pairs", "tiny", ["text_a", "text_b", "score"], method="full", epochs=200, warmup_steps=0
    )
    other = jammi_sql.connect(str(path))  # e.g. a notebook cell run a second time
    assert other.job(job.job_id).status in ("queued", "running")
    assert other.sql("SELECT count(*) FROM jammi.sources").fetchall() == [(1,)]
    assert len(other.sql("SELECT embed('tiny', 'the cat')").fetchall()[0][0]) == 32
    assert job.cancel() == "cancelled"
    other.close()
    db.close()


def test_a_script_run_by_the_shell_says_its_job_needs_the_process(tiny_model, tmp_path, capsys):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    sql = "SELECT fine_tune('pairs', 'tiny', ['text_a', 'text_b', 'score'], method := 'full')"
    assert main([str(path), "-c", sql]) == 0
    err = capsys.readouterr().err
    assert "runs only while the process that started it is alive" in err
    assert "SELECT wait_job('" in err
    assert status_of(path) == [("interrupted",)]


def test_read_only_reads_the_catalog_and_refuses_writes(tiny_model, tmp_path, capsys):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    db = jammi_sql.connect(str(path), read_only=True)
    assert db.read_only
    assert db.sql("SELECT name FROM jammi.sources").fetchall() == [("pairs",)]
    assert len(db.sql("SELECT embed('tiny', 'the cat')").fetchall()[0][0]) == 32
    with pytest.raises(ReadOnlyError, match="jammi: add_source writes, and this database"):
        db.sql("SELECT add_source('x', 'pairs')").fetchall()
    with pytest.raises(ReadOnlyError, match="opened read-only"):
        db.register_model("again", tiny_model)
    db.close()
    assert main([str(path), "--readonly", "-c", "SELECT count(*) FROM jammi.models"]) == 0
    assert main([str(path), "--readonly", "-c", "SELECT remove_source('pairs')"]) == 1
    assert "opened read-only" in capsys.readouterr().err
    with pytest.raises(jammi_sql.JammiError, match="in-memory database cannot be opened"):
        jammi_sql.connect(":memory:", read_only=True)


def test_a_file_held_by_another_process_is_a_jammi_error_naming_it(tmp_path):
    path = tmp_path / "held.duckdb"
    code = (
        f"import duckdb, sys, time; con = duckdb.connect({str(path)!r}); print('ready', "
        "flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(LockedError) as err:
            jammi_sql.connect(str(path))
        message = str(err.value)
        assert message.startswith("jammi: ") and f"process {holder.pid}" in message
        assert "read_only=True" in message and "copy the file" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_the_python_api_does_not_depend_on_the_users_connection(db):
    db.execute("CREATE TABLE docs AS SELECT i AS id, 'doc ' || i AS text FROM range(5) r(i)")
    db.add_source("docs", "docs")
    db.generate_text_embeddings("docs", "tiny", "text", "id")  # one column may be a str
    cur = db.con.execute("SELECT * FROM range(100000)")
    cur.fetchone()  # a result left half-fetched
    assert db.search("docs", "tiny", "doc 3", k=2).num_rows == 2


def test_errors_through_db_sql_are_jammi_errors_and_duckdb_errors(db):
    with pytest.raises(NotFoundError, match="jammi: unknown source 'nope'") as err:
        db.sql("SELECT remove_source('nope')").fetchall()
    assert isinstance(err.value, duckdb.Error) and isinstance(err.value, KeyError)
    with pytest.raises(jammi_sql.JammiError, match="embed's text must be text"):
        db.sql("SELECT embed('tiny', 42)").fetchall()
    with pytest.raises(duckdb.ParserException):  # not ours: DuckDB's own error, untouched
        db.sql("SELEC 1")
    assert db.sql("SELECT 41 + 1").fetchall() == [(42,)]
    assert db.sql("SELECT 1 AS x").to_arrow_table().column("x").to_pylist() == [1]


def test_cancel_then_delete_job(tiny_model, tmp_path):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    db = jammi_sql.connect(str(path))
    job = db.fine_tune(
        "pairs", "tiny", ["text_a", "text_b", "score"], method="full", epochs=200, warmup_steps=0
    )
    with pytest.raises(jammi_sql.JammiError, match="stop it first with cancel_job"):
        db.sql(f"SELECT delete_job('{job.job_id}')").fetchall()
    deadline = time.monotonic() + 60
    while job.status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    assert db.sql(f"SELECT delete_job('{job.job_id}')").fetchall()[0][0].endswith("deleted")
    assert db.sql("SELECT count(*) FROM jammi.jobs").fetchall() == [(0,)]
    assert not (db.home / "jobs" / job.job_id).exists()
    db.close()


def running_and_queued(tiny_model, path, queued_epochs: int):
    """A database at ``path`` running a long job, with a second job queued behind it."""
    make_db(path, tiny_model)
    db = jammi_sql.connect(str(path))
    columns = ["text_a", "text_b", "score"]
    running = db.fine_tune("pairs", "tiny", columns, method="full", epochs=200, warmup_steps=0)
    queued = db.fine_tune(
        "pairs", "tiny", columns, method="full", epochs=queued_epochs, warmup_steps=0
    )
    return db, running, queued


def test_a_job_cancelled_while_queued_can_be_deleted_at_once(tiny_model, tmp_path):
    db, running, queued = running_and_queued(tiny_model, tmp_path / "w.duckdb", 200)
    assert queued.status == "queued"
    assert queued.cancel() == "cancelled"
    assert db.delete_job(queued.job_id).endswith("deleted")  # no wait: the worker skips it
    running.cancel()
    assert db.delete_job(running.job_id).endswith("deleted")
    assert db.sql("SELECT count(*) FROM jammi.jobs").fetchall() == [(0,)]
    db.close()


def test_another_connection_cancels_and_waits_for_this_ones_jobs(tiny_model, tmp_path):
    path = tmp_path / "w.duckdb"
    db, running, queued = running_and_queued(tiny_model, path, 1)
    other = jammi_sql.connect(str(path))  # a second connection in this process
    assert other.sql(f"SELECT cancel_job('{queued.job_id}')").fetchall() == [("cancelled",)]
    deadline = time.monotonic() + 60
    while running.status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    # the other connection reaches the job this connection runs: it stops, and waiting ends
    assert other.sql(f"SELECT cancel_job('{running.job_id}')").fetchall() == [("cancelled",)]
    assert other.wait_job(running.job_id, timeout=5) == "cancelled"
    deadline = time.monotonic() + 30
    while queued.job_id in db.ctx.jobs.unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)  # this connection's worker dequeues it
    row = db.sql(f"SELECT status, started_at FROM jammi.jobs WHERE job_id = '{queued.job_id}'")
    assert row.fetchall() == [("cancelled", None)]
    assert other.delete_job(queued.job_id).endswith("deleted")
    other.close()
    db.close()


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )


def test_a_process_killed_during_training_leaves_an_interrupted_job_that_resumes(
    tiny_model, tmp_path
):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    child = _child(f"""
        import time, jammi_sql
        db = jammi_sql.connect({str(path)!r})
        job = db.fine_tune("pairs", "tiny", ["text_a", "text_b", "score"], method="full",
                           epochs=40, warmup_steps=0, early_stopping_patience=1000)
        while True:
            print(job.job_id, job.status, job.progress, flush=True)
            time.sleep(0.05)
    """)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job_id, status, progress = child.stdout.readline().split()
            if status == "running" and float(progress) >= 0.2:
                break
        child.kill()  # SIGKILL: no exit hook runs
    finally:
        child.wait(timeout=30)
    assert status == "running" and float(progress) >= 0.2
    db = jammi_sql.connect(str(path))
    assert db.job(job_id).status == "interrupted"
    assert not list((db.home / "models").glob("*"))  # nothing half-published
    assert db.sql(f"SELECT resume_job('{job_id}')").fetchall()[0][0] == job_id
    assert db.wait_job(job_id, 120) == "succeeded"
    model_id = db.job(job_id).model_id
    assert len(db.sql(f"SELECT embed('{model_id}', 'the cat')").fetchall()[0][0]) == 32
    db.close()


def test_a_process_killed_during_generate_text_embeddings_leaves_nothing_half_written(
    tiny_model, tmp_path
):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    child = _child(f"""
        import threading, time
        import jammi_sql
        db = jammi_sql.connect({str(path)!r})
        db.execute("CREATE TABLE docs AS SELECT i AS id, 'the cat plays ' || i AS text "
                   "FROM range(300000) r(i)")
        db.add_source("docs", "docs")

        def watch():  # says when committed batches sit in the staging table: kill then
            reader = db.con.cursor()
            while True:
                staged = reader.execute("SELECT estimated_size FROM duckdb_tables() "
                                        "WHERE table_name = '_building_emb_docs__tiny'").fetchall()
                if staged and staged[0][0] > 0:
                    print("staged", flush=True)
                    return
                time.sleep(0.01)

        threading.Thread(target=watch, daemon=True).start()
        db.generate_text_embeddings("docs", "tiny", "text", "id")  # one column may be a str
        print("done", flush=True)
    """)
    try:
        assert child.stdout.readline().strip() == "staged"
        child.kill()  # SIGKILL mid-build, with batches committed to the staging table
    finally:
        child.wait(timeout=30)
    staged = "SELECT count(*) FROM duckdb_tables() WHERE starts_with(table_name, '_building_')"
    con = duckdb.connect(str(path))
    assert con.execute(staged).fetchall() == [(1,)]  # what the killed run left
    con.close()
    db = jammi_sql.connect(str(path))
    assert db.sql("SELECT count(*) FROM jammi.embedding_tables").fetchall() == [(0,)]
    exists = db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'emb_docs__tiny'")
    assert exists.fetchall() == [(0,)]
    assert db.sql(staged).fetchall() == [(0,)]  # dropped on open
    db.close()


def test_opening_a_database_drops_staging_tables_a_killed_build_left(tiny_model, tmp_path):
    path = tmp_path / "w.duckdb"
    make_db(path, tiny_model)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE jammi._building_emb_docs__tiny AS SELECT 1 AS key")
    con.execute("CREATE TABLE jammi._building_notes AS SELECT 1 AS x")  # not ours: kept
    con.close()
    db = jammi_sql.connect(str(path))
    names = db.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'jammi'")
    assert {n for (n,) in names.fetchall()} & {"_building_emb_docs__tiny", "_building_notes"} == {
        "_building_notes"
    }
    db.close()
