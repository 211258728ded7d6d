"""mine_hard_negatives: (anchor, positive) pairs of a source become (anchor, positive, negative)
rows of a new source, the negatives drawn from a corpus the model has already embedded.

The corpus is read from the table ``generate_text_embeddings`` materialized (nothing of it is
embedded again) and streamed in blocks to :func:`jammi_sql.data.mining.mine`; only the anchors, and
positives not found in the corpus, are embedded. The result is a table
``jammi.mined_<output>`` registered as source ``<output>``, ready for ``fine_tune``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..catalog.context import Context
from ..catalog.tables import Catalog
from ..errors import AlreadyExistsError, DataError, InvalidArgumentError, NotFoundError
from ..inference.infer import embed_texts
from .mining import Mined, MiningSettings, ceilings, mine
from .sources import (
    _NAME,
    MAX_NAME,
    TEXT_TYPES,
    add_source,
    get_source,
    quote_ident,
    relation,
    require_columns,
)

BLOCK = 16384  # corpus rows read and scored at a time
PAIRS, CORPUS, MINED = "jammi_mine_pairs", "jammi_mine_corpus", "jammi_mine_result"


def mine_hard_negatives(
    ctx: Context,
    source_name: str,
    model_id: str,
    anchor: str,
    positive: str,
    corpus: str | None,
    output: str | None,
    settings: MiningSettings,
) -> str:
    """Mine, write ``jammi.mined_<output>``, register it as a source; returns a summary that
    counts the anchors left without a negative (the margins or range left none)."""
    settings.check()
    catalog = ctx.catalog
    src = get_source(catalog, source_name)
    require_columns(src, [anchor, positive], text=True)
    output = output or f"{source_name}_hard_negatives"
    _check_output(catalog, output)
    ref = ctx.models.resolve(model_id)
    documents = ctx.models.document_model(ref.model_id)  # a query-side head: its base's corpus
    corpus_sql = _corpus_sql(ctx, corpus, documents) if corpus else CORPUS
    a, p = quote_ident(anchor), quote_ident(positive)
    pairs = catalog.arrow(
        f"SELECT row_number() OVER () - 1 AS pair, {a} AS anchor, {p} AS positive "
        f"FROM {relation(src)} WHERE {a} IS NOT NULL AND {p} IS NOT NULL"
    )
    if pairs.num_rows == 0:
        raise DataError(f"source '{source_name}' has no rows with both {anchor} and {positive}")
    anchors = pc.unique(pairs.column("anchor"))
    pair_anchor = pc.index_in(pairs.column("anchor"), anchors).to_numpy()
    pairs = pairs.append_column("anchor_id", pa.array(pair_anchor))

    cur = catalog.cursor()  # a cursor of its own: the registered arrow tables stay private
    cur.con.register(PAIRS, pairs)
    if corpus is None:  # the source's own positives are the candidates, embedded now
        texts = pc.unique(pairs.column("positive"))
        cur.con.register(CORPUS, _with_vectors(ctx, ref.model_id, texts))
    try:
        anchor_vectors = embed_texts(
            ctx, ref.model_id, anchors.to_pylist(), query=True, bar="embedding the anchors"
        )
        positives = _positive_vectors(ctx, cur, corpus_sql, ref.model_id, pairs)
        chosen = anchor_vectors[pair_anchor]
        positive_scores = _cosine(chosen, positives)
        ceiling = ceilings(positive_scores, pair_anchor, len(anchors), settings)
        excluded = cur.query(
            f"SELECT p.anchor_id, c.row FROM {PAIRS} p JOIN {corpus_sql} c ON c.text = p.positive "
            f"UNION SELECT p.anchor_id, c.row FROM {PAIRS} p JOIN {corpus_sql} c ON c.text = p.anchor"
        )
        ex = np.array(excluded, dtype=np.int64).reshape(-1, 2)
        blocks = _blocks(cur, corpus_sql)
        mined = mine(anchor_vectors, ceiling, (ex[:, 0], ex[:, 1]), blocks, settings)
        rows = _rows(mined, pair_anchor, len(anchors), positive_scores)
        lineage = [output, source_name, ref.model_id, corpus, json.dumps(asdict(settings))]
        _write(cur, output, corpus_sql, rows, lineage)
    finally:
        for name in (PAIRS, CORPUS, MINED):
            try:
                cur.con.unregister(name)
            except Exception:
                pass
        cur.con.close()
    lacking = len(anchors) - len(np.unique(mined.anchor))
    hint = "; widen range_max, lower range_min or loosen the margins for more" if lacking else ""
    return (
        f"{rows.num_rows} rows (anchor, positive, negative) written to source '{output}' "
        f"(table jammi.mined_{output.lower()}); {lacking} of {len(anchors)} anchors got no "
        f"negative{hint}"
    )


def _check_output(catalog: Catalog, output: str) -> None:
    if len(output) > MAX_NAME - 6 or not _NAME.match(output):
        raise InvalidArgumentError(
            f"output name '{output[:80]}' is invalid; use up to {MAX_NAME - 6} letters, digits "
            "and '_' (starting with a letter or '_')"
        )
    if catalog.get_source(output) is not None:
        raise AlreadyExistsError(
            f"source '{output}' already exists; pass another output := '...' or SELECT "
            f"remove_source('{output}') first"
        )


def _corpus_sql(ctx: Context, corpus: str, model_id: str) -> str:
    """The corpus's embedding table, one row per distinct text, numbered: (row, text, embedding).

    A text found under several keys or columns is one candidate, so it is never mined twice.
    """
    src = get_source(ctx.catalog, corpus)
    table = ctx.catalog.get_embedding_table(corpus, model_id)
    if table is None:
        texts = [c for c, t in zip(src.columns, src.column_types, strict=True) if t in TEXT_TYPES]
        shown = ", ".join(f"'{c}'" for c in texts) or "<text column>"
        raise NotFoundError(
            f"corpus '{corpus}' has no embeddings for model '{model_id}'; mining reads them "
            f"instead of embedding the corpus again: SELECT generate_text_embeddings('{corpus}', "
            f"'{model_id}', [<text columns among {shown}>], '<key column>') first, or leave "
            "corpus NULL to mine among the source's own positives"
        )
    return (
        "(SELECT row_number() OVER (ORDER BY text) - 1 AS row, text, embedding FROM "
        f"(SELECT DISTINCT ON (text) text, embedding FROM {table.table_name}))"
    )


def _with_vectors(ctx: Context, model_id: str, texts: pa.Array) -> pa.Table:
    vectors = embed_texts(ctx, model_id, texts.to_pylist(), bar="embedding the candidates")
    flat = pa.array(vectors.reshape(-1))
    embedding = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.table({"row": np.arange(len(texts)), "text": texts, "embedding": embedding})


def _positive_vectors(ctx: Context, cur: Catalog, corpus_sql: str, model_id: str, pairs: pa.Table):
    """(pairs, D) positive vectors: from the corpus where the text is there, else embedded."""
    found = cur.arrow(
        f"SELECT p.pair, any_value(c.embedding) AS embedding FROM {PAIRS} p "
        f"JOIN {corpus_sql} c ON c.text = p.positive GROUP BY p.pair"
    )
    n = pairs.num_rows
    dims = found.schema.field("embedding").type.list_size if found.num_rows else None
    vectors = None
    if found.num_rows:
        flat = found.column("embedding").combine_chunks().flatten().to_numpy()
        vectors = np.zeros((n, dims), dtype=np.float32)
        vectors[found.column("pair").to_numpy()] = flat.reshape(-1, dims)
    missing = np.setdiff1d(np.arange(n), found.column("pair").to_numpy())
    if len(missing):
        texts = pairs.column("positive").take(pa.array(missing)).to_pylist()
        embedded = embed_texts(ctx, model_id, texts, bar="embedding the positives")
        if vectors is None:
            vectors = np.zeros((n, embedded.shape[1]), dtype=np.float32)
        vectors[missing] = embedded
    return vectors


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", a, b)


def _blocks(cur: Catalog, corpus_sql: str) -> Iterator[np.ndarray]:
    """The corpus embeddings in row order, ``BLOCK`` rows at a time."""
    sql = f"SELECT embedding FROM {corpus_sql} ORDER BY row"
    reader = cur.con.sql(sql).to_arrow_reader(BLOCK)
    for batch in reader:
        column = batch.column(0)
        dims = column.type.list_size
        yield column.flatten().to_numpy().reshape(-1, dims)


def _rows(
    mined: Mined, pair_anchor: np.ndarray, n_anchors: int, positive_scores: np.ndarray
) -> pa.Table:
    """One row per (pair, negative of its anchor): (pair, row, score, positive_score, rank)."""
    order = np.lexsort((mined.rank, mined.anchor))
    anchor, row, score = mined.anchor[order], mined.corpus[order], mined.score[order]
    counts = np.bincount(anchor, minlength=n_anchors)  # negatives per anchor
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_pair = counts[pair_anchor]  # negatives each pair gets
    pair = np.repeat(np.arange(len(pair_anchor)), per_pair)
    within = np.arange(per_pair.sum()) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    take = starts[pair_anchor[pair]] + within
    return pa.table(
        {
            "pair": pair,
            "row": row[take],
            "negative_score": score[take].astype(np.float64),
            "positive_score": positive_scores[pair].astype(np.float64),
            "rank": within,
        }
    )


def _write(cur: Catalog, output: str, corpus_sql: str, rows: pa.Table, lineage: list) -> None:
    """Table ``jammi.mined_<output>``, source ``<output>`` and its lineage, in one transaction."""
    cur.con.register(MINED, rows)
    table = f"jammi.mined_{output.lower()}"
    with cur.transaction() as tx:
        tx.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT p.anchor, p.positive, c.text AS negative, "
            f"m.positive_score, m.negative_score FROM {MINED} m JOIN {PAIRS} p ON p.pair = m.pair "
            f"JOIN {corpus_sql} c ON c.row = m.row ORDER BY m.pair, m.rank"
        )
        add_source(tx, output, table, "table")
        tx.execute("DELETE FROM jammi.source_lineage WHERE source = ?", [lineage[0]])
        tx.execute(
            "INSERT INTO jammi.source_lineage (source, built_by, from_source, model_id, corpus, "
            "settings, rows_written) VALUES (?, 'mine_hard_negatives', ?, ?, ?, ?, ?)",
            [*lineage, rows.num_rows],
        )
