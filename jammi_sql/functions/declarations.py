"""Every SQL function, declared once: name, parameters with their defaults, return type, doc.

``install(con)`` walks this registry. A function whose parameters have defaults is installed
as a Python UDF named ``jammi_<name>`` plus a TEMP macro ``<name>(..., arg := default)`` over
it, generated here; the README's function reference is generated from the same entries.

Each body is a thin adapter: parse arguments, call one function of the state layer, convert
the result. Functions that change the world are ``side_effects=True`` (so DuckDB never runs
them while planning); per-row functions are arrow-vectorized and see 2048-row batches.
"""

from __future__ import annotations

import duckdb

from ..catalog.context import Context
from ..config import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_K,
    DEFAULT_METHOD,
    DEFAULT_SIMILARITY_COLUMNS,
    DEFAULT_TASK,
)
from ..errors import InvalidArgumentError, NotFoundError
from .arguments import checked, count_arg
from .registry import (
    BIG,
    CHANGES,
    DBL,
    FUNCTIONS,
    LIST,
    WRITES,
    Method,
    Param,
    V,
    scalar_macro,
    sql_function,
    table_macro,
)
from .udfs import free_suffix, register, vector_macros_sql

SIMILARITY_TYPE = "STRUCT(spearman DOUBLE, pearson DOUBLE, n BIGINT)"
RETRIEVAL_TYPE = (
    "STRUCT(ndcg_at_10 DOUBLE, mrr_at_10 DOUBLE, recall_at_1 DOUBLE, recall_at_10 DOUBLE, "
    "recall_at_100 DOUBLE, map_at_100 DOUBLE, n_queries BIGINT, skipped_queries BIGINT, k BIGINT, "
    "ndcg_at_k DOUBLE, mrr_at_k DOUBLE, recall_at_k DOUBLE)"
)


# ---- sources and models ---------------------------------------------------------------
def _add_source_call(
    name: str,
    path: str | None = None,
    format: str | None = None,
    *,
    url: str | None = None,
    query: str | None = None,
) -> dict:
    """db.add_source's arguments: the file as ``path`` or ``url``, or a SQL ``query``."""
    if query is not None:
        return dict(name=name, url=query, format="query")
    return dict(name=name, url=url or path or "", format=format)


@sql_function(
    "add_source",
    [Param("name", V), Param("url", V), Param("format", V, None)],
    V,
    said=lambda s, _: f"source '{s.name}' added ({s.format}; columns: {', '.join(s.columns)})",
    method=Method(takes=_add_source_call, doc="Returns the Source, with its columns."),
    **WRITES,
)
def add_source(ctx: Context, name, url, format):
    """Registers a file (csv, tsv, parquet, json/jsonl; globs allowed), a table or view, or a
    SQL query (`format := 'query'`) as a named source; the format is inferred when omitted."""
    from ..data.sources import add_source as add

    return add(ctx.catalog, name, url, format)


@sql_function(
    "remove_source",
    [Param("name", V), Param("cascade", "BOOLEAN", False)],
    V,
    said=lambda dropped, args: (
        f"source '{args['name']}' removed" + (f", with {', '.join(dropped)}" if dropped else "")
    ),
    method=Method(doc="Returns the names of the embedding tables dropped."),
    **WRITES,
)
def remove_source(ctx: Context, name, cascade):
    """Unregisters a source (its file or table is untouched); refuses while embedding tables
    were built from it, unless `cascade := true` drops them too."""
    from ..search.embeddings import remove_source as remove

    return remove(ctx, name, bool(cascade))


@sql_function(
    "remove_embeddings",
    [Param("source", V), Param("model", V)],
    V,
    said=lambda table, _: f"{table} dropped",
    method=Method(doc="Returns the table's name."),
    **WRITES,
)
def remove_embeddings(ctx: Context, source, model):
    """Drops the embedding table `generate_text_embeddings` built from a source with a model
    (`evaluate_retrieval` builds one for its corpus too); the source and the model stay."""
    from ..search.embeddings import remove_embeddings as remove

    return remove(ctx, source, model)


