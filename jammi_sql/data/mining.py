"""Hard-negative mining: for each anchor, the corpus texts the model ranks high that are not its
positives, in corpus blocks, so no (anchors x corpus) score matrix is ever held.

The corpus streams past once, block by block; each anchor keeps a running top ``range_max`` of
the candidates that pass the filters (not a positive or the anchor itself, below the positive by
the margins, within the score bounds). Filtering inside each block, before the top-k, means the
rank range counts only eligible candidates: a strict margin thins the candidates but never
empties a window that the corpus could fill. Memory: one corpus block, the anchors, and
(anchors x range_max) running scores. Pure tensor maths; knows nothing of DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..inference.encoder import pick_device

ANCHOR_BLOCK = 2048  # anchors scored against a corpus block at a time: (2048 x block) scores


@dataclass(frozen=True)
class MiningSettings:
    num_negatives: int = 1
    range_min: int = 0  # eligible candidates skipped first (likely unlabelled positives)
    range_max: int = 100  # eligible candidates considered, counted from the top
    absolute_margin: float | None = None  # negative <= positive - margin
    relative_margin: float | None = None  # negative <= positive - |positive| * margin
    max_score: float | None = None
    min_score: float | None = None
    sampling: str = "top"  # 'top': the highest ranked; 'random': drawn from the window
    seed: int = 42

    def check(self) -> None:
        """A ``jammi:`` error for settings that can never give a negative."""
        if self.num_negatives < 1 or self.range_min < 0 or self.range_max < 1:
            raise InvalidArgumentError(
                "mine_hard_negatives needs num_negatives >= 1, range_min >= 0 and range_max >= 1; "
                f"got {self.num_negatives}, {self.range_min} and {self.range_max}"
            )
        if self.range_max - self.range_min < self.num_negatives:
            raise InvalidArgumentError(
                f"range_min := {self.range_min} and range_max := {self.range_max} leave "
                f"{max(0, self.range_max - self.range_min)} ranks, fewer than num_negatives := "
                f"{self.num_negatives}; raise range_max or lower range_min"
            )
        if self.sampling not in ("top", "random"):
            raise InvalidArgumentError(
                f"sampling := '{self.sampling}' is unknown; use 'top' (the highest ranked "
                "candidates) or 'random' (drawn from the rank range)"
            )
        ranges = {  # every numeric setting's meaningful range: (low, high, inclusive high)
            "absolute_margin": (0.0, 2.0, True, "a cosine gap, e.g. 0.05"),
            "relative_margin": (0.0, 1.0, False, "a share of the positive's score, e.g. 0.05"),
            "max_score": (-1.0, 1.0, True, "a cosine, e.g. 0.95"),
            "min_score": (-1.0, 1.0, True, "a cosine, e.g. 0.2"),
        }
        for name, (low, high, closed, what) in ranges.items():
            value = getattr(self, name)
            if value is None:
                continue
            inside = (
                np.isfinite(value) and low <= value and (value <= high if closed else value < high)
            )
            if not inside:
                raise InvalidArgumentError(
                    f"{name} := {value} is out of range; it is {what}, from {low:g} to {high:g}"
                    + ("" if closed else " (exclusive)")
                )
        if (
            self.min_score is not None
            and self.max_score is not None
            and self.min_score > self.max_score
        ):
            raise InvalidArgumentError(
                f"min_score := {self.min_score} is above max_score := {self.max_score}; no "
                "candidate can be in between: swap them"
            )
        if self.seed < 0:
            raise InvalidArgumentError(f"seed must be 0 or more, got {self.seed}")


@dataclass
class Mined:
    anchor: np.ndarray  # (m,) anchor index of each negative
    corpus: np.ndarray  # (m,) corpus row of each negative
    score: np.ndarray  # (m,) its cosine similarity to the anchor
    rank: np.ndarray  # (m,) 0-based position among the anchor's chosen negatives


def ceilings(
    positive_scores: np.ndarray, pair_anchor: np.ndarray, n_anchors: int, s: MiningSettings
) -> np.ndarray:
    """(anchors,) the highest score a negative of each anchor may have.

    With several positives, the hardest (lowest scored) one sets the margin, as
    sentence-transformers does.
    """
    hardest = np.full(n_anchors, np.inf, dtype=np.float64)
    np.minimum.at(hardest, pair_anchor, positive_scores.astype(np.float64))
    ceiling = np.full(n_anchors, np.inf)
    if s.absolute_margin is not None:
        ceiling = np.minimum(ceiling, hardest - s.absolute_margin)
    if s.relative_margin is not None:
        ceiling = np.minimum(ceiling, hardest - np.abs(hardest) * s.relative_margin)
    if s.max_score is not None:
        ceiling = np.minimum(ceiling, s.max_score)
    return ceiling


def mine(
    anchors: np.ndarray,
    ceiling: np.ndarray,
    excluded: tuple[np.ndarray, np.ndarray],
    corpus_blocks: Iterable[np.ndarray],
    s: MiningSettings,
    device: torch.device | None = None,
) -> Mined:
    """Negatives for each anchor: ``anchors`` (A, D), ``ceiling`` (A,) from :func:`ceilings`,
    ``excluded`` (anchor, corpus row) pairs that are never negatives, ``corpus_blocks``
    (n_b, D) float arrays in corpus-row order. Scores on ``device`` (CUDA when present)."""
    device = device or pick_device()
    a = torch.as_tensor(anchors, device=device).float()
    a = torch.nn.functional.normalize(a, dim=-1)
    n, k = len(a), s.range_max
    top = torch.full((n, k), -torch.inf, device=device)  # running best scores, descending
    top_row = torch.full((n, k), -1, dtype=torch.long, device=device)
    cap = torch.as_tensor(ceiling, dtype=torch.float32, device=device)[:, None]
    ex_anchor, ex_row = excluded
    order = np.argsort(ex_row, kind="stable")
    ex_anchor, ex_row = ex_anchor[order], ex_row[order]
    offset = 0
    for block in corpus_blocks:
        c = torch.nn.functional.normalize(torch.tensor(block, device=device).float(), dim=-1)
        lo, hi = np.searchsorted(ex_row, [offset, offset + len(c)])
        for start in range(0, n, ANCHOR_BLOCK):
            stop = min(n, start + ANCHOR_BLOCK)
            scores = a[start:stop] @ c.T  # (anchor block, corpus block)
            bad = (scores > cap[start:stop]) | scores.isnan()
            if s.min_score is not None:
                bad |= scores < s.min_score
            mine_ = (ex_anchor[lo:hi] >= start) & (ex_anchor[lo:hi] < stop)
            rows = torch.as_tensor(ex_anchor[lo:hi][mine_] - start, device=device)
            cols = torch.as_tensor(ex_row[lo:hi][mine_] - offset, device=device)
            bad[rows, cols] = True
            scores = scores.masked_fill(bad, -torch.inf)
            best, where = scores.topk(min(k, scores.shape[1]), dim=1)
            merged = torch.cat([top[start:stop], best], dim=1)
            merged_row = torch.cat([top_row[start:stop], where + offset], dim=1)
            top[start:stop], pick = merged.topk(k, dim=1)
            top_row[start:stop] = merged_row.gather(1, pick)
        offset += len(c)
    return _choose(top[:, s.range_min :], top_row[:, s.range_min :], s)


def _choose(scores: torch.Tensor, rows: torch.Tensor, s: MiningSettings) -> Mined:
    """``num_negatives`` of each anchor's window: the first, or drawn at random."""
    valid = torch.isfinite(scores)
    if s.sampling == "random":
        g = torch.Generator().manual_seed(s.seed)
        key = torch.rand(scores.shape, generator=g).to(scores.device)
        key = key.masked_fill(~valid, -1.0)
        pick = key.topk(min(s.num_negatives, key.shape[1]), dim=1).indices.sort(dim=1).values
    else:
        pick = torch.arange(min(s.num_negatives, scores.shape[1]), device=scores.device)
        pick = pick.expand(len(scores), -1)
    chosen, chosen_rows = scores.gather(1, pick), rows.gather(1, pick)
    ok = torch.isfinite(chosen).cpu().numpy()
    anchor = np.broadcast_to(np.arange(len(scores))[:, None], ok.shape)[ok]
    rank = (np.cumsum(ok, axis=1) - 1)[ok]
    return Mined(anchor, chosen_rows.cpu().numpy()[ok], chosen.cpu().numpy()[ok], rank)
