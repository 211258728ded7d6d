"""The losses as invariants on 3x4 tensors, and agreement with sentence-transformers."""

from __future__ import annotations

import math

import pytest
import torch

from jammi_sql.training.losses import (
    CoSENTLoss,
    InfoNCELoss,
    MultipleNegativesRankingLoss,
    TripletLoss,
)


def toward(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """``b`` moved a fraction ``t`` of the way to ``a`` (t < 0 moves it away)."""
    return b + t * (a - b)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(3, 4, generator=g) for _ in range(3))


def test_cosent_falls_when_high_scored_pairs_move_closer(batch):
    a, b, _ = batch
    scores = torch.tensor([5.0, 0.0, 0.0])  # pair 0 should be the most similar
    loss = CoSENTLoss()
    base = loss(a, b, scores)
    closer = b.clone()
    closer[0] = toward(a[0], b[0], 0.5)
    apart = b.clone()
    apart[0] = toward(a[0], b[0], -1.0)
    assert loss(a, closer, scores) < base < loss(a, apart, scores)


def test_cosent_is_zero_when_all_scores_are_equal(batch):
    a, b, _ = batch
    assert CoSENTLoss()(a, b, torch.ones(3)).item() == 0.0


def test_mnrl_falls_when_positives_move_closer(batch):
    a, p, _ = batch
    loss = MultipleNegativesRankingLoss()
    base = loss(a, p)
    assert loss(a, toward(a, p, 0.5)) < base < loss(a, toward(a, p, -1.0))


def test_triplet_falls_when_positives_move_closer(batch):
    a, p, n = batch
    loss = TripletLoss()
    base = loss(a, p, n)
    assert loss(a, toward(a, p, 0.5), n) < base < loss(a, toward(a, p, -1.0), n)


def test_info_nce_falls_when_positives_move_closer(batch):
    a, p, n = batch
    loss = InfoNCELoss()
    assert loss(a, toward(a, p, 0.5)) < loss(a, p) < loss(a, toward(a, p, -1.0))
    assert loss(a, toward(a, p, 0.5), n) < loss(a, p, n) < loss(a, toward(a, p, -1.0), n)


def test_info_nce_is_the_mean_of_both_directions(batch):
    a, p, _ = batch
    cos = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T
    target = torch.arange(3)
    for t in (0.05, 0.5):
        ce = torch.nn.functional.cross_entropy
        expected = (ce(cos / t, target) + ce(cos.T / t, target)) / 2
        assert torch.allclose(InfoNCELoss(t)(a, p), expected)
    # the document -> query direction counts: swapping the sides gives the same loss
    assert torch.allclose(InfoNCELoss()(a, p), InfoNCELoss()(p, a))
    assert not torch.allclose(
        MultipleNegativesRankingLoss()(a, p), MultipleNegativesRankingLoss()(p, a)
    )


def test_info_nce_masks_a_copy_of_the_positive_in_both_directions(batch):
    a, p, _ = batch
    p = p.clone()
    p[1] = p[0]
    ids = torch.tensor([0, 0, 2])
    masked = InfoNCELoss()(a, p, positive_ids=ids)
    cos = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T
    logits = cos / 0.05
    logits[0, 1] = logits[1, 0] = -math.inf
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits, torch.arange(3)) + ce(logits.T, torch.arange(3))) / 2
    assert torch.allclose(masked, expected)


def test_matryoshka_is_the_mean_of_the_loss_at_each_width(batch):
    from jammi_sql.training.losses import build, compute

    a, p, n = batch
    for name, columns in (("multiple_negatives_ranking", [a, p, n]), ("triplet", [a, p, n])):
        loss = build(name, matryoshka_dims=[4, 2, 2])
        plain = build(name)
        expected = (compute(plain, columns) + compute(plain, [c[:, :2] for c in columns])) / 2
        assert torch.allclose(compute(loss, columns), expected)
        assert not torch.allclose(compute(loss, columns), compute(plain, columns))


def test_mnrl_does_not_treat_a_copy_of_the_positive_as_a_negative(batch):
    a, p, _ = batch
    p = p.clone()
    p[1] = p[0]  # rows 0 and 1 share one positive text
    ids = torch.tensor([0, 0, 2])
    loss = MultipleNegativesRankingLoss()
    masked = loss(a, p, positive_ids=ids)
    unmasked = loss(a, p)
    # Row 0 and 1's copy scores exactly like its own positive: unmasked, that costs log 2 at least.
    assert masked < unmasked
    # Masked, the loss equals a batch in which row 1 never offered its copy to rows 0 and 2.
    logits = (
        20 * torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T
    )
    logits[0, 1] = logits[1, 0] = -math.inf
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(masked, expected)


def test_mnrl_does_not_treat_another_positive_of_the_same_anchor_as_a_negative(batch):
    a, p, _ = batch
    a = a.clone()
    a[1] = a[0]  # one anchor, two positives
    loss = MultipleNegativesRankingLoss()
    masked = loss(a, p, anchor_ids=torch.tensor([0, 0, 2]), positive_ids=torch.tensor([0, 1, 2]))
    logits = (
        20 * torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T
    )
    logits[0, 1] = logits[1, 0] = -math.inf
    assert torch.allclose(masked, torch.nn.functional.cross_entropy(logits, torch.arange(3)))


def test_mnrl_masks_hard_negatives_that_equal_the_positive(batch):
    a, p, n = batch
    n = n.clone()
    n[2] = p[0]
    ids_p, ids_n = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 0])
    loss = MultipleNegativesRankingLoss()
    masked = loss(a, p, n, positive_ids=ids_p, negative_ids=ids_n)
    assert masked < loss(a, p, n)


def test_losses_agree_with_sentence_transformers(batch):
    st = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    a, b, n = batch
    scores = torch.tensor([1.0, 3.0, 2.0])
    ours = [
        CoSENTLoss()(a, b, scores),
        MultipleNegativesRankingLoss()(a, b),
        MultipleNegativesRankingLoss()(a, b, n),
    ]
    ours += [TripletLoss()(a, b, n), InfoNCELoss(0.1)(a, b), InfoNCELoss(0.1)(a, b, n)]
    symmetric = st.MultipleNegativesSymmetricRankingLoss(None, scale=10.0)
    theirs = [
        st.CoSENTLoss(None).compute_loss_from_embeddings([a, b], scores),
        st.MultipleNegativesRankingLoss(None).compute_loss_from_embeddings([a, b], None),
        st.MultipleNegativesRankingLoss(None).compute_loss_from_embeddings([a, b, n], None),
        st.TripletLoss(None).compute_loss_from_embeddings([a, b, n], None),
        symmetric.compute_loss_from_embeddings([a, b], None),
        symmetric.compute_loss_from_embeddings([a, b, n], None),
    ]
    for x, y in zip(ours, theirs, strict=True):
        assert torch.allclose(x, y, atol=1e-5), (x, y)
