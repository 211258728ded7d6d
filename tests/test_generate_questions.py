"""generate_questions: a registered local text-generation model writes questions for each
document; each question -> its document becomes a training pair, with lineage.

The models here are tiny and random, so their "questions" are random words: these tests check
the plumbing (every kind of model, sampling, determinism, what is written and refused). The
quality of the pairs is the model's, and needs a real doc2query model."""

from __future__ import annotations

import shutil

import pytest
from conftest import NOUNS, build_tiny_bert, catalog_snapshot, sql_list

from jammi_sql import JammiError
from jammi_sql.data.generator import Generator, generation_kind


def build_generator(folder, kind: str):
    """A tiny random T5 (seq2seq) or GPT-2 (causal) using the tiny BERT's WordPiece vocab."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    build_tiny_bert(folder)  # for its tokenizer files
    for f in ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json"):
        (folder / f).unlink(missing_ok=True)
    shutil.rmtree(folder / "1_Pooling", ignore_errors=True)
    shutil.rmtree(folder / "2_Normalize", ignore_errors=True)
    vocab = len((folder / "vocab.txt").read_text().split())
    torch.manual_seed(1)
    ids = dict(pad_token_id=0, eos_token_id=3, bos_token_id=2, tie_word_embeddings=False)
    if kind == "seq2seq":
        config = T5Config(
            vocab_size=vocab,
            d_model=32,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            d_kv=16,
            decoder_start_token_id=0,
            **ids,
        )
        model = T5ForConditionalGeneration(config)
    else:
        config = GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=256, **ids
        )
        model = GPT2LMHeadModel(config)
    with torch.no_grad():  # special tokens score 0, below the best word: the output has words
        model.lm_head.weight[:5] = 0
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    root = tmp_path_factory.mktemp("generators")
    return {k: build_generator(root / k, k) for k in ("seq2seq", "causal")}


@pytest.fixture
def notes(db, generators):
    """10 short documents, and both tiny generators registered."""
    words = sql_list(NOUNS[:10])
    db.con.execute(
        f"CREATE TABLE notes AS SELECT i AS id, array_to_string(list_transform(range(12), "
        f"lambda j: [{words}][1 + (i + j * 3) % 10]), ' ') AS body FROM range(10) t(i)"
    )
    db.add_source("notes", "notes")
    db.register_model("t5", str(generators["seq2seq"]))
    db.register_model("gpt", str(generators["causal"]))
    return db


def bodies(db) -> set[str]:
    return {r[0] for r in db.con.execute("SELECT body FROM notes").fetchall()}


def test_a_seq2seq_model_writes_one_question_per_document(notes):
    summary = notes.sql("SELECT generate_questions('notes', 'body', 't5')").fetchall()[0][0]
    rows = notes.sql("SELECT anchor, positive FROM jammi.pairs_notes_questions").fetchall()
    assert summary.startswith(f"{len(rows)} pairs (anchor, positive) of question -> text")
    assert 0 < len(rows) <= 10  # greedy: at most one per document (none where it wrote nothing)
    assert {p for _, p in rows} <= bodies(notes)
    assert all(a.strip() and "\n" not in a for a, _ in rows)
    lineage = notes.sql(
        "SELECT built_by, from_source, model_id, settings->>'$.per_document', rows_written "
        "FROM jammi.source_lineage WHERE source = 'notes_questions'"
    ).fetchall()
    assert lineage == [("generate_questions", "notes", "t5", "1", len(rows))]


def test_a_causal_model_samples_several_the_same_way_twice(notes):
    notes.generate_questions("notes", "body", "gpt", output="first", per_document=3)
    notes.generate_questions("notes", "body", "gpt", output="second", per_document=3)
    first = notes.sql("SELECT * FROM jammi.pairs_first ORDER BY ALL").fetchall()
    second = notes.sql("SELECT * FROM jammi.pairs_second ORDER BY ALL").fetchall()
    assert first == second  # seeded sampling
    per_doc = notes.sql(
        "SELECT max(n) FROM (SELECT count(*) n FROM jammi.pairs_first GROUP BY positive)"
    ).fetchall()[0][0]
    assert 1 <= per_doc <= 3 and len(first) > 10  # sampled: several distinct ones per document
    assert {p for _, p in first} <= bodies(notes)


def test_the_causal_prompt_is_not_part_of_the_question(generators):
    gen = Generator(generators["causal"])
    text = "cat dog car"
    prompt = "zzzz {text} qqqq"
    written = gen.questions([text], 1, 8, prompt)[0]
    assert written and not any(q.startswith(("zzzz", "[CLS]")) for q in written)


def test_the_questions_train_with_fine_tune(notes):
    notes.generate_questions("notes", "body", "t5")
    job = notes.fine_tune("notes_questions", "tiny", ["anchor", "positive"], epochs=1).wait()
    assert job.status == "succeeded"


def test_generation_kind_reads_the_architecture(generators, tiny_model):
    assert generation_kind(generators["seq2seq"]) == "seq2seq"
    assert generation_kind(generators["causal"]) == "causal"
    assert generation_kind(tiny_model) is None  # an embedding model (BertModel)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda db: db.generate_questions("notes", "body", "tiny"), "cannot generate text"),
        (lambda db: db.generate_questions("notes", "id", "t5"), "not text"),
        (lambda db: db.generate_questions("notes", "body", "t5", per_document=0), "1 to 20"),
        (lambda db: db.generate_questions("notes", "body", "t5", max_new_tokens=0), "1 to 256"),
        (lambda db: db.generate_questions("notes", "body", "gpt", prompt="Q:"), "{text}"),
        (lambda db: db.generate_questions("notes", "body", "t5", output="notes"), "exists"),
    ],
)
def test_mistakes_write_nothing(notes, call, message):
    before = catalog_snapshot(notes)
    with pytest.raises(JammiError, match=message.replace("{", r"\{").replace("}", r"\}")):
        call(notes)
    assert catalog_snapshot(notes) == before


def test_a_model_that_writes_nothing_is_a_clear_error(notes, monkeypatch):
    monkeypatch.setattr(Generator, "questions", lambda self, texts, *a, **k: [[] for _ in texts])
    before = catalog_snapshot(notes)
    with pytest.raises(JammiError, match="wrote no question"):
        notes.generate_questions("notes", "body", "t5")
    assert catalog_snapshot(notes) == before


def test_the_model_loads_once_for_every_call(notes, monkeypatch):
    from jammi_sql.data import generator

    monkeypatch.setattr(generator, "_LOADED", {})
    built = []
    original = Generator.__init__

    def counting(self, *args, **kwargs):
        built.append(args[0])
        original(self, *args, **kwargs)

    monkeypatch.setattr(Generator, "__init__", counting)
    notes.generate_questions("notes", "body", "t5", output="one")
    notes.generate_questions("notes", "body", "t5", output="two")
    assert len(built) == 1


def test_a_folder_that_lost_its_tokenizer_is_a_clear_error(notes, generators, tmp_path):
    broken = tmp_path / "broken"  # register_model checks the files; they go missing later
    shutil.copytree(generators["seq2seq"], broken)
    notes.register_model("broken", str(broken))
    for f in broken.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special_tokens")):
            f.unlink()
    before = catalog_snapshot(notes)
    with pytest.raises(JammiError, match="tokenizer"):
        notes.sql("SELECT generate_questions('notes', 'body', 'broken')").fetchall()
    assert catalog_snapshot(notes) == before


def test_corrupt_weights_are_a_clear_error(generators, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(generators["seq2seq"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(JammiError, match="cannot load the text-generation model"):
        Generator(broken)
