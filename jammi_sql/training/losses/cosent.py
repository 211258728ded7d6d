"""CoSENT: rank the pairs of a batch by cosine similarity in the order of their gold scores.

Purpose: learn from pairs with a graded similarity score (STS-style data); only the order of
the scores matters, not their scale.

Formula, for a batch of pairs (a_i, b_i) with gold scores y_i and s_i = cos(a_i, b_i):

    loss = log(1 + sum_{(i, j): y_i < y_j} exp(scale * (s_i - s_j)))        scale = 20

Columns: ``[text_a, text_b, score]``.
Paper: Su, "CoSENT: A more efficient sentence vector scheme than Sentence-BERT" (2022),
https://kexue.fm/archives/8847; as sentence-transformers' ``CoSENTLoss``.
"""

from __future__ import annotations

import torch
from torch import nn


class CoSENTLoss(nn.Module):
    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``a``, ``b``: (B, D) embeddings of each pair's two texts; ``scores``: (B,) gold scores."""
        cos = nn.functional.cosine_similarity(a, b, dim=-1) * self.scale  # (B,)
        diff = cos[:, None] - cos[None, :]  # (B, B): s_i - s_j
        lower = scores[:, None] < scores[None, :]  # (B, B): y_i < y_j, the pairs that count
        diff = diff.masked_fill(~lower, float("-inf"))
        zero = torch.zeros(1, dtype=diff.dtype, device=diff.device)  # the "1 +" inside the log
        return torch.logsumexp(torch.cat([zero, diff.reshape(-1)]), dim=0)
