"""Retrieval and similarity metrics over precomputed embeddings, in plain numpy.

The definitions are those of sentence-transformers' ``EmbeddingSimilarityEvaluator`` and
``InformationRetrievalEvaluator`` (binary relevance, ties ranked by ascending doc id), so our
figures can be printed beside theirs. Only one difference is deliberate: as BEIR and MTEB do,
a query is never its own candidate (``ignore_identical_ids``). This module knows nothing of
DuckDB or torch: the caller embeds the texts and hands over arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# torch.nn.functional.normalize's eps: a zero vector stays zero and scores 0 against anything.
_EPS = 1e-12
# Rankings are cut at this depth: recall@100 and map@100 need no more.
DEPTH = 100


def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in float32 or wider."""
    x = np.asarray(x)
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (scipy.stats.rankdata's 'average')."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_run = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    run = np.cumsum(starts_run) - 1
    starts = np.flatnonzero(starts_run)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + 1 + ends) / 2.0)[run]  # mean of ranks starts+1 .. ends
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when fewer than two pairs or either side is constant."""
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if len(x) > 1 and denom > 0 else float("nan")


def similarity_metrics(a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> dict:
    """Correlate the cosine similarity of each pair ``(a[i], b[i])`` with its gold score.

    ``a`` and ``b`` are ``(n, d)`` arrays, not necessarily normalized; ``scores`` has ``n``
    entries. Returns ``{"spearman": float, "pearson": float, "n": int}``; Spearman ranks ties
    by their average rank, as ``scipy.stats.spearmanr`` does. A correlation is NaN when it is
    undefined (fewer than two pairs, or constant scores).
    """
    a, b = np.asarray(a), np.asarray(b)
    gold = np.asarray(scores, dtype=np.float64).reshape(-1)
    if a.ndim != 2 or a.shape != b.shape or len(gold) != len(a):
        raise ValueError(
            f"expected two (n, d) arrays of one shape and n scores; got {a.shape}, {b.shape} "
            f"and {len(gold)} scores"
        )
    cosine = (_normalize(a).astype(np.float64) * _normalize(b)).sum(axis=1)
    return {
        "spearman": _pearson(_average_ranks(gold), _average_ranks(cosine)),
        "pearson": _pearson(gold, cosine),
        "n": len(gold),
    }


def _keep_best(scores: np.ndarray, pos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` columns of each row by (score descending, column), sorted.

    Among equal scores the columns must already be in ascending ``pos`` order; then the
    earlier column, hence the lower position, wins, and the result keeps that property.
    """
    m = scores.shape[1]
    if m > k:
        kth = np.partition(scores, m - k, axis=1)[:, m - k : m - k + 1]  # k-th largest, (Q, 1)
        above = scores > kth
        tied = scores == kth
        room = k - above.sum(axis=1, keepdims=True)
        keep = above | (tied & (np.cumsum(tied, axis=1) <= room))  # exactly k per row
        scores = scores[keep].reshape(len(scores), k)
        pos = pos[keep].reshape(len(pos), k)
    by_score = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, by_score, 1), np.take_along_axis(pos, by_score, 1)


