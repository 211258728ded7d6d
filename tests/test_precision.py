"""Inference precision: forced fp32/bf16, and auto's fidelity guard falling back to fp32."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_tiny_bert

import jammi_sql
from jammi_sql.inference import precision
from jammi_sql.inference.encoder import Encoder


@pytest.fixture(scope="module")
def fragile_model(tmp_path_factory):
    """A tiny BERT whose token vectors are 1000 plus a little noise: bf16 keeps about three
    significant digits, so in bf16 every token looks the same and the embeddings go wrong."""
    import torch
    from transformers import BertModel

    folder = build_tiny_bert(tmp_path_factory.mktemp("fragile") / "bert", seed=3)
    model = BertModel.from_pretrained(str(folder))
    weights = model.embeddings.word_embeddings.weight
    with torch.no_grad():
        weights.copy_(1000 + 0.05 * torch.randn_like(weights))
    model.save_pretrained(str(folder))
    return folder


def test_the_guard_keeps_fp32_weights_when_reduced_precision_is_off(fragile_model):
    encoder = Encoder.from_folder(fragile_model)
    texts = ["a cat plays piano", "solar energy battery"]
    reference = encoder.encode(texts)
    guarded = precision.guarded(encoder, "bf16")
    assert guarded.precision == "fp32" and guarded.fidelity < precision.MIN_COSINE
    assert np.array_equal(guarded.encode(texts), reference)  # the exact fp32 weights are back


def test_the_guard_keeps_bf16_when_it_passes(tiny_model):
    encoder = precision.guarded(Encoder.from_folder(tiny_model), "bf16", threshold=0.9)
    assert encoder.precision == "bf16" and 0.9 <= encoder.fidelity <= 1.0 + 1e-6


def test_auto_falls_back_to_fp32_and_says_so_in_jammi_models(
    fragile_model, tiny_model, tmp_path, monkeypatch
):
    monkeypatch.setattr(precision, "reduced", lambda device: "bf16")  # as on a bf16 CPU
    with jammi_sql.connect(":memory:", home=str(tmp_path / "h"), precision="auto") as db:
        db.register_model("fragile", fragile_model)
        got = np.array(db.sql("SELECT embed('fragile', 'a cat plays piano')").fetchall()[0][0])
        listed = db.sql("SELECT precision FROM jammi.models WHERE model_id = 'fragile'")
        assert listed.fetchall() == [("fp32",)]
    expected = Encoder.from_folder(fragile_model).encode(["a cat plays piano"])[0]
    assert np.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("chosen", ["fp32", "bf16"])
def test_a_forced_precision_is_used_and_shown(chosen, tiny_model, tmp_path):
    with jammi_sql.connect(":memory:", home=str(tmp_path / chosen), precision=chosen) as db:
        db.register_model("tiny", tiny_model)
        vec = np.array(db.sql("SELECT embed('tiny', 'a cat plays piano')").fetchall()[0][0])
        assert db.sql("SELECT precision FROM jammi.models WHERE model_id = 'tiny'").fetchall() == [
            (chosen,)
        ]
    expected = Encoder.from_folder(tiny_model).encode(["a cat plays piano"])[0]
    cosine = float(vec @ expected / np.linalg.norm(vec) / np.linalg.norm(expected))
    assert cosine > 0.99 and (chosen != "fp32" or np.allclose(vec, expected, atol=1e-6))


def test_an_unknown_precision_is_a_jammi_error(tmp_path):
    with pytest.raises(jammi_sql.JammiError, match="jammi: precision 'bf17' is not one of auto"):
        jammi_sql.connect(":memory:", home=str(tmp_path / "h"), precision="bf17")