@sql_function(
    "register_model",
    [Param("model_id", V), Param("path", V), Param("base_model", V, None)],
    V,
    said=lambda r, _: (
        f"model '{r.model_id}' registered ({r.dimensions} dimensions, {r.artifact_path})"
    ),
    method=Method(doc="Returns its ModelRecord."),
    **WRITES,
)
def register_model(ctx: Context, model_id, path, base_model):
    """Registers a local model folder under an id: a Hugging Face or sentence-transformers
    folder (its Pooling, Dense and Normalize modules and prompts are used as
    sentence-transformers uses them), or a PEFT LoRA adapter folder on `base_model` (default:
    the base its adapter_config.json names, which must be a known model)."""
    return ctx.models.register(model_id, path, base_model)


@sql_function("remove_model", [Param("model_id", V)], V, **WRITES)
def remove_model(ctx: Context, model_id):
    """Unregisters a registered or fine-tuned model and deletes a fine-tuned model's files;
    refuses while an embedding table, a fine-tuned model or a job depends on it."""
    from ..catalog.models import remove_model as remove

    return remove(ctx.catalog, model_id, ctx.home)


IN_USE_TYPE = (
    "STRUCT(model_id VARCHAR, origin VARCHAR, dimensions INTEGER, artifact_path VARCHAR, "
    "precision VARCHAR, backend VARCHAR, loaded_at TIMESTAMP)[]"
)


@sql_function("jammi_loaded_models", [], IN_USE_TYPE, public=False, side_effects=True)
def loaded_models(ctx: Context):
    """The models this connection loaded: what each runs at and on (memory, never stored)."""
    return ctx.models.in_use_rows()


# The view jammi.models (sql/schema/006_models_in_use.sql) lays this over the stored rows.
# The database holds a macro of this name that gives no rows, for DuckDB clients without jammi;
# this TEMP one, with the same columns and types, takes its place on a jammi connection.
table_macro(
    "jammi_models_in_use",
    [],
    "table (model_id, origin, dimensions, artifact_path, precision, backend, loaded_at)",
    "The models loaded by this connection's process, for the view jammi.models.",
    "SELECT unnest(jammi_loaded_models(), recursive := true)",
    public=False,
)


# ---- fine-tuning jobs -----------------------------------------------------------------
FINE_TUNE_PARAMS = [
    Param("source", V),
    Param("base_model", V),
    Param("columns", LIST),
    Param("method", V, DEFAULT_METHOD),
    Param("task", V, DEFAULT_TASK),
    Param("config", V, None, passed_as="to_json({})::VARCHAR"),
]


def _fine_tune_call(
    source: str,
    base_model: str,
    columns: list[str],
    method: str | None = DEFAULT_METHOD,
    task: str = DEFAULT_TASK,
    config: dict | str | None = None,
    **options: object,
) -> dict:
    """db.fine_tune's arguments: config keys may also be given as keyword arguments."""
    if options or not isinstance(config, str):
        config = {**(config or {}), **options}
    return dict(
        source=source,
        base_model=base_model,
        columns=columns,
        method=method,
        task=task,
        config=config,
    )


@sql_function(
    "fine_tune",
    FINE_TUNE_PARAMS,
    V,
    shows="VARCHAR job id",
    method=Method(
        takes=_fine_tune_call,
        wraps="job",
        doc="`config` is a dict, or its keys are keyword arguments: "
        "fine_tune('pairs', 'tiny', ['text_a', 'text_b'], epochs=2). Returns a Job handle "
        "(job_id, status, progress, wait(), cancel(), model_id).",
    ),
    **WRITES,
)
def fine_tune(ctx: Context, source, base_model, columns, method, task, config):
    """Validates at once (a bad argument is an error and nothing is written), then trains in
    the background; returns the job id immediately. `config` is a STRUCT or a JSON string.
    `method` NULL (and no `target_modules`): the shape that suits the data, query/value
    adapters for scored pairs and a projection head for pairs and triplets (the job's
    `metrics->'$.shape'` says which and why); `'lora'` alone is a projection head."""
    from ..config import FineTuneConfig

    if source is None or base_model is None or columns is None:
        raise InvalidArgumentError("fine_tune needs a source, a base model and a list of columns")
    if config is None or isinstance(config, str):
        cfg = FineTuneConfig.from_json(config)
    else:
        cfg = FineTuneConfig.from_mapping(config)
    return ctx.jobs.submit(source, base_model, list(columns), method, task or DEFAULT_TASK, cfg)


