"""Cached in-batch negatives (GradCache): the same loss and gradients as the plain loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import NOUNS
from safetensors.torch import load_file
from test_train import assert_same_weights, fit, weights

from jammi_sql.config import FineTuneConfig
from jammi_sql.inference.encoder import Encoder
from jammi_sql.training import gradcache
from jammi_sql.training.dataset import make_training_set
from jammi_sql.training.losses import MultipleNegativesRankingLoss
from jammi_sql.training.trainee import Trainee, batch_loss, index_texts

CPU = torch.device("cpu")
PAIRS = [
    (f"{NOUNS[i % 11]} {i}", f"the {NOUNS[i % 11]} and a {NOUNS[(i * 3) % 11]} {i}")
    for i in range(24)
]


def no_dropout(folder):
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def full_trainee(folder) -> tuple[Trainee, np.ndarray]:
    ts = make_training_set("pairs", PAIRS)
    encoder = Encoder.from_folder(folder, CPU)
    texts, (ids,) = index_texts([ts], encoder.spec)
    config = FineTuneConfig(learning_rate=1e-3, epochs=1, batch_size=8)
    trainee = Trainee(encoder, "full", config, encoder.tokenize(texts), lambda: False)
    trainee.train()
    return trainee, ids


def gradients(trainee: Trainee) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in trainee.trainable.named_parameters() if p.grad is not None}
    trainee.trainable.zero_grad(set_to_none=True)
    return out


def run(trainee, ids, loss_fn, mini):
    uniq, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(ids.shape)

    def loss_of(emb):
        return batch_loss(loss_fn, emb, inv, None)

    if mini is None:
        loss, backward = gradcache.plain(loss_of(trainee.embed(uniq)))
    else:
        lengths = np.array([len(trainee.token_ids[i]) for i in uniq])
        loss, backward = gradcache.cached(trainee.embed, uniq, lengths, mini, loss_of)
    backward(0.5)
    return float(loss.detach()), gradients(trainee)


def test_cached_negatives_give_the_plain_loss_and_gradients(tiny_model):
    """(InfoNCE: in the run below, which must end with the plain run's weights.)"""
    loss_fn = MultipleNegativesRankingLoss()
    trainee, ids = full_trainee(no_dropout(tiny_model))
    plain_loss, plain = run(trainee, ids, loss_fn, None)
    cached_loss, cached = run(trainee, ids, loss_fn, 5)  # 48 texts in mini-batches of 5
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain.keys() == cached.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], cached[name], atol=1e-6, rtol=1e-4), name


def test_cached_negatives_replay_each_mini_batchs_dropout(tiny_model):
    """With dropout on, the second pass must draw the masks of the first: the gradients then
    equal those of the loss on the first pass's embeddings, taken with gradients."""
    trainee, ids = full_trainee(tiny_model)
    loss_fn = MultipleNegativesRankingLoss()
    uniq, inv = np.unique(ids, return_inverse=True)
    inv = inv.reshape(ids.shape)
    lengths = np.array([len(trainee.token_ids[i]) for i in uniq])
    order = np.argsort(-lengths, kind="stable")
    torch.manual_seed(3)  # the reference: the same mini-batches, embedded once with gradients
    emb = torch.cat([trainee.embed(uniq[order[i : i + 5]]) for i in range(0, len(order), 5)])
    reference = batch_loss(loss_fn, emb[torch.from_numpy(np.argsort(order))], inv, None)
    (reference * 0.5).backward()
    expected = gradients(trainee)
    torch.manual_seed(3)
    loss, backward = gradcache.cached(
        trainee.embed, uniq, lengths, 5, lambda e: batch_loss(loss_fn, e, inv, None)
    )
    backward(0.5)
    got = gradients(trainee)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=1e-4), name


