"""Matryoshka: the same loss at several truncated widths, so the first d dimensions of an
embedding work on their own.

Purpose: embeddings that can be cut to 256, 128 or 64 dimensions for cheaper storage and
search, losing little. The wrapped loss sees each column truncated to its first d dimensions,
for each d in ``dims`` (the full width included), and the losses are averaged (the mean keeps
the loss on the scale of the wrapped one; sentence-transformers sums them, which only scales
the gradient).

Formula: loss = mean_{d in dims} L(a[:, :d], b[:, :d], ...)

Columns: those of the wrapped loss.
Paper: Kusupati et al., "Matryoshka Representation Learning" (2022), arXiv:2205.13147; as
sentence-transformers' ``MatryoshkaLoss``.
"""

from __future__ import annotations

from torch import nn


class MatryoshkaLoss(nn.Module):
    def __init__(self, loss: nn.Module, dims: list[int]):
        super().__init__()
        self.loss = loss
        self.dims = sorted(set(dims), reverse=True)
