"""evaluate_similarity and evaluate_retrieval: read sources, embed, score with evaluate.py.

Corpus embeddings go through the materialized-embeddings machinery, so a second
evaluation of the same (model, corpus) only embeds the queries.
"""

from __future__ import annotations

import numpy as np

from ..catalog.context import Context
from ..config import DEFAULT_K, DEFAULT_SIMILARITY_COLUMNS
from ..data.sources import get_source, is_numeric, quote_ident, relation, require_columns
from ..errors import DataError, InvalidArgumentError
from ..inference.infer import check_dims, embed_texts, model_dimensions
from ..search.embeddings import generate_text_embeddings


def evaluate_similarity(
    ctx: Context, model: str, source: str, columns: list[str] | None = None
) -> dict:
    from .metrics import similarity_metrics

    columns = list(columns or DEFAULT_SIMILARITY_COLUMNS)
    if len(columns) != 3:
        raise InvalidArgumentError("evaluate_similarity needs 3 columns: [text_a, text_b, score]")
    src = get_source(ctx.catalog, source)
    require_columns(src, columns[:2], text=True)
    require_columns(src, columns[2:])
    if not is_numeric(src.column_type(columns[2])):
        raise DataError(
            f"score column '{columns[2]}' of source '{source}' is {src.column_type(columns[2])}, not a number; "
            "cast it in a query source"
        )
    a, b, s = (quote_ident(c) for c in columns)
    rows = ctx.catalog.execute(
        f"SELECT {a}, {b}, {s}::DOUBLE FROM {relation(src)} WHERE {a} IS NOT NULL AND {b} IS NOT NULL "
        f"AND {s} IS NOT NULL"
    ).fetchnumpy()
    texts_a, texts_b, scores = (rows[k] for k in rows)
    if len(scores) < 2:
        raise DataError(
            f"source '{source}' has {len(scores)} complete rows; evaluate_similarity needs at least 2"
        )
    vectors = embed_texts(
        ctx, model, list(texts_a) + list(texts_b), bar=f"embedding pairs of {source}"
    )
    n = len(scores)
    return similarity_metrics(vectors[:n], vectors[n:], np.asarray(scores, dtype=np.float64))


def _id_text(ctx: Context, source: str, id_column: str, role: str) -> tuple:
    src = get_source(ctx.catalog, source)
    require_columns(src, [id_column])
    require_columns(src, ["text"], text=True)
    total, distinct, nulls = ctx.catalog.query(
        f"SELECT count(*), count(DISTINCT {id_column}), count(*) FILTER (WHERE {id_column} IS NULL) "
        f"FROM {relation(src)}"
    )[0]
    if total == 0:
        raise DataError(f"{role} source '{source}' is empty")
    if nulls:
        raise DataError(
            f"{role} source '{source}' has {nulls} NULL {id_column} values; every row needs an id"
        )
    if distinct < total:
        raise DataError(
            f"{role} source '{source}' has duplicate {id_column} values ({total - distinct} repeats)"
        )
    return src


def evaluate_retrieval(
    ctx: Context,
    model: str,
    queries: str,
    corpus: str,
    qrels: str,
    k: int = DEFAULT_K,
    per_query: str | None = None,
    dims: int | None = None,
) -> dict:
    from .metrics import retrieval_metrics

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidArgumentError(
            f"k must be a whole number of at least 1, e.g. k := 10; got {k!r}"
        )
    q_src = _id_text(ctx, queries, "query_id", "queries")
    c_src = _id_text(ctx, corpus, "doc_id", "corpus")
    r_src = get_source(ctx.catalog, qrels)
    require_columns(r_src, ["query_id", "doc_id", "score"])
    if not is_numeric(r_src.column_type("score")):
        raise DataError(
            f"qrels source '{qrels}' has score of type {r_src.column_type('score')}; scores must be numbers "
            "(score > 0 is relevant)"
        )
    qrel_rows = ctx.catalog.query(
        f"SELECT query_id::VARCHAR, doc_id::VARCHAR FROM {relation(r_src)} WHERE score > 0"
    )
    missing = ctx.catalog.query(
        f"SELECT DISTINCT r.doc_id::VARCHAR FROM {relation(r_src)} r ANTI JOIN {relation(c_src)} c "
        "ON r.doc_id::VARCHAR = c.doc_id::VARCHAR ORDER BY 1 LIMIT 6"
    )
    if missing:
        shown = ", ".join(m[0] for m in missing[:5])
        raise DataError(
            f"qrels '{qrels}' point at documents missing from corpus '{corpus}' (e.g. {shown}); "
            "fix the qrels or add those documents to the corpus"
        )
    relevant: dict[str, set[str]] = {}
    for qid, did in qrel_rows:
        relevant.setdefault(qid, set()).add(did)
    q = ctx.catalog.execute(
        f"SELECT query_id::VARCHAR AS id, text FROM {relation(q_src)} WHERE text IS NOT NULL ORDER BY id"
    ).fetchnumpy()
    if not relevant.keys() & set(q["id"]):
        raise DataError(
            f"qrels '{qrels}' name no relevant document (score > 0) for any query of '{queries}'; "
            "nothing can be evaluated: fill the qrels with (query_id, doc_id, score) rows"
        )
    ref = ctx.models.resolve(model)
    documents = ctx.models.document_model(ref.model_id)  # a query-side head: its base's corpus
    if dims is not None:  # checked before the corpus is embedded: an error writes nothing
        check_dims(dims, model_dimensions(ctx, ref.model_id))
    generate_text_embeddings(ctx, corpus, documents, ["text"], "doc_id")
    table = ctx.catalog.get_embedding_table(corpus, documents)
    c = ctx.catalog.arrow(f"SELECT key::VARCHAR AS id, embedding FROM {table.table_name}")
    doc_ids = c.column("id").to_pylist()
    doc_emb = c.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(doc_ids), -1)
    query_ids = list(q["id"])
    query_emb = embed_texts(
        ctx, ref.model_id, list(q["text"]), query=True, bar=f"embedding queries of {queries}"
    )
    if dims is not None:  # a Matryoshka cut: the first dims dimensions of both sides
        doc_emb, query_emb = doc_emb[:, :dims], query_emb[:, :dims]
    result = retrieval_metrics(query_emb, doc_emb, query_ids, doc_ids, relevant, k=int(k))
    if per_query:
        _write_per_query(ctx, per_query, result.per_query)
    return {**result.metrics, "skipped_queries": result.skipped_queries}


def _write_per_query(ctx: Context, table: str, rows: list[tuple]) -> None:
    import pyarrow as pa

    data = pa.table(
        {
            "query_id": [r[0] for r in rows],
            "ndcg_at_10": pa.array([r[1] for r in rows], pa.float64()),
            "first_relevant_rank": pa.array([r[2] for r in rows], pa.int64()),
        }
    )
    name = ".".join(quote_ident(p) for p in table.split("."))
    with ctx.catalog.transaction() as tx:
        tx.con.register("jammi_per_query", data)
        tx.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM jammi_per_query")
        tx.con.unregister("jammi_per_query")