@sql_function(
    "wait_job",
    [Param("job_id", V), Param("timeout_s", DBL, None)],
    V,
    method=Method(
        names={"timeout_s": "timeout"},
        doc="Returns 'succeeded', 'failed', 'cancelled', 'interrupted', or still 'queued' or "
        "'running' after a timeout; unlike Job.wait it does not raise when the job failed.",
    ),
    **CHANGES,
)
def wait_job(ctx: Context, job_id, timeout_s):
    """Blocks until the job ends or the timeout passes; returns its status."""
    return ctx.jobs.wait(job_id, timeout_s)


@sql_function("cancel_job", [Param("job_id", V)], V, **WRITES)
def cancel_job(ctx: Context, job_id):
    """Stops a queued or running job; its partial artifacts are not registered."""
    return ctx.jobs.cancel(job_id)


@sql_function("resume_job", [Param("job_id", V)], V, **WRITES)
def resume_job(ctx: Context, job_id):
    """Continues an interrupted job from its last checkpoint; returns its id."""
    return ctx.jobs.resume(job_id)


@sql_function("delete_job", [Param("job_id", V)], V, **WRITES)
def delete_job(ctx: Context, job_id):
    """Removes an ended job's rows (jammi.jobs, jammi.job_metrics) and work files; a queued or
    running job must be cancelled first. The model it produced stays."""
    return ctx.jobs.delete(job_id)


# ---- embeddings -----------------------------------------------------------------------
@sql_function(
    "embed",
    [Param("model", V), Param("text", V)],
    "FLOAT[]",
    shows="FLOAT[] (the model's d values)",
    arrow=True,
    sees_nulls=True,
    method=None,  # Database.encode_text: a text or a list, as numpy
)
def embed(ctx: Context, model, text):
    """The text's embedding; NULL gives NULL."""
    from ..inference.infer import embed_column

    return embed_column(ctx, model, text, query=False)


@sql_function(
    "embed_query",
    [Param("model", V), Param("text", V)],
    "FLOAT[]",
    shows="FLOAT[] (the model's d values)",
    arrow=True,
    sees_nulls=True,
    method=None,  # Database.encode_text_query
)
def embed_query(ctx: Context, model, text):
    """The query-side embedding (differs from `embed` only for models with a query prompt or
    a query-side adapter)."""
    from ..inference.infer import embed_column

    return embed_column(ctx, model, text, query=True)


@sql_function(
    "generate_text_embeddings",
    [Param("source", V), Param("model", V), Param("columns", LIST), Param("key", V)]
    + [Param("chunk_tokens", BIG, None), Param("chunk_overlap", BIG, DEFAULT_CHUNK_OVERLAP)]
    + [Param("engine", V, "local"), Param("ray_address", V, None)],
    BIG,
    shows="BIGINT rows written",
    said=lambda rows, _: int(rows),
    method=Method(
        doc="Returns the rows written: an int whose .truncated says how many texts were cut "
        "at the model's limit."
    ),
    **WRITES,
)
def generate_text_embeddings(
    ctx: Context, source, model, columns, key, chunk_tokens, overlap, engine, ray_address
):
    """Materializes embeddings of a source's text columns into a table, incrementally (a
    second run embeds only new or changed rows); texts cut at the model's limit are counted
    in `jammi.embedding_tables.truncated`. With `chunk_tokens`, each text is embedded in
    windows of that many tokens overlapping by `chunk_overlap` (by default 32, or a quarter of
    a window of 32 tokens or fewer), one row per window, numbered by `chunk` from 0. With
    `engine := 'ray'` the rows are embedded on a Ray cluster (`ray_address`, else
    `RAY_ADDRESS`, else a local instance; extra `jammi-sql[ray]`) and written here alike."""
    from ..search.embeddings import generate_text_embeddings as generate

    engine = "local" if engine is None else engine
    columns = list(columns or [])
    return generate(ctx, source, model, columns, key, chunk_tokens, overlap, engine, ray_address)


@sql_function("jammi_embedding_table", [Param("source", V), Param("model", V)], V, public=False)
def embedding_table(ctx: Context, source, model):
    """The table semantic_search reads (evaluated while DuckDB binds the macro)."""
    from ..search.embeddings import embedding_table_for

    return embedding_table_for(ctx, source, model)


HITS = "STRUCT(vid BIGINT, score DOUBLE, rank BIGINT)[]"
BOOL = "BOOLEAN"


def _text(param: str, function: str = "semantic_search") -> str:
    return checked(function, param, V).format(param)


def _query_text(function: str) -> str:
    """The query when it is text; NULL when it is a vector (hits UDFs take both)."""
    return "CASE WHEN typeof(query) = 'VARCHAR' THEN query::VARCHAR END"


