"""Every SQL function, declared once. ``install(con)`` walks this registry.

Each body is a thin adapter: parse arguments, call one function of the state layer,
convert the result. Functions that change the world are ``side_effects=True`` (so DuckDB
never runs them while planning); per-row functions are arrow-vectorized and see 2048-row
batches. Named, defaulted arguments come from the macros in ``sql/macros.sql``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalog import sql_dir
from .context import Context
from .errors import InvalidArgumentError


@dataclass(frozen=True)
class SqlFunction:
    name: str
    params: tuple[str, ...]
    returns: str | Callable[[Context], str]
    impl: Callable[..., Any]
    arrow: bool = False
    side_effects: bool = False
    sees_nulls: bool = False  # called with NULL arguments instead of returning NULL
    doc: str = ""


FUNCTIONS: list[SqlFunction] = []


def sql_function(
    name: str,
    params: list[str],
    returns,
    *,
    arrow: bool = False,
    side_effects: bool = False,
    sees_nulls: bool = False,
):
    def register(fn):
        FUNCTIONS.append(
            SqlFunction(
                name,
                tuple(params),
                returns,
                fn,
                arrow,
                side_effects,
                sees_nulls,
                (fn.__doc__ or "").strip(),
            )
        )
        return fn

    return register


def _vector_type(ctx: Context) -> str:
    return f"FLOAT[{ctx.dimensions}]"


# ---- sources and models ---------------------------------------------------------------
@sql_function(
    "jammi_add_source",
    ["VARCHAR", "VARCHAR", "VARCHAR"],
    "VARCHAR",
    side_effects=True,
    sees_nulls=True,
)
def add_source(ctx: Context, name, url, format):
    """add_source(name, url [, format := ...]): register a file, table, view or query as a source."""
    from .sources import add_source as add

    source = add(ctx.catalog, name, url, format)
    return f"source '{source.name}' added ({source.format}; columns: {', '.join(source.columns)})"


@sql_function("jammi_remove_source", ["VARCHAR"], "VARCHAR", side_effects=True)
def remove_source(ctx: Context, name):
    """remove_source(name): unregister a source (its data is untouched)."""
    from .sources import remove_source as remove

    remove(ctx.catalog, name)
    return f"source '{name}' removed"


@sql_function("register_model", ["VARCHAR", "VARCHAR"], "VARCHAR", side_effects=True)
def register_model(ctx: Context, model_id, path):
    """register_model(model_id, path): register a local Hugging Face model folder."""
    record = ctx.models.register(model_id, path)
    return f"model '{record.model_id}' registered ({record.dimensions} dimensions, {record.artifact_path})"


# ---- fine-tuning jobs -----------------------------------------------------------------
@sql_function(
    "jammi_fine_tune",
    ["VARCHAR", "VARCHAR", "VARCHAR[]", "VARCHAR", "VARCHAR", "VARCHAR"],
    "VARCHAR",
    side_effects=True,
    sees_nulls=True,
)
def fine_tune(ctx: Context, source, base_model, columns, method, task, config):
    """fine_tune(source, base_model, columns [, method] [, task] [, config]): start a job; returns its id."""
    if source is None or base_model is None or columns is None:
        raise InvalidArgumentError("fine_tune needs a source, a base model and a list of columns")
    if isinstance(config, str):
        config = json.loads(config)
        if isinstance(config, str):  # a JSON string passed where a STRUCT was expected
            config = json.loads(config) if config.strip() else None
    return ctx.jobs.submit(
        source, base_model, list(columns), method or "lora", task or "text_embedding", config
    )


@sql_function(
    "jammi_wait_job", ["VARCHAR", "DOUBLE"], "VARCHAR", side_effects=True, sees_nulls=True
)
def wait_job(ctx: Context, job_id, timeout_s):
    """wait_job(job_id [, timeout_s]): block until the job ends or the timeout passes; returns its status."""
    return ctx.jobs.wait(job_id, timeout_s)


@sql_function("cancel_job", ["VARCHAR"], "VARCHAR", side_effects=True)
def cancel_job(ctx: Context, job_id):
    """cancel_job(job_id): stop a queued or running job; returns its status."""
    return ctx.jobs.cancel(job_id)


@sql_function("resume_job", ["VARCHAR"], "VARCHAR", side_effects=True)
def resume_job(ctx: Context, job_id):
    """resume_job(job_id): continue an interrupted job from its last checkpoint."""
    return ctx.jobs.resume(job_id)


# ---- embeddings -----------------------------------------------------------------------
def _embed_column(
    ctx: Context, models: pa.ChunkedArray, texts: pa.ChunkedArray, query: bool
) -> pa.Array:
    from .infer import embed_texts

    models = models.combine_chunks() if isinstance(models, pa.ChunkedArray) else models
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    dims = ctx.dimensions
    out = np.zeros((len(texts), dims), dtype=np.float32)
    valid = pc.and_(pc.is_valid(texts), pc.is_valid(models))
    for model in pc.unique(models.filter(valid)).to_pylist():
        rows = np.flatnonzero(
            pc.and_(valid, pc.equal(models, model)).to_numpy(zero_copy_only=False)
        )
        out[rows] = embed_texts(
            ctx, model, texts.take(pa.array(rows)).to_pylist(), query=query, dims=dims
        )
    flat = pa.array(out.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dims, mask=pc.invert(valid))


@sql_function("embed", ["VARCHAR", "VARCHAR"], _vector_type, arrow=True, sees_nulls=True)
def embed(ctx: Context, model, text):
    """embed(model, text): the text's embedding as FLOAT[d]; NULL gives NULL."""
    return _embed_column(ctx, model, text, query=False)


