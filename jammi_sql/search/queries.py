"""The three searches over an embedding table (semantic, keyword, hybrid), as ranked vids.

Each returns at most one row per (key, column): its best chunk. They read only the embedding
table and its indexes, never the source, except to apply a ``filter``. Semantic search uses
the table's HNSW index when it has one, and is exact otherwise, with ``exact := true``, with
Matryoshka ``dims``, and when a filter keeps few rows; a filter never leaves fewer than k rows
where k match (the index is asked for more, then exact search over the matches finishes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..catalog.context import Context
from ..catalog.models import canonical_id
from ..catalog.tables import EmbeddingTable, tables_epoch
from ..errors import InvalidArgumentError, NotFoundError
from . import filters, index, keyword, vectors
from .fusion import fuse

EXACT_BELOW = 0.02  # a filter keeping under this share of rows: exact search over them
CANDIDATES = 100  # each side's candidates that hybrid search fuses (at least k)


@dataclass
class Hits:
    """Ranked rows: ``vids[i]`` scored ``scores[i]``, best first, one per (key, column)."""

    vids: np.ndarray
    scores: np.ndarray

    def rows(self) -> list[dict]:
        return [
            {"vid": int(v), "score": float(s), "rank": rank}
            for rank, (v, s) in enumerate(zip(self.vids, self.scores, strict=True), 1)
        ]


# ---- which table --------------------------------------------------------------------
_DOCUMENT_MODEL: dict[tuple, str] = {}  # (database, model as typed) -> its documents' model id
_TABLES: dict[tuple, tuple[int, EmbeddingTable]] = {}  # (database, source, model) -> read at


def table_for(ctx: Context, source: str, model: str | None) -> EmbeddingTable:
    """The embedding table of ``source`` with ``model`` (a query-side head: its base's); with
    no model, the table of the source built last. Reads the catalog only, not the source.

    Every search asks this (twice: binding and running), so the model's resolution is
    remembered: a table exists only while its model does (remove_model refuses while a table
    uses it), so one catalog query finds a known pair; anything else takes the long way, which
    also words the errors."""
    epoch = tables_epoch()  # read before the catalog, so a write meanwhile is never cached
    held = _TABLES.get((ctx.catalog.database_key(), source, model))
    if held is not None and held[0] == epoch:
        return held[1]
    remembered = _DOCUMENT_MODEL.get((ctx.catalog.database_key(), model))
    if remembered is not None and remembered == canonical_id(model):  # not a query-side head
        table = ctx.catalog.get_embedding_table(source, remembered)
        if table is not None:
            _TABLES[(ctx.catalog.database_key(), source, model)] = (epoch, table)
            return table
    if ctx.catalog.get_source(source) is None:
        from ..data.sources import get_source

        get_source(ctx.catalog, source)  # raises: unknown source, naming the known ones
    if model is None:
        built = sorted(
            ctx.catalog.embedding_tables(source=source),
            key=lambda t: (t.updated_at is not None, t.updated_at),
        )
        if not built:
            raise NotFoundError(
                f"source '{source}' has no embeddings yet; keyword_search searches the texts "
                f"generate_text_embeddings stored: SELECT generate_text_embeddings('{source}', "
                "'<model>', ['<text column>'], '<key column>') first"
            )
        return built[-1]
    documents = ctx.models.resolve(ctx.models.document_model(model)).model_id
    table = ctx.catalog.get_embedding_table(source, documents)
    if table is None:
        raise NotFoundError(
            f"source '{source}' has no embeddings for model '{documents}'; run "
            f"SELECT generate_text_embeddings('{source}', '{model}', ['<text column>'], "
            "'<key column>') first"
        )
    _DOCUMENT_MODEL[(ctx.catalog.database_key(), model)] = documents
    return table


def query_vector(
    ctx: Context, table: EmbeddingTable, model: str, text: str | None, vector, dims: int | None
) -> np.ndarray:
    """The unit query vector: ``text`` embedded as a query, or ``vector`` as given."""
    if text is not None:
        from ..inference.infer import embed_texts

        q = embed_texts(ctx, model, [text], query=True)[0].astype(np.float32)
    elif vector is not None:
        q = np.asarray(vector, dtype=np.float32)
        width = table.dimensions
        if q.ndim != 1 or (len(q) != width and len(q) != dims) or not np.isfinite(q).all():
            raise InvalidArgumentError(
                f"the query vector has {q.size} dimensions; the embeddings of '{table.source}' "
                f"with '{table.model_id}' have {width}"
                + (f" (or dims := {dims})" if dims else "")
                + ": pass a FLOAT[] of that length, e.g. one made by encode_text_query"
            )
        if len(q) < width:  # a Matryoshka prefix: compared on its dims only
            q = np.concatenate([q, np.zeros(width - len(q), np.float32)])
    else:
        raise InvalidArgumentError(
            "the query must be text (VARCHAR) or a vector (FLOAT[]), not NULL"
        )
    if dims is not None and dims > table.dimensions:
        raise InvalidArgumentError(
            f"dims := {dims} must be a whole number from 1 to the model's width ({table.dimensions})"
        )
    norm = float(np.linalg.norm(q if dims is None else q[:dims]))
    if norm == 0.0:
        raise InvalidArgumentError("the query vector is all zeros; it has no direction to search")
    return q / float(np.linalg.norm(q))


# ---- one row per (key, column) ------------------------------------------------------
def _best_per_group(
    ctx: Context, table: EmbeddingTable, vids: np.ndarray, scores: np.ndarray, k: int
) -> Hits:
    """Keep each (key, column)'s best chunk (vids arrive best first), then the top k."""
    if table.chunk_tokens is None or len(vids) == 0:  # one row per (key, column) already
        return Hits(vids[:k], scores[:k])
    groups = vectors.groups_of(ctx.catalog, table.table_name, table.generation, vids)
    _, first = np.unique(groups, return_index=True)
    first = np.sort(first)[:k]
    return Hits(vids[first], scores[first])


# ---- semantic -----------------------------------------------------------------------
def semantic(
    ctx: Context,
    source: str,
    model: str,
    text: str | None,
    vector,
    k: int,
    dims: int | None = None,
    filter: str | None = None,
    exact: bool = False,
) -> Hits:
    table = table_for(ctx, source, model)
    q = query_vector(ctx, table, model, text, vector, dims)
    allowed = filters.allowed_vids(ctx, table, filter) if filter is not None else None
    if table.row_count == 0 or (allowed is not None and len(allowed) == 0):
        return Hits(np.zeros(0, np.int64), np.zeros(0))
    whole = dims is None or dims == table.dimensions
    selective = allowed is not None and len(allowed) < EXACT_BELOW * table.row_count
    hnsw = index.for_search(ctx, table) if whole and not exact and not selective else None
    if hnsw is not None:
        hits = _approximate(ctx, table, hnsw, q, k, allowed)
        if hits is not None:
            return hits
    return _exact(ctx, table, q, k, allowed, None if whole else dims)


def _exact(ctx, table, q, k, allowed, dims) -> Hits:
    stored = vectors.load(ctx.catalog, table.table_name, table.generation)
    rows = stored.rows_of(allowed) if allowed is not None else None
    available = len(stored.vids) if rows is None else len(rows)
    count = k if table.chunk_tokens is None else 4 * k
    while True:
        vids, scores = stored.top(q, count, rows, dims)
        hits = _best_per_group(ctx, table, vids, scores, k)
        if len(hits.vids) >= k or count >= available:
            return hits
        count *= 4


def _approximate(ctx, table, hnsw, q, k, allowed) -> Hits | None:
    """Top k from the index; None when a filter keeps too few of its candidates (then the
    caller searches the matching rows exactly)."""
    n = max(len(hnsw), 1)
    share = 1.0 if allowed is None else len(allowed) / n
    count = int(np.ceil((k if table.chunk_tokens is None else 4 * k) / share))
    for _ in range(3):
        vids, scores = index.search(hnsw, q, min(count, n))
        if allowed is not None:
            keep = np.isin(vids, allowed, assume_unique=True)
            vids, scores = vids[keep], scores[keep]
        hits = _best_per_group(ctx, table, vids, scores, k)
        if len(hits.vids) >= k or count >= n:
            return hits if allowed is None or len(hits.vids) >= k else None
        count *= 4
    return None


# ---- keyword and hybrid -------------------------------------------------------------
def keyword_hits(
    ctx: Context, source: str, model: str | None, query: str, k: int, filter: str | None = None
) -> Hits:
    """BM25 top k of the texts of the source's embedding table; rows sharing no word with the
    query are left out."""
    if query is None or not str(query).strip():
        raise InvalidArgumentError("keyword_search needs query text (words to look for)")
    table = table_for(ctx, source, model)
    vids, scores = keyword.scores(ctx, table, query)
    if filter is not None:
        keep = np.isin(vids, filters.allowed_vids(ctx, table, filter), assume_unique=True)
        vids, scores = vids[keep], scores[keep]
    matched = scores > 0
    vids, scores = vids[matched], scores[matched]
    count = min(len(vids), k if table.chunk_tokens is None else 4 * k)
    while True:
        best = np.argsort(-scores, kind="stable")[:count]
        hits = _best_per_group(ctx, table, vids[best], scores[best], k)
        if len(hits.vids) >= k or count >= len(vids):
            return Hits(hits.vids, hits.scores.astype(np.float64))
        count *= 4


def hybrid(
    ctx: Context,
    source: str,
    model: str,
    text: str | None,
    vector,
    k: int,
    filter: str | None = None,
    rrf_k: float = 60,
    keyword_weight: float = 1.0,
    vector_weight: float = 1.0,
    keyword_query: str | None = None,
) -> Hits:
    """Reciprocal rank fusion of semantic and keyword search, each asked for its top
    max(k, CANDIDATES): score = sum of weight / (rrf_k + rank) over the lists a row is in."""
    words = keyword_query if keyword_query is not None else text
    if words is None:
        raise InvalidArgumentError(
            "hybrid_search with a vector query needs the words for its keyword side: "
            "keyword_query := 'words to look for'"
        )
    for name, value in (("keyword_weight", keyword_weight), ("vector_weight", vector_weight)):
        if value < 0:
            raise InvalidArgumentError(f"{name} must be 0 or more, got {value}")
    if rrf_k < 0:
        raise InvalidArgumentError(f"rrf_k must be 0 or more (60 is usual), got {rrf_k}")
    depth = max(k, CANDIDATES)
    dense = semantic(ctx, source, model, text, vector, depth, filter=filter)
    table = table_for(ctx, source, model)
    sparse = keyword_hits(ctx, source, table.model_id, words, depth, filter)
    if table.chunk_tokens is None:
        vids, scores = fuse([dense.vids, sparse.vids], [vector_weight, keyword_weight], rrf_k)
        return Hits(vids[:k], scores[:k])
    # chunked: the two sides may pick different chunks of a text; fuse by (key, column)
    groups = [
        vectors.groups_of(ctx.catalog, table.table_name, table.generation, side.vids)
        for side in (dense, sparse)
    ]
    chunk = dict(zip(groups[1], sparse.vids, strict=True))
    chunk.update(zip(groups[0], dense.vids, strict=True))  # the dense side's chunk first
    fused, scores = fuse(groups, [vector_weight, keyword_weight], rrf_k)
    return Hits(np.array([chunk[g] for g in fused[:k]], dtype=np.int64), scores[:k])
