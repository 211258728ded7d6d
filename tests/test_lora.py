"""LoRA invariants: a no-op at init, merged equals unmerged, targeting and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from jammi_sql.errors import InvalidArgumentError
from jammi_sql.inference.encoder import Encoder
from jammi_sql.shapes.lora import LoRALinear, inject_lora, lora_modules, lora_state_dict, merge_lora

TEXTS = ["the cat plays piano", "quantum computing and physics", "a dog"]


def embed(encoder: Encoder) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(encoder.collate(encoder.tokenize(TEXTS)))


def randomize_adapters(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.1)


def test_lora_is_a_no_op_at_init(tiny_model):
    enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
    before = embed(enc)
    inject_lora(enc.transformer, ["query", "value"], r=4, alpha=8.0, dropout=0.1)
    assert torch.equal(embed(enc), before)


def test_merged_equals_unmerged(tiny_model):
    enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
    base = embed(enc)
    inject_lora(enc.transformer, ["all-linear"], r=4, alpha=8.0)
    randomize_adapters(enc.transformer)
    unmerged = embed(enc)
    assert not torch.allclose(unmerged, base, atol=1e-4)
    merge_lora(enc.transformer)
    assert not lora_modules(enc.transformer)
    assert torch.allclose(embed(enc), unmerged, atol=1e-5)


def test_only_adapter_weights_train(tiny_model):
    enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
    enc.transformer.requires_grad_(False)
    inject_lora(enc.transformer, ["query"], r=2, alpha=4.0)
    trainable = {n for n, p in enc.transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert set(lora_state_dict(enc.transformer)) == trainable


def test_inject_names_the_candidate_modules_when_nothing_matches(tiny_model):
    enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
    with pytest.raises(InvalidArgumentError) as err:
        inject_lora(enc.transformer, ["q_proj"], r=4, alpha=8.0)
    message = str(err.value)
    assert message.startswith("jammi:") and "q_proj" in message
    assert "query" in message and "value" in message and "all-linear" in message


def test_layers_to_transform_limits_injection_to_those_layers(tiny_model):
    enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
    wrapped = inject_lora(
        enc.transformer, ["query", "value"], r=4, alpha=8.0, layers_to_transform=[1]
    )
    assert wrapped == [
        "encoder.layer.1.attention.self.query",
        "encoder.layer.1.attention.self.value",
    ]
    with pytest.raises(InvalidArgumentError, match="do not exist"):
        inject_lora(
            Encoder.from_folder(tiny_model).transformer,
            ["query"],
            r=4,
            alpha=8.0,
            layers_to_transform=[5],
        )


def test_rank_pattern_overrides_the_rank_by_substring(tiny_model):
    enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
    inject_lora(enc.transformer, ["query", "value"], r=4, alpha=8.0, rank_pattern={"query": 8})
    ranks = {n.rsplit(".", 1)[-1]: m.r for n, m in lora_modules(enc.transformer).items()}
    assert ranks == {"query": 8, "value": 4}


def test_rslora_scales_by_the_square_root_of_the_rank():
    base = torch.nn.Linear(6, 6)
    assert LoRALinear(base, r=4, alpha=8.0).scaling == 2.0
    assert math.isclose(LoRALinear(torch.nn.Linear(6, 6), r=4, alpha=8.0, rslora=True).scaling, 4.0)


def test_a_seeded_start_ignores_what_other_threads_drew(tiny_model):
    """Jobs run in threads of one process and torch's global RNG is shared: a job's adapters
    and heads start from its seed alone, whatever else drew in between."""
    from jammi_sql.shapes.head import ProjectionHead

    starts = []
    for noise in (0, 1000):
        torch.manual_seed(0)
        torch.rand(noise)  # another thread's draws
        enc = Encoder.from_folder(tiny_model, torch.device("cpu"))
        inject_lora(enc.transformer, ["query"], r=2, alpha=4.0, seed=7)
        head = ProjectionHead(8, r=2, alpha=4.0, seed=7)
        starts.append((lora_state_dict(enc.transformer), head.lora_A.weight.detach().clone()))
    (adapters_a, head_a), (adapters_b, head_b) = starts
    assert adapters_a.keys() == adapters_b.keys()
    assert all(torch.equal(adapters_a[k], adapters_b[k]) for k in adapters_a)
    assert torch.equal(head_a, head_b)
