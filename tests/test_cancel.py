"""Ctrl-C and interrupt(): a long jammi call stops within about two seconds and rolls back.

The sources are large enough that an uncancelled call would run far longer than the limits
asserted here, so a cancel that does not reach the call fails the test.
"""

import _thread
import threading
import time

import pytest
from conftest import BIG_ROWS, catalog_snapshot

from jammi_sql import progress
from jammi_sql.errors import CancelledError, JammiError


@pytest.fixture
def big(big):
    """conftest's big, with the model loaded before the calls the tests cancel (so they time
    embedding alone)."""
    big.sql("SELECT embed('tiny', 'warm up')").fetchall()
    return big


def interrupt_once_started(db, started: threading.Event) -> dict:
    """Calls db.interrupt() once the call has finished a micro-batch (or ``started`` is set);
    the returned dict gets the time it did."""
    sent: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(t.done > 0 for t in progress.active()) or started.is_set():
                break
            time.sleep(0.01)
        time.sleep(0.2)
        sent["at"] = time.monotonic()
        db.interrupt()

    threading.Thread(target=watch, daemon=True).start()
    return sent


def stopped_within(seconds: float, sent: dict, run) -> Exception:
    with pytest.raises(JammiError) as raised:
        run()
    took = time.monotonic() - sent["at"]
    assert took < seconds, f"the call ran on for {took:.1f} s after interrupt()"
    return raised.value


def test_interrupt_stops_generate_text_embeddings_in_sql_and_rolls_back(big):
    before = catalog_snapshot(big)
    watcher = interrupt_once_started(big, threading.Event())
    error = stopped_within(
        2.0,
        watcher,
        lambda: big.sql(
            "SELECT generate_text_embeddings('big', 'tiny', ['body'], 'id')"
        ).fetchall(),
    )
    assert "cancelled" in str(error) and "rolled back" in str(error)
    assert catalog_snapshot(big) == before
    tables = big.sql(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'jammi'"
    ).fetchall()
    assert not any(name.startswith("emb_") for (name,) in tables)
    # the connection goes on, and the same call runs to the end once nobody cancels it
    assert big.sql("SELECT count(*) FROM big").fetchall() == [(BIG_ROWS,)]
    big.sql("DELETE FROM big WHERE id >= 500").fetchall()
    assert big.generate_text_embeddings("big", "tiny", ["body"], "id") == 500


def test_interrupt_stops_the_python_api_and_embed_over_a_large_input(big):
    watcher = interrupt_once_started(big, threading.Event())
    error = stopped_within(
        2.0, watcher, lambda: big.generate_text_embeddings("big", "tiny", ["body"], "id")
    )
    assert isinstance(error, CancelledError)
    assert big.sql("SELECT count(*) FROM jammi.embedding_tables").fetchall() == [(0,)]

    started = threading.Event()
    big.sql("CREATE TABLE wide AS SELECT body || body || body AS body FROM big").fetchall()
    threading.Timer(1.0, started.set).start()  # embed shows no progress bar; wait a second
    watcher = interrupt_once_started(big, started)
    stopped_within(
        2.0,
        watcher,
        lambda: big.sql("SELECT sum(embed('tiny', body)[1]) FROM wide").fetchall(),
    )
    assert big.sql("SELECT embed('tiny', 'still works')[1] IS NOT NULL").fetchall() == [(True,)]


def test_a_cancel_reaches_only_the_database_it_was_asked_of(big, tiny_model, tmp_path):
    import jammi_sql

    other = jammi_sql.connect(tmp_path / "other.duckdb", home=tmp_path / "other-home")
    try:
        other.sql(f"SELECT register_model('tiny', '{tiny_model}')").fetchall()
        result = {}

        def work() -> None:
            result["n"] = len(other.encode_text("tiny", ["a short text"] * 3000))

        worker = threading.Thread(target=work)
        worker.start()
        time.sleep(0.1)
        big.interrupt()  # nothing of big's runs: the other database's call goes on
        worker.join(60)
        assert result == {"n": 3000}
    finally:
        other.close()


def test_ctrl_c_in_the_shell_stops_generate_text_embeddings(big, capsys):
    from jammi_sql import cli

    sent: dict = {}

    def press_ctrl_c() -> None:
        while not any(t.done > 0 for t in progress.active()):
            time.sleep(0.01)
        sent["at"] = time.monotonic()
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    statement = "SELECT generate_text_embeddings('big', 'tiny', ['body'], 'id')"
    assert cli.run_sql(big, statement) == 130
    assert time.monotonic() - sent["at"] < 2.0
    assert "Interrupted" in capsys.readouterr().err
    assert big.sql("SELECT count(*) FROM jammi.embedding_tables").fetchall() == [(0,)]


def test_ctrl_c_in_a_python_script_raises_keyboard_interrupt_and_rolls_back(big):
    def press_ctrl_c() -> None:
        while not any(t.done > 0 for t in progress.active()):
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    started = time.monotonic()
    with pytest.raises((KeyboardInterrupt, CancelledError)):
        big.sql("SELECT generate_text_embeddings('big', 'tiny', ['body'], 'id')").fetchall()
    assert time.monotonic() - started < 10
    assert big.sql("SELECT count(*) FROM jammi.embedding_tables").fetchall() == [(0,)]


def test_interrupt_stops_evaluate_similarity(db):
    db.sql(
        "CREATE TABLE pairs AS SELECT 'left text ' || i AS text_a, 'right text ' || i AS text_b, "
        f"(i % 5) / 5.0 AS score FROM range({BIG_ROWS}) t(i)"
    ).fetchall()
    db.sql("SELECT add_source('pairs', 'pairs')").fetchall()
    started = threading.Event()
    threading.Timer(1.0, started.set).start()
    sent = interrupt_once_started(db, started)
    stopped_within(2.0, sent, lambda: db.evaluate_similarity("tiny", "pairs"))