def top_k(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    k: int,
    chunk_size: int = 8192,
    *,
    order: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    query_chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` corpus rows most cosine-similar to each query, best first.

    Returns ``(scores, indices)``, both ``(n_queries, min(k, n_docs))``; ``indices`` are rows of
    ``corpus_emb``. The corpus is scored ``chunk_size`` rows at a time and merged into a running
    top-k, over blocks of ``query_chunk_size`` queries, so memory stays near
    ``query_chunk_size x (chunk_size + k)`` scores whatever the corpus size.

    Equal scores rank the row that comes first in ``order`` (a permutation of the corpus rows;
    default: row order) first, so results do not depend on ``chunk_size``. ``exclude`` gives, per
    query, one corpus row to leave out (-1 for none): it scores ``-inf`` and so ranks last.
    """
    queries = _normalize(query_emb)
    corpus_emb = np.asarray(corpus_emb)
    n_docs = len(corpus_emb)
    k = max(0, min(k, n_docs))
    if chunk_size < 1 or query_chunk_size < 1:
        raise ValueError("chunk_size and query_chunk_size must be at least 1")
    # Work in positions along `order`, so that a lower position is the tie-break winner.
    order = np.arange(n_docs) if order is None else np.asarray(order, dtype=np.int64)
    excluded_pos = None
    if exclude is not None:
        position_of = np.empty(n_docs, dtype=np.int64)
        position_of[order] = np.arange(n_docs)
        exclude = np.asarray(exclude, dtype=np.int64)
        excluded_pos = np.where(exclude >= 0, position_of[np.maximum(exclude, 0)], -1)

    all_scores = np.empty((len(queries), k), dtype=queries.dtype)
    all_pos = np.empty((len(queries), k), dtype=np.int64)
    if k == 0:
        return all_scores, all_pos
    for q0 in range(0, len(queries), query_chunk_size):
        block = queries[q0 : q0 + query_chunk_size]
        best = np.empty((len(block), 0), dtype=block.dtype)
        best_pos = np.empty((len(block), 0), dtype=np.int64)
        for c0 in range(0, n_docs, chunk_size):
            pos = np.arange(c0, min(c0 + chunk_size, n_docs))
            chunk = _normalize(corpus_emb[order[pos]])
            scores = block @ chunk.T  # (Q, C)
            scores[np.isnan(scores)] = -np.inf
            if excluded_pos is not None:
                ex = excluded_pos[q0 : q0 + query_chunk_size]
                rows = np.flatnonzero((ex >= c0) & (ex < c0 + len(pos)))
                scores[rows, ex[rows] - c0] = -np.inf
            # Earlier chunks hold lower positions, so column order is position order on ties.
            merged_pos = np.hstack([best_pos, np.broadcast_to(pos, scores.shape)])
            best, best_pos = _keep_best(np.hstack([best, scores]), merged_pos, k)
        all_scores[q0 : q0 + len(block)] = best
        all_pos[q0 : q0 + len(block)] = best_pos
    return all_scores, order[all_pos]


def _hit_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int):
    """Metrics from ``hits`` (Q, max(100, k)), 1.0 where a rank holds a relevant doc.

    Returns the averaged metrics, each query's NDCG@10 and its first relevant rank in the top
    100 (0: none there).
    """
    width = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, width + 2))

    def ndcg_at(cut: int) -> np.ndarray:
        ideal_dcg = np.cumsum(discount[:cut])[np.minimum(n_relevant, cut).astype(np.int64) - 1]
        return (hits[:, :cut] * discount[:cut]).sum(axis=1) / ideal_dcg

    def mrr_at(first: np.ndarray, cut: int) -> np.ndarray:
        return np.where((first >= 1) & (first <= cut), 1.0 / np.maximum(first, 1), 0.0)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else float("nan")

    ndcg = ndcg_at(10)
    top = hits[:, :DEPTH]
    first = np.where(top.any(axis=1), top.argmax(axis=1) + 1, 0)  # 0: none in the top 100
    first_k = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0) if k > DEPTH else first
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, DEPTH + 1)
    average_precision = (precision_at_rank * top).sum(axis=1) / np.minimum(n_relevant, DEPTH)
    metrics = {
        "ndcg_at_10": mean(ndcg),
        "mrr_at_10": mean(mrr_at(first, 10)),
        "recall_at_1": mean(hits[:, :1].sum(axis=1) / n_relevant),
        "recall_at_10": mean(hits[:, :10].sum(axis=1) / n_relevant),
        "recall_at_100": mean(top.sum(axis=1) / n_relevant),
        "map_at_100": mean(average_precision),
        "n_queries": len(hits),
        "k": k,
        "ndcg_at_k": mean(ndcg_at(k)),
        "mrr_at_k": mean(mrr_at(first_k, k)),
        "recall_at_k": mean(hits[:, :k].sum(axis=1) / n_relevant),
    }
    return metrics, ndcg, first


@dataclass(frozen=True)
class RetrievalResult:
    """Averaged metrics, one row per evaluated query, and how many queries had no qrels.

    ``per_query`` rows are ``(query_id, ndcg_at_10, first_relevant_rank)``, the rank being
    1-based within the top 100, or None when no relevant doc is there.
    """

    metrics: dict[str, float]
    per_query: list[tuple[str, float, int | None]] = field(default_factory=list)
    skipped_queries: int = 0


def retrieval_metrics(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    query_ids: list[str],
    doc_ids: list[str],
    relevant: dict[str, set[str]],
    *,
    chunk_size: int = 8192,
    ignore_identical_ids: bool = True,
    k: int = 10,
) -> RetrievalResult:
    """Rank the corpus for each query by cosine similarity and score the ranking.

    Metrics, as sentence-transformers' ``InformationRetrievalEvaluator`` defines them with
    binary relevance: ``recall_at_{1,10,100}`` = relevant docs in the top k / all relevant docs;
    ``mrr_at_10`` = 1 / rank of the first relevant doc in the top 10 (else 0); ``ndcg_at_10``
    with the ideal DCG of ``min(|relevant|, 10)`` hits; ``map_at_100`` = sum of precision@rank
    over relevant hits in the top 100, divided by ``min(|relevant|, 100)``. Relevant ids absent
    from the corpus still count in the denominators. Equal scores rank the lower doc id first.

    Queries with no relevant doc in ``relevant`` are left out of the averages and counted in
    ``skipped_queries``; with none left, every average is NaN. With ``ignore_identical_ids``
    the doc whose id equals the query id is never a candidate for that query (BEIR, MTEB).
    ``k`` adds ``ndcg_at_k``, ``mrr_at_k`` and ``recall_at_k`` at a cut-off of your choice.
    """
    if len(query_emb) != len(query_ids) or len(corpus_emb) != len(doc_ids):
        raise ValueError(
            f"{len(query_emb)} query embeddings for {len(query_ids)} query ids, "
            f"{len(corpus_emb)} corpus embeddings for {len(doc_ids)} doc ids: they must match"
        )
    row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    if len(row_of) != len(doc_ids):
        raise ValueError("doc_ids must be unique")
    kept = [i for i, qid in enumerate(query_ids) if relevant.get(qid)]
    exclude = None
    if ignore_identical_ids:
        exclude = np.array([row_of.get(query_ids[i], -1) for i in kept], dtype=np.int64)
    id_order = np.array(sorted(range(len(doc_ids)), key=doc_ids.__getitem__), dtype=np.int64)
    # One extra candidate, since the excluded doc may take a place in the top 100.
    width = max(DEPTH, k)
    depth = width + (exclude is not None)
    query_rows = np.asarray(query_emb)[np.array(kept, dtype=np.int64)]
    _, ranked = top_k(query_rows, corpus_emb, depth, chunk_size, order=id_order, exclude=exclude)

    hits = np.zeros((len(kept), width))  # (Q, max(100, k)): 1.0 where that rank is relevant
    n_relevant = np.empty(len(kept))
    for row, i in enumerate(kept):
        gold = relevant[query_ids[i]]
        docs = [j for j in ranked[row] if exclude is None or j != exclude[row]][:width]
        hits[row, : len(docs)] = [doc_ids[j] in gold for j in docs]
        n_relevant[row] = len(gold)

    metrics, ndcg, first = _hit_metrics(hits, n_relevant, k)
    per_query = [
        (query_ids[i], float(ndcg[row]), int(first[row]) or None) for row, i in enumerate(kept)
    ]
    return RetrievalResult(metrics, per_query, skipped_queries=len(query_ids) - len(kept))
