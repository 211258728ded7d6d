"""Embedding backfills on Ray Data (engine := 'ray'), against a real local Ray instance.

Ray starts once for the module (about 5 s) and stops at its end. Every run through Ray
starts its own actors, which import torch and load the model (a few seconds each here), so
the tests are few and each checks several things.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_snapshot

from jammi_sql import progress
from jammi_sql.errors import CancelledError, JammiError

ray = pytest.importorskip("ray")
# make test runs Ray's tests in a pytest process of their own (marker ray), after the rest
pytestmark = pytest.mark.ray

WORDS = "the cat dog plays piano runs solar energy battery quantum gene protein search".split()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance shared by the module, with one CPU: one actor per run (this
    machine's two cores are shared, and actors starting side by side slow each other)."""
    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, size=n)
    lengths[::97] = 90  # some longer than the tiny model's 64 tokens: counted as cut
    return [" ".join(rng.choice(WORDS, size=k)) for k in lengths]


def _add_docs(db, name: str, n: int, seed: int = 0) -> None:
    db.sql(f"CREATE TABLE {name} (id BIGINT, title VARCHAR, body VARCHAR)").fetchall()
    titles, bodies = _texts(n, seed), _texts(n, seed + 1)
    db.con.executemany(
        f"INSERT INTO {name} VALUES (?, ?, ?)",
        [(i, titles[i], bodies[i] if i % 50 else None) for i in range(n)],
    )
    db.sql(f"SELECT add_source('{name}', '{name}')").fetchall()


def _table(db, source: str, chunked: bool = False) -> dict:
    """(key, column_name[, chunk]) -> (text, text_hash, embedding)."""
    chunk = ", chunk" if chunked else ""
    rows = db.sql(
        f"SELECT text, text_hash, embedding, key, column_name{chunk} FROM jammi.emb_{source}__tiny"
    ).fetchall()
    return {tuple(r[3:]): (r[0], r[1], np.asarray(r[2])) for r in rows}


