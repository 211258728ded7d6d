"""Triplet: an anchor must be closer to its positive than to its negative, by a margin.

Purpose: learn from (anchor, positive, negative) triplets, e.g. mined hard negatives.

Formula, with Euclidean distance d:

    loss = mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)        margin = 5

The margin is sentence-transformers' default. On unit-length embeddings d is at most 2, so
with margin 5 every triplet keeps contributing: the loss becomes a linear ranking of
d(a, p) against d(a, n), which is what ``TripletLoss`` does on normalized models too.

Columns: ``[anchor, positive, negative]``.
Paper: Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering"
(2015), arXiv:1503.03832; as sentence-transformers' ``TripletLoss``.
"""

from __future__ import annotations

import torch
from torch import nn


class TripletLoss(nn.Module):
    def __init__(self, margin: float = 5.0):
        super().__init__()
        self.margin = margin

    def forward(
        self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """Embeddings (B, D) each."""
        d_pos = nn.functional.pairwise_distance(anchors, positives)  # (B,)
        d_neg = nn.functional.pairwise_distance(anchors, negatives)  # (B,)
        return torch.relu(d_pos - d_neg + self.margin).mean()
