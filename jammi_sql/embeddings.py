"""Materialized embeddings of a source, kept up to date incrementally, and search over them.

``generate_text_embeddings`` writes ``jammi.emb_<source>__<model>`` with one row per
(key, column): the key, the column name, the text, an md5 of the text and the embedding.
A second run embeds only rows whose key is new or whose text changed, and deletes rows
whose key is gone; the whole update is one transaction.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from . import progress
from .catalog import Catalog, EmbeddingTable, Source
from .config import DEFAULT_CHUNK_OVERLAP
from .context import Context
from .errors import DataError, InvalidArgumentError, NotFoundError
from .infer import Documents, check_chunking, embed_documents, model_dimensions
from .models import canonical_id
from .sources import get_source, quote_ident, quote_literal, relation, require_columns

BATCH = 4096  # source rows read, embedded and appended at a time (bounds memory)


def table_name(source: str, model_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", canonical_id(model_id).lower()).strip("_")
    return f"jammi.emb_{source.lower()}__{slug}"


def _current_rows_sql(rel: str, columns: list[str], key: str) -> str:
    parts = [
        f"SELECT {quote_ident(key)} AS key, {quote_literal(c)} AS column_name, {quote_ident(c)} AS text "
        f"FROM {rel} WHERE {quote_ident(c)} IS NOT NULL"
        for c in columns
    ]
    return (
        "SELECT key, column_name, text, md5(text) AS text_hash FROM ("
        + " UNION ALL ".join(parts)
        + ")"
    )


def _check_key(catalog: Catalog, source_name: str, rel: str, key: str) -> None:
    total, non_null, distinct = catalog.query(
        f"SELECT count(*), count({quote_ident(key)}), count(DISTINCT {quote_ident(key)}) FROM {rel}"
    )[0]
    if total == 0:
        raise DataError(f"source '{source_name}' is empty; add rows to it before embedding")
    if non_null < total:
        raise DataError(
            f"key column '{key}' of source '{source_name}' has {total - non_null} NULL values; "
            "a key must identify every row: use a column without NULLs"
        )
    if distinct < non_null:
        raise DataError(
            f"key column '{key}' of source '{source_name}' has duplicate values "
            f"({non_null - distinct} repeats); use a unique key column"
        )


class Embedded(int):
    """Rows written (an int), with how many texts were cut at the model's limit."""

    truncated: int = 0

    @classmethod
    def of(cls, written: int, truncated: int) -> Embedded:
        result = cls(written)
        result.truncated = truncated
        return result


def _validate(ctx: Context, source_name: str, columns: list[str], key: str) -> tuple[Source, str]:
    """The source and its relation, once the columns and the key are fit to embed."""
    source = get_source(ctx.catalog, source_name)
    if not columns:
        raise InvalidArgumentError(
            "generate_text_embeddings needs at least one text column, e.g. ['abstract']"
        )
    if len(set(columns)) != len(columns):
        raise InvalidArgumentError(
            f"columns {list(columns)} name a column twice; name each text column once"
        )
    require_columns(source, [key])
    require_columns(source, columns, text=True)
    rel = relation(source)
    _check_key(ctx.catalog, source_name, rel, key)
    return source, rel


def _check_same_build(existing: EmbeddingTable | None, wanted: EmbeddingTable) -> None:
    if existing is None:
        return
    built = (existing.key, existing.columns, existing.chunk_tokens, existing.chunk_overlap)
    if built != (wanted.key, wanted.columns, wanted.chunk_tokens, wanted.chunk_overlap):
        how = f"key '{existing.key}' and columns {existing.columns}"
        if existing.chunk_tokens is not None:
            how += f", chunk_tokens := {existing.chunk_tokens}, chunk_overlap := {existing.chunk_overlap}"
        raise InvalidArgumentError(
            f"{wanted.table_name} was built with {how}; use the same, or DROP TABLE "
            f"{wanted.table_name} and DELETE its row from jammi.embedding_tables"
        )