@sql_function("embed_query", ["VARCHAR", "VARCHAR"], _vector_type, arrow=True, sees_nulls=True)
def embed_query(ctx: Context, model, text):
    """embed_query(model, text): the query-side embedding (query prompt or adapter) as FLOAT[d]."""
    return _embed_column(ctx, model, text, query=True)


@sql_function(
    "generate_text_embeddings",
    ["VARCHAR", "VARCHAR", "VARCHAR[]", "VARCHAR"],
    "BIGINT",
    side_effects=True,
)
def generate_text_embeddings(ctx: Context, source, model, columns, key):
    """generate_text_embeddings(source, model, columns, key): materialize embeddings; returns rows written."""
    from .embeddings import generate_text_embeddings as generate

    return generate(ctx.catalog, ctx.models, source, model, list(columns), key)


@sql_function("jammi_embedding_table", ["VARCHAR", "VARCHAR"], "VARCHAR")
def embedding_table(ctx: Context, source, model):
    """The table semantic_search reads (evaluated while DuckDB binds the macro)."""
    from .embeddings import embedding_table_for

    return embedding_table_for(ctx.catalog, ctx.models, source, model)


@sql_function("jammi_query_vector", ["VARCHAR", "VARCHAR"], "FLOAT[]")
def query_vector(ctx: Context, model, text):
    """A query embedding of any dimension, as a list (semantic_search's query side)."""
    from .infer import embed_texts

    return embed_texts(ctx, model, [text], query=True)[0].tolist()


# ---- installing -----------------------------------------------------------------------
def _udf(ctx: Context, fn: SqlFunction) -> Callable:
    def call(*args):
        return fn.impl(ctx, *args)

    call.__name__ = fn.name
    call.__doc__ = fn.doc
    # DuckDB counts the parameters of the callable it is given
    call.__signature__ = inspect.Signature(
        [
            inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY)
            for i in range(len(fn.params))
        ]
    )
    return call


def register(con: duckdb.DuckDBPyConnection, ctx: Context, fn: SqlFunction) -> None:
    returns = fn.returns(ctx) if callable(fn.returns) else fn.returns
    try:
        con.remove_function(fn.name)
    except (duckdb.InvalidInputException, duckdb.CatalogException):
        pass
    con.create_function(
        fn.name,
        _udf(ctx, fn),
        [duckdb.sqltype(p) for p in fn.params],
        duckdb.sqltype(returns),
        type="arrow" if fn.arrow else "native",
        null_handling="special" if fn.sees_nulls else "default",
        side_effects=fn.side_effects,
    )


def install_functions(con: duckdb.DuckDBPyConnection, ctx: Context) -> None:
    from . import evaluation  # noqa: F401  (declares the evaluate_* functions)

    for fn in FUNCTIONS:
        register(con, ctx, fn)
    con.execute((sql_dir() / "macros.sql").read_text())


def sync_dimensions(con: duckdb.DuckDBPyConnection, ctx: Context) -> None:
    """Re-register the FLOAT[d] functions when the database's embedding dimension changed."""
    wanted = ctx.wanted_dimensions()
    if wanted != ctx.dimensions:
        ctx.dimensions = wanted
        for fn in FUNCTIONS:
            if callable(fn.returns):
                register(con, ctx, fn)
