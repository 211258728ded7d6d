"""Models that travel: every shape exports to a folder that sentence-transformers or PEFT loads
and embeds with as jammi does, and their folders register back into jammi alike."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import jammi_sql
from jammi_sql.artifacts.layout import model_dir
from jammi_sql.catalog.tables import ModelRecord
from jammi_sql.config import FineTuneConfig
from jammi_sql.inference.encoder import Encoder
from jammi_sql.training.trainee import Trainee

CPU = torch.device("cpu")
BUNDLED = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    "the cat plays piano",
    "quantum computing and physics",
    "a dog",
    "search engine query table model fine tune embedding vector",
    "solar energy battery",
]
ADAPTERS = {"target_modules": ["query", "value"], "layers_to_transform": [1]}
SHAPES = {  # name -> (adapter_type, rank, config)
    "head": ("projection_head", 2, {}),
    "full-rank head": ("projection_head", 32, {}),
    "adapters": ("encoder_adapters", 2, {**ADAPTERS, "rank_pattern": {"query": 4}}),
    "full": ("full", 2, {}),
}


def plant(db, tiny_model: Path, model_id: str, shape: str, **config) -> str:
    """A fine-tuned model of ``shape`` in the catalog, its weights moved away from the base
    (as training moves them), without running a job."""
    adapter_type, rank, extra = SHAPES[shape]
    cfg = FineTuneConfig(lora_rank=rank, lora_alpha=4.0, use_rslora=True, **extra, **config)
    encoder = Encoder.from_folder(tiny_model, CPU)
    trainee = Trainee(encoder, adapter_type, cfg, encoder.tokenize(TEXTS), lambda: False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trainee.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    trainee.train(False)
    folder = model_dir(db.home, model_id)
    trainee.save(folder, cfg, "tiny", tiny_model)
    db.ctx.catalog.add_model(
        ModelRecord(
            model_id,
            "fine_tuned",
            "job",
            base_model_id="tiny",
            adapter_type=adapter_type,
            dimensions=32,
            artifact_path=str(folder),
        )
    )
    return model_id


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def sentence_transformer(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def mean_pooled(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Mean pooling and L2 normalisation over a plain transformers (or PEFT) model's output."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.mark.parametrize("shape", [None, *SHAPES])
def test_every_shape_exports_to_a_folder_sentence_transformers_embeds_with_as_jammi(
    db, tiny_model, tmp_path, shape
):
    model = "tiny" if shape is None else plant(db, tiny_model, "tuned", shape)
    written = db.export_model(model, tmp_path / "out")
    assert written == str(tmp_path / "out")
    got = sentence_transformer(written).encode(TEXTS)
    assert cosines(got, db.encode_text(model, TEXTS)).min() >= 0.9999
    if shape is not None:
        assert cosines(got, db.encode_text("tiny", TEXTS)).min() < 0.999  # it is not the base
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_head_is_a_dense_module_between_pooling_and_normalize(db, tiny_model, tmp_path):
    plant(db, tiny_model, "tuned", "head")
    out = Path(db.export_model("tuned", tmp_path / "out"))
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Dense",
        "Normalize",
    ]
    dense = json.loads((out / modules[2]["path"] / "config.json").read_text())
    assert dense["activation_function"].endswith("Identity") and dense["bias"] is False


def test_a_query_side_head_exports_as_a_query_folder_and_a_document_folder(
    db, tiny_model, tmp_path
):
    plant(db, tiny_model, "tuned-q", "head", applies_to="query")
    out = Path(db.export_model("tuned-q", tmp_path / "out"))
    assert {"query", "document", "README.md"} <= {p.name for p in out.iterdir()}
    queries = sentence_transformer(out / "query").encode(TEXTS)
    documents = sentence_transformer(out / "document").encode(TEXTS)
    assert cosines(queries, db.encode_text_query("tuned-q", TEXTS)).min() >= 0.9999
    assert cosines(documents, db.encode_text("tuned-q", TEXTS)).min() >= 0.9999
    assert cosines(queries, documents).min() < 0.999
    assert "`query/`" in (out / "README.md").read_text()


def test_adapters_export_to_peft_unmerged_and_peft_and_sentence_transformers_load_them(
    db, tiny_model, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    plant(db, tiny_model, "tuned", "adapters")
    out = Path(db.export_model("tuned", tmp_path / "out", format="peft"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny_model)), str(out))
    peft_model.eval()
    assert any("lora_A" in name for name, _ in peft_model.named_parameters())  # unmerged
    got = mean_pooled(peft_model, AutoTokenizer.from_pretrained(str(tiny_model)), TEXTS)
    assert cosines(got, db.encode_text("tuned", TEXTS)).min() >= 0.9999
    st = sentence_transformer(tiny_model)
    st.load_adapter(str(out))  # sentence-transformers' own way to put an adapter on
    assert cosines(st.encode(TEXTS), db.encode_text("tuned", TEXTS)).min() >= 0.9999


def test_a_peft_export_registers_back_as_the_same_model(db, tiny_model, tmp_path):
    plant(db, tiny_model, "tuned", "adapters")
    out = db.export_model("tuned", tmp_path / "out", format="peft")
    db.sql(f"SELECT register_model('again', '{out}', base_model := 'tiny')").fetchall()
    assert cosines(db.encode_text("again", TEXTS), db.encode_text("tuned", TEXTS)).min() > 0.99999
    row = db.sql(
        "SELECT kind, base_model_id FROM jammi.models WHERE model_id = 'again'"
    ).fetchall()[0]
    assert row == ("fine_tuned", "tiny")


def test_a_peft_adapter_folder_registers_on_its_base_and_embeds_as_peft(db, tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value", "dense"],
        use_rslora=True,
        rank_pattern={"value": 2},
        init_lora_weights=False,
    )
    model = get_peft_model(AutoModel.from_pretrained(str(tiny_model)), config).eval()
    model.save_pretrained(str(tmp_path / "adapter"))
    db.register_model("theirs", tmp_path / "adapter", base_model="tiny")
    expected = mean_pooled(model, AutoTokenizer.from_pretrained(str(tiny_model)), TEXTS)
    assert cosines(db.encode_text("theirs", TEXTS), expected).min() >= 0.9999


def test_a_sentence_transformers_folder_with_dense_modules_embeds_as_sentence_transformers(
    db, tiny_model, tmp_path
):
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    transformer = models.Transformer(str(tiny_model))
    modules = [transformer, models.Pooling(32, "mean"), models.Dense(32, 16), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path / "st"))
    db.sql(f"SELECT register_model('dense', '{tmp_path / 'st'}')").fetchall()
    expected = sentence_transformer(tmp_path / "st").encode(TEXTS)
    got = db.encode_text("dense", TEXTS)
    assert got.shape == (len(TEXTS), 16)
    assert cosines(got, expected).min() >= 0.9999
    dims = db.sql("SELECT dimensions FROM jammi.models WHERE model_id = 'dense'").fetchall()[0][0]
    assert dims == 16
    again = sentence_transformer(db.export_model("dense", tmp_path / "out")).encode(TEXTS)
    assert cosines(again, expected).min() >= 0.9999  # its Dense modules travel on


def test_a_fine_tuned_model_exports_with_a_card_of_its_lineage_config_and_metrics(db, tmp_path):
    db.con.execute(
        "CREATE TABLE pairs AS SELECT 'the cat ' || i AS text_a, 'a dog ' || i AS text_b, "
        "(i % 5) / 5 AS score FROM range(40) r(i)"
    )
    db.add_source("pairs", "pairs")
    job = db.fine_tune(
        "pairs",
        "tiny",
        ["text_a", "text_b", "score"],
        epochs=2,
        trials=1,
        model_name="tuned",
        matryoshka_dims=[16, 8],
    ).wait()
    card = (Path(db.export_model("tuned", tmp_path / "out")) / "README.md").read_text()
    assert "base_model: tiny" in card and "`tuned` <- `tiny`" in card
    assert "source `pairs`" in card and job.job_id in card and '"epochs": 2' in card
    assert "| metric | base | fine_tuned | delta |" in card
    assert "Matryoshka widths 16, 8" in card and "truncate_dim=8" in card


def test_an_existing_folder_is_kept_unless_overwrite_and_a_failed_export_leaves_nothing(
    db, tmp_path, monkeypatch
):
    from jammi_sql.interchange import sentence_transformers as st

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(jammi_sql.JammiError, match="overwrite := true"):
        db.export_model("tiny", out)

    def broken(folder, encoder, head=True):
        (folder / "partial.bin").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(st, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        db.export_model("tiny", out, overwrite=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    monkeypatch.undo()
    db.export_model("tiny", out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "modules.json").is_file()


@pytest.mark.slow
def test_the_real_model_with_a_head_exports_and_loads_in_sentence_transformers_and_onnx(
    bundled_model_folder, tmp_path
):
    """all-MiniLM-L6-v2 with a moved projection head: both formats embed as jammi does."""
    from jammi_sql.artifacts import layout

    db = jammi_sql.connect(":memory:", home=str(tmp_path / "home"))
    try:
        g = torch.Generator().manual_seed(0)
        folder = model_dir(db.home, "real-head")
        tensors = {
            "lora_A.weight": torch.randn(8, 384, generator=g) * 0.05,
            "lora_B.weight": torch.randn(384, 8, generator=g) * 0.05,
        }
        config = {"lora_rank": 8, "lora_alpha": 16.0, "head_layers": ["projection"]}
        layout.save(
            folder,
            "projection_head",
            config=config,
            base_model_id=BUNDLED,
            base_model_path=str(bundled_model_folder),
            tensors=tensors,
        )
        db.ctx.catalog.add_model(
            ModelRecord(
                "real-head",
                "fine_tuned",
                "job",
                base_model_id=BUNDLED,
                adapter_type="projection_head",
                dimensions=384,
                artifact_path=str(folder),
            )
        )
        expected = db.encode_text("real-head", TEXTS)
        assert cosines(expected, db.encode_text(BUNDLED, TEXTS)).min() < 0.999
        st = sentence_transformer(db.export_model("real-head", tmp_path / "st")).encode(TEXTS)
        assert cosines(st, expected).min() >= 0.9999
        if importlib.util.find_spec("onnxruntime") is not None:
            from test_onnx import run_graph

            out = Path(db.export_model("real-head", tmp_path / "onnx", format="onnx"))
            assert cosines(run_graph(out, TEXTS), expected).min() >= 0.9999
    finally:
        db.close()