def _query_vector(function: str) -> str:
    """The query when it is a vector (a list or array of numbers), as DOUBLE[]."""
    return (
        "CASE WHEN typeof(query) LIKE '%]' THEN query::DOUBLE[] "
        "WHEN typeof(query) NOT IN ('VARCHAR', '\"NULL\"') THEN "
        f"error('jammi: {function}''s query must be text (VARCHAR) or a vector (FLOAT[]), "
        "not ' || typeof(query)) END"
    )


def _optional_count(param: str) -> str:
    return f"CASE WHEN {param} IS NULL THEN NULL ELSE {count_arg(param)} END"


def _join_back(hits: str, table: str) -> str:
    """Ranked (vid, score) hits joined to the embedding table's rows: key, column, text."""
    return (
        f"SELECT e.key, e.column_name, e.text, h.score FROM (SELECT unnest({hits}, "
        f"recursive := true)) h JOIN query_table({table}) e ON e.vid = h.vid "
        "ORDER BY h.rank"
    )


@sql_function(
    "jammi_semantic_hits",
    [Param("source", V), Param("model", V), Param("text", V), Param("vector", "DOUBLE[]")]
    + [Param("k", BIG), Param("dims", BIG), Param("filter", V), Param("exact", BOOL)],
    HITS,
    public=False,
    side_effects=True,  # may build or catch up an index
    sees_nulls=True,
)
def semantic_hits(ctx: Context, source, model, text, vector, k, dims, filter, exact):
    """semantic_search's ranked (vid, score) rows."""
    from ..search.queries import semantic

    return semantic(ctx, source, model, text, vector, k, dims, filter, bool(exact)).rows()


table_macro(
    "semantic_search",
    [Param("source", V), Param("model", V), Param("query", V), Param("k", BIG, DEFAULT_K)]
    + [Param("dims", BIG, None), Param("filter", V, None), Param("exact", BOOL, False)],
    "table (key, column_name, text, score)",
    "Top-k keys of the table `generate_text_embeddings` built, by cosine similarity to the "
    "query (text, or a FLOAT[] vector): each key at most once per column, scored by its best "
    "chunk, with that chunk's text. Uses the table's HNSW index when it has one (see "
    "create_vector_index); `exact := true` scans every vector. `filter`: a SQL condition over "
    "the source's columns, applied before the top k. `dims`: compare the first dims "
    "dimensions only (a model trained with matryoshka_dims).",
    _join_back(
        f"jammi_semantic_hits({_text('source')}, {_text('model')}, {_query_text('semantic_search')}, "
        f"{_query_vector('semantic_search')}, {count_arg('k')}, {_optional_count('dims')}, "
        f"{_text('filter')}, {checked('semantic_search', 'exact', BOOL).format('exact')})",
        f"jammi_embedding_table({_text('source')}, {_text('model')})",
    ),
)


@sql_function(
    "jammi_search_table", [Param("source", V), Param("model", V)], V, public=False, sees_nulls=True
)
def search_table(ctx: Context, source, model):
    """The embedding table keyword_search reads: the model's, or the source's newest."""
    from ..search.queries import table_for

    return table_for(ctx, source, model).table_name


@sql_function(
    "jammi_keyword_hits",
    [Param("source", V), Param("model", V), Param("query", V), Param("k", BIG)]
    + [Param("filter", V)],
    HITS,
    public=False,
    side_effects=True,  # may build the keyword index
    sees_nulls=True,
)
def keyword_hits(ctx: Context, source, model, query, k, filter):
    """keyword_search's ranked (vid, score) rows."""
    from ..search.queries import keyword_hits as hits

    return hits(ctx, source, model, query, k, filter).rows()


table_macro(
    "keyword_search",
    [Param("source", V), Param("query", V), Param("k", BIG, DEFAULT_K)]
    + [Param("filter", V, None), Param("model", V, None)],
    "table (key, column_name, text, score)",
    "BM25 top-k over the texts `generate_text_embeddings` stored for the source (lower-cased "
    "words, English stop words removed, Snowball-stemmed); each key at most once per column. "
    "`filter`: as in semantic_search. `model`: whose table to read when the source was embedded "
    "with several (default: the newest).",
    _join_back(
        f"jammi_keyword_hits({_text('source', 'keyword_search')}, {_text('model', 'keyword_search')}, "
        f"{_text('query', 'keyword_search')}, {count_arg('k')}, {_text('filter', 'keyword_search')})",
        f"jammi_search_table({_text('source', 'keyword_search')}, {_text('model', 'keyword_search')})",
    ),
)