def _same_tables(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    left = np.stack([a[k][2] for k in sorted(a)])
    right = np.stack([b[k][2] for k in sorted(a)])
    cosines = (left * right).sum(1) / np.linalg.norm(left, axis=1) / np.linalg.norm(right, axis=1)
    assert cosines.min() >= 0.99999
    assert [a[k][:2] for k in sorted(a)] == [b[k][:2] for k in sorted(a)]


def _embedder_pids() -> list[int]:
    """The processes of this machine's Ray actors that run the backfill's Embedder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"Embedder" in cmdline and b"ray::" in cmdline:
                found.append(int(entry.name))
    return found


def _on_ray() -> list:
    return [t for t in progress.active() if "on Ray" in t.description]


def _when(condition, action) -> threading.Thread:
    """Run ``action`` once ``condition()`` holds (polled in a thread of its own)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _when_rows_done(action) -> threading.Thread:
    """Run ``action`` once a Ray backfill reports rows done (mid-run)."""
    return _when(lambda: any(t.done > 0 for t in _on_ray()), action)


UNREACHABLE = """
import sys, jammi_sql
db = jammi_sql.connect(":memory:", home=sys.argv[2])
db.register_model("tiny", sys.argv[1])
db.sql("CREATE TABLE docs AS SELECT 1 AS id, 'a cat' AS body").fetchall()
db.add_source("docs", "docs")
try:
    db.generate_text_embeddings("docs", "tiny", ["body"], "id", engine="ray", ray_address=sys.argv[3])
except Exception as exc:
    print(exc)
"""


def test_an_unreachable_address_is_a_clear_error_that_changes_nothing(db, tiny_model, tmp_path):
    started = time.monotonic()
    if ray.is_initialized():  # Ray lets a process use one cluster: ask from a fresh process
        import subprocess

        said = subprocess.run(
            [
                sys.executable,
                "-c",
                UNREACHABLE,
                str(tiny_model),
                str(tmp_path / "h"),
                "127.0.0.1:1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert "jammi: cannot reach a Ray cluster at '127.0.0.1:1'" in said
        return
    _add_docs(db, "docs", 10)
    before = catalog_snapshot(db)
    with pytest.raises(JammiError, match="cannot reach a Ray cluster at '127.0.0.1:1'"):
        db.generate_text_embeddings(
            "docs", "tiny", ["body"], "id", engine="ray", ray_address="127.0.0.1:1"
        )
    assert time.monotonic() - started < 10  # not Ray's minutes of retries
    assert catalog_snapshot(db) == before


def test_engine_is_local_or_ray_and_ray_needs_its_extra(db, monkeypatch):
    _add_docs(db, "docs", 10)
    before = catalog_snapshot(db)
    with pytest.raises(JammiError, match="engine := 'spark' is not one of 'local', 'ray'"):
        db.sql(
            "SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id', engine := 'spark')"
        ).fetchall()
    with pytest.raises(JammiError, match="ray_address := is for engine := 'ray'"):
        db.generate_text_embeddings("docs", "tiny", ["body"], "id", ray_address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(JammiError, match=r"pip install 'jammi-sql\[ray\]'"):
        db.sql(
            "SELECT generate_text_embeddings('docs', 'tiny', ['body'], 'id', engine := 'ray')"
        ).fetchall()
    assert catalog_snapshot(db) == before


def test_a_second_cluster_in_one_process_is_refused(db, ray_cluster):
    _add_docs(db, "docs", 10)
    before = catalog_snapshot(db)
    with pytest.raises(JammiError, match="already uses the Ray cluster at .* one cluster"):
        db.generate_text_embeddings(
            "docs", "tiny", ["body"], "id", engine="ray", ray_address="10.9.9.9:6379"
        )
    assert catalog_snapshot(db) == before


def test_a_ray_backfill_equals_the_local_path_first_and_on_updates(db, ray_cluster):
    for source in ("here", "there"):
        _add_docs(db, source, 600)
    local = db.generate_text_embeddings("here", "tiny", ["title", "body"], "id")
    remote = db.sql(
        "SELECT generate_text_embeddings('there', 'tiny', ['title', 'body'], 'id', engine := 'ray')"
    ).fetchall()[0][0]
    assert remote == int(local) == 600 + 600 - 12  # every 50th body is NULL
    tables = db.sql(
        "SELECT source, row_count, truncated FROM jammi.embedding_tables ORDER BY source"
    ).fetchall()
    assert tables[0][1:] == tables[1][1:] and tables[0][2] > 0  # same rows, same texts cut
    _same_tables(_table(db, "here"), _table(db, "there"))
    for source in ("here", "there"):  # change, add and remove rows alike
        db.sql(f"UPDATE {source} SET body = 'a dog walks' WHERE id % 7 = 0").fetchall()
        db.sql(f"DELETE FROM {source} WHERE id % 11 = 0").fetchall()
        db.sql(f"INSERT INTO {source} VALUES (5000, 'quantum gene', 'solar battery')").fetchall()
    local = db.generate_text_embeddings("here", "tiny", ["title", "body"], "id")
    remote = db.generate_text_embeddings("there", "tiny", ["title", "body"], "id", engine="ray")
    assert int(remote) == int(local) > 0 and remote.truncated == local.truncated
    _same_tables(_table(db, "here"), _table(db, "there"))
    vids = db.sql("SELECT count(DISTINCT vid) = count(*) FROM jammi.emb_there__tiny").fetchall()
    assert vids == [(True,)]
    assert db.generate_text_embeddings("there", "tiny", ["title", "body"], "id", engine="ray") == 0
    hits = db.semantic_search("there", "tiny", "solar battery", k=3).to_pylist()
    assert hits[0]["key"] == 5000  # the vector index followed the rows
    indexes = db.sql(
        "SELECT source, index_state, keyword_index FROM jammi.embedding_tables ORDER BY source"
    ).fetchall()
    assert indexes[0][1:] == indexes[1][1:]  # and the keyword index, as after a local build


def test_a_chunked_ray_backfill_equals_the_local_path(db, ray_cluster):
    for source in ("here", "there"):
        _add_docs(db, source, 300, seed=5)
    args = "['body'], 'id', chunk_tokens := 8, chunk_overlap := 2"
    local = db.sql(f"SELECT generate_text_embeddings('here', 'tiny', {args})").fetchall()
    remote = db.sql(
        f"SELECT generate_text_embeddings('there', 'tiny', {args}, engine := 'ray')"
    ).fetchall()
    assert local == remote
    _same_tables(_table(db, "here", chunked=True), _table(db, "there", chunked=True))


def test_a_worker_killed_mid_run_fails_the_call_and_leaves_the_table_as_it_was(db, ray_cluster):
    _add_docs(db, "docs", 1000)  # 4,000 rows to embed below: the kill lands mid-run
    db.generate_text_embeddings("docs", "tiny", ["title", "body"], "id")
    db.sql("UPDATE docs SET title = title || ' again'").fetchall()
    db.sql("INSERT INTO docs SELECT id + 1000, title, body FROM docs").fetchall()
    db.sql("INSERT INTO docs SELECT id + 2000, title, body FROM docs").fetchall()
    before = catalog_snapshot(db)
    killed = []

    def kill() -> None:
        for pid in _embedder_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    _when_rows_done(kill)
    with pytest.raises(JammiError, match="failed on the Ray cluster"):
        db.generate_text_embeddings("docs", "tiny", ["title", "body"], "id", engine="ray")
    assert killed
    assert catalog_snapshot(db) == before


def test_cancel_stops_the_ray_work_and_rolls_back(db, ray_cluster):
    _add_docs(db, "docs", 3000)
    before = catalog_snapshot(db)
    _when_rows_done(db.interrupt)
    started = time.monotonic()
    with pytest.raises(CancelledError, match="the Ray work was stopped"):
        db.generate_text_embeddings("docs", "tiny", ["title", "body"], "id", engine="ray")
    assert time.monotonic() - started < 60
    assert catalog_snapshot(db) == before
    deadline = time.monotonic() + 10
    while _embedder_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _embedder_pids()  # the actors are gone
