"""Training examples: validated rows, the loss they call for, a validation split, batches.

A :class:`TrainingSet` is what the state layer hands the engine: plain Python rows already
checked (no NULL texts, finite scores). This module knows nothing of DuckDB or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, InvalidArgumentError

KINDS = {"scored_pairs": 3, "pairs": 2, "triplets": 3}
TEXT_COLUMNS = {"scored_pairs": 2, "pairs": 2, "triplets": 3}
DEFAULT_LOSS = {
    "scored_pairs": "cosent",
    "pairs": "multiple_negatives_ranking",
    # the negative joins the batch's others: on held-out SciFact with one mined negative a
    # head gained +0.060 NDCG@10 this way against +0.050 with the triplet margin loss
    "triplets": "multiple_negatives_ranking",
}
# Which row kinds each loss can learn from, and the columns to pass when it cannot.
LOSS_KINDS = {
    "cosent": ("scored_pairs",),
    "multiple_negatives_ranking": ("pairs", "triplets"),
    "triplet": ("triplets",),
    "info_nce": ("pairs", "triplets"),
}
LOSS_COLUMNS = {
    "cosent": "[text_a, text_b, score]",
    "multiple_negatives_ranking": "[anchor, positive] or [anchor, positive, negative]",
    "triplet": "[anchor, positive, negative]",
    "info_nce": "[anchor, positive] or [anchor, positive, negative]",
}
# Cut-and-sort windows for length bucketing: this many micro-batches are shuffled together,
# sorted by length and cut, so a batch pads little yet its members are still a random draw.
BUCKET_WINDOW = 32


@dataclass
class TrainingSet:
    kind: str  # 'scored_pairs' (text_a, text_b, score) | 'pairs' (anchor, positive) | 'triplets'
    rows: list[tuple]  # already validated: no None texts, finite float scores

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_texts(self) -> int:
        """Text columns per row."""
        return TEXT_COLUMNS[self.kind]

    def scores(self) -> np.ndarray | None:
        if self.kind != "scored_pairs":
            return None
        return np.array([row[2] for row in self.rows], dtype=np.float32)


def make_training_set(kind: str, rows: list[tuple]) -> TrainingSet:
    """Validate raw rows into a :class:`TrainingSet`; NULL texts and bad scores are errors."""
    if kind not in KINDS:
        raise InvalidArgumentError(
            f"unknown training data kind '{kind}'; use one of {', '.join(KINDS)}"
        )
    checked = []
    width = KINDS[kind]
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"row {i + 1} has {len(row)} values; {kind} rows need {width}")
        texts = row[: TEXT_COLUMNS[kind]]
        if any(t is None for t in texts):
            raise DataError(
                f"row {i + 1} has a NULL text; filter NULLs out of the source first "
                "(e.g. add_source(..., format := 'query') with WHERE ... IS NOT NULL)"
            )
        texts = tuple(str(t) for t in texts)
        if kind == "scored_pairs":
            score = row[2]
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise DataError(
                    f"row {i + 1} has score {score!r}; scores must be numbers"
                ) from None
            if not math.isfinite(score):
                raise DataError(f"row {i + 1} has score {score!r}; scores must be finite numbers")
            texts = (*texts, score)
        checked.append(texts)
    if not checked:
        raise DataError("the training source has no rows; nothing to train on")
    return TrainingSet(kind, checked)


def default_loss(kind: str) -> str:
    """The loss a row kind trains with when ``embedding_loss`` is 'auto'."""
    return DEFAULT_LOSS[kind]


def resolve_loss(kind: str, embedding_loss: str = "auto") -> str:
    """The loss to use, or an error naming the columns that loss needs."""
    loss = default_loss(kind) if embedding_loss == "auto" else embedding_loss
    if loss not in LOSS_KINDS:
        raise InvalidArgumentError(
            f"unknown embedding_loss '{loss}'; use 'auto', "
            + ", ".join(f"'{x}'" for x in LOSS_KINDS)
        )
    if kind not in LOSS_KINDS[loss]:
        raise InvalidArgumentError(
            f"embedding_loss '{loss}' needs columns {LOSS_COLUMNS[loss]}, but the columns given "
            f"are {LOSS_COLUMNS[default_loss(kind)]}; pass those columns or use "
            f"embedding_loss := '{default_loss(kind)}' (or 'auto')"
        )
    return loss


def text_groups(ts: TrainingSet) -> list[list[int]]:
    """Rows joined by any shared text (union-find), each group as a list of row indices.

    Two rows that share a text (text_a or text_b; anchor or positive) land in one group:
    splitting by group, no validation pair shares a text with training. A triplet's negative
    does not join groups: negatives are often drawn from one small pool, which would make
    the whole set one group.
    """
    parent = list(range(len(ts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_row: dict[str, int] = {}
    for i, row in enumerate(ts.rows):
        for text in row[:2]:
            j = first_row.setdefault(text, i)
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(ts)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def split(ts: TrainingSet, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    """(train, validation), deterministic by ``seed``; no text appears on both sides.

    Whole groups of rows that share a text (see :func:`text_groups`) are drawn at random
    until the validation side holds about ``fraction`` of the rows. A group larger than half
    the wanted validation size stays in training, so one hub text cannot swallow the split.
    When that leaves validation empty (every group is large: several questions share each
    answer), the smallest groups are held out whole instead, up to twice the wanted size or a
    quarter of the rows, and never every group.
    """
    n_val_rows = int(round(len(ts) * fraction))
    groups = text_groups(ts)
    if fraction <= 0 or n_val_rows == 0 or len(groups) < 2:
        return ts, TrainingSet(ts.kind, [])
    order = np.random.default_rng(seed).permutation(len(groups))
    chosen: set[int] = set()
    for g in order:
        if len(chosen) >= n_val_rows:
            break
        if len(groups[g]) <= max(1, n_val_rows // 2):
            chosen.update(groups[g])
    if not chosen:
        chosen = _smallest_groups(groups, order, n_val_rows, len(ts))
    if not chosen or len(chosen) == len(ts):  # never leave nothing to train on
        return ts, TrainingSet(ts.kind, [])
    train = [row for i, row in enumerate(ts.rows) if i not in chosen]
    val = [ts.rows[i] for i in sorted(chosen)]
    return TrainingSet(ts.kind, train), TrainingSet(ts.kind, val)


def _smallest_groups(groups: list[list[int]], order: np.ndarray, wanted: int, n: int) -> set[int]:
    """Whole groups, smallest first (ties in ``order``), until about ``wanted`` rows are held
    out; at most ``max(2 * wanted, n // 4)`` rows and never the last group."""
    cap = max(2 * wanted, n // 4)
    by_size = sorted(order, key=lambda g: len(groups[g]))
    chosen: set[int] = set()
    for g in by_size[:-1]:
        if len(chosen) >= wanted or len(chosen) + len(groups[g]) > cap:
            break
        chosen.update(groups[g])
    return chosen


def why_no_validation(ts: TrainingSet, fraction: float) -> str:
    """Why :func:`split` held out no rows, in words for the job's metrics."""
    n_val_rows = int(round(len(ts) * fraction))
    if fraction <= 0:
        return "validation_fraction is 0"
    if n_val_rows == 0:
        return (
            f"{len(ts)} rows with validation_fraction {fraction:g} make no validation row "
            "(give more rows or a larger validation_fraction)"
        )
    groups = text_groups(ts)
    shared = (
        "rows that share a text (several questions with one answer, say) are kept on one side "
        "of the split, so that validation never sees a text that trained"
    )
    if len(groups) < 2:
        return f"{shared}, and shared texts join all {len(ts)} rows into one group"
    smallest = min(len(g) for g in groups)
    return (
        f"{shared}, and the {len(groups)} groups they form are too large to hold out (the "
        f"smallest has {smallest} of {len(ts)} rows); give rows with more distinct texts or a "
        "larger validation_fraction"
    )


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    lengths: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Row indices of one epoch's micro-batches, deterministic by (seed, epoch).

    With ``lengths`` (tokens per row), rows are shuffled, then sorted by length within
    windows of ``BUCKET_WINDOW`` batches and cut, and the batches shuffled again: a batch then
    pads only to similar lengths. Without, batches are plain random draws (what in-batch
    negatives need: bucketing by length would make the negatives easy).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    window = batch_size * BUCKET_WINDOW
    batches = []
    for w in range(0, n, window):
        chunk = order[w : w + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
