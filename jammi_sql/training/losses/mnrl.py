"""MultipleNegativesRanking: each anchor must pick its own positive among the batch's candidates.

Purpose: learn retrieval from (anchor, positive) pairs alone; every other positive in the
batch (and every hard negative, when given) serves as a negative for free.

Formula, for anchors a_i, candidates c_j (the batch's positives, then any negatives):

    loss = mean_i  -log( exp(scale * cos(a_i, p_i)) / sum_j exp(scale * cos(a_i, c_j)) )

with scale = 20. A candidate that is the same text as a_i's positive, or the positive of
another row with the same anchor text, is not a negative: it is masked out of the sum
(duplicates in the data would otherwise teach the model to push a text away from itself).

Columns: ``[anchor, positive]`` or ``[anchor, positive, negative]``.
Paper: Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply"
(2017), arXiv:1705.00652; as sentence-transformers' ``MultipleNegativesRankingLoss``.
"""

from __future__ import annotations

import torch
from torch import nn


class MultipleNegativesRankingLoss(nn.Module):
    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

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
        a = nn.functional.normalize(anchors, dim=-1)
        c = nn.functional.normalize(candidates, dim=-1)
        logits = self.scale * (a @ c.T)  # (B, B) or (B, 2B)
        n = len(anchors)
        target = torch.arange(n, device=logits.device)
        if positive_ids is not None:
            same = duplicate_mask(n, anchor_ids, positive_ids, negative_ids)
            logits = logits.masked_fill(same, float("-inf"))
        return nn.functional.cross_entropy(logits, target)


def duplicate_mask(
    n: int,
    anchor_ids: torch.Tensor | None,
    positive_ids: torch.Tensor,
    negative_ids: torch.Tensor | None,
) -> torch.Tensor:
    """(B, C) True where candidate j is no negative of row i: a copy of i's positive, or the
    positive of another row with i's anchor. The diagonal (i's own positive) stays False."""
    cand_ids = positive_ids if negative_ids is None else torch.cat([positive_ids, negative_ids])
    same = cand_ids[None, :] == positive_ids[:, None]  # (B, C): a copy of my positive
    if anchor_ids is not None:  # another positive of my own anchor
        same[:, :n] |= anchor_ids[:, None] == anchor_ids[None, :]  # (B, B)
    target = torch.arange(n, device=same.device)
    same[target, target] = False  # my own positive stays the target
    return same
