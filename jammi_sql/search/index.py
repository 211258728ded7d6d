"""The approximate vector index of an embedding table: an HNSW graph (usearch) kept in files
beside the database, labelled by the table's ``vid`` column.

On disk, under ``<home>/indexes/<table>/``: ``hnsw-<generation>-<tag>.usearch`` and
``current.json``, which names the file and the table generation it holds. A new index is
written whole under a new name, flushed, and only then named by ``current.json`` (written to a
temporary name and renamed), so a kill at any moment leaves the old index or the new one. An
index whose generation differs from the table's is stale: it is caught up (vids removed from
the table are removed, new ones added) before it answers, never used as it is; a missing or
unreadable one is rebuilt, or search falls back to exact and says so.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .. import progress
from ..catalog.context import Context
from ..catalog.tables import EmbeddingTable
from ..errors import InvalidArgumentError
from .builds import building

FORMAT = 1
STORAGES = ("f32", "f16", "bf16", "i8")
REBUILD_AFTER_REMOVED = 0.25  # removed vectors, as a share of the index: then rebuild it whole
ADD_BATCH = 20_000  # vectors added between two progress updates


@dataclass(frozen=True)
class IndexSettings:
    """How the HNSW index of one table is built and searched; validates itself."""

    connectivity: int = 16  # edges per node (HNSW's M): more is better recall, more memory
    expansion_add: int = 128  # candidates kept while inserting (ef_construction)
    expansion_search: int = 256  # candidates kept while searching (ef_search): recall 0.956 at 1M
    storage: str = "f16"  # how vectors are kept: f32, f16, bf16 or i8
    min_rows: int = 50_000  # 'auto': tables this large get an index, smaller ones search exactly

    def __post_init__(self) -> None:
        ranges = {
            "connectivity": (2, 128),
            "expansion_add": (8, 4096),
            "expansion_search": (1, 4096),
            "min_rows": (0, 2**62),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidArgumentError(
                    f"index setting {name} := {value!r} is out of range; use a whole number from "
                    f"{low} to {high} (default {getattr(IndexSettings, name)})"
                )
        if self.storage not in STORAGES:
            raise InvalidArgumentError(
                f"index setting storage := {self.storage!r} is not one of {', '.join(STORAGES)}; "
                "f16 (the default) halves memory at no measurable recall cost"
            )

    def graph(self) -> tuple:
        """The settings the graph is built with: another expansion_search or min_rows reuses
        the same graph."""
        return (self.connectivity, self.expansion_add, self.storage)

    @classmethod
    def of(cls, stored: dict | None, **changes: object) -> IndexSettings:
        """Settings from a table's stored ones (None: defaults), with ``changes`` (None: keep)."""
        values = {f.name: (stored or {}).get(f.name, f.default) for f in fields(cls)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return cls(**values)


def wanted(table: EmbeddingTable) -> bool:
    """Whether the table should have an index: asked for, or 'auto' and large enough."""
    if table.index_kind == "none" and table.index_settings is not None:
        return False  # dropped by drop_vector_index: stays off until create_vector_index
    if table.index_kind == "hnsw" and table.index_settings is not None:
        return True  # asked for by create_vector_index, whatever the size
    return table.row_count >= IndexSettings.of(table.index_settings).min_rows


def folder(ctx: Context, table: EmbeddingTable) -> Path:
    return ctx.home / "indexes" / table.table_name.split(".", 1)[1]


# ---- the files ----------------------------------------------------------------------
@dataclass
class Current:
    """What ``current.json`` says: the index file and the table generation it holds."""

    file: str
    generation: int | None
    settings: dict
    count: int
    removed: int = 0  # vectors removed since it was built whole (their nodes stay)
    format: int = FORMAT


def read_current(where: Path) -> Current | None:
    try:
        data = json.loads((where / "current.json").read_text())
        current = Current(**data)
    except (OSError, ValueError, TypeError):
        return None
    if current.format != FORMAT or not (where / current.file).is_file():
        return None
    return current


def _write_current(where: Path, current: Current) -> None:
    tmp = where / f".current-{uuid.uuid4().hex[:8]}.json"
    with open(tmp, "w") as f:
        json.dump(asdict(current), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, where / "current.json")
    _fsync_dir(where)


def _fsync_dir(where: Path) -> None:
    try:
        fd = os.open(where, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(index, where: Path, generation: int | None) -> str:
    """Write ``index`` whole under a new name; returns the name."""
    name = f"hnsw-{generation}-{uuid.uuid4().hex[:8]}.usearch"
    tmp = where / f".{name}.tmp"
    index.save(str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, where / name)
    return name


def _clean(where: Path, keep: str) -> None:
    """Remove index files other than ``keep`` (old generations, a killed write's leftovers)."""
    for path in where.iterdir():
        if path.name not in (keep, "current.json") and (
            path.suffix in (".usearch", ".tmp") or path.name.startswith(".current-")
        ):
            path.unlink(missing_ok=True)


def remove_files(ctx: Context, table: EmbeddingTable) -> None:
    """Delete the table's index files (the table was dropped, or its index was)."""
    where = folder(ctx, table)
    if where.is_dir():
        for path in where.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)
        forget(ctx, table)


# ---- loaded indexes -----------------------------------------------------------------
_LOADED: dict[tuple, tuple[str, object]] = {}  # (database, table) -> (file, usearch Index)
_LOCK = threading.Lock()
_WARNED: set[tuple] = set()  # tables whose unusable index a read-only database has reported


def forget(ctx: Context, table: EmbeddingTable) -> None:
    with _LOCK:
        _LOADED.pop((ctx.catalog.database_key(), table.table_name), None)


def _loaded(ctx: Context, table: EmbeddingTable, current: Current):
    """The usearch Index of ``current``, read from disk once per file."""
    from usearch.index import Index

    key = (ctx.catalog.database_key(), table.table_name)
    with _LOCK:
        held = _LOADED.get(key)
        if held is not None and held[0] == current.file:
            return held[1]
    index = Index.restore(str(folder(ctx, table) / current.file))
    if index is None:
        raise OSError(f"index file {current.file} is unreadable")
    index.expansion_search = IndexSettings.of(current.settings).expansion_search
    with _LOCK:
        _LOADED[key] = (current.file, index)
    return index


def keys_of(index) -> np.ndarray:
    with warnings.catch_warnings():  # usearch's __array__ predates numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(index.keys, dtype=np.int64)


# ---- building and catching up -------------------------------------------------------
def sync(ctx: Context, table: EmbeddingTable) -> str:
    """Make the table's index hold exactly its rows (build, catch up, or remove it, as
    ``wanted`` says); records the state in jammi.embedding_tables. Returns the state."""
    catalog = ctx.catalog
    where = folder(ctx, table)
    if not wanted(table):
        remove_files(ctx, table)
        catalog.set_index_state(
            table.table_name, index_kind="none", index_state=None, index_bytes=None
        )
        return "none"
    settings = IndexSettings.of(table.index_settings)
    catalog.set_index_state(table.table_name, index_kind="hnsw", index_state="building")
    where.mkdir(parents=True, exist_ok=True)
    current = read_current(where)
    index, removed = None, 0
    if current is not None and IndexSettings.of(current.settings).graph() == settings.graph():
        try:
            index, removed = _loaded(ctx, table, current), current.removed
        except (OSError, RuntimeError, ValueError):
            index = None  # unreadable: rebuilt whole below
    with catalog.lock:
        vids = catalog.con.sql(f"SELECT vid FROM {table.table_name}").fetchnumpy()["vid"]
    vids = np.sort(np.asarray(vids, dtype=np.int64))
    if index is not None:
        present = keys_of(index)
        gone = np.setdiff1d(present, vids, assume_unique=True)
        todo = np.setdiff1d(vids, present, assume_unique=True)
        if not len(gone) and not len(todo):  # the same rows: record the settings, keep the file
            index.expansion_search = settings.expansion_search
            size = (where / current.file).stat().st_size
            _write_current(
                where,
                Current(current.file, table.generation, asdict(settings), len(index), removed),
            )
            catalog.set_index_state(
                table.table_name, index_kind="hnsw", index_state="ready", index_bytes=size
            )
            return "ready"
        if removed + len(gone) > REBUILD_AFTER_REMOVED * max(len(vids), 1):
            index = None  # too many dead nodes: rebuild whole
        else:
            index = index.copy()  # the loaded one may be answering searches meanwhile
            if len(gone):
                index.remove(gone)
            removed += len(gone)
    everything = index is None
    if everything:
        index, removed, todo = _new_index(table.dimensions, settings), 0, vids
    _add(ctx, table, index, todo, everything)
    name = _save(index, where, table.generation)
    _write_current(where, Current(name, table.generation, asdict(settings), len(index), removed))
    _clean(where, keep=name)
    with _LOCK:
        _LOADED[_key(ctx, table)] = (name, index)
    size = (where / name).stat().st_size
    catalog.set_index_state(
        table.table_name, index_kind="hnsw", index_state="ready", index_bytes=size
    )
    return "ready"


def _key(ctx: Context, table: EmbeddingTable) -> tuple:
    return (ctx.catalog.database_key(), table.table_name)


def _new_index(dimensions: int, settings: IndexSettings):
    from usearch.index import Index

    return Index(
        ndim=dimensions,
        metric="cos",
        dtype=settings.storage,
        connectivity=settings.connectivity,
        expansion_add=settings.expansion_add,
        expansion_search=settings.expansion_search,
    )


def _add(ctx: Context, table: EmbeddingTable, index, vids: np.ndarray, everything: bool) -> None:
    """Add the rows ``vids`` of the table to ``index`` (``everything``: all of them), read in
    one streaming scan a batch at a time, with a bar."""
    if not len(vids):
        return
    import pyarrow as pa

    name = table.table_name.split(".", 1)[1].removeprefix("emb_")
    sql = f"SELECT e.vid, e.embedding FROM {table.table_name} e"
    reader = ctx.catalog.con.cursor()  # a cursor of its own: the scan stays open while we add
    try:
        if not everything:
            reader.register("jammi_index_vids", pa.table({"vid": vids}))
            sql += " SEMI JOIN jammi_index_vids v ON e.vid = v.vid"
        with progress.start(f"indexing {name}", len(vids)) as task:
            for batch in reader.sql(sql).to_arrow_reader(ADD_BATCH):
                progress.check()
                if not batch.num_rows:
                    continue
                keys = batch.column("vid").to_numpy().astype(np.int64)
                flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
                index.add(keys, flat.astype(np.float32).reshape(len(keys), table.dimensions))
                task.advance(len(keys))
    finally:
        reader.close()


def for_search(ctx: Context, table: EmbeddingTable):
    """The table's index, current with its rows, or None (no index wanted, or one that cannot
    be made current here: then search is exact, and a read-only database says why once)."""
    if not wanted(table):
        return None
    where = folder(ctx, table)
    current = read_current(where) if where.is_dir() else None
    if current is not None and current.generation == table.generation:
        if (
            IndexSettings.of(current.settings).graph()
            == IndexSettings.of(table.index_settings).graph()
        ):
            try:
                found = _loaded(ctx, table, current)
                found.expansion_search = IndexSettings.of(table.index_settings).expansion_search
                if table.index_state == "stale" and not ctx.read_only:
                    # killed between writing this index and recording it: the file is whole
                    ctx.catalog.set_index_state(
                        table.table_name,
                        index_kind="hnsw",
                        index_state="ready",
                        index_bytes=(where / current.file).stat().st_size,
                    )
                return found
            except (OSError, RuntimeError, ValueError):
                pass  # unreadable: rebuilt below
    if ctx.read_only:
        if _key(ctx, table) not in _WARNED:  # once per table and process
            _WARNED.add(_key(ctx, table))
            progress.warn(
                f"jammi: the vector index of {table.table_name} is "
                + ("stale" if current is not None else "missing")
                + "; searching exactly (open the database writable once to rebuild it)"
            )
        return None
    with building(ctx.catalog, table.table_name):
        fresh = ctx.catalog.get_embedding_table(table.source, table.model_id)
        if fresh is None:
            return None
        sync(ctx, fresh)
        current = read_current(where)
        return _loaded(ctx, fresh, current) if current is not None else None


def search(index, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(vids, cosine scores) of about the ``count`` nearest rows, best first."""
    matches = index.search(query, count)
    keys = np.asarray(matches.keys, dtype=np.int64)
    return keys, 1.0 - np.asarray(matches.distances, dtype=np.float64)
