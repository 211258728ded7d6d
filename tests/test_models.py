"""Model ids -> model folders (bundled, a path, the Hugging Face cache, registered), their
pooling, and one load per process."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import build_tiny_bert

from jammi_sql.catalog.models import BUNDLED_ID, bundled_model_folder, canonical_id
from jammi_sql.inference.encoder import Encoder, ModelSpec, pool


def test_the_bundled_model_is_found_without_importing_its_package():
    folder = bundled_model_folder()
    assert (folder / "config.json").exists() and (folder / "modules.json").exists()
    assert canonical_id("all-MiniLM-L6-v2") == BUNDLED_ID


def test_model_spec_reads_the_sentence_transformers_config(bundled_model_folder):
    spec = ModelSpec.read(bundled_model_folder)
    assert (spec.pooling, spec.normalize, spec.max_seq_length) == ("mean", True, 256)


def test_a_plain_transformers_folder_falls_back_to_mean_pooling(tiny_model):
    for name in ("modules.json", "sentence_bert_config.json"):
        (tiny_model / name).unlink()
    shutil.rmtree(tiny_model / "1_Pooling")
    spec = ModelSpec.read(tiny_model)
    assert (spec.pooling, spec.normalize, spec.max_seq_length) == ("mean", False, 128)
    vec = Encoder.from_folder(tiny_model).encode(["a cat"])[0]
    assert abs(np.linalg.norm(vec) - 1.0) > 1e-3  # not normalized


def test_cls_pooling_and_no_normalize_are_honoured(tmp_path):
    folder = build_tiny_bert(tmp_path / "cls", normalize=False, pooling="cls")
    assert ModelSpec.read(folder).pooling == "cls"
    enc = Encoder.from_folder(folder)
    feats = enc.collate(enc.tokenize(["a cat plays"]))
    with torch.inference_mode():
        hidden = enc.transformer(**feats).last_hidden_state
    assert np.allclose(enc.encode(["a cat plays"])[0], hidden[0, 0].cpu().numpy(), atol=1e-5)


def test_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 3.0]]
    assert pool(hidden, mask, "lasttoken").tolist() == [[3.0, 3.0]]


def test_a_model_folder_path_works_as_a_model_id(db, tiny_model):
    assert len(db.sql(f"SELECT embed('{tiny_model}', 'a cat')").fetchall()[0][0]) == 32


def test_a_model_in_the_local_hugging_face_cache_is_found(db, tiny_model, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_model, snapshot)
    (hub / "models--acme--tiny" / "refs").mkdir()
    (hub / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert len(db.sql("SELECT embed('acme/tiny', 'a cat')").fetchall()[0][0]) == 32
    origin = db.sql("SELECT origin FROM jammi.models WHERE model_id = 'acme/tiny'").fetchall()
    assert origin == [("hf_cache",)]


def test_each_model_loads_once_per_process(db, monkeypatch):
    calls = []
    original = Encoder.from_folder.__func__

    def counting(cls, folder, device=None):
        calls.append(folder)
        return original(cls, folder, device)

    monkeypatch.setattr(Encoder, "from_folder", classmethod(counting))
    from jammi_sql.inference.loader import CACHE

    CACHE._items.clear()
    for _ in range(3):
        db.sql("SELECT embed('tiny', 'a cat')").fetchall()
    assert len(calls) == 1


def test_register_model_refuses_a_taken_id(db, tiny_model, tmp_path):
    other = shutil.copytree(tiny_model, tmp_path / "other")
    with pytest.raises(Exception, match="jammi: model 'tiny' is already registered"):
        db.sql(f"SELECT register_model('tiny', '{other}')").fetchall()
    assert json.loads(json.dumps(db.sql("SELECT count(*) FROM jammi.models").fetchall())) == [[1]]