def test_a_run_with_mini_batches_ends_with_the_weights_of_a_plain_run(tmp_path, tiny_model):
    no_dropout(tiny_model)
    cfg = dict(kind="pairs", shape="full", epochs=1, batch_size=12, validation_fraction=0.0)
    cfg.update(embedding_loss="info_nce", learning_rate=1e-3)
    plain = fit(tmp_path, tiny_model, PAIRS, name="plain", **cfg)
    cached = fit(tmp_path, tiny_model, PAIRS, name="cached", mini_batch_size=4, **cfg)
    # Mini-batches sum the same gradients in another order, so they differ in the last float bits;
    # Adam moves every weight by about the learning rate (1e-3) per step whatever its gradient's
    # size, which turns that rounding in a near-zero gradient into up to ~1.5e-6 (seen on
    # AVX-512 CPUs). A wrong gradient would differ by the step itself: 1e-5 is 1% of one step.
    assert_same_weights(weights(plain), weights(cached), atol=1e-5)
    before = load_file(str(tiny_model / "model.safetensors"))
    after = weights(plain)
    moved = [k for k in after if k in before and not torch.allclose(before[k], after[k])]
    assert moved  # the step did change the weights, so equal weights say something


def test_recomputed_activations_end_with_the_weights_of_kept_ones(
    tmp_path, tiny_model, monkeypatch
):
    """When a batch's activations would not fit in a third of the free memory they are
    recomputed in the backward pass: slower, never different (dropout masks replayed)."""
    from jammi_sql.training import trainee as T

    seen = []
    real = T.needs_recompute

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(T, "needs_recompute", spy)
    cfg = dict(kind="pairs", shape="adapters", epochs=1, batch_size=12, validation_fraction=0.0)
    kept = fit(tmp_path, tiny_model, PAIRS, name="kept", **cfg)
    monkeypatch.setattr(T, "free_memory", lambda device: 1 << 20)  # 1 MiB free
    recomputed = fit(tmp_path, tiny_model, PAIRS, name="recomputed", **cfg)
    assert seen == [False, True]
    assert_same_weights(weights(kept), weights(recomputed))
    assert [r.metrics["activations"] for r in (kept, recomputed)] == ["kept", "recomputed"]
    assert kept.metrics["device"] == "cpu"  # the job's metrics say where and how it trained


def test_activation_estimate_grows_with_the_batch_and_its_longest_text(tiny_model, monkeypatch):
    from transformers import AutoConfig

    from jammi_sql.training import trainee as T
    from jammi_sql.training.trainee import activation_bytes, needs_recompute

    config = AutoConfig.from_pretrained(str(tiny_model))
    small, more_rows, longer = (
        activation_bytes(config, t, n) for t, n in [(64, 8), (128, 8), (128, 16)]
    )
    assert 0 < small < more_rows < longer
    # MiniLM-L6's shape, 32 pairs at 256 + 60 tokens: about 3.9 GB (5.1 GB peak RSS measured)
    config.update(
        dict(hidden_size=384, intermediate_size=1536, num_attention_heads=12, num_hidden_layers=6)
    )
    assert 3.5e9 < activation_bytes(config, 32 * 316, 256) < 4.5e9
    for free, recompute in [(24e9, False), (8e9, True)]:  # kept below a third of free memory
        monkeypatch.setattr(T, "free_memory", lambda device, free=free: free)
        assert needs_recompute(config, 32 * 316, 256, CPU) is recompute


def test_free_memory_counts_reclaimable_cache_and_stays_within_a_container_limit(
    tmp_path, monkeypatch
):
    """Free memory is what the kernel can hand out now (MemAvailable, page cache included, not
    MemFree), never more than a cgroup's memory.max leaves; a GPU reports its own."""
    from jammi_sql.training import memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 24000000 kB\nMemFree: 1000000 kB\nMemAvailable: 20000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    monkeypatch.setattr(memory, "CGROUP", cgroup)
    assert memory.free_memory(CPU) == 20000000 * 1024  # no cgroup files: no limit
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text(str(3 << 30))
    assert memory.free_memory(CPU) == 20000000 * 1024  # 'max': no limit
    (cgroup / "memory.max").write_text(str(8 << 30))
    assert memory.free_memory(CPU) == 5 << 30  # the container's 8 GiB, 3 GiB of it used
    meminfo.unlink()  # not Linux: the OS's own figure, or half the physical memory
    assert 0 < memory.free_memory(CPU) <= 5 << 30
