"""Context: the state that one connection's SQL functions and Python API share.

It holds the home folder (artifacts), the catalog on a cursor of its own, the model
registry and the job runner. No torch here; the engine is loaded on first use.

Opening a context marks jobs that a gone process left queued or running as interrupted,
before the user's first query; a read-only context writes nothing (no migrations, no home
folder) and refuses the functions that write.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (its exit hook must run after the runner's)
import os
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import duckdb

from ..defaults import PRECISIONS
from .models import ModelRegistry
from .tables import Catalog


def database_path(con: duckdb.DuckDBPyConnection) -> str | None:
    """The file behind a connection, or None for an in-memory database."""
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return row[0][0] if row and row[0][0] else None


def is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection's database was opened read-only."""
    row = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(row and row[0][0])


def home_folder(
    con: duckdb.DuckDBPyConnection, home: str | os.PathLike | None = None, create: bool = True
) -> tuple[Path, bool]:
    """``home=``, else $JAMMI_HOME, else ``<db file>.jammi/``, else a temporary folder.

    Returns the folder and whether it is temporary (an in-memory database's, removed on close).
    """
    chosen = home or os.environ.get("JAMMI_HOME")
    temporary = False
    if not chosen:
        path = database_path(con)
        temporary = path is None
        chosen = f"{path}.jammi" if path else tempfile.mkdtemp(prefix="jammi-")
    folder = Path(chosen).expanduser().resolve()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder, temporary


def check_precision(precision: object) -> str:
    """One of PRECISIONS (a JammiError naming them otherwise)."""
    if precision not in PRECISIONS:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"precision {precision!r} is not one of {', '.join(PRECISIONS)}; use 'auto' (reduced "
            "precision where the hardware has it and the fidelity check passes) or 'fp32'"
        )
    return str(precision)


class Context:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        home: str | os.PathLike | None = None,
        read_only: bool = False,
        precision: str = "auto",
        *,
        start_runner: Callable[[Catalog, ModelRegistry, Path], Any] | None = None,
        live_jobs: Collection[str] = (),
    ):
        """``start_runner(catalog, models, home)`` makes the job runner on first use (the jobs
        layer passes its JobRunner: the catalog never imports it); ``live_jobs`` are the ids
        this process runs already, which opening must not mark interrupted."""
        self.con = con
        self._start_runner = start_runner
        # Called with every folder a client names for jammi to write (export_model); a server
        # that sandboxes its clients sets it to refuse folders outside what it serves.
        self.check_write_path: Callable[[str], None] = lambda path: None
        self.precision = check_precision(precision)
        self.read_only = read_only or is_read_only(con)
        self.home, self._temporary_home = home_folder(con, home, create=not self.read_only)
        # An in-memory catalog dies with the connection; so do its files: on close, or when
        # this context is collected or the interpreter exits without a close.
        self._remove_home = (
            weakref.finalize(self, shutil.rmtree, str(self.home), True)
            if self._temporary_home
            else None
        )
        self.catalog = Catalog.open(con, read_only=self.read_only)
        if not self.read_only:  # before the user's first query: jobs a dead process left behind
            self.catalog.mark_interrupted(live_jobs)
        self.models = ModelRegistry(self.catalog, self.home)
        self._jobs = None
        self.suffix = ""  # appended to this connection's UDF names (see functions.install)

    def require_writable(self, what: str) -> None:
        """Refuse a call that writes when the database was opened read-only."""
        if self.read_only:
            from ..errors import ReadOnlyError

            raise ReadOnlyError(
                f"{what} writes, and this database was opened read-only; open it without "
                "read_only (jammi-sql or jammi-sql serve without --readonly; restart a server) "
                "once no other process holds it"
            )

    def unfinished_jobs(self) -> list[str]:
        """Ids of jobs this connection's runner still has queued or running."""
        return [] if self._jobs is None else self._jobs.unfinished()

    @property
    def jobs(self):
        """The job runner, started on first use."""
        if self._jobs is None:
            if self._start_runner is None:
                raise RuntimeError("this Context was made without a job runner (start_runner)")
            catalog = self.catalog.cursor()  # the runner's thread gets a cursor of its own
            self._jobs = self._start_runner(catalog, ModelRegistry(catalog, self.home), self.home)
            # At interpreter exit, before threads are joined (imports still work then): stop
            # unfinished jobs cleanly, so they show as interrupted, never queued or failed.
            try:
                threading._register_atexit(_stop_at_exit, weakref.ref(self._jobs))
            except (AttributeError, RuntimeError):
                atexit.register(_stop_at_exit, weakref.ref(self._jobs))
        return self._jobs

    def stop_jobs(self) -> None:
        """Stop the job runner: a running job keeps its checkpoint; both it and any queued
        job show as ``interrupted`` and resume_job continues them."""
        if self._jobs is not None:
            self._jobs.shutdown()

    def close(self) -> None:
        self.stop_jobs()
        if self._remove_home is not None:
            self._remove_home()


def _stop_at_exit(ref: weakref.ReferenceType) -> None:
    """One line when jobs are left unfinished at exit; then they are marked interrupted."""
    runner = ref()
    if runner is None or runner._shutdown:
        return
    pending = runner.unfinished()
    if pending:
        print(
            f"jammi: exiting with {len(pending)} unfinished job(s) ({', '.join(pending)}); "
            "they are marked interrupted and resume_job continues them (wait for them with "
            "job.wait() or wait_job before exiting to let them finish)",
            file=sys.stderr,
        )
    try:
        runner.shutdown()
    except Exception:
        pass
