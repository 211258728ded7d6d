"""embed and embed_query: one vector per text, as wide as its model, the same as the encoder's;
reading writes nothing to the database."""

import numpy as np
import pytest
from conftest import build_tiny_bert, catalog_snapshot

from jammi_sql.inference.encoder import Encoder


def test_embed_returns_a_float_list_as_wide_as_its_model(db):
    rel = db.sql("SELECT embed('tiny', 'the cat plays piano') AS e")
    assert str(rel.types[0]) == "FLOAT[]"
    (value,) = rel.fetchall()[0]
    assert len(value) == 32
    assert (
        abs(np.linalg.norm(value) - 1.0) < 1e-5
    )  # the tiny model normalizes, as its modules.json says


def test_embed_works_with_array_functions(db):
    same, other = db.sql(
        "SELECT array_cosine_similarity(embed('tiny', 'a cat'), embed('tiny', 'a cat')), "
        "array_cosine_similarity(embed('tiny', 'a cat'), embed('tiny', 'solar energy battery'))"
    ).fetchall()[0]
    assert same == pytest.approx(1.0, abs=1e-5)
    assert other < same


def test_models_of_three_dimensions_embed_in_one_statement(db, tmp_path):
    for hidden in (48, 64):
        folder = build_tiny_bert(tmp_path / f"bert-{hidden}", hidden=hidden, seed=hidden)
        db.sql(f"SELECT register_model('tiny{hidden}', '{folder}')").fetchall()
    db.con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('a cat'), ('solar energy')) v(body)")
    widths = "SELECT len(embed('tiny', body)), len(embed('tiny48', body)), len(embed_query('tiny64', body)) FROM t"
    assert db.sql(widths).fetchall() == [(32, 48, 64)] * 2
    mixed = db.sql(
        "SELECT m, len(embed(m, body)) FROM t, (VALUES ('tiny64'), ('tiny'), ('tiny48')) ms(m) ORDER BY m"
    ).fetchall()
    assert sorted({row for row in mixed}) == [("tiny", 32), ("tiny48", 48), ("tiny64", 64)]
    for model in ("tiny", "tiny48", "tiny64"):  # array functions, and FLOAT[d] columns
        same = db.sql(
            f"SELECT array_cosine_similarity(embed('{model}', body), embed('{model}', body)) FROM t"
        ).fetchall()
        assert all(s == pytest.approx(1.0, abs=1e-5) for (s,) in same)
        d = int(model[4:] or 32)
        db.con.execute(
            f"CREATE TABLE v_{d} AS SELECT embed('{model}', body)::FLOAT[{d}] AS e FROM t"
        )
        (score,) = db.sql(
            f"SELECT max(array_cosine_similarity(e, embed('{model}', 'a cat'))) FROM v_{d}"
        ).fetchall()[0]
        assert score == pytest.approx(1.0, abs=1e-5)


def test_registering_a_model_never_changes_another_models_embed(db, tmp_path):
    before = db.sql("SELECT embed('tiny', 'a cat')").fetchall()[0][0]
    folder = build_tiny_bert(tmp_path / "bert-48", hidden=48)
    db.sql(f"SELECT register_model('tiny48', '{folder}')").fetchall()
    assert db.sql("SELECT embed('tiny', 'a cat')").fetchall()[0][0] == before
    assert len(db.sql("SELECT embed('tiny48', 'a cat')").fetchall()[0][0]) == 48


def test_array_functions_keep_their_values_and_types_on_arrays(db):
    row = db.sql(
        "SELECT array_cosine_similarity([1, 2, 3]::DOUBLE[3], [1, 2, 4]::DOUBLE[3]), "
        "system.main.array_cosine_similarity([1, 2, 3]::DOUBLE[3], [1, 2, 4]::DOUBLE[3]), "
        "typeof(array_distance([1, 2]::FLOAT[2], [2, 2]::FLOAT[2])), array_inner_product([1, 2]::FLOAT[2], [3, 4]::FLOAT[2])"
    ).fetchall()[0]
    assert row[0] == pytest.approx(row[1]) and row[2:] == ("FLOAT", 11.0)


def test_embed_of_null_is_null(db):
    rows = db.sql("SELECT embed('tiny', t) FROM (VALUES ('a cat'), (NULL)) v(t)").fetchall()
    assert rows[0][0] is not None and rows[1][0] is None


def test_embed_matches_the_encoder_for_every_row_of_a_large_batch(db, tiny_model):
    texts = [f"the cat {i % 7} plays piano " + "dog " * (i % 13) for i in range(5000)]
    db.con.execute("CREATE TABLE t AS SELECT * FROM (SELECT unnest(?) AS body)", [texts])
    rows = db.sql("SELECT body, embed('tiny', body) FROM t").fetchall()
    got = {body: np.array(vec, dtype=np.float32) for body, vec in rows}
    expected = Encoder.from_folder(tiny_model).encode(texts)
    for text, vec in zip(texts, expected, strict=True):
        assert np.allclose(got[text], vec, atol=1e-5)


