"""jammi-sql: fine-tune and serve text-embedding models from DuckDB SQL.

    import jammi_sql
    db = jammi_sql.connect("work.duckdb")
    db.sql("SELECT embed('all-MiniLM-L6-v2', 'hello')")

Importing this package does not import torch; the engine loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["connect", "install", "Database", "Job", "JammiError", "__version__"]

if TYPE_CHECKING:
    from .api.database import Database, Job


def connect(
    path: str = ":memory:",
    *,
    home: str | None = None,
    dimensions: int | None = None,
    read_only: bool = False,
    precision: str = "auto",
) -> Database:
    """Open (or create) a DuckDB database with every jammi function installed.

    ``read_only=True`` opens an existing file without writing: no migrations, and jammi
    functions that write refuse; several read-only processes may share a file.
    ``dimensions`` is accepted for older code and ignored: ``embed`` returns a ``FLOAT[]``
    as wide as each model's embeddings.
    ``precision``: ``'auto'`` (bf16/fp16 weights where the hardware runs them natively and a
    calibration check keeps cosine >= 0.999 to fp32, else fp32), ``'fp32'``, ``'bf16'`` or
    ``'fp16'`` (forced). ``jammi.models.precision`` shows what each loaded model runs at.
    """
    from .api.database import Database

    return Database(
        path, home=home, dimensions=dimensions, read_only=read_only, precision=precision
    )


def install(
    con, *, home: str | None = None, dimensions: int | None = None, precision: str = "auto"
):
    """Install jammi into a duckdb connection you already have; returns its Context."""
    from .api.database import install as _install

    return _install(con, home=home, dimensions=dimensions, precision=precision)


def __getattr__(name: str):
    if name in ("Database", "Job"):
        from .api import database

        return getattr(database, name)
    if name == "JammiError":
        from .errors import JammiError

        return JammiError
    raise AttributeError(name)