@sql_function(
    "jammi_hybrid_hits",
    [Param("source", V), Param("model", V), Param("text", V), Param("vector", "DOUBLE[]")]
    + [Param("k", BIG), Param("filter", V), Param("rrf_k", DBL)]
    + [Param("keyword_weight", DBL), Param("vector_weight", DBL), Param("keyword_query", V)],
    HITS,
    public=False,
    side_effects=True,
    sees_nulls=True,
)
def hybrid_hits(ctx: Context, source, model, text, vector, k, filter, rrf_k, kw, vw, words):
    """hybrid_search's ranked (vid, score) rows."""
    from ..search.queries import hybrid

    return hybrid(ctx, source, model, text, vector, k, filter, rrf_k, kw, vw, words).rows()


table_macro(
    "hybrid_search",
    [Param("source", V), Param("model", V), Param("query", V), Param("k", BIG, DEFAULT_K)]
    + [Param("filter", V, None), Param("rrf_k", DBL, 60), Param("keyword_weight", DBL, 1.0)]
    + [Param("vector_weight", DBL, 1.0), Param("keyword_query", V, None)],
    "table (key, column_name, text, score)",
    "semantic_search and keyword_search fused by reciprocal rank fusion: each row scores "
    "vector_weight / (rrf_k + its semantic rank) + keyword_weight / (rrf_k + its keyword rank), "
    "over each side's top max(k, 100). A vector query needs `keyword_query` for the keyword side.",
    _join_back(
        f"jammi_hybrid_hits({_text('source', 'hybrid_search')}, {_text('model', 'hybrid_search')}, "
        f"{_query_text('hybrid_search')}, {_query_vector('hybrid_search')}, {count_arg('k')}, "
        f"{_text('filter', 'hybrid_search')}, {checked('hybrid_search', 'rrf_k', DBL).format('rrf_k')}, "
        f"{checked('hybrid_search', 'keyword_weight', DBL).format('keyword_weight')}, "
        f"{checked('hybrid_search', 'vector_weight', DBL).format('vector_weight')}, "
        f"{_text('keyword_query', 'hybrid_search')})",
        f"jammi_embedding_table({_text('source', 'hybrid_search')}, {_text('model', 'hybrid_search')})",
    ),
)

scalar_macro(
    "rrf",
    [Param("ranks", "BIGINT[]"), Param("k", DBL, 60)],
    "DOUBLE",
    "Reciprocal rank fusion score of a list of 1-based ranks, one per ranked list (NULL: not "
    "in that list): the sum of 1 / (k + rank). Fuse any ranked lists in SQL, e.g. "
    "rrf([rank_a, rank_b]) over two FULL OUTER JOINed rankings.",
    "CASE WHEN typeof(ranks) SIMILAR TO '(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|"
    'USMALLINT|UINTEGER|UBIGINT|"NULL")\\[\\d*\\]\' THEN coalesce(list_sum([1.0 / (k + r) '
    "FOR r IN ranks::BIGINT[] IF r IS NOT NULL]), 0.0) ELSE error('jammi: rrf''s ranks must be "
    "a list of whole numbers (1-based ranks, NULL where absent), e.g. rrf([1, NULL, 3]); got ' "
    "|| typeof(ranks)) END",
)


@sql_function(
    "create_vector_index",
    [Param("source", V), Param("model", V), Param("connectivity", BIG, None)]
    + [Param("expansion_add", BIG, None), Param("expansion_search", BIG, None)]
    + [Param("storage", V, None), Param("min_rows", BIG, None)],
    V,
    shows="VARCHAR (the index state)",
    **WRITES,
)
def create_vector_index(ctx: Context, source, model, connectivity, add, search, storage, min_rows):
    """Build (or rebuild with new settings) the HNSW index of an embedding table now, whatever
    its size, and keep it with the table from then on. Settings left NULL keep the table's
    (defaults: connectivity 16, expansion_add 128, expansion_search 256, storage 'f16');
    `min_rows` is the size above which tables get an index without asking (default 50000)."""
    from ..search.embeddings import set_vector_index

    changes = dict(
        connectivity=connectivity,
        expansion_add=add,
        expansion_search=search,
        storage=storage,
        min_rows=min_rows,
    )
    return set_vector_index(ctx, source, model, "hnsw", changes)


