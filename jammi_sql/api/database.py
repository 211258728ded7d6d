"""The Python API: a Database (a DuckDB connection with everything installed).

It mirrors the SQL functions and calls the same state-layer code they call, so an error
is a ``JammiError`` subclass here and a ``jammi:`` DuckDB error in SQL.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import weakref
from collections.abc import Iterable
from typing import Any

import duckdb

from .. import progress
from ..catalog.context import Context
from ..config import DEFAULT_CHUNK_OVERLAP, DEFAULT_K, DEFAULT_METHOD, DEFAULT_TASK, FineTuneConfig
from ..errors import InvalidArgumentError
from .job_handle import Job
from .relation import Relation, open_connection, translated, wrap


def install(
    con: duckdb.DuckDBPyConnection,
    *,
    home: str | os.PathLike | None = None,
    dimensions: int | None = None,
    precision: str = "auto",
) -> Context:
    """Install jammi's schema, functions and macros into a connection you already have
    (a read-only connection gets the catalog read-only). ``dimensions`` is ignored (older
    code passed it): embed returns each model's own width. ``precision``: see connect()."""
    from ..functions.declarations import install_functions
    from ..jobs.runner import LIVE_JOBS, JobRunner
    from ..search.embeddings import clear_leftovers

    with translated():
        ctx = Context(
            con, home, precision=precision, start_runner=JobRunner, live_jobs=LIVE_JOBS.keys()
        )
        clear_leftovers(ctx)  # staging tables of a build a killed process left
        install_functions(con, ctx)
    progress.catch_ctrl_c()
    # At interpreter exit: stop jobs and close the connection, whoever opened it (a connection
    # left open with Python UDFs installed makes DuckDB's bindings print leak warnings).
    _close_at_exit(ctx)
    return ctx


