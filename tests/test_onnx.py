"""ONNX: every shape exports as one graph (pooling, head and normalisation included) that
onnxruntime runs as jammi embeds, and precision 'onnx' runs embed on it; 'auto' takes it only
when it is faithful and faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_interchange import SHAPES, TEXTS, cosines, plant

import jammi_sql

ort = pytest.importorskip("onnxruntime")


def run_graph(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer(texts, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    return session.run(None, feed)[0]


@pytest.mark.parametrize("shape", [None, *SHAPES])
def test_every_shape_exports_to_one_onnx_graph_that_embeds_as_jammi(
    db, tiny_model, tmp_path, shape
):
    model = "tiny" if shape is None else plant(db, tiny_model, "tuned", shape)
    out = Path(db.export_model(model, tmp_path / "out", format="onnx"))
    got = run_graph(out, TEXTS)  # padded to the longest text: padding must not leak in
    assert cosines(got, db.encode_text(model, TEXTS)).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalisation included
    assert "model.onnx" in (out / "README.md").read_text()


def test_int8_export_is_smaller_and_close(db, tiny_model, tmp_path):
    plant(db, tiny_model, "tuned", "head")
    fp32 = Path(db.export_model("tuned", tmp_path / "fp32", format="onnx"))
    int8 = Path(db.export_model("tuned", tmp_path / "int8", format="onnx-int8"))
    assert (int8 / "model.onnx").stat().st_size < (fp32 / "model.onnx").stat().st_size
    assert cosines(run_graph(int8, TEXTS), db.encode_text("tuned", TEXTS)).min() >= 0.9


def test_a_query_side_head_exports_a_query_graph_and_a_document_graph(db, tiny_model, tmp_path):
    plant(db, tiny_model, "tuned-q", "head", applies_to="query")
    out = Path(db.export_model("tuned-q", tmp_path / "out", format="onnx"))
    queries, documents = run_graph(out / "query", TEXTS), run_graph(out / "document", TEXTS)
    assert cosines(queries, db.encode_text_query("tuned-q", TEXTS)).min() >= 0.9999
    assert cosines(documents, db.encode_text("tuned-q", TEXTS)).min() >= 0.9999


@pytest.mark.parametrize("precision, floor", [("onnx", 0.9999), ("onnx-int8", 0.9)])
def test_precision_onnx_runs_embed_on_onnxruntime_and_jammi_models_says_so(
    db, tiny_model, tmp_path, precision, floor
):
    plant(db, tiny_model, "tuned-q", "head", applies_to="query")
    expected = db.encode_text_query("tuned-q", TEXTS)
    fast = jammi_sql.connect(str(tmp_path / "onnx.duckdb"), precision=precision, home=db.home)
    try:
        fast.register_model("tiny", tiny_model)
        fast.ctx.catalog.add_model(db.ctx.catalog.get_model("tuned-q"))
        got = fast.sql("SELECT embed_query('tuned-q', t) FROM unnest(?) u(t)", params=[TEXTS])
        got = np.array([r[0] for r in got.fetchall()], dtype=np.float32)
        assert cosines(got, expected).min() >= floor
        row = fast.sql("SELECT precision, backend FROM jammi.models WHERE model_id = 'tuned-q'")
        assert row.fetchall() == [(precision, "onnxruntime")]
    finally:
        fast.close()


@pytest.mark.parametrize(
    "onnx_seconds, min_cosine, chosen",
    [(0.5, 0.9999, "onnx"), (0.95, 0.9999, "fp32"), (0.5, 1.01, "fp32")],
    ids=["faster and faithful", "not faster enough", "not faithful"],
)
def test_auto_takes_onnx_runtime_only_when_faithful_and_faster(
    tiny_model, monkeypatch, onnx_seconds, min_cosine, chosen
):
    from jammi_sql.inference import precision
    from jammi_sql.inference.encoder import Encoder

    monkeypatch.setattr(precision, "auto_onnx", lambda device: True)
    monkeypatch.setattr(precision, "ONNX_MIN_COSINE", min_cosine)
    monkeypatch.setattr(
        precision, "seconds", lambda e, texts: onnx_seconds if e.runtime is not None else 1.0
    )
    encoder = precision.settle(Encoder.from_folder(tiny_model), "auto")
    assert encoder.precision == chosen
    assert encoder.backend == ("onnxruntime" if chosen == "onnx" else "torch")
    assert (encoder.runtime is not None) == (chosen == "onnx")
