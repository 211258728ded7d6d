"""Symmetric InfoNCE: each query must pick its document, and each document its query.

Purpose: learn retrieval from (query, document) pairs with in-batch negatives in both
directions: query -> document as in MultipleNegativesRanking, plus document -> query, which
keeps the document side from collapsing onto a few hubs. The temperature sets how sharply
the softmax separates the positive from the negatives.

Formula, for queries q_i, documents d_j (the batch's positives, then any hard negatives) and
s(x, y) = cos(x, y) / temperature:

    loss = 1/2 mean_i -log( exp(s(q_i, d_i)) / sum_j exp(s(q_i, d_j)) )       query -> document
         + 1/2 mean_i -log( exp(s(d_i, q_i)) / sum_j exp(s(d_i, q_j)) )       document -> query

temperature = 0.05 (the scale 20 of MultipleNegativesRanking). Hard negatives take part in the
query -> document direction only (they have no query of their own). As in
MultipleNegativesRanking, a candidate that is the same text as the row's positive, or belongs to
another row with the same query, is no negative and is masked out, in both directions.

Columns: ``[anchor, positive]`` or ``[anchor, positive, negative]``.
Paper: van den Oord et al., "Representation Learning with Contrastive Predictive Coding" (2018),
arXiv:1807.03748; symmetric as in Radford et al., CLIP (2021), arXiv:2103.00020. Equal to
sentence-transformers' ``MultipleNegativesSymmetricRankingLoss`` with scale = 1 / temperature.
"""

from __future__ import annotations

import torch
from torch import nn

from .mnrl import duplicate_mask


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None = None,
        *,
        anchor_ids: torch.Tensor | None = None,
        positive_ids: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings (B, D) each; ``*_ids`` (B,) identify texts, so equal ids mean equal texts."""
        candidates = positives if negatives is None else torch.cat([positives, negatives])
        q = nn.functional.normalize(anchors, dim=-1)
        c = nn.functional.normalize(candidates, dim=-1)
        logits = (q @ c.T) / self.temperature  # (B, B) or (B, 2B)
        n = len(anchors)
        target = torch.arange(n, device=logits.device)
        if positive_ids is not None:
            same = duplicate_mask(n, anchor_ids, positive_ids, negative_ids)  # (B, C)
            logits = logits.masked_fill(same, float("-inf"))
        # (B, B): document i against every query j. The mask of the first B columns is
        # symmetric (same positive, or same query), so it carries over to this direction.
        backward = logits[:, :n].T
        forward_loss = nn.functional.cross_entropy(logits, target)
        backward_loss = nn.functional.cross_entropy(backward, target)
        return (forward_loss + backward_loss) / 2