class Database:
    """A DuckDB connection with jammi installed. ``db.con`` is the raw connection."""

    def __init__(
        self,
        path: str | os.PathLike = ":memory:",
        *,
        home: str | os.PathLike | None = None,
        dimensions: int | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
        read_only: bool = False,
        precision: str = "auto",
    ):
        from ..catalog.context import check_precision

        self.path = str(path)
        with translated():
            check_precision(precision)  # before opening anything
        self.con = con if con is not None else open_connection(self.path, read_only)
        self.ctx = install(self.con, home=home, precision=precision)
        self._closed = False
        self._own: duckdb.DuckDBPyConnection | None = None
        _close_at_exit(self)  # even if the caller forgot (see install)

    @property
    def read_only(self) -> bool:
        """Whether the database was opened read-only (jammi calls that write refuse)."""
        return self.ctx.read_only

    @property
    def home(self):
        """The folder of models and job files (``DB.jammi/``, ``$JAMMI_HOME`` or ``home=``)."""
        return self.ctx.home

    # ---- SQL ----------------------------------------------------------------------
    def sql(self, query: str, params: Any = None) -> Relation | None:
        """``con.sql``, with errors raised as JammiErrors when fetched (see Relation)."""
        with translated():
            return wrap(self.con.sql(query, params=params))

    def execute(self, query: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        """``con.execute``: run ``query`` now (``params`` fill its ``?``); fetch from the
        connection it returns. A ``jammi:`` error is raised as its JammiError subclass."""
        with translated():
            return self.con.execute(query, params or [])

    def interrupt(self) -> None:
        """Stop what runs on this database now, from any thread: DuckDB's own work at its next
        chunk (``con.interrupt()``) and a long jammi call (``embed``, ``generate_text_embeddings``,
        ``evaluate_*``, in SQL or through this API) after its current micro-batch, rolling back
        what it wrote. It raises CancelledError (a ``jammi:`` error) in the thread it stops."""
        if progress.cancel(owner=self.ctx):
            return  # the call raises CancelledError, which names what happened
        self.con.interrupt()
        if self._own is not None:
            self._own.interrupt()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """The API's own connection to the database, so the state of ``db.con`` (a result
        left half-fetched, an open transaction) never affects ``db.search`` and the like."""
        if self._own is None:
            from ..functions.declarations import macros_sql

            self._own = self.con.cursor()  # UDFs are shared; TEMP macros are not
            self._own.execute(macros_sql(self.ctx.suffix))
        return self._own

    def _writes(self, what: str) -> None:
        self.ctx.require_writable(what)

    def close(self) -> None:
        """Stop this database's jobs (a running one shows as interrupted and can be resumed)
        and close the connection; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self.ctx.close()
        if self._own is not None:
            self._own.close()
        self.con.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sources and models -------------------------------------------------------
    def add_source(
        self,
        name: str,
        path: str | None = None,
        format: str | None = None,
        *,
        url: str | None = None,
        query: str | None = None,
    ):
        """Register a named source to train, embed or evaluate on: a file (csv, tsv, parquet,
        json, jsonl; globs allowed), a table or view, or a SQL query (``query=`` or
        ``format='query'``); the format is inferred when omitted. Returns the Source, with its
        columns; a source that cannot be read is refused and nothing is written."""
        from ..data.sources import add_source

        self._writes("add_source")
        if query is not None:
            url, format = query, "query"
        return add_source(self.ctx.catalog, name, url or path or "", format)

    def remove_source(self, name: str, cascade: bool = False) -> list[str]:
        """Unregister a source; ``cascade=True`` also drops the embedding tables built from
        it (refused, naming them, otherwise). Returns the tables dropped."""
        from ..search.embeddings import remove_source

        self._writes("remove_source")
        return remove_source(self.ctx, name, cascade)

    def remove_embeddings(self, source: str, model: str) -> str:
        """Drop the embedding table built from ``source`` with ``model``; returns its name."""
        from ..search.embeddings import remove_embeddings

        self._writes("remove_embeddings")
        return remove_embeddings(self.ctx, source, model)

    def register_model(self, model_id: str, path: str | os.PathLike, base_model: str | None = None):
        """Register a local Hugging Face or sentence-transformers model folder (config.json,
        weights, tokenizer), or a PEFT adapter folder on ``base_model``, under ``model_id``, for
        ``embed``, ``fine_tune`` and the rest; returns its ModelRecord."""
        self._writes("register_model")
        record = self.ctx.models.register(model_id, str(path), base_model)
        return record

    def export_model(
        self,
        model: str,
        path: str | os.PathLike,
        format: str = "sentence-transformers",
        overwrite: bool = False,
    ) -> str:
        """Write ``model`` to the folder ``path`` as 'sentence-transformers', 'peft', 'onnx' or
        'onnx-int8', with a model card; returns the folder written (see ``export_model``)."""
        from ..interchange.export import export_model

        self._writes("export_model")
        return export_model(self.ctx, model, str(path), format, overwrite)

    def remove_model(self, model_id: str) -> str:
        """Unregister a model (a fine-tuned one's files are deleted); refused while an
        embedding table, a fine-tuned model or a job depends on it."""
        from ..catalog.models import remove_model

        self._writes("remove_model")
        return remove_model(self.ctx.catalog, model_id, self.ctx.home)

    def delete_job(self, job_id: str) -> str:
        """Remove an ended job's rows and files (cancel a queued or running one first)."""
        self._writes("delete_job")
        return self.ctx.jobs.delete(job_id)

    # ---- fine-tuning --------------------------------------------------------------
    def fine_tune(
        self,
        source: str,
        base_model: str,
        columns: list[str],
        method: str = DEFAULT_METHOD,
        task: str = DEFAULT_TASK,
        config: dict | None = None,
        **options: Any,
    ) -> Job:
        """Validate and queue a job; config keys may be given as keyword arguments."""
        self._writes("fine_tune")
        cfg = FineTuneConfig.from_mapping({**(config or {}), **options})
        job_id = self.ctx.jobs.submit(source, base_model, _names(columns), method, task, cfg)
        return Job(self, job_id)

    def job(self, job_id: str) -> Job:
        """The Job handle of an existing job (an unknown id is a NotFoundError)."""
        self.ctx.jobs.get(job_id)
        return Job(self, job_id)

    def wait_job(self, job_id: str, timeout: float | None = None) -> str:
        """Block until the job ends, or ``timeout`` seconds pass; return its status
        ('succeeded', 'failed', 'cancelled', 'interrupted', or still 'queued'/'running' after a
        timeout). Unlike ``Job.wait`` it does not raise when the job failed."""
        return self.ctx.jobs.wait(job_id, timeout)

    # ---- embeddings and search ----------------------------------------------------
    def encode_text(self, model: str, text: str | list[str], dims: int | None = None):
        """A float32 vector for one text (or an (n, d) array for a list); ``dims`` keeps the
        first dims dimensions (for a model trained with matryoshka_dims)."""
        return self._encode(model, text, query=False, dims=dims)

    def encode_text_query(self, model: str, text: str | list[str], dims: int | None = None):
        """The query-side embedding, as ``embed_query`` computes it."""
        return self._encode(model, text, query=True, dims=dims)

    def _encode(self, model: str, text: str | list[str], query: bool, dims: int | None):
        from ..inference.infer import check_dims, embed_texts, model_dimensions

        single = isinstance(text, str)
        many = isinstance(text, Iterable) and not isinstance(text, (bytes, dict))
        texts = [text] if single else list(text) if many else None  # a list, Series, array...
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise InvalidArgumentError(
                f"{'encode_text_query' if query else 'encode_text'} needs a text or a list of "
                f"texts, got {type(text).__name__}"
                + ("" if texts is None else " items that are not all text")
            )
        with progress.call(self.ctx):
            if dims is not None:  # before embedding anything
                check_dims(dims, model_dimensions(self.ctx, model))
            vectors = embed_texts(self.ctx, model, texts, query=query)[:, :dims]
        return vectors[0] if single else vectors

    def generate_text_embeddings(
        self,
        source: str,
        model: str,
        columns: list[str],
        key: str,
        chunk_tokens: int | None = None,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        engine: str = "local",
        ray_address: str | None = None,
    ) -> int:
        """Rows written (an int whose ``.truncated`` says how many texts were cut at the
        model's limit); ``chunk_tokens`` embeds each text in overlapping token windows;
        ``engine='ray'`` embeds on a Ray cluster (``ray_address``, else ``RAY_ADDRESS``, else
        a local instance) and writes here, with the same all-or-nothing update."""
        from ..search.embeddings import generate_text_embeddings

        self._writes("generate_text_embeddings")
        with progress.call(self.ctx):
            return generate_text_embeddings(
                self.ctx,
                source,
                model,
                _names(columns),
                key,
                chunk_tokens,
                chunk_overlap,
                engine=engine,
                ray_address=ray_address,
            )

    def semantic_search(
        self,
        source: str,
        model: str,
        query: str | list[float],
        k: int = DEFAULT_K,
        dims: int | None = None,
        filter: str | None = None,
        exact: bool = False,
    ):
        """Top-k rows of a materialized source for ``query`` (text, or a vector), as a pyarrow
        Table (key, column_name, text, score). ``filter``: a SQL condition over the source's
        columns, applied before the top k; ``exact``: skip the HNSW index; ``dims``: the first
        dims dimensions only (Matryoshka)."""
        return self._table(
            "semantic_search(?, ?, ?, k := ?, dims := ?, filter := ?, exact := ?)",
            [source, model, _query(query), k, dims, filter, exact],
        )

    search = semantic_search  # the name of earlier releases

    def keyword_search(
        self,
        source: str,
        query: str,
        k: int = DEFAULT_K,
        filter: str | None = None,
        model: str | None = None,
    ):
        """BM25 top-k rows of the texts ``generate_text_embeddings`` stored for ``source``, as
        a pyarrow Table (key, column_name, text, score)."""
        return self._table(
            "keyword_search(?, ?, k := ?, filter := ?, model := ?)",
            [source, query, k, filter, model],
        )

    def hybrid_search(
        self,
        source: str,
        model: str,
        query: str | list[float],
        k: int = DEFAULT_K,
        filter: str | None = None,
        rrf_k: float = 60,
        keyword_weight: float = 1.0,
        vector_weight: float = 1.0,
        keyword_query: str | None = None,
    ):
        """Semantic and keyword search fused by reciprocal rank fusion, as a pyarrow Table
        (key, column_name, text, score); see hybrid_search in the README."""
        return self._table(
            "hybrid_search(?, ?, ?, k := ?, filter := ?, rrf_k := ?, keyword_weight := ?, "
            "vector_weight := ?, keyword_query := ?)",
            [source, model, _query(query), k, filter, rrf_k, keyword_weight, vector_weight]
            + [keyword_query],
        )

    def create_vector_index(self, source: str, model: str, **settings: Any) -> str:
        """Build the HNSW index of an embedding table now (settings: connectivity,
        expansion_add, expansion_search, storage, min_rows); returns its state."""
        names = ["connectivity", "expansion_add", "expansion_search", "storage", "min_rows"]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise InvalidArgumentError(
                f"unknown index setting(s) {', '.join(unknown)}; the settings are {', '.join(names)}"
            )
        self._writes("create_vector_index")
        args = ", ".join(f"{n} := ?" for n in names)
        with progress.call(self.ctx), translated():
            return (
                self._cursor()
                .execute(
                    f"SELECT create_vector_index(?, ?, {args})",
                    [source, model, *(settings.get(n) for n in names)],
                )
                .fetchone()[0]
            )

    def drop_vector_index(self, source: str, model: str) -> str:
        """Remove an embedding table's HNSW index; search over it is exact from then on."""
        self._writes("drop_vector_index")
        with translated():
            return (
                self._cursor()
                .execute("SELECT drop_vector_index(?, ?)", [source, model])
                .fetchone()[0]
            )

    def _table(self, call: str, params: list):
        with translated():
            return self._cursor().sql(f"SELECT * FROM {call}", params=params).to_arrow_table()

    def mine_hard_negatives(
        self,
        source: str,
        model: str,
        anchor: str,
        positive: str,
        corpus: str | None = None,
        output: str | None = None,
        **settings: Any,
    ) -> str:
        """(anchor, positive, negative) rows into a new source, as the SQL function writes them;
        settings: num_negatives, range_min, range_max, absolute_margin, relative_margin,
        max_score, min_score, sampling, seed."""
        from ..data.hard_negatives import mine_hard_negatives
        from ..data.mining import MiningSettings

        self._writes("mine_hard_negatives")
        try:
            options = MiningSettings(**settings)
        except TypeError:
            known = ", ".join(f.name for f in dataclasses.fields(MiningSettings))
            raise InvalidArgumentError(
                f"mine_hard_negatives takes the settings {known}; got {', '.join(settings)}"
            ) from None
        with progress.call(self.ctx):
            return mine_hard_negatives(
                self.ctx, source, model, anchor, positive, corpus, output, options
            )

    def pairs_from_documents(
        self,
        source: str,
        text: str,
        title: str | None = None,
        model: str | None = None,
        output: str | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 0,
    ) -> str:
        """(anchor, positive) pairs into a new source, as the SQL function writes them."""
        from ..data.doc_pairs import pairs_from_documents

        self._writes("pairs_from_documents")
        with progress.call(self.ctx):
            return pairs_from_documents(
                self.ctx, source, text, title, model, output, chunk_tokens, chunk_overlap
            )

    def generate_questions(
        self,
        source: str,
        text: str,
        model: str,
        output: str | None = None,
        per_document: int = 1,
        max_new_tokens: int = 32,
        prompt: str | None = None,
        seed: int = 42,
    ) -> str:
        """(question, text) pairs written by a registered text-generation model into a new
        source, as the SQL function writes them."""
        from ..data.doc_pairs import generate_questions

        self._writes("generate_questions")
        with progress.call(self.ctx):
            return generate_questions(
                self.ctx, source, text, model, output, per_document, max_new_tokens, prompt, seed
            )

    # ---- evaluation ---------------------------------------------------------------
    def evaluate_similarity(
        self, model: str, source: str, columns: list[str] | None = None
    ) -> dict:
        """How well ``model``'s cosine similarity follows the gold scores of ``source``'s
        (text_a, text_b, score) rows (``columns`` names them otherwise): a dict of
        ``spearman``, ``pearson`` and ``n`` (the pairs used)."""
        from ..evaluation.tasks import evaluate_similarity

        with progress.call(self.ctx):
            return evaluate_similarity(self.ctx, model, source, columns)

    def evaluate_retrieval(
        self,
        model: str,
        queries: str,
        corpus: str,
        qrels: str,
        k: int = DEFAULT_K,
        per_query: str | None = None,
        dims: int | None = None,
    ) -> dict:
        """Retrieval metrics of ``model``: the ``queries`` source (query_id, text) ranks the
        ``corpus`` source (doc_id, text), judged by the ``qrels`` source (query_id, doc_id,
        score; score > 0 is relevant). Returns a dict: ndcg_at_10, mrr_at_10, recall_at_1/10/100,
        map_at_100, n_queries, skipped_queries, and ndcg_at_k, mrr_at_k, recall_at_k at cut-off
        ``k``. It embeds the
        corpus into an embedding table (reused next time); ``per_query`` names a table to write
        one row per query into; ``dims`` compares the first dims dimensions (Matryoshka)."""
        from ..evaluation.tasks import evaluate_retrieval

        self._writes("evaluate_retrieval")
        with progress.call(self.ctx):
            return evaluate_retrieval(self.ctx, model, queries, corpus, qrels, k, per_query, dims)


def _names(columns: Any) -> list[str]:
    """Column names as a list; one name alone is a list of one (not its characters)."""
    if isinstance(columns, str):
        return [columns]
    return list(columns or [])


_OPEN: weakref.WeakSet = weakref.WeakSet()  # Databases and Contexts to close at exit


def _close_at_exit(opened: Database | Context) -> None:
    """Close ``opened`` at interpreter exit unless it is gone by then (one hook for all)."""
    if not _OPEN:
        atexit.unregister(_close_all_quietly)
        atexit.register(_close_all_quietly)
    _OPEN.add(opened)


def _close_all_quietly() -> None:
    for opened in list(_OPEN):  # Databases first: they close their own context too
        if isinstance(opened, Database):
            _quietly(opened.close)
    for opened in list(_OPEN):
        if isinstance(opened, Context):
            _quietly(opened.close)
            _quietly(opened.con.close)


def _quietly(close) -> None:
    try:
        close()
    except Exception:
        pass


def _query(query: Any) -> Any:
    """A vector query as a list of floats (numpy arrays included), text as it is."""
    if isinstance(query, str) or query is None:
        return query
    return [float(x) for x in query]
