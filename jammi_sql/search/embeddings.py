"""Materialized embeddings of a source, kept up to date incrementally, and search over them.

``generate_text_embeddings`` writes ``jammi.emb_<source>__<model>`` with one row per
(key, column): the key, the column name, the text, an md5 of the text and the embedding.
A second run embeds only rows whose key is new or whose text changed, and deletes rows
whose key is gone. Rows gather in a staging table (``jammi._building_emb_...``), committed
batch by batch so memory stays flat; one transaction at the end swaps them in, so the update
is all or nothing. With ``engine='ray'`` the rows are embedded on a Ray cluster
(:mod:`jammi_sql.scale.backfill`) and written here the same way.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from .. import progress
from ..catalog.context import Context
from ..catalog.models import canonical_id
from ..catalog.tables import Catalog, EmbeddingTable, Source
from ..config import DEFAULT_CHUNK_OVERLAP
from ..data.sources import get_source, quote_ident, quote_literal, relation, require_columns
from ..errors import DataError, InvalidArgumentError, NotFoundError
from ..inference.infer import (
    check_chunking,
    document_rows,
    embed_documents,
    model_dimensions,
)
from . import index, keyword
from .builds import building

ENGINES = ("local", "ray")  # where generate_text_embeddings embeds (engine :=)
BATCH = 4096  # source rows read, embedded and appended at a time (bounds memory)
PAGE = 16 * BATCH  # source rows read by one query (a read is short-lived: see _stream)


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


def staging_name(table: str) -> str:
    """Where a run of ``generate_text_embeddings`` gathers its rows before they go live."""
    schema, bare = table.split(".", 1)
    return f"{schema}._building_{bare}"


def clear_leftovers(ctx: Context) -> None:
    """Drop staging tables that a run killed mid-build left behind (on connect, so they never
    linger until that table is built again); a build live in this process keeps its own."""
    if ctx.read_only:
        return
    found = ctx.catalog.query(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'jammi' "
        "AND starts_with(table_name, '_building_emb_')"
    )
    for (bare,) in found:
        table = f"jammi.{bare.removeprefix('_building_')}"
        with building(ctx.catalog, table, wait=False) as free:
            if free:  # no build of that table is running here (DuckDB: no other process writes)
                ctx.catalog.execute(f"DROP TABLE IF EXISTS {staging_name(table)}")
    tables = ctx.catalog.embedding_tables()
    for table in tables:  # an index build a killed process left
        if table.index_state == "building":  # caught up by the next search (index.for_search)
            with building(ctx.catalog, table.table_name, wait=False) as free:
                if free:
                    ctx.catalog.set_index_state(table.table_name, index_state="stale")


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
        elif wanted.chunk_tokens is not None:
            how += ", without chunking"
        raise InvalidArgumentError(
            f"{wanted.table_name} was built with {how}; use the same, or drop it first with "
            f"remove_embeddings('{existing.source}', '{existing.model_id}') and build it again"
        )


def remove_embeddings(ctx: Context, source: str, model_id: str) -> str:
    """Drop the table ``generate_text_embeddings`` built from ``source`` with ``model_id``,
    and its row in jammi.embedding_tables; the source and the model stay. Returns its name."""
    if not source or not model_id:
        raise InvalidArgumentError(
            "remove_embeddings needs a source and a model, e.g. "
            "remove_embeddings('docs', 'all-MiniLM-L6-v2')"
        )
    table = ctx.catalog.get_embedding_table(source, canonical_id(model_id))
    if table is None:
        try:
            documents = ctx.models.document_model(model_id)
        except NotFoundError:  # an unknown model, or one whose files are gone: nothing to add
            documents = canonical_id(model_id)
        if documents != canonical_id(model_id):  # a query-side head embeds documents as its base
            raise InvalidArgumentError(
                f"'{model_id}' is a query-side head: the documents of '{source}' it searches are "
                f"in the table of its base '{documents}', which that model uses too; to drop it: "
                f"remove_embeddings('{source}', '{documents}')"
            )
        built = [t.model_id for t in ctx.catalog.embedding_tables(source=source)]
        raise NotFoundError(
            f"no embeddings of source '{source}' with model '{model_id}' were built; "
            + (f"built from it: with {', '.join(built)}" if built else "none were built from it")
            + " (see jammi.embedding_tables)"
        )
    with ctx.catalog.transaction() as tx:
        tx.drop_embedding_tables([table])
    drop_index_files(ctx, table)
    return table.table_name


def remove_source(ctx: Context, name: str, cascade: bool = False) -> list[str]:
    """data.sources.remove_source, and the index files of the embedding tables it drops."""
    from ..data.sources import remove_source as remove

    tables = ctx.catalog.embedding_tables(source=name)
    dropped = remove(ctx.catalog, name, cascade)
    for table in tables:
        if table.table_name in dropped:
            drop_index_files(ctx, table)
    return dropped


def drop_index_files(ctx: Context, table: EmbeddingTable) -> None:
    """Delete the vector and keyword index files of a dropped table."""
    import shutil

    index.forget(ctx, table)
    shutil.rmtree(index.folder(ctx, table), ignore_errors=True)


def set_vector_index(ctx: Context, source: str, model_id: str, kind: str, changes: dict) -> str:
    """create_vector_index / drop_vector_index: record the settings, then build or remove the
    index now. Settings are checked before anything is written. Returns the index state."""
    from .queries import table_for

    table = table_for(ctx, source, model_id)
    settings = index.IndexSettings.of(table.index_settings, **changes)  # raises when out of range
    with building(ctx.catalog, table.table_name):
        ctx.catalog.set_index_state(
            table.table_name, index_kind=kind, index_settings=asdict(settings)
        )
        fresh = ctx.catalog.get_embedding_table(table.source, table.model_id)
        return index.sync(ctx, fresh)


def generate_text_embeddings(
    ctx: Context,
    source_name: str,
    model_id: str,
    columns: list[str],
    key: str,
    chunk_tokens: int | None = None,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> Embedded:
    """Embed new or changed texts of ``columns``; returns how many rows were written.

    The new rows stream from the source in batches, each embedded and committed to a staging
    table, so no step holds every row at once; one transaction at the end makes them the
    table (or merges them into it), so the update is still all or nothing. ``engine='ray'``
    embeds them on a Ray cluster (``ray_address``, else ``RAY_ADDRESS``, else a local
    instance; ``workers`` actors, default one per CPU) and writes them here the same way.
    """
    catalog = ctx.catalog
    if engine not in ENGINES:
        raise InvalidArgumentError(
            f"engine := {engine!r} is not one of {', '.join(map(repr, ENGINES))}: 'local' "
            "embeds in this process, 'ray' on a Ray cluster (ray_address := or RAY_ADDRESS)"
        )
    if engine != "ray" and ray_address is not None:
        raise InvalidArgumentError(
            "ray_address := is for engine := 'ray'; add engine := 'ray' or drop ray_address"
        )
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
    ray = None
    if engine == "ray":  # once the arguments are checked, before anything is written
        from ..scale import cluster

        cluster.connect(ray_address)  # a jammi: error without Ray or without a cluster
        ray = (ray_address, workers)
    with building(catalog, name):  # one build of a table at a time (they share a staging table)
        written, truncated, total = _build(ctx, source, rel, wanted, ray)
        sync_indexes(ctx, wanted)
    if truncated:
        progress.warn(truncation_warning(truncated, total, ref.model_id, ctx))
    return Embedded.of(written, truncated)


def _build(
    ctx: Context, source: Source, rel: str, wanted: EmbeddingTable, ray: tuple | None = None
) -> tuple[int, int, int]:
    """Embed what is new or changed into ``wanted``'s table: (written, truncated, rows to do);
    ``ray``: (address, workers) to embed on a Ray cluster instead of here."""
    catalog, name, dims = ctx.catalog, wanted.table_name, wanted.dimensions
    existing = catalog.get_embedding_table(wanted.source, wanted.model_id)
    _check_same_build(existing, wanted)
    current = _current_rows_sql(rel, wanted.columns, wanted.key)
    table_exists = existing is not None and bool(
        catalog.query(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'jammi' AND table_name = ?",
            [name.split(".", 1)[1]],
        )
    )
    new_rows, next_vid = current, fresh_vid_base()
    if table_exists:
        next_vid = ensure_vid(catalog, name)
        new_rows = (
            f"SELECT c.key, c.column_name, c.text, c.text_hash FROM ({current}) c ANTI JOIN {name} e "
            "ON c.key = e.key AND c.column_name = e.column_name AND c.text_hash = e.text_hash"
        )
    total = catalog.query(f"SELECT count(*) FROM ({new_rows})")[0][0]
    chunk_column = "chunk INTEGER NOT NULL, " if wanted.chunk_tokens is not None else ""
    schema = (
        f"(key {source.column_type(wanted.key)} NOT NULL, column_name VARCHAR NOT NULL, {chunk_column}"
        f"text VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, embedding FLOAT[{dims}] NOT NULL, "
        "vid BIGINT NOT NULL)"
    )
    staging = staging_name(name)
    title = f"embedding {wanted.source} with {wanted.model_id.rsplit('/', 1)[-1]}"
    if ray is not None:
        title += " on Ray"
    with progress.start(title, total) as task:
        # New rows go to a staging table, each batch committed as it comes (an open transaction
        # would hold every appended row in memory until its commit); one transaction at the end
        # swaps them in, so a reader never sees half an update and a failure leaves nothing.
        catalog.execute(f"DROP TABLE IF EXISTS {staging}")  # a killed run's leftovers
        catalog.execute(f"CREATE TABLE {staging} {schema}")
        try:
            written, truncated = 0, 0
            batches = _stream(catalog, new_rows, source.column_type(wanted.key))
            embedded = (
                _embedded_here(ctx, batches, wanted, task)
                if ray is None
                else _embedded_on_ray(ctx, batches, wanted, task, *ray)
            )
            for rows, cut in embedded:
                _append(catalog, staging, rows, next_vid)
                next_vid += rows.num_rows
                written, truncated = written + rows.num_rows, truncated + cut
            with catalog.transaction() as tx:
                if table_exists:  # drop rows whose key is gone or whose text changed
                    tx.execute(
                        f"DELETE FROM {name} e WHERE NOT EXISTS (SELECT 1 FROM ({current}) c WHERE c.key = e.key "
                        "AND c.column_name = e.column_name AND c.text_hash = e.text_hash)"
                    )
                    tx.execute(f"INSERT INTO {name} BY NAME SELECT * FROM {staging}")
                    tx.execute(f"DROP TABLE {staging}")
                else:  # a fresh build: the staging table becomes the table (no copy)
                    index.remove_files(ctx, wanted)  # an index a dropped namesake left
                    tx.execute(f"DROP TABLE IF EXISTS {name}")
                    tx.execute(f"ALTER TABLE {staging} RENAME TO {name.split('.', 1)[1]}")
                wanted.row_count = tx.query(f"SELECT count(*) FROM {name}")[0][0]
                wanted.truncated = truncated
                _carry_search_state(existing if table_exists else None, wanted)
                tx.put_embedding_table(wanted)
        except BaseException:
            catalog.execute(f"DROP TABLE IF EXISTS {staging}")
            raise
    return written, truncated, total


def _carry_search_state(existing: EmbeddingTable | None, wanted: EmbeddingTable) -> None:
    """A build gets a new generation (unique, so no index of another build can match it) and
    keeps the table's index settings; its indexes are stale until synced."""
    wanted.generation = uuid.uuid4().int >> 65
    if existing is not None:
        wanted.index_kind, wanted.index_settings = existing.index_kind, existing.index_settings
    wanted.index_state = "stale" if wanted.index_kind == "hnsw" else None
    wanted.keyword_index = False


