"""All SQL against schema ``jammi``: migrations and typed records, never bare tuples.

A Catalog owns its own DuckDB cursor, so it can be used from inside a UDF (which may not
run SQL on the calling connection) and from the job runner's thread. Its writes commit on
their own, independently of the caller's transaction.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

UNFINISHED = ("queued", "running")
GONE = "the process running this job stopped; resume_job continues it"


def sql_dir() -> Path:
    """The packaged ``sql/`` folder (inside the wheel), or the repository's in a checkout."""
    packaged = Path(str(resources.files("jammi_sql"))) / "sql"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "sql"


@dataclass
class Source:
    name: str
    kind: str  # file | table | query
    url: str
    format: str
    columns: list[str]
    column_types: list[str]
    created_at: datetime | None = None

    def column_type(self, column: str) -> str:
        return self.column_types[self.columns.index(column)]


@dataclass
class ModelRecord:
    model_id: str
    kind: str  # base | fine_tuned
    origin: str
    base_model_id: str | None = None
    adapter_type: str | None = None
    task: str = "text_embedding"
    dimensions: int | None = None
    artifact_path: str | None = None
    job_id: str | None = None
    metrics: dict | None = None
    created_at: datetime | None = None
    # What the model runs at once loaded in this process (fp32, bf16, fp16, onnx, onnx-int8)
    # and on (torch, onnxruntime): jammi.models shows them from memory (see ModelRegistry.in_use)
    precision: str | None = None
    backend: str | None = None


@dataclass
class JobRecord:
    job_id: str
    status: str
    source: str
    base_model: str
    method: str
    task: str
    columns: list[str]
    loss: str
    config: dict
    progress: float = 0.0
    epoch: int | None = None
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    model_id: str | None = None
    error: str | None = None
    metrics: dict | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class EmbeddingTable:
    table_name: str
    source: str
    model_id: str
    columns: list[str]
    key: str
    dimensions: int
    row_count: int
    updated_at: datetime | None = None
    chunk_tokens: int | None = None  # NULL: one row per text
    chunk_overlap: int | None = None
    truncated: int | None = None  # texts the last run cut at the model's limit
    generation: int | None = None  # bumped by each build; indexes record the one they hold
    index_kind: str | None = None  # 'none' | 'hnsw' (NULL: none yet)
    index_state: str | None = None  # 'ready' | 'stale' | 'building'
    index_bytes: int | None = None
    index_settings: dict | None = None  # search.index.IndexSettings as a dict (NULL: auto)
    keyword_index: bool | None = None


_EPOCH = [0]  # bumped after every write to jammi.embedding_tables in this process


def tables_epoch() -> int:
    """Changes whenever this process writes jammi.embedding_tables (only one process writes a
    database at a time), so a reader may cache what it read at the epoch it read it."""
    return _EPOCH[0]


def _bump() -> None:
    _EPOCH[0] += 1


_JSON_FIELDS = {"config", "metrics", "index_settings"}
LISTINGS = {
    "tables": "SELECT table_schema AS schema, table_name AS name, table_type AS type "
    "FROM information_schema.tables ORDER BY ALL",
    "jobs": "SELECT job_id, status, progress, epoch, train_loss, val_loss FROM jammi.jobs "
    "ORDER BY created_at",
    "models": "SELECT model_id, kind, base_model_id, dimensions FROM jammi.models ORDER BY created_at",
    "sources": "SELECT name, kind, format, url FROM jammi.sources ORDER BY created_at",
}


