"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): a row's fused score
is the sum over the ranked lists it appears in of weight / (rrf_k + rank), ranks from 1.
It needs no score calibration between lists, which is why BM25 and cosine fuse well by it.
The SQL function ``rrf(ranks, k)`` is the same sum, for any ranked lists in SQL."""

from __future__ import annotations

import numpy as np


def fuse(
    lists: list[np.ndarray], weights: list[float], rrf_k: float
) -> tuple[np.ndarray, np.ndarray]:
    """(items, fused scores), best first; each list holds items best first. Ties keep the
    order of first appearance (the first list's order first)."""
    items = np.concatenate([np.asarray(items, dtype=np.int64) for items in lists])
    if len(items) == 0:
        return items, np.zeros(0)
    gains = np.concatenate(
        [
            w / (rrf_k + np.arange(1, len(items_) + 1))
            for items_, w in zip(lists, weights, strict=True)
        ]
    )
    unique, first, inverse = np.unique(items, return_index=True, return_inverse=True)
    scores = np.bincount(inverse, weights=gains, minlength=len(unique))
    order = np.lexsort((first, -scores))  # by score, then by first appearance
    return unique[order], scores[order]