def sync_indexes(ctx: Context, table: EmbeddingTable) -> None:
    """Bring the vector and keyword indexes up to the table's rows (after a build commits)."""
    fresh = ctx.catalog.get_embedding_table(table.source, table.model_id)
    for name, sync in (("vector index", index.sync), ("keyword index", keyword.sync)):
        try:
            if fresh is not None:
                sync(ctx, fresh)
        except Exception as exc:  # the rows are committed; the index stays stale, never wrong
            progress.warn(
                f"jammi: the {name} of {table.table_name} was not brought up to date "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); search "
                "catches it up (or is exact) until the next generate_text_embeddings"
            )


def fresh_vid_base() -> int:
    """Where a new table's vids start: random, so two tables (of two databases sharing a home
    folder, or a table dropped and built again) never label different vectors alike, and an
    index of one is never caught up as if it were the other's (all its vids look removed)."""
    return secrets.randbits(40) << 20


def ensure_vid(catalog: Catalog, name: str) -> int:
    """The next free vid of a table; a table built before vids existed gets them first."""
    has = catalog.query(
        "SELECT 1 FROM duckdb_columns() WHERE schema_name = 'jammi' AND table_name = ? "
        "AND column_name = 'vid'",
        [name.split(".", 1)[1]],
    )
    if not has:
        with catalog.transaction() as tx:
            tx.execute(f"ALTER TABLE {name} ADD COLUMN vid BIGINT")
            tx.execute(f"UPDATE {name} SET vid = rowid + {fresh_vid_base()}")
    return catalog.query(f"SELECT coalesce(max(vid) + 1, 0) FROM {name}")[0][0]


