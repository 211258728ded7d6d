"""User mistakes across every SQL function: each is a `jammi:` error naming the fix, and the
catalog tables and the home folder are exactly as before the call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import catalog_snapshot

import jammi_sql

LONG = "repeat('x', 100000)"
FT = "fine_tune('pairs', 'tiny', ['text_a', 'text_b', 'score']"


@pytest.fixture(scope="module")
def tiny_model(_tiny_bert_master, tmp_path_factory) -> Path:
    """One copy of the tiny BERT for the module (no test here writes to it), so its encoder
    loads once per process instead of once per mistake."""
    return Path(shutil.copytree(_tiny_bert_master, tmp_path_factory.mktemp("bad") / "tiny"))


def foreign_folders(db, tiny_model, tmp_path) -> None:
    """A projection head 'head' (saved directly, no job), PEFT folders that lack a piece or use
    what jammi does not load, and a sentence-transformers folder whose Dense folder is gone."""
    import torch

    from jammi_sql.artifacts import layout
    from jammi_sql.catalog.tables import ModelRecord

    folder = layout.model_dir(db.home, "head")
    tensors = {"lora_A.weight": torch.zeros(2, 32), "lora_B.weight": torch.zeros(32, 2)}
    config = {"lora_rank": 2, "lora_alpha": 4.0, "head_layers": ["projection"]}
    layout.save(
        folder,
        "projection_head",
        config=config,
        base_model_id="tiny",
        base_model_path=str(tiny_model),
        tensors=tensors,
    )
    db.ctx.catalog.add_model(
        ModelRecord(
            "head",
            "fine_tuned",
            "job",
            base_model_id="tiny",
            adapter_type="projection_head",
            artifact_path=str(folder),
        )
    )
    lora = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query"]}
    for name, extra, weights in [
        ("peft-no-weights", {"base_model_name_or_path": "tiny"}, False),
        ("peft-dora", {"base_model_name_or_path": "tiny", "use_dora": True}, True),
        ("peft-nobase", {}, True),
        ("peft-other", {"base_model_name_or_path": "someone/else"}, True),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({**lora, **extra}))
        if weights:
            (tmp_path / name / "adapter_model.safetensors").write_bytes(b"")
    st = Path(shutil.copytree(tiny_model, tmp_path / "st-missing-dense"))
    modules = json.loads((st / "modules.json").read_text())
    modules.insert(
        2, {"idx": 9, "name": "9", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (st / "modules.json").write_text(json.dumps(modules))


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    """Sources of every shape a mistake needs, and one embedding table (corpus, tiny): built
    once for the module, since every mistake must leave it exactly as it was (each test checks
    that; a mistake that changed it fails there, whatever later tests then see)."""
    from jammi_sql.inference import precision

    tmp_path = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as mp:  # conftest's _fp32_hardware, for the module
        mp.setattr(precision, "reduced", lambda device: None)
        mp.setattr(precision, "auto_onnx", lambda device: False)
        db = jammi_sql.connect(":memory:", home=str(tmp_path / "home"))
        db.register_model("tiny", tiny_model)
        _build_world(db, tiny_model, tmp_path)
    yield db
    db.close()


def _build_world(db, tiny_model: Path, tmp_path: Path) -> None:
    run = lambda sql: db.sql(sql).fetchall() if db.sql(sql) is not None else None  # noqa: E731
    for sql in [
        "CREATE TABLE pairs AS SELECT 'the cat ' || i AS text_a, 'a dog ' || i AS text_b, "
        "(i % 5) / 5 AS score FROM range(20) r(i)",
        "CREATE TABLE blanks AS SELECT CASE WHEN i = 3 THEN '  ' ELSE 'the cat ' || i END AS "
        "text_a, 'a dog ' || i AS text_b, 0.5 AS score FROM range(20) r(i)",
        "CREATE TABLE textscore AS SELECT text_a, text_b, score::VARCHAR AS score FROM pairs",
        "CREATE TABLE numtext AS SELECT text_a, text_b, score::VARCHAR AS third FROM pairs",
        "CREATE TABLE tiny_src AS SELECT * FROM pairs LIMIT 2",
        "CREATE TABLE corpus AS SELECT i AS doc_id, 'document ' || i AS text, i AS n "
        "FROM range(10) r(i)",
        "CREATE TABLE dupkeys AS SELECT i % 3 AS id, 'text ' || i AS text FROM range(10) r(i)",
        "CREATE TABLE nullkeys AS SELECT CASE WHEN i = 1 THEN NULL ELSE i END AS id, "
        "'text ' || i AS text FROM range(10) r(i)",
        "CREATE TABLE queries AS SELECT i AS query_id, 'query ' || i AS text FROM range(3) r(i)",
        "CREATE TABLE qrels_empty (query_id BIGINT, doc_id BIGINT, score DOUBLE)",
        "CREATE TABLE qrels_missing AS SELECT 0 AS query_id, 99 AS doc_id, 1.0 AS score",
    ]:
        db.con.execute(sql)
    for name in ["pairs", "blanks", "textscore", "numtext", "tiny_src", "corpus", "dupkeys"]:
        run(f"SELECT add_source('{name}', '{name}')")
    for name in ["nullkeys", "queries", "qrels_empty", "qrels_missing"]:
        run(f"SELECT add_source('{name}', '{name}')")
    run("SELECT generate_text_embeddings('corpus', 'tiny', ['text'], 'doc_id')")
    half = tmp_path / "half-model"
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (tmp_path / "data.xyz").write_text("a,b\n1,2\n")
    (tmp_path / "header.csv").write_text("text_a,text_b,score\n")  # a header and no rows
    run(f"SELECT add_source('headeronly', '{tmp_path / 'header.csv'}')")
    foreign_folders(db, tiny_model, tmp_path)
    db.half, db.tmp = str(half), str(tmp_path)


MISTAKES = [
    # add_source
    ("SELECT add_source(NULL, 'pairs')", "add_source needs a source name"),
    ("SELECT add_source('bad name', 'pairs')", "source name 'bad name' is invalid"),
    ("SELECT add_source(repeat('s', 100), 'pairs')", "is invalid; use up to 64"),
    ("SELECT add_source('pairs', 'pairs')", "source 'pairs' already exists"),
    ("SELECT add_source('s', NULL)", "add_source needs a url"),
    ("SELECT add_source('s', '')", "add_source needs a url"),
    ("SELECT add_source('s', '/no/such/file.csv')", "no file matches"),
    ("SELECT add_source('s', '{tmp}/data.xyz')", "unsupported file format '.xyz'"),
    ("SELECT add_source('s', 'pairs', format := 'excel')", "unsupported format 'excel'"),
    ("SELECT add_source('s', 'no_such_table')", "is neither a file nor a table"),
    ("SELECT add_source('s', 'SELECT * FROM nope', format := 'query')", "cannot read source 's'"),
    # remove_source
    ("SELECT remove_source('nope')", "unknown source 'nope'"),
    ("SELECT remove_source(NULL)", "remove_source needs a source name"),
    ("SELECT remove_source('corpus')", "has embedding tables built from it (jammi.emb_corpus__"),
    ("SELECT remove_source('corpus')", "remove_source('corpus', cascade := true)"),
    # register_model
    ("SELECT register_model('m', '/no/such/folder')", "is not a Hugging Face model folder"),
    ("SELECT register_model('m', '{half}')", "it has no weights (*.safetensors or *.bin)"),
    ("SELECT register_model('m', '{half}')", "and no a tokenizer"),
    ("SELECT register_model('all-MiniLM-L6-v2', '{half}')", "the bundled model's id"),
    ("SELECT register_model(NULL, '{half}')", "register_model needs a model id"),
    ("SELECT register_model('m', NULL)", "register_model needs the path of a model folder"),
    (f"SELECT register_model({LONG}, '{{half}}')", "of 100,000 characters is too long"),
    (f"SELECT register_model('m', {LONG})", "a model folder path of 100,000 characters"),
    ("SELECT register_model('m', '{tmp}/peft-no-weights')", "but no adapter_model.safetensors"),
    ("SELECT register_model('m', '{tmp}/peft-dora')", "uses use_dora, which jammi-sql does not"),
    ("SELECT register_model('m', '{tmp}/peft-dora')", "merge it into the base"),
    ("SELECT register_model('m', '{tmp}/peft-nobase')", "names no base model"),
    ("SELECT register_model('m', '{tmp}/peft-other')", "'someone/else' of the PEFT adapter"),
    ("SELECT register_model('m', '{tmp}/peft-other')", "register the base first"),
    ("SELECT register_model('m', '{tmp}/peft-nobase', base_model := 'head')", "a fine-tuned"),
    ("SELECT register_model('m', '{half}', base_model := 'tiny')", "is for a PEFT adapter"),
    ("SELECT register_model('m', '{tmp}/st-missing-dense')", "the Dense module's folder 2_Dense/"),
    # export_model
    ("SELECT export_model('nope', '{tmp}/out')", "unknown model 'nope'"),
    ("SELECT export_model(NULL, '{tmp}/out')", "export_model needs a model id"),
    ("SELECT export_model('tiny', NULL)", "export_model needs the path of a folder"),
    ("SELECT export_model('tiny', '{tmp}/out', format := 'gguf')", "format 'gguf' is unknown"),
    ("SELECT export_model('head', '{tmp}/out', format := 'peft')", "a projection head, which"),
    ("SELECT export_model('head', '{tmp}/out', format := 'peft')", "'sentence-transformers'"),
    ("SELECT export_model('tiny', '{tmp}')", "is not empty; choose another path or pass overwrite"),
    ("SELECT export_model('tiny', '{tmp}/data.xyz')", "is a file; give the path of a folder"),
    ("SELECT export_model('tiny', '{tmp}/data.xyz/out')", "not a folder this process may write"),
    ("SELECT export_model('tiny', '{tmp}', overwrite := 'yes')", "must be true or false"),
    # remove_model
    (
        "SELECT remove_model('nope')",
        "no model 'nope' is in jammi.models; models that can be removed: tiny",
    ),
    ("SELECT remove_model('all-MiniLM-L6-v2')", "is the bundled model; it cannot be removed"),
    ("SELECT remove_model('tiny')", "model 'tiny' is used by jammi.emb_corpus__tiny"),
    ("SELECT remove_model(NULL)", "a model id is required"),
    (f"SELECT remove_model({LONG})", "too long (at most 1000)"),
    # fine_tune
    ("SELECT fine_tune('nope', 'tiny', ['text_a', 'text_b', 'score'])", "unknown source 'nope'"),
    ("SELECT fine_tune('pairs', 'nope', ['text_a', 'text_b', 'score'])", "unknown model 'nope'"),
    (f"SELECT fine_tune('pairs', {LONG}, ['text_a', 'text_b'])", "too long (at most 1000)"),
    ("SELECT fine_tune('pairs', 'tiny', ['text_a', 'text_c'])", "has no column 'text_c'"),
    ("SELECT fine_tune('pairs', 'tiny', ['text_a'])", "columns must name 2 or 3"),
    ("SELECT fine_tune('pairs', 'tiny', ['text_a', 'text_a'])", "columns must name 2 or 3"),
    ("SELECT fine_tune(NULL, 'tiny', ['text_a', 'text_b'])", "needs a source, a base model"),
    (f"SELECT {FT}, method := 'qlora')", "unknown method 'qlora'"),
    (f"SELECT {FT}, task := 'classification')", "task"),
    (f"SELECT {FT}, config := {{'epoch': 2}})", "unknown config key 'epoch'"),
    (f"SELECT {FT}, config := '{{\"epochs\": 2')", "config is not valid JSON"),
    (f"SELECT {FT}, config := {{'epochs': -1}})", "epochs"),
    (f"SELECT {FT}, config := {{'learning_rate': 'fast'}})", "learning_rate"),
    (f"SELECT {FT}, config := {{'refit': 'yes'}})", "refit = 'yes' is invalid"),
    (f"SELECT {FT}, config := {{'model_name': {LONG}}})", "at most 200 characters"),
    (f"SELECT {FT}, config := {{'model_name': '../up'}})", "model_name"),
    (
        "SELECT fine_tune('blanks', 'tiny', ['text_a', 'text_b', 'score'])",
        "has 1 empty or whitespace-only texts",
    ),
    (
        "SELECT fine_tune('textscore', 'tiny', ['text_a', 'text_b', 'score'])",
        "column 'score' of source 'textscore' is text (VARCHAR)",
    ),
    (
        "SELECT fine_tune('numtext', 'tiny', ['text_a', 'text_b', 'third'])",
        "CAST(third AS DOUBLE)",
    ),
    ("SELECT fine_tune('tiny_src', 'tiny', ['text_a', 'text_b', 'score'])", "too few to train"),
    ("SELECT fine_tune('headeronly', 'tiny', ['text_a', 'text_b', 'score'])", "has 0 rows"),
    ("SELECT fine_tune('corpus', 'tiny', ['text', 'n'])", "not text"),
    ("SELECT remove_embeddings('corpus', 'nope')", "built from it: with tiny"),
    ("SELECT remove_embeddings('pairs', 'tiny')", "none were built from it"),
    ("SELECT remove_embeddings(NULL, 'tiny')", "remove_embeddings needs a source and a model"),
    # jobs
    ("SELECT wait_job('nope')", "unknown job 'nope'"),
    ("SELECT wait_job(NULL)", "a job id is required"),
    ("SELECT cancel_job('nope')", "unknown job 'nope'"),
    ("SELECT resume_job('nope')", "unknown job 'nope'"),
    ("SELECT delete_job('nope')", "unknown job 'nope'"),
    ("SELECT delete_job(NULL)", "a job id is required"),
    # embed, embed_query
    ("SELECT embed('tiny', 42)", "embed's text must be text (VARCHAR), not INTEGER"),
    ("SELECT embed('tiny', n) FROM corpus", "not BIGINT; cast it"),
    ("SELECT embed(42, 'hello')", "embed's model must be text"),
    ("SELECT embed('nope', 'hello')", "unknown model 'nope'"),
    (f"SELECT embed({LONG}, 'hello')", "too long (at most 1000)"),
    ("SELECT embed_query('tiny', [1, 2])", "embed_query's text must be text"),
    ("SELECT embed_query('/no/such/model', 'hello')", "unknown model '/no/such/model'"),
    ("SELECT add_source('s', repeat('x', 100000))", "...(100,000 characters)"),
    ("SELECT add_source('s', repeat('x', 100000) || '.csv')", "no file matches"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', ['text', 'text'], 'doc_id')", "twice"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', NULL)", "must be text (VARCHAR) or a vector"),
    # types DuckDB's binder would refuse with no hint
    ("SELECT add_source(42, 'pairs')", "add_source's name must be text (VARCHAR), not INTEGER"),
    ("SELECT add_source('s', 42)", "cast it, e.g. url::VARCHAR"),
    ("SELECT remove_source('corpus', cascade := 'yes')", "cascade must be true or false"),
    ("SELECT register_model('m', 42)", "register_model's path must be text"),
    ("SELECT fine_tune('pairs', 'tiny', 'text_a')", "fine_tune's columns must be a list of names"),
    (f"SELECT {FT}, method := 1)", "fine_tune's method must be text"),
    ("SELECT wait_job('nope', 'soon')", "wait_job's timeout_s must be a number, e.g. 60"),
    ("SELECT cancel_job(42)", "cancel_job's job_id must be text"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', 'text', 'doc_id')", "a list of names"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', [1], 'doc_id')", "not INTEGER[]"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', ['text'], 1)", "key must be text"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 42)", "semantic_search's query must be"),
    ("SELECT * FROM semantic_search(42, 'tiny', 'q')", "semantic_search's source must be"),
    ("SELECT evaluate_similarity('tiny', 'pairs', 'text_a')", "columns must be a list of names"),
    (
        "SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels_missing', per_query := 1)",
        "per_query must be text",
    ),
    # generate_text_embeddings
    ("SELECT generate_text_embeddings('nope', 'tiny', ['text'], 'id')", "unknown source 'nope'"),
    ("SELECT generate_text_embeddings('corpus', 'nope', ['text'], 'doc_id')", "unknown model"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', ['text'], 'id')", "has no column 'id'"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', ['n'], 'doc_id')", "is BIGINT, not text"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', [], 'doc_id')", "at least one text"),
    ("SELECT generate_text_embeddings('dupkeys', 'tiny', ['text'], 'id')", "duplicate values"),
    ("SELECT generate_text_embeddings('nullkeys', 'tiny', ['text'], 'id')", "has 1 NULL values"),
    ("SELECT generate_text_embeddings('corpus', 'tiny', ['text'], 'n')", "was built with key"),
    (
        "SELECT " + FT + ", config := {'matryoshka_dims': [16, 64]})",
        "matryoshka_dims = [16, 64] has a width above the model's dimension (32)",
    ),
    ("SELECT " + FT + ", config := {'matryoshka_dims': ['a']})", "a list of widths >= 1"),
    # pairs_from_documents
    ("SELECT pairs_from_documents(NULL, 'text_a')", "needs a source and its text column"),
    ("SELECT pairs_from_documents('pairs', 'score')", "not text"),
    ("SELECT pairs_from_documents('pairs', 'text_a', model := 'nope')", "unknown model 'nope'"),
    (
        "SELECT pairs_from_documents('pairs', 'text_a', chunk_tokens := 8, chunk_overlap := 8)",
        "chunk_overlap := 8 must be at least 0 and below chunk_tokens",
    ),
    # generate_questions
    ("SELECT generate_questions('pairs', 'text_a', NULL)", "needs a source, its text column"),
    ("SELECT generate_questions('pairs', 'text_a', 'tiny')", "model 'tiny' cannot generate"),
    ("SELECT generate_questions('pairs', 'score', 'tiny')", "not text"),
    (
        "SELECT generate_questions('pairs', 'text_a', 'tiny', per_document := 50)",
        "per_document must be 1 to 20",
    ),
    # mine_hard_negatives
    ("SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'nope')", "has no column 'nope'"),
    ("SELECT mine_hard_negatives('pairs', 'tiny', 'score', 'text_b')", "not text"),
    ("SELECT mine_hard_negatives('pairs', 'nope', 'text_a', 'text_b')", "unknown model 'nope'"),
    ("SELECT mine_hard_negatives('nope', 'tiny', 'text_a', 'text_b')", "unknown source 'nope'"),
    ("SELECT mine_hard_negatives(NULL, 'tiny', 'text_a', 'text_b')", "needs a source"),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', corpus := 'queries')",
        "corpus 'queries' has no embeddings for model 'tiny'",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', range_min := 5, "
        "range_max := 5)",
        "fewer than num_negatives",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', sampling := 'best')",
        "sampling := 'best' is unknown",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', output := 'corpus')",
        "source 'corpus' already exists",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', num_negatives := 'two')",
        "whole number",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', relative_margin := -1)",
        "relative_margin := -1",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', relative_margin := 1)",
        "out of range",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', absolute_margin := -0.1)",
        "absolute_margin := -0.1",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', max_score := 2)",
        "max_score := 2",
    ),
    (
        "SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', min_score := 0.9, max_score := 0.5)",
        "swap them",
    ),
    ("SELECT mine_hard_negatives('pairs', 'tiny', 'text_a', 'text_b', seed := -1)", "seed must be"),
    # semantic_search
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', k := 0)", "k must be at least 1"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', k := -3)", "got -3"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', k := 'ten')", "whole number"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', k := 2.5)", "whole number"),
    ("SELECT * FROM semantic_search('pairs', 'tiny', 'doc')", "has no embeddings for model"),
    ("SELECT * FROM semantic_search('nope', 'tiny', 'doc')", "unknown source 'nope'"),
    ("SELECT * FROM semantic_search('corpus', 'nope', 'doc')", "unknown model 'nope'"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', filter := 'n >')", "not one SQL"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', filter := 'nope = 1')", "columns are"),
    (
        "SELECT * FROM semantic_search('corpus', 'tiny', 'doc', filter := '1=1; DROP TABLE corpus')",
        "not one SQL",
    ),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', filter := ' ')", "filter is empty"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', [1.0, 2.0])", "have 32"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', exact := 'yes')", "true or false"),
    ("SELECT * FROM semantic_search('corpus', 'tiny', 'doc', dims := 99)", "model's width"),
    # keyword_search, hybrid_search, rrf
    ("SELECT * FROM keyword_search('nope', 'doc')", "unknown source 'nope'"),
    ("SELECT * FROM keyword_search('pairs', 'doc')", "has no embeddings yet"),
    ("SELECT * FROM keyword_search('corpus', 'doc', k := 0)", "k must be at least 1"),
    ("SELECT * FROM keyword_search('corpus', '  ')", "needs query text"),
    ("SELECT * FROM keyword_search('corpus', 'doc', filter := 'nope > 1')", "columns are"),
    ("SELECT * FROM hybrid_search('corpus', 'tiny', 'doc', k := 0)", "k must be at least 1"),
    ("SELECT * FROM hybrid_search('corpus', 'tiny', 'doc', rrf_k := -1)", "rrf_k must be"),
    ("SELECT * FROM hybrid_search('corpus', 'tiny', 'doc', keyword_weight := -1)", "0 or more"),
    ("SELECT * FROM hybrid_search('corpus', 'tiny', [0.1, 0.2])", "needs the words"),
    ("SELECT * FROM hybrid_search('corpus', 'tiny', [0.1], keyword_query := 'doc')", "have 32"),
    ("SELECT * FROM hybrid_search('nope', 'tiny', 'doc')", "unknown source 'nope'"),
    ("SELECT rrf(['a'])", "ranks must be a list of whole numbers"),
    # vector index
    ("SELECT create_vector_index('corpus', 'tiny', connectivity := 1)", "out of range"),
    ("SELECT create_vector_index('corpus', 'tiny', storage := 'f8')", "is not one of f32"),
    ("SELECT create_vector_index('pairs', 'tiny')", "has no embeddings for model"),
    ("SELECT drop_vector_index('nope', 'tiny')", "unknown source 'nope'"),
    ("SELECT * FROM read_source('nope')", "unknown source 'nope'"),
    # evaluate_similarity
    ("SELECT evaluate_similarity('tiny', 'nope')", "unknown source 'nope'"),
    ("SELECT evaluate_similarity('tiny', 'textscore')", "not a number"),
    ("SELECT evaluate_similarity('tiny', 'pairs', ['text_a', 'text_b'])", "needs 3 columns"),
    ("SELECT evaluate_similarity('nope', 'pairs')", "unknown model 'nope'"),
    # evaluate_retrieval
    (
        "SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels_empty')",
        "name no relevant document (score > 0)",
    ),
    (
        "SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'qrels_missing')",
        "point at documents missing from corpus",
    ),
    ("SELECT evaluate_retrieval('tiny', 'queries', 'corpus', 'pairs', k := 0)", "at least 1"),
    ("SELECT evaluate_retrieval('tiny', 'queries', 'corpus', NULL)", "needs a model"),
    ("SELECT evaluate_retrieval('tiny', 'nope', 'corpus', 'qrels_empty')", "unknown source"),
]


@pytest.mark.parametrize("sql, message", MISTAKES, ids=[f"{i}" for i in range(len(MISTAKES))])
def test_a_mistake_is_a_jammi_error_that_changes_nothing(world, sql, message):
    before = catalog_snapshot(world)
    with pytest.raises(Exception, match="jammi: ") as err:
        world.sql(sql.replace("{half}", world.half).replace("{tmp}", world.tmp)).fetchall()
    assert message in str(err.value)
    assert len(str(err.value)) < 2000  # a huge argument is not echoed whole
    assert isinstance(err.value, jammi_sql.JammiError)
    assert catalog_snapshot(world) == before


def test_there_are_at_least_sixty_mistakes_and_every_function_is_covered():
    from jammi_sql.functions.declarations import FUNCTIONS

    assert len(MISTAKES) >= 60
    called = " ".join(sql for sql, _ in MISTAKES)
    for fn in FUNCTIONS:
        if fn.public:
            assert f"{fn.name}(" in called, fn.name


PYTHON_MISTAKES = [
    (lambda db: db.add_source(None, "pairs"), "add_source needs a source name"),
    (lambda db: db.add_source("s", "/no/such.csv"), "no file matches"),
    (lambda db: db.remove_source("corpus"), "remove_source('corpus', cascade := true)"),
    (lambda db: db.register_model("m", db.half), "not a complete model folder"),
    (lambda db: db.export_model("head", db.tmp + "/out", format="peft"), "format := 'sentence"),
    (lambda db: db.remove_model("tiny"), "used by jammi.emb_corpus__tiny"),
    (lambda db: db.fine_tune("pairs", "tiny", "text_a"), "columns must name 2 or 3"),
    (lambda db: db.fine_tune("pairs", "tiny", ["text_a", "text_b"], epoch=2), "'epoch'"),
    (lambda db: db.fine_tune("textscore", "tiny", ["text_a", "text_b", "score"]), "is text"),
    (lambda db: db.delete_job("nope"), "unknown job 'nope'"),
    (lambda db: db.encode_text("nope", "hello"), "unknown model 'nope'"),
    (lambda db: db.search("corpus", "tiny", "doc", k=0), "k must be at least 1"),
    (lambda db: db.search("pairs", "tiny", "doc"), "has no embeddings for model"),
    (lambda db: db.generate_text_embeddings("corpus", "tiny", "n", "doc_id"), "not text"),
    (lambda db: db.evaluate_similarity("tiny", "textscore"), "not a number"),
    (lambda db: db.evaluate_retrieval("tiny", "queries", "corpus", "qrels_empty"), "no relevant"),
    (lambda db: db.evaluate_retrieval("tiny", "queries", "corpus", "qrels", k=0), "at least 1"),
    (
        lambda db: db.mine_hard_negatives("pairs", "tiny", "text_a", "text_b", top=3),
        "no argument 'top'",
    ),
    (
        lambda db: db.mine_hard_negatives("pairs", "tiny", "text_a", "text_b", corpus="queries"),
        "generate_text_embeddings('queries', 'tiny'",
    ),
]


@pytest.mark.parametrize(
    "call, message", PYTHON_MISTAKES, ids=[f"{i}" for i in range(len(PYTHON_MISTAKES))]
)
def test_a_python_api_mistake_is_a_jammi_error_that_changes_nothing(world, call, message):
    before = catalog_snapshot(world)
    with pytest.raises(jammi_sql.JammiError) as err:
        call(world)
    assert str(err.value).startswith("jammi: ") and message in str(err.value)
    assert catalog_snapshot(world) == before


# -- the same argument errors in SQL and Python (one declaration per operation) --------------
def _with_a_method():
    from jammi_sql.functions.declarations import FUNCTIONS

    return [f for f in FUNCTIONS if f.public and f.method is not None]


@pytest.mark.parametrize("fn", _with_a_method(), ids=lambda f: f.name)
def test_a_missing_argument_is_the_same_jammi_error_in_sql_and_python(db, fn):
    first = next(p.name for p in fn.params if not p.optional)
    with pytest.raises(jammi_sql.JammiError) as in_sql:
        db.sql(
            f"SELECT * FROM {fn.name}()" if fn.table_sql and fn.table else f"SELECT {fn.name}()"
        ).fetchall()
    method = getattr(db, fn.method.name or fn.name)
    with pytest.raises(jammi_sql.JammiError) as in_python:
        method()
    assert str(in_sql.value) == str(in_python.value) == fn.missing(first)
    assert type(in_python.value) is jammi_sql.errors.InvalidArgumentError
    assert isinstance(in_sql.value, jammi_sql.errors.InvalidArgumentError)


@pytest.mark.parametrize(
    "sql, call",
    [
        ("SELECT remove_model(42)", lambda db: db.remove_model(42)),
        ("SELECT remove_source('x', cascade := 'yes')", lambda db: db.remove_source("x", "yes")),
        ("SELECT wait_job('x', 'soon')", lambda db: db.wait_job("x", timeout="soon")),
        (
            "SELECT pairs_from_documents('s', 't', chunk_tokens := 1.5)",
            lambda db: db.pairs_from_documents("s", "t", chunk_tokens=1.5),
        ),
        ("SELECT evaluate_similarity('tiny', 's', 'a')", None),
    ],
)
def test_a_mistyped_argument_is_the_same_jammi_error_in_sql_and_python(db, sql, call):
    before = catalog_snapshot(db)
    with pytest.raises(jammi_sql.JammiError) as in_sql:
        db.sql(sql).fetchall()
    assert isinstance(in_sql.value, jammi_sql.errors.InvalidArgumentError)
    if call is not None:
        with pytest.raises(jammi_sql.errors.InvalidArgumentError) as in_python:
            call(db)
        said = str(in_sql.value)
        assert str(in_python.value).split(" not ")[0] == said.split(" not ")[0]
    assert catalog_snapshot(db) == before


def test_every_sql_function_has_its_database_method_with_its_reference_entry():
    import inspect

    from jammi_sql.api.database import Database
    from jammi_sql.functions.declarations import FUNCTIONS

    public = [f for f in FUNCTIONS if f.public]
    assert {f.name for f in public if f.method is None} == {"embed", "embed_query"}  # encode_text
    for fn in public:
        if fn.method is not None:
            doc = inspect.getdoc(getattr(Database, fn.method.name or fn.name))
            assert fn.doc in doc and fn.signature() in doc