@sql_function("drop_vector_index", [Param("source", V), Param("model", V)], V, **WRITES)
def drop_vector_index(ctx: Context, source, model):
    """Remove the HNSW index of an embedding table and build none for it again until
    create_vector_index; semantic_search is then exact."""
    from ..search.embeddings import set_vector_index

    return set_vector_index(ctx, source, model, "none", {})


@sql_function("jammi_source_sql", [Param("source", V)], V, public=False)
def source_sql(ctx: Context, source):
    """The SQL that reads a source (evaluated while DuckDB binds read_source)."""
    from ..data.sources import get_source, relation

    return f"SELECT * FROM {relation(get_source(ctx.catalog, source))}"


table_macro(
    "read_source",
    [Param("source", V)],
    "table (the source's columns)",
    "The rows of a registered source, whatever its kind (file, table, view, query): join search "
    "results back with `JOIN read_source('tickets') t ON t.id = s.key`.",
    f"SELECT * FROM query(jammi_source_sql({checked('read_source', 'source', V).format('source')}))",
)


# ---- training data: mine_hard_negatives, pairs_from_documents (registered in this order) ---
from . import data_declarations, interchange_declarations  # noqa: E402,F401,I001


# ---- evaluation -----------------------------------------------------------------------
@sql_function(
    "evaluate_similarity",
    [Param("model", V), Param("source", V), Param("columns", LIST, DEFAULT_SIMILARITY_COLUMNS)],
    SIMILARITY_TYPE,
    shows="STRUCT(spearman, pearson, n)",
    **CHANGES,
)
def evaluate_similarity(ctx: Context, model, source, columns):
    """Spearman and Pearson correlation of cosine similarity with the gold score over
    (text_a, text_b, score) rows."""
    from ..evaluation.tasks import evaluate_similarity as evaluate

    if model is None or source is None:
        raise NotFoundError("evaluate_similarity needs a model and a source")
    return evaluate(ctx, model, source, columns)


@sql_function(
    "evaluate_retrieval",
    [Param("model", V), Param("queries", V), Param("corpus", V), Param("qrels", V)]
    + [Param("k", BIG, DEFAULT_K, passed_as=count_arg("{0}")), Param("per_query", V, None)]
    + [Param("dims", BIG, None)],
    RETRIEVAL_TYPE,
    shows="STRUCT(ndcg_at_10, mrr_at_10, recall_at_1, recall_at_10, recall_at_100, map_at_100, n_queries, ...)",
    **WRITES,
)
def evaluate_retrieval(ctx: Context, model, queries, corpus, qrels, k, per_query, dims):
    """Retrieval metrics of queries (query_id, text) over a corpus (doc_id, text) with qrels
    (query_id, doc_id, score; score > 0 is relevant); `per_query := 'table'` writes one row per
    query; `dims`: the first dims dimensions only (Matryoshka)."""
    from ..evaluation.tasks import evaluate_retrieval as evaluate

    if None in (model, queries, corpus, qrels):
        raise NotFoundError(
            "evaluate_retrieval needs a model and the queries, corpus and qrels sources"
        )
    k = DEFAULT_K if k is None else k
    return evaluate(ctx, model, queries, corpus, qrels, k, per_query, dims)


# ---- installing -----------------------------------------------------------------------
def macros_sql(suffix: str = "") -> str:
    """The TEMP macros (named, defaulted arguments), generated from the registry, and the
    array_* distance functions over lists (see udfs.VECTOR_MACROS)."""
    ours = [fn.macro_sql(suffix) + ";" for fn in FUNCTIONS if fn.has_macro]
    return "\n".join(ours + [vector_macros_sql()])


def install_functions(con: duckdb.DuckDBPyConnection, ctx: Context) -> None:
    ctx.suffix = free_suffix(con, next(fn.udf_name for fn in FUNCTIONS if fn.impl))
    for fn in FUNCTIONS:
        register(con, ctx, fn)
    con.execute(macros_sql(ctx.suffix))


def reference_table() -> str:
    """The README's function reference, generated from the registry."""
    rows = ["| function | returns | does |", "|---|---|---|"]
    for fn in FUNCTIONS:
        if fn.public:
            returns = fn.shows or (fn.returns if isinstance(fn.returns, str) else "")
            rows.append(f"| `{fn.signature()}` | {returns} | {' '.join(fn.doc.split())} |")
    return "\n".join(rows)
