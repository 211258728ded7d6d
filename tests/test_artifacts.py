"""Model folders: what training saves loads back into the same embeddings, and bad folders fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jammi_sql.artifacts import layout as artifacts
from jammi_sql.config import FineTuneConfig
from jammi_sql.errors import ArtifactError
from jammi_sql.inference.encoder import Encoder
from jammi_sql.inference.loader import load_fine_tuned
from jammi_sql.training.trainee import Trainee

CPU = torch.device("cpu")
TEXTS = ["the cat plays piano", "quantum computing and physics", "a dog", "search engine"]
SHAPES = {
    "projection_head": ("lora", {}),
    "encoder_adapters": (
        "lora",
        {
            "target_modules": ["query", "value"],
            "layers_to_transform": [1],
            "rank_pattern": {"query": 4},
        },
    ),
    "full": ("full", {}),
}


def trained(
    tiny_model, adapter_type: str, rank: int = 2
) -> tuple[Trainee, FineTuneConfig, torch.Tensor]:
    """A trainee whose weights moved (as training would move them), and its embeddings."""
    config = FineTuneConfig(
        lora_rank=rank, lora_alpha=4.0, use_rslora=True, **SHAPES[adapter_type][1]
    )
    encoder = Encoder.from_folder(tiny_model, CPU)
    trainee = Trainee(encoder, adapter_type, config, encoder.tokenize(TEXTS), lambda: False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trainee.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    trainee.train(False)
    with torch.no_grad():
        emb = encoder(encoder.collate(encoder.tokenize(TEXTS)))
    return trainee, config, emb


@pytest.mark.parametrize("adapter_type", list(SHAPES))
def test_a_saved_model_embeds_as_the_trained_one(tmp_path, tiny_model, adapter_type):
    trainee, config, expected = trained(tiny_model, adapter_type)
    trainee.save(tmp_path / "model", config, "tiny-bert", tiny_model)
    art = artifacts.load(tmp_path / "model")
    assert art.adapter_type == adapter_type and art.base_model_id == "tiny-bert"
    assert art.config["format_version"] == artifacts.FORMAT_VERSION
    loaded = load_fine_tuned(tmp_path / "model", tiny_model, CPU)
    got = torch.from_numpy(loaded.encode(TEXTS))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


@pytest.mark.parametrize("rank", [1, 8, 31, 32])  # 32: the tiny model's full dimension
def test_a_head_of_every_rank_loads_back_and_embeds_as_trained(tmp_path, tiny_model, rank):
    trainee, config, expected = trained(tiny_model, "projection_head", rank)
    trainee.save(tmp_path / "model", config, "tiny-bert", tiny_model)
    meta = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    assert meta["lora_rank"] == rank and meta["head_layers"] == ["projection"]
    assert meta["head_form"] == ("full_rank" if rank == 32 else "low_rank")
    loaded = load_fine_tuned(tmp_path / "model", tiny_model, CPU)
    assert torch.allclose(torch.from_numpy(loaded.encode(TEXTS)), expected, atol=1e-5)


def test_a_head_is_exactly_the_base_model_at_step_0(tiny_model):
    for rank in (4, 32):
        config = FineTuneConfig(lora_rank=rank)
        encoder = Encoder.from_folder(tiny_model, CPU)
        base = encoder.encode(TEXTS)
        Trainee(encoder, "projection_head", config, encoder.tokenize(TEXTS), lambda: False)
        encoder.eval()
        assert np.allclose(encoder.encode(TEXTS), base, atol=1e-6)


def test_adapter_config_has_the_contract_keys(tmp_path, tiny_model):
    trainee, config, _ = trained(tiny_model, "encoder_adapters")
    trainee.save(tmp_path / "m", config, "tiny-bert", tiny_model)
    meta = json.loads((tmp_path / "m" / "adapter_config.json").read_text())
    assert meta == {
        "adapter_type": "encoder_adapters",
        "model_type": "bert",
        "lora_rank": 2,
        "lora_alpha": 4.0,
        "use_rslora": True,
        "target_modules": ["query", "value"],
        "layers_to_transform": [1],
        "rank_pattern": {"query": 4},
        "backbone_dtype": "f32",
        "base_model_id": "tiny-bert",
        "base_model_path": str(tiny_model),
        "format_version": 1,
    }
    head, config, _ = trained(tiny_model, "projection_head")
    head.save(tmp_path / "h", config, "tiny-bert", tiny_model)
    meta = json.loads((tmp_path / "h" / "adapter_config.json").read_text())
    assert meta["adapter_type"] == "projection_head" and meta["head_layers"] == ["projection"]
    assert (meta["lora_rank"], meta["lora_alpha"]) == (2, 4.0)


def test_a_full_model_is_an_ordinary_sentence_transformers_folder(tmp_path, tiny_model):
    st = pytest.importorskip("sentence_transformers")
    trainee, config, expected = trained(tiny_model, "full")
    trainee.save(tmp_path / "model", config, "tiny-bert", tiny_model)
    assert (tmp_path / "model" / "model.safetensors").exists()
    got = st.SentenceTransformer(str(tmp_path / "model"), device="cpu").encode(
        TEXTS, convert_to_tensor=True
    )
    assert torch.allclose(got, expected, atol=1e-5)


def test_saving_again_replaces_the_folder_whole(tmp_path, tiny_model):
    trainee, config, _ = trained(tiny_model, "projection_head")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stale.txt").write_text("old")
    trainee.save(tmp_path / "model", config, "tiny-bert", tiny_model)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 2}, "format_version 2"),
        ({"adapter_type": "prefix_tuning"}, "adapter_type 'prefix_tuning'"),
    ],
)
def test_load_refuses_what_it_does_not_understand(tmp_path, tiny_model, change, message):
    trainee, config, _ = trained(tiny_model, "projection_head")
    trainee.save(tmp_path / "model", config, "tiny-bert", tiny_model)
    path = tmp_path / "model" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ArtifactError, match=message) as err:
        artifacts.load(tmp_path / "model")
    assert str(err.value).startswith("jammi:")


def test_load_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ArtifactError, match="not a fine-tuned model folder"):
        artifacts.load(tmp_path)


def test_load_encoder_refuses_weights_that_do_not_fit(tmp_path, tiny_model):
    trainee, config, _ = trained(tiny_model, "encoder_adapters")
    trainee.save(tmp_path / "model", config, "tiny-bert", tiny_model)
    path = tmp_path / "model" / "adapter_config.json"
    path.write_text(
        json.dumps({**json.loads(path.read_text()), "target_modules": ["query", "key"]})
    )
    with pytest.raises(ArtifactError, match="do not fit"):
        load_fine_tuned(tmp_path / "model", tiny_model, CPU)