def _record(cls, row: tuple, names: list[str]):
    values = dict(zip(names, row, strict=True))
    for name in _JSON_FIELDS & values.keys():
        if isinstance(values[name], str):
            values[name] = json.loads(values[name])
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class Catalog:
    con: duckdb.DuckDBPyConnection  # a cursor of its own
    lock: threading.RLock = field(default_factory=threading.RLock)

    read_only: bool = False

    @classmethod
    def open(cls, con: duckdb.DuckDBPyConnection, read_only: bool = False) -> Catalog:
        catalog = cls(con.cursor(), read_only=read_only)
        if not read_only:
            catalog.migrate()
        elif not catalog.query("SELECT 1 FROM duckdb_schemas() WHERE schema_name = 'jammi'"):
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(
                "this database has no jammi catalog yet, and a read-only open cannot create "
                "one; open it once without read_only"
            )
        else:
            found = catalog.query("SELECT coalesce(max(version), 0) FROM jammi.schema_version")
            _refuse_newer(found[0][0], int(_schema_scripts()[-1].name.split("_", 1)[0]))
        return catalog

    def cursor(self) -> Catalog:
        """Another Catalog on a fresh cursor of the same database (for another thread)."""
        return Catalog(self.con.cursor(), read_only=self.read_only)

    # ---- plumbing -----------------------------------------------------------------
    def execute(self, sql: str, params: list | None = None) -> duckdb.DuckDBPyConnection:
        with self.lock:
            return self.con.execute(sql, params or [])

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.lock:
            return self.con.execute(sql, params or []).fetchall()

    def arrow(self, sql: str, params: list | None = None):
        """A query's result as a pyarrow Table."""
        with self.lock:
            return self.con.sql(sql, params=params).to_arrow_table()

    def database_key(self) -> str:
        """What identifies this catalog's database in this process: its file, or for an
        in-memory database the connection it lives in (cached caches key on it)."""
        if "_database_key" not in self.__dict__:
            path = self.query(
                "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
            )[0][0]
            self.__dict__["_database_key"] = path or f"memory:{uuid.uuid4().hex}"
        return self.__dict__["_database_key"]

    def _select(
        self, cls, table: str, where: str = "", params: list | None = None, order: str = ""
    ):
        with self.lock:
            cur = self.con.execute(f"SELECT * FROM jammi.{table} {where} {order}", params or [])
            names = [d[0] for d in cur.description]
            return [_record(cls, row, names) for row in cur.fetchall()]

    def _insert(self, table: str, record: Any) -> None:
        values = {
            f.name: getattr(record, f.name)
            for f in fields(record)
            if getattr(record, f.name) is not None
        }
        for name in _JSON_FIELDS & values.keys():
            values[name] = json.dumps(values[name])
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.execute(f"INSERT INTO jammi.{table} ({cols}) VALUES ({marks})", list(values.values()))

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    # ---- schema -------------------------------------------------------------------
    def migrate(self) -> int:
        """Create or upgrade schema ``jammi``; idempotent. Returns the schema version."""
        with self.lock:
            self.con.execute("CREATE SCHEMA IF NOT EXISTS jammi")
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS jammi.schema_version "
                "(version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
            )
            current = self.con.execute(
                "SELECT coalesce(max(version), 0) FROM jammi.schema_version"
            ).fetchall()[0][0]
            scripts = _schema_scripts()
            _refuse_newer(current, int(scripts[-1].name.split("_", 1)[0]))
            for path in scripts:
                version = int(path.name.split("_", 1)[0])
                if version <= current:
                    continue
                self.con.execute("BEGIN TRANSACTION")
                try:
                    self.con.execute(path.read_text())
                    self.con.execute(
                        "INSERT INTO jammi.schema_version (version) VALUES (?)", [version]
                    )
                    self.con.execute("COMMIT")
                except Exception:
                    self.con.execute("ROLLBACK")
                    raise
                current = version
            return current

    # ---- sources ------------------------------------------------------------------
    def get_source(self, name: str) -> Source | None:
        found = self._select(Source, "sources", "WHERE name = ?", [name])
        return found[0] if found else None

    def sources(self) -> list[Source]:
        return self._select(Source, "sources", order="ORDER BY name")

    def add_source(self, source: Source) -> None:
        self._insert("sources", source)

    def remove_source(self, name: str, tables: list[EmbeddingTable] | None = None) -> None:
        """Unregister a source and drop the embedding tables given, all or nothing."""
        with self.transaction() as tx:
            tx.drop_embedding_tables(tables or [])
            tx.execute("DELETE FROM jammi.sources WHERE name = ?", [name])

    def drop_embedding_tables(self, tables: list[EmbeddingTable]) -> None:
        """Drop materialized embedding tables and their catalog rows (inside a transaction)."""
        for table in tables:
            self.execute(f"DROP TABLE IF EXISTS {table.table_name}")
            self.execute(
                "DELETE FROM jammi.embedding_tables WHERE table_name = ?", [table.table_name]
            )
        _bump()

    # ---- models -------------------------------------------------------------------
    def get_model(self, model_id: str) -> ModelRecord | None:
        found = self._select(ModelRecord, "models", "WHERE model_id = ?", [model_id])
        return found[0] if found else None

    def models(self) -> list[ModelRecord]:
        return self._select(ModelRecord, "models", order="ORDER BY created_at")

    def add_model(self, model: ModelRecord) -> None:
        self._insert("model_records", model)  # jammi.models is a view over it (migration 006)

    def remove_model(self, model_id: str) -> None:
        self.execute("DELETE FROM jammi.model_records WHERE model_id = ?", [model_id])

    # ---- jobs ---------------------------------------------------------------------
    def add_job(self, job: JobRecord) -> None:
        self._insert("jobs", job)

    def get_job(self, job_id: str) -> JobRecord | None:
        found = self._select(JobRecord, "jobs", "WHERE job_id = ?", [job_id])
        return found[0] if found else None

    def jobs(self, status: str | None = None) -> list[JobRecord]:
        if status is None:
            return self._select(JobRecord, "jobs", order="ORDER BY created_at")
        return self._select(JobRecord, "jobs", "WHERE status = ?", [status], "ORDER BY created_at")

    def mark_interrupted(self, live: Collection[str] = ()) -> list[str]:
        """Mark jobs a process that is gone left queued or running as ``interrupted``.

        DuckDB's file lock means no other process can have the file open for writing, so a
        job not live in this process (``live``: the job runner's ids) is not running anywhere.
        Returns their ids.
        """
        placeholders = ", ".join("?" for _ in UNFINISHED)
        rows = self.query(
            f"SELECT job_id FROM jammi.jobs WHERE status IN ({placeholders})", list(UNFINISHED)
        )
        gone = [r[0] for r in rows if r[0] not in live]
        for job_id in gone:
            self.update_job(job_id, status="interrupted", error=GONE)
        return gone

    def delete_job(self, job_id: str) -> None:
        with self.transaction() as tx:
            tx.execute("DELETE FROM jammi.job_metrics WHERE job_id = ?", [job_id])
            tx.execute("DELETE FROM jammi.jobs WHERE job_id = ?", [job_id])

    def update_job(self, job_id: str, **values: Any) -> None:
        for name in _JSON_FIELDS & values.keys():
            values[name] = json.dumps(values[name]) if values[name] is not None else None
        sets = ", ".join(f"{name} = ?" for name in values)
        self.execute(
            f"UPDATE jammi.jobs SET {sets}, updated_at = current_timestamp WHERE job_id = ?",
            [*values.values(), job_id],
        )

    def log_metrics(
        self, job_id: str, step: int | None, epoch: int | None, rows: list[tuple[str, str, float]]
    ) -> None:
        if rows:
            with self.lock:
                self.con.executemany(
                    "INSERT INTO jammi.job_metrics (job_id, step, epoch, split, name, value) VALUES (?, ?, ?, ?, ?, ?)",
                    [[job_id, step, epoch, split, name, value] for split, name, value in rows],
                )

    def finished_jobs(self, since: datetime | None = None) -> list[JobRecord]:
        """Jobs that ended after ``since`` (all ended jobs for None), oldest first."""
        return self._select(
            JobRecord,
            "jobs",
            "WHERE finished_at IS NOT NULL AND (?::TIMESTAMP IS NULL OR finished_at > ?::TIMESTAMP)",
            [since, since],
            "ORDER BY finished_at",
        )

    def listing(self, what: str) -> tuple[list[str], list[tuple]]:
        """A short overview of jobs, models or sources for the shell: (columns, rows)."""
        sql = LISTINGS[what]
        with self.lock:
            cur = self.con.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()

    # ---- embedding tables ---------------------------------------------------------
    def get_embedding_table(self, source: str, model_id: str) -> EmbeddingTable | None:
        found = self._select(
            EmbeddingTable,
            "embedding_tables",
            "WHERE source = ? AND model_id = ?",
            [source, model_id],
        )
        return found[0] if found else None

    def embedding_tables(
        self, source: str | None = None, model_id: str | None = None
    ) -> list[EmbeddingTable]:
        """Materialized tables built from ``source`` and/or with ``model_id``."""
        return self._select(
            EmbeddingTable,
            "embedding_tables",
            "WHERE (?::VARCHAR IS NULL OR source = ?) AND (?::VARCHAR IS NULL OR model_id = ?)",
            [source, source, model_id, model_id],
            "ORDER BY table_name",
        )

    def set_index_state(self, table_name: str, **values: Any) -> None:
        """Record what the search indexes of an embedding table hold (index_kind,
        index_state, index_bytes, index_settings, keyword_index)."""
        for name in _JSON_FIELDS & values.keys():
            values[name] = json.dumps(values[name]) if values[name] is not None else None
        sets = ", ".join(f"{name} = ?" for name in values)
        self.execute(
            f"UPDATE jammi.embedding_tables SET {sets} WHERE table_name = ?",
            [*values.values(), table_name],
        )
        _bump()

    def put_embedding_table(self, table: EmbeddingTable) -> None:
        self.execute(
            "DELETE FROM jammi.embedding_tables WHERE source = ? AND model_id = ?",
            [table.source, table.model_id],
        )
        self._insert("embedding_tables", table)
        _bump()


class _Transaction:
    """``with catalog.transaction():`` all or nothing, on the catalog's own cursor."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def __enter__(self) -> Catalog:
        self.catalog.lock.acquire()
        self.catalog.con.execute("BEGIN TRANSACTION")
        return self.catalog

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.catalog.con.execute("ROLLBACK" if exc_type else "COMMIT")
            _bump()
        finally:
            self.catalog.lock.release()


def _schema_scripts() -> list[Path]:
    """sql/schema/NNN_*.sql, in the order they apply."""
    return sorted((sql_dir() / "schema").glob("*.sql"))


def _refuse_newer(found: int, known: int) -> None:
    """A catalog a newer jammi-sql wrote may hold what this one would misread or overwrite."""
    if found > known:
        from ..errors import DataError

        raise DataError(
            f"this database's jammi catalog is at schema version {found}, newer than this "
            f"jammi-sql knows ({known}): a newer jammi-sql wrote it; upgrade jammi-sql "
            "(pip install -U jammi-sql) to open it"
        )
