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
from .catalog import Catalog, EmbeddingTable
from .context import Context
from .errors import DataError, InvalidArgumentError, NotFoundError
from .infer import embed_texts, model_dimensions
from .models import canonical_id
from .sources import get_source, quote_ident, quote_literal, relation, require_columns

CHUNK = 4096  # texts embedded and inserted at a time (bounds memory; drives the progress bar)


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


def generate_text_embeddings(
    ctx: Context,
    source_name: str,
    model_id: str,
    columns: list[str],
    key: str,
) -> int:
    """Embed new or changed texts of ``columns``; returns how many rows were written."""
    catalog = ctx.catalog
    source = get_source(catalog, source_name)
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
    _check_key(catalog, source_name, rel, key)
    ref = ctx.models.resolve(ctx.models.document_model(model_id))  # a query-side head: its base
    name = table_name(source_name, ref.model_id)
    existing = catalog.get_embedding_table(source_name, ref.model_id)
    if existing is not None and (existing.key != key or existing.columns != list(columns)):
        raise InvalidArgumentError(
            f"{name} was built with key '{existing.key}' and columns {existing.columns}; use the same "
            f"key and columns, or DROP TABLE {name} and DELETE its row from jammi.embedding_tables"
        )
    current = _current_rows_sql(rel, columns, key)
    table_exists = existing is not None and bool(
        catalog.query(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'jammi' AND table_name = ?",
            [name.split(".", 1)[1]],
        )
    )
    if table_exists:
        new_rows = catalog.arrow(
            f"SELECT c.key, c.column_name, c.text, c.text_hash FROM ({current}) c "
            f"ANTI JOIN {name} e ON c.key = e.key AND c.column_name = e.column_name AND c.text_hash = e.text_hash"
        )
    else:
        new_rows = catalog.arrow(current)
    key_type = source.column_type(key)
    written = 0
    dims = model_dimensions(ctx, ref.model_id)
    with progress.start(f"embedding {source_name} with {ref.model_id}", new_rows.num_rows) as task:
        with catalog.transaction() as tx:
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (key {key_type} NOT NULL, column_name VARCHAR NOT NULL, "
                f"text VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, embedding FLOAT[{dims}] NOT NULL)"
            )
            if table_exists:  # drop rows whose key is gone or whose text changed
                tx.execute(
                    f"DELETE FROM {name} e WHERE NOT EXISTS (SELECT 1 FROM ({current}) c WHERE c.key = e.key "
                    "AND c.column_name = e.column_name AND c.text_hash = e.text_hash)"
                )
            for start in range(0, new_rows.num_rows, CHUNK):
                chunk = new_rows.slice(start, CHUNK)
                texts = chunk.column("text").to_pylist()
                vectors = embed_texts(ctx, ref.model_id, texts, on_batch=task.advance)
                flat = pa.array(vectors.reshape(-1).astype(np.float32, copy=False))
                batch = chunk.append_column(
                    "embedding", pa.FixedSizeListArray.from_arrays(flat, dims)
                )
                tx.con.register("jammi_new_embeddings", batch)
                tx.execute(
                    f"INSERT INTO {name} SELECT key, column_name, text, text_hash, embedding FROM jammi_new_embeddings"
                )
                tx.con.unregister("jammi_new_embeddings")
                written += chunk.num_rows
            count = tx.query(f"SELECT count(*) FROM {name}")[0][0]
            tx.put_embedding_table(
                EmbeddingTable(name, source_name, ref.model_id, list(columns), key, dims, count)
            )
    return written


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
