"""Context: the state that one connection's SQL functions and Python API share.

It holds the home folder (artifacts), the catalog on a cursor of its own, the model
registry and the job runner. No torch here; the engine is loaded on first use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import duckdb

from .catalog import Catalog
from .models import ModelRegistry

DEFAULT_DIMENSIONS = 384  # the bundled all-MiniLM-L6-v2


def database_path(con: duckdb.DuckDBPyConnection) -> str | None:
    """The file behind a connection, or None for an in-memory database."""
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return row[0][0] if row and row[0][0] else None


def home_folder(
    con: duckdb.DuckDBPyConnection, home: str | os.PathLike | None = None
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
    folder.mkdir(parents=True, exist_ok=True)
    return folder, temporary


class Context:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        home: str | os.PathLike | None = None,
        dimensions: int | None = None,
    ):
        self.con = con
        self.home, self._temporary_home = home_folder(con, home)
        self.catalog = Catalog.open(con)
        self.models = ModelRegistry(self.catalog)
        self.fixed_dimensions = dimensions
        self.dimensions = dimensions or self.catalog.preferred_dimensions() or DEFAULT_DIMENSIONS
        self._jobs = None

    @property
    def jobs(self):
        """The job runner, started on first use (it marks jobs a dead process left running)."""
        if self._jobs is None:
            from .jobs import JobRunner

            catalog = self.catalog.cursor()  # the runner's thread gets a cursor of its own
            self._jobs = JobRunner(catalog, ModelRegistry(catalog), self.home)
        return self._jobs

    def wanted_dimensions(self) -> int:
        return self.fixed_dimensions or self.catalog.preferred_dimensions() or DEFAULT_DIMENSIONS

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.shutdown()
        if self._temporary_home:  # an in-memory catalog dies with the connection; so do its files
            shutil.rmtree(self.home, ignore_errors=True)