def test_embed_query_equals_embed_without_a_query_prompt(db):
    a, b = db.sql("SELECT embed('tiny', 'a cat'), embed_query('tiny', 'a cat')").fetchall()[0]
    assert np.allclose(a, b)


def test_unknown_model_lists_the_known_ones_and_changes_nothing(db):
    before = catalog_snapshot(db)
    with pytest.raises(Exception, match="jammi: unknown model 'nope'; known models: .*tiny"):
        db.sql("SELECT embed('nope', 'x')").fetchall()
    assert catalog_snapshot(db) == before


def test_a_model_folder_is_listed_in_jammi_models_once_it_has_been_used(db, tiny_model):
    listed = "SELECT model_id, kind, origin, dimensions FROM jammi.models WHERE origin = 'path'"
    assert db.sql(listed).fetchall() == []
    db.sql(f"SELECT embed('{tiny_model}', 'a cat')").fetchall()
    assert db.sql(listed).fetchall() == [(str(tiny_model), "base", "path", 32)]


def test_embedding_writes_nothing_to_the_database(tiny_model, tmp_path):
    import jammi_sql

    path = tmp_path / "read.duckdb"
    wal = tmp_path / "read.duckdb.wal"
    with jammi_sql.connect(str(path)) as db:
        db.register_model("tiny", tiny_model)
        db.sql("CHECKPOINT").fetchall()
        before, wal_before = catalog_snapshot(db), wal.stat().st_size if wal.exists() else 0
        db.sql(f"SELECT embed('tiny', 'a cat'), embed_query('{tiny_model}', 'a dog')").fetchall()
        db.encode_text("tiny", ["solar energy", "a train"])
        assert catalog_snapshot(db) == before
        assert (wal.stat().st_size if wal.exists() else 0) == wal_before  # no change committed
        # what the models run at is shown all the same, from this process's memory
        shown = db.sql("SELECT model_id, origin, precision, backend FROM jammi.models ORDER BY 2")
        assert shown.fetchall() == [
            (str(tiny_model), "path", "fp32", "torch"),
            ("tiny", "registered", "fp32", "torch"),
        ]


def test_a_read_only_database_embeds_and_shows_what_its_models_run_at(tiny_model, tmp_path):
    import duckdb

    import jammi_sql

    path = str(tmp_path / "ro.duckdb")
    with jammi_sql.connect(path) as db:
        db.register_model("tiny", tiny_model)
    with jammi_sql.connect(path, read_only=True) as db:
        assert len(db.sql("SELECT embed('tiny', 'a cat')").fetchall()[0][0]) == 32
        listed = db.sql("SELECT model_id, precision, backend FROM jammi.models").fetchall()
        assert listed == [("tiny", "fp32", "torch")]
    plain = duckdb.connect(path, read_only=True)  # any DuckDB client reads the stored rows
    try:
        assert plain.sql("SELECT model_id, precision FROM jammi.models").fetchall() == [
            ("tiny", None)
        ]
    finally:
        plain.close()


def test_register_model_refuses_a_folder_that_is_not_a_model(db, tmp_path):
    before = catalog_snapshot(db)
    with pytest.raises(Exception, match="jammi: .* is not a Hugging Face model folder"):
        db.sql(f"SELECT register_model('x', '{tmp_path}')").fetchall()
    assert catalog_snapshot(db) == before


def test_python_encode_text_query_returns_a_float32_vector(db):
    vec = db.encode_text_query("tiny", "quantum computing")
    assert vec.dtype == np.float32 and vec.shape == (32,)


@pytest.mark.slow
def test_bundled_model_embeds_exactly_as_sentence_transformers(bundled_model_folder):
    from sentence_transformers import SentenceTransformer

    import jammi_sql

    texts = [
        "A plane is taking off.",
        "A man is playing a flute.",
        "",
        "quantum " * 400,
        "Café naïve résumé — unicode text",
        "short",
    ]
    db = jammi_sql.connect(":memory:")
    db.con.execute("CREATE TABLE t AS SELECT unnest(?) AS body", [texts])
    got = dict(db.sql("SELECT body, embed('all-MiniLM-L6-v2', body) FROM t").fetchall())
    expected = SentenceTransformer(str(bundled_model_folder), device="cpu").encode(texts)
    for text, ref in zip(texts, expected, strict=True):
        ours = np.array(got[text])
        cos = ours @ ref / (np.linalg.norm(ours) * np.linalg.norm(ref))
        assert cos >= 0.9999, text[:40]
    db.close()