def truncation_warning(truncated: int, total: int, model_id: str, ctx: Context) -> str:
    from ..inference.infer import max_tokens

    return (
        f"jammi: {truncated:,} of {total:,} texts were longer than model '{model_id}' takes "
        f"({max_tokens(ctx, model_id)} tokens) and were cut; chunk_tokens := N embeds "
        "long texts whole, in windows (see jammi.embedding_tables.truncated)"
    )


def _stream(catalog: Catalog, sql: str, key_type: str):
    """The query's rows in arrow batches, in order of (key, column_name), read on a cursor of
    their own (the writes go through the catalog's), so they are never all in memory at once.

    Read a page at a time: a read left open for the whole run would keep DuckDB from freeing
    the version data of every batch committed meanwhile (about 120 bytes a row). A page starts
    after the last (key, column_name) read, the key passed as text and cast back to its type."""
    reader = catalog.con.cursor()
    after = f"WHERE (key, column_name) > (CAST(? AS {key_type}), ?)"
    try:
        last: list = []
        while True:
            page = reader.sql(
                f"SELECT *, key::VARCHAR AS key_text FROM ({sql}) {after if last else ''} "
                f"ORDER BY key, column_name LIMIT {PAGE}",
                params=last or None,
            )
            read = 0
            for batch in page.to_arrow_reader(BATCH):
                if batch.num_rows:
                    read += batch.num_rows
                    last = [
                        batch.column("key_text")[-1].as_py(),
                        batch.column("column_name")[-1].as_py(),
                    ]
                    yield batch
            if read < PAGE:
                return
    finally:
        reader.close()