def generate_text_embeddings(
    ctx: Context,
    source_name: str,
    model_id: str,
    columns: list[str],
    key: str,
    chunk_tokens: int | None = None,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
) -> Embedded:
    """Embed new or changed texts of ``columns``; returns how many rows were written.

    The new rows stream from the source in batches (embedded, then appended), so no step
    holds every row at once; the whole update is still one transaction (1M short rows peaked
    at about 1 GB RSS with the tiny test model, 100k at 0.66 GB: benchmarks/embed_memory.py).
    """
    catalog = ctx.catalog
    source, rel = _validate(ctx, source_name, columns, key)
    ref = ctx.models.resolve(ctx.models.document_model(model_id))  # a query-side head: its base
    chunk_overlap = DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap
    if chunk_overlap == DEFAULT_CHUNK_OVERLAP and chunk_tokens and chunk_tokens <= chunk_overlap:
        chunk_overlap = chunk_tokens // 4  # the default, on windows too small for it
    overlap = chunk_overlap if chunk_tokens is not None else None
    check_chunking(ctx, ref.model_id, chunk_tokens, chunk_overlap)
    dims = model_dimensions(ctx, ref.model_id)
    name = table_name(source_name, ref.model_id)
    wanted = EmbeddingTable(
        name,
        source_name,
        ref.model_id,
        list(columns),
        key,
        dims,
        0,
        chunk_tokens=chunk_tokens,
        chunk_overlap=overlap,
    )
    existing = catalog.get_embedding_table(source_name, ref.model_id)
    _check_same_build(existing, wanted)
    current = _current_rows_sql(rel, columns, key)
    table_exists = existing is not None and bool(
        catalog.query(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'jammi' AND table_name = ?",
            [name.split(".", 1)[1]],
        )
    )
    new_rows = current
    if table_exists:
        new_rows = (
            f"SELECT c.key, c.column_name, c.text, c.text_hash FROM ({current}) c ANTI JOIN {name} e "
            "ON c.key = e.key AND c.column_name = e.column_name AND c.text_hash = e.text_hash"
        )
    total = catalog.query(f"SELECT count(*) FROM ({new_rows})")[0][0]
    chunk_column = "chunk INTEGER NOT NULL, " if chunk_tokens is not None else ""
    with progress.start(f"embedding {source_name} with {ref.model_id}", total) as task:
        with catalog.transaction() as tx:
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (key {source.column_type(key)} NOT NULL, "
                f"column_name VARCHAR NOT NULL, {chunk_column}text VARCHAR NOT NULL, "
                f"text_hash VARCHAR NOT NULL, embedding FLOAT[{dims}] NOT NULL)"
            )
            if table_exists:  # drop rows whose key is gone or whose text changed
                tx.execute(
                    f"DELETE FROM {name} e WHERE NOT EXISTS (SELECT 1 FROM ({current}) c WHERE c.key = e.key "
                    "AND c.column_name = e.column_name AND c.text_hash = e.text_hash)"
                )
            written, truncated, rows_done = 0, 0, 0
            for batch in _stream(catalog, new_rows):
                docs = _embed_batch(ctx, ref.model_id, batch, wanted, task)
                _append(tx, name, batch, docs, wanted)
                written, truncated = written + len(docs.texts), truncated + docs.truncated
                rows_done += batch.num_rows
                task.update(rows_done)
            wanted.row_count = tx.query(f"SELECT count(*) FROM {name}")[0][0]
            wanted.truncated = truncated
            tx.put_embedding_table(wanted)
    if truncated:
        progress.warn(truncation_warning(truncated, total, ref.model_id, ctx))
    return Embedded.of(written, truncated)


def truncation_warning(truncated: int, total: int, model_id: str, ctx: Context) -> str:
    from .infer import max_tokens

    return (
        f"jammi: {truncated:,} of {total:,} texts were longer than model '{model_id}' takes "
        f"({max_tokens(ctx, model_id)} tokens) and were cut; chunk_tokens := N embeds "
        "long texts whole, in windows (see jammi.embedding_tables.truncated)"
    )


def _stream(catalog: Catalog, sql: str):
    """The query's rows in arrow batches, read on a cursor of their own (the writes go
    through the catalog's), so they are never all in memory at once."""
    reader = catalog.con.cursor()
    try:
        yield from reader.sql(sql).to_arrow_reader(BATCH)
    finally:
        reader.close()


def _embed_batch(ctx: Context, model_id: str, batch, wanted: EmbeddingTable, task) -> Documents:
    texts = batch.column("text").to_pylist()
    return embed_documents(
        ctx, model_id, texts, wanted.chunk_tokens, wanted.chunk_overlap or 0, task.advance
    )


def _append(tx: Catalog, name: str, batch, docs: Documents, wanted: EmbeddingTable) -> None:
    owner = pa.array(docs.owner)
    columns = {
        "key": batch.column("key").take(owner),
        "column_name": batch.column("column_name").take(owner),
        "text": pa.array(docs.texts, pa.string()),
        "text_hash": batch.column("text_hash").take(owner),
    }
    if wanted.chunk_tokens is not None:  # 0-based position of each window in its text
        starts = np.flatnonzero(np.r_[True, np.diff(docs.owner) != 0])
        counts = np.diff(np.r_[starts, len(docs.owner)])
        columns["chunk"] = pa.array(
            np.arange(len(docs.owner)) - np.repeat(starts, counts), pa.int32()
        )
    flat = pa.array(docs.vectors.reshape(-1).astype(np.float32, copy=False))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, wanted.dimensions)
    tx.con.register("jammi_new_embeddings", pa.table(columns))
    names = "key, column_name, " + ("chunk, " if wanted.chunk_tokens is not None else "")
    tx.execute(
        f"INSERT INTO {name} SELECT {names}text, text_hash, embedding FROM jammi_new_embeddings"
    )
    tx.con.unregister("jammi_new_embeddings")


def embedding_table_for(ctx: Context, source_name: str, model_id: str) -> str:
    """The table semantic_search reads; a clear error when it has not been built yet."""
    get_source(ctx.catalog, source_name)
    ref = ctx.models.resolve(ctx.models.document_model(model_id))
    table = ctx.catalog.get_embedding_table(source_name, ref.model_id)
    if table is None:
        raise NotFoundError(
            f"source '{source_name}' has no embeddings for model '{ref.model_id}'; run "
            f"SELECT generate_text_embeddings('{source_name}', '{model_id}', ['<text column>'], '<key column>') first"
        )
    return table.table_name
