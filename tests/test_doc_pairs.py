"""pairs_from_documents: training pairs from unlabelled documents (title -> text, and adjacent
token windows of one text), written as a source that fine_tune takes, with its lineage."""

from __future__ import annotations

import pytest
from conftest import NOUNS, catalog_snapshot, sql_list

from jammi_sql import JammiError


@pytest.fixture
def notes(db):
    """12 documents: a title and a body of 30 words (about 60 tokens of the tiny model)."""
    words = sql_list(NOUNS[:10])
    db.con.execute(
        f"CREATE TABLE notes AS SELECT i AS id, 'note ' || i || ' ' || [{words}][1 + i % 10] AS "
        f"title, array_to_string(list_transform(range(30), lambda j: [{words}][1 + (i + j * 7) % 10] "
        f"|| ' ' || j), ' ') AS body FROM range(12) t(i)"
    )
    db.add_source("notes", "notes")
    return db


def test_titles_pair_with_their_own_text(notes):
    summary = notes.sql(
        "SELECT pairs_from_documents('notes', 'body', title := 'title')"
    ).fetchall()[0]
    assert summary[0].startswith("12 pairs (anchor, positive) of title -> text")
    got = notes.sql("SELECT anchor, positive FROM jammi.pairs_notes_pairs ORDER BY 1").fetchall()
    want = notes.con.execute("SELECT title, body FROM notes ORDER BY 1").fetchall()
    assert got == want
    assert notes.sql("SELECT name FROM jammi.sources WHERE name = 'notes_pairs'").fetchall()


def test_adjacent_windows_of_one_text_pair_in_order(notes):
    notes.sql(
        "SELECT pairs_from_documents('notes', 'body', model := 'tiny', chunk_tokens := 16, "
        "output := 'passages')"
    ).fetchall()
    rows = notes.sql("SELECT anchor, positive FROM jammi.pairs_passages").fetchall()
    bodies = [r[0] for r in notes.con.execute("SELECT body FROM notes").fetchall()]
    assert len(rows) >= 2 * len(bodies)  # ~60 tokens: at least 3 windows, 2 pairs, each
    for anchor, positive in rows:  # neighbours of one body, anchor first, no text invented
        body = next(b for b in bodies if anchor in b and positive in b)
        assert body.index(anchor) < body.index(positive)
    lineage = notes.sql(
        "SELECT built_by, from_source, model_id, settings->>'$.chunk_tokens', rows_written "
        "FROM jammi.source_lineage WHERE source = 'passages'"
    ).fetchall()
    assert lineage == [("pairs_from_documents", "notes", "tiny", "16", len(rows))]


def test_the_pairs_train_with_fine_tune(notes):
    notes.pairs_from_documents("notes", "body", title="title")
    job = notes.fine_tune("notes_pairs", "tiny", ["anchor", "positive"], epochs=1).wait()
    assert job.status == "succeeded"
    built = notes.sql(
        "SELECT built_by FROM jammi.model_lineage WHERE model_id = ?", params=[job.model_id]
    ).fetchall()
    assert built == [("pairs_from_documents",)]


@pytest.mark.parametrize(
    "call, message",
    [
        ("pairs_from_documents('notes', 'nope')", "has no column 'nope'"),
        ("pairs_from_documents('notes', 'id')", "not text"),
        ("pairs_from_documents('nowhere', 'body')", "nowhere"),
        (
            "pairs_from_documents('notes', 'body', model := 'tiny', chunk_tokens := 500)",
            "does not fit model 'tiny'",
        ),
        (
            "pairs_from_documents('notes', 'title', model := 'tiny', chunk_tokens := 16)",
            "smaller chunk_tokens",
        ),  # every title fits one window: nothing adjacent
        (
            "pairs_from_documents('notes', 'body', title := 'title', chunk_tokens := 16)",
            "leave model and chunk_tokens NULL",
        ),
        ("pairs_from_documents('notes', 'body', output := 'notes')", "already exists"),
    ],
)
def test_bad_input_is_a_jammi_error_and_writes_nothing(notes, call, message):
    before = catalog_snapshot(notes)
    with pytest.raises(JammiError) as err:
        notes.sql(f"SELECT {call}").fetchall()
    assert str(err.value).startswith("jammi: ") and message in str(err.value)
    assert catalog_snapshot(notes) == before