def _embedded_here(
    ctx: Context, batches, wanted: EmbeddingTable, task: progress.Task
) -> Iterator[tuple[pa.Table, int]]:
    """(rows to append, texts cut) for each batch, embedded in this process."""
    rows_done = 0
    for batch in batches:
        texts = batch.column("text").to_pylist()
        docs = embed_documents(
            ctx,
            wanted.model_id,
            texts,
            wanted.chunk_tokens,
            wanted.chunk_overlap or 0,
            task.advance,
        )
        yield document_rows(batch, docs, wanted.chunk_tokens is not None), docs.truncated
        rows_done += batch.num_rows
        task.update(rows_done)


def _embedded_on_ray(
    ctx: Context,
    batches,
    wanted: EmbeddingTable,
    task: progress.Task,
    address: str | None,
    workers: int | None,
) -> Iterator[tuple[pa.Table, int]]:
    """(rows to append, texts cut) for each block a Ray cluster embedded (scale.backfill)."""
    import threading

    from ..inference.infer import settled_precision
    from ..scale.backfill import Model, backfill

    ref = ctx.models.resolve(wanted.model_id)
    model = Model(
        ref.folder,
        ref.adapter_folder,
        settled_precision(ctx, wanted.model_id),  # what auto's guard chose here, once
        wanted.chunk_tokens,
        wanted.chunk_overlap or 0,
    )
    caller = threading.get_ident()
    yield from backfill(
        batches,
        model,
        address=address,
        workers=workers,
        on_rows=task.update,
        cancelled=lambda: progress.cancelled(caller),
    )


def _append(catalog: Catalog, name: str, rows: pa.Table, first_vid: int) -> None:
    """Append embedded rows (see inference.infer.document_rows) with vids from ``first_vid``."""
    vids = pa.array(np.arange(first_vid, first_vid + rows.num_rows, dtype=np.int64))
    rows = rows.append_column("vid", vids)
    names = ", ".join(rows.column_names)
    with catalog.lock:  # one statement, committed on its own
        catalog.con.register("jammi_new_embeddings", rows)
        try:
            catalog.con.execute(
                f"INSERT INTO {name} ({names}) SELECT {names} FROM jammi_new_embeddings"
            )
        finally:
            catalog.con.unregister("jammi_new_embeddings")


def embedding_table_for(ctx: Context, source_name: str, model_id: str) -> str:
    """The table semantic_search reads (from the catalog alone: the source is not read); a
    clear error when it has not been built yet."""
    from .queries import table_for

    return table_for(ctx, source_name, model_id).table_name
