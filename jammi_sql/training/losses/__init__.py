"""The embedding losses, one per file, and how a batch's columns are fed to each.

Every loss is pure tensor maths on embeddings: ``forward`` takes (B, D) tensors, so it can be
tested on 3x4 tensors without a model.
"""

from __future__ import annotations

import torch
from torch import nn

from .cosent import CoSENTLoss
from .info_nce import InfoNCELoss
from .matryoshka import MatryoshkaLoss
from .mnrl import MultipleNegativesRankingLoss
from .triplet import TripletLoss

LOSSES: dict[str, type[nn.Module]] = {
    "cosent": CoSENTLoss,
    "multiple_negatives_ranking": MultipleNegativesRankingLoss,
    "triplet": TripletLoss,
    "info_nce": InfoNCELoss,
}
IN_BATCH_NEGATIVES = ("multiple_negatives_ranking", "info_nce")


def build(
    name: str, temperature: float | None = None, matryoshka_dims: list[int] | None = None
) -> nn.Module:
    """The loss ``name``; ``temperature`` applies to InfoNCE only; with ``matryoshka_dims`` (the
    full width among them) the loss is averaged over those truncated widths."""
    loss = InfoNCELoss(temperature) if name == "info_nce" and temperature else LOSSES[name]()
    return MatryoshkaLoss(loss, matryoshka_dims) if matryoshka_dims else loss


def compute(
    loss: nn.Module,
    columns: list[torch.Tensor],
    scores: torch.Tensor | None = None,
    text_ids: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Apply ``loss`` to one batch: ``columns`` holds one (B, D) tensor per text column.

    ``scores`` (B,) are the gold scores of scored pairs; ``text_ids`` one (B,) id tensor per
    column, equal ids meaning equal texts (for the duplicate masking of in-batch negatives).
    """
    if isinstance(loss, MatryoshkaLoss):
        each = [
            compute(loss.loss, [c[:, :d] for c in columns], scores, text_ids) for d in loss.dims
        ]
        return torch.stack(each).mean()
    if isinstance(loss, CoSENTLoss):
        return loss(columns[0], columns[1], scores)
    if isinstance(loss, (MultipleNegativesRankingLoss, InfoNCELoss)):
        ids = text_ids or [None] * len(columns)
        return loss(
            columns[0],
            columns[1],
            columns[2] if len(columns) > 2 else None,
            anchor_ids=ids[0],
            positive_ids=ids[1],
            negative_ids=ids[2] if len(ids) > 2 else None,
        )
    return loss(columns[0], columns[1], columns[2])


__all__ = [
    "LOSSES",
    "CoSENTLoss",
    "IN_BATCH_NEGATIVES",
    "InfoNCELoss",
    "MatryoshkaLoss",
    "MultipleNegativesRankingLoss",
    "TripletLoss",
    "build",
    "compute",
]
