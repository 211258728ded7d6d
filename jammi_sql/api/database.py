"""The Python API: a Database (a DuckDB connection with everything installed).

Its methods that mirror SQL functions are made from the registry (:mod:`.methods`) and call
the same function bodies, so an error is a ``JammiError`` subclass here and the same
``jammi:`` DuckDB error in SQL.
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Iterable
from typing import Any

import duckdb

from .. import progress
from ..catalog.context import Context
from ..errors import InvalidArgumentError
from .job_handle import Job
from .methods import add_methods
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
        try:
            self.ctx = install(self.con, home=home, precision=precision)
        except BaseException:
            if con is None:  # ours: let go of the file (and its lock) at once
                self.con.close()
            raise
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

    # ---- the SQL functions ---------------------------------------------------------
    # Every SQL function has a method of the same name, parameters and docstring, made from
    # the registry by jammi_sql.api.methods (add_source, fine_tune, semantic_search, ...).
    # Written here: what has no SQL function of its own.

    def job(self, job_id: str) -> Job:
        """The Job handle of an existing job (an unknown id is a NotFoundError)."""
        self.ctx.jobs.get(job_id)
        return Job(self, job_id)

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


add_methods(Database)  # a method for each SQL function (jammi_sql.api.methods)
Database.search = Database.semantic_search  # the name of earlier releases
