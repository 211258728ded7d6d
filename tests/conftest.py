"""Shared fixtures: a tiny random BERT in sentence-transformers layout, fresh databases, and
the data tests share: the nouns texts are made of, a source of short documents (``docs``), a
source large enough that only a cancel ends its embedding in time (``big``)."""

from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # `make test` runs one worker per core:
    # each gets its share of the cores, so torch's threads do not oversubscribe them (and the
    # processes a test starts inherit the same share)
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _share = max(1, (_cores or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    import torch

    torch.set_num_threads(_share)

WORDS = (
    "the a an of to in on and or is are was be it this that with for as at by from cat dog "
    "car bike train plane man woman child plays guitar piano runs walks eats food quantum "
    "computing physics chemistry biology cell cancer protein gene patent battery solar energy "
    "search engine database query table model fine tune embedding vector similar different"
).split()


# The nouns test texts are made of (all in the tiny model's vocabulary, each one token).
NOUNS = ["cat", "dog", "car", "bike", "train", "plane", "piano", "guitar", "cell", "gene", "solar"]


def sql_list(words: list[str]) -> str:
    """Words as the body of a SQL list literal: 'cat', 'dog', ..."""
    return ", ".join(f"'{w}'" for w in words)


def build_tiny_bert(
    folder: Path,
    *,
    normalize: bool = True,
    pooling: str = "mean",
    seed: int = 0,
    hidden: int = 32,
) -> Path:
    """A 2-layer, hidden-32 (or ``hidden``) BERT with a small WordPiece vocabulary, randomly
    initialised."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase)
    vocab += (
        list(string.digits) + list(string.punctuation) + ["##" + c for c in string.ascii_lowercase]
    )
    vocab += WORDS
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                f"pooling_mode_{pooling}_tokens"
                if pooling != "cls"
                else "pooling_mode_cls_token": True,
            }
        )
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 64, "do_lower_case": False})
    )
    return folder


@pytest.fixture(autouse=True)
def _fp32_hardware(monkeypatch):
    """Tests compare embeddings with fp32 ones to 1e-5: precision 'auto' sees no reduced
    precision and no ONNX Runtime here, whatever the machine (tests of the guards patch this
    back)."""
    from jammi_sql.inference import precision

    monkeypatch.setattr(precision, "reduced", lambda device: None)
    monkeypatch.setattr(precision, "auto_onnx", lambda device: False)  # nor ONNX Runtime


@pytest.fixture(scope="session")
def _tiny_bert_master(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert")


@pytest.fixture
def tiny_model(_tiny_bert_master, tmp_path) -> Path:
    """A private copy of the tiny BERT folder for one test."""
    return Path(shutil.copytree(_tiny_bert_master, tmp_path / "tiny-bert"))


@pytest.fixture(scope="session")
def bundled_model_folder() -> Path:
    from jammi_sql.catalog.models import bundled_model_folder as find

    return find()


@pytest.fixture
def db(tiny_model, tmp_path):
    """A fresh in-memory database with the tiny model registered as 'tiny'."""
    import jammi_sql

    database = jammi_sql.connect(":memory:", home=str(tmp_path / "home"))
    database.register_model("tiny", tiny_model)
    yield database
    database.close()


@pytest.fixture
def docs(db):
    """A table and source 'docs' (id, title, body): three short texts and a NULL body."""
    db.sql("CREATE TABLE docs (id INTEGER, title VARCHAR, body VARCHAR)").fetchall()
    db.sql("""INSERT INTO docs VALUES (1, 'cats', 'the cat plays piano'), (2, 'dogs', 'a dog runs'),
              (3, 'energy', 'solar energy battery'), (4, 'empty', NULL)""").fetchall()
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    return db


BIG_ROWS = 200_000  # minutes of work for the tiny model: only a cancel ends it in time


@pytest.fixture
def big(db):
    """A table and source 'big' of BIG_ROWS short texts (id, body)."""
    db.sql(
        f"CREATE TABLE big AS SELECT i AS id, 'text number ' || i || ' about cats and piano' "
        f"AS body FROM range({BIG_ROWS}) t(i)"
    ).fetchall()
    db.sql("SELECT add_source('big', 'big')").fetchall()
    return db


def catalog_snapshot(db) -> dict:
    """Everything in schema jammi plus the artifact files, to show a failed call changed nothing."""
    tables = [
        r[0]
        for r in db.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'jammi' ORDER BY 1"
        ).fetchall()
    ]
    snap = {
        t: sorted(map(repr, db.con.execute(f'SELECT * FROM jammi."{t}"').fetchall()))
        for t in tables
    }
    snap["files"] = sorted(str(p.relative_to(db.home)) for p in Path(db.home).rglob("*"))
    return snap


@pytest.fixture
def bars(monkeypatch) -> list:
    """Every progress bar a test's calls start (jammi_sql.progress.Task), in order."""
    from jammi_sql import progress

    started, start = [], progress.start

    def recording(description, total, **kw):
        task = start(description, total, **kw)
        started.append(task)
        return task

    monkeypatch.setattr(progress, "start", recording)
    return started
