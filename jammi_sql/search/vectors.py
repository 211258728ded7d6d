"""The stored vectors of an embedding table as one float32 matrix, and exact top-k over it.

Exact search is the reference the index is measured against and the path for small tables,
selective filters and Matryoshka ``dims``. It reads only the embedding table (never the
source), keeps the matrix in memory per (database, table, generation), and scores with one
matrix-vector product and a partial sort: the speed of a numpy matrix product.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..catalog.tables import Catalog

KEEP = 2  # tables whose matrices stay in memory at once (least recently used goes first)


@dataclass
class Vectors:
    """``matrix[i]`` is the unit-length embedding of the row whose vid is ``vids[i]``; vids
    ascend, so a set of vids maps to rows with one searchsorted."""

    vids: np.ndarray  # (n,) int64, ascending
    matrix: np.ndarray  # (n, d) float32, rows of unit length

    def rows_of(self, vids: np.ndarray) -> np.ndarray:
        """Row positions of those of ``vids`` that are present."""
        return _present(self.vids, np.asarray(vids, dtype=np.int64))

    def top(
        self, query: np.ndarray, count: int, rows: np.ndarray | None = None, dims: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(vids, cosine scores) of the ``count`` best rows for a unit ``query``, best first;
        only ``rows`` when given; only the first ``dims`` dimensions when given."""
        matrix = self.matrix if rows is None else self.matrix[rows]
        vids = self.vids if rows is None else self.vids[rows]
        if dims is not None and dims < matrix.shape[1]:
            cut = matrix[:, :dims]
            q = query[:dims] / max(float(np.linalg.norm(query[:dims])), 1e-12)
            scores = (cut @ q) / np.maximum(np.linalg.norm(cut, axis=1), 1e-12)  # (n,)
        else:
            scores = matrix @ query  # (n,)
        count = min(count, len(scores))
        if count == 0:
            return vids[:0], scores[:0]
        if count < len(scores):  # the count largest, unordered, without negating every score
            best = np.argpartition(scores, len(scores) - count)[len(scores) - count :]
        else:
            best = np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        return vids[best], scores[best]


def _present(have: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    at = np.searchsorted(have, wanted)
    at = np.minimum(at, len(have) - 1)
    return at[have[at] == wanted] if len(have) else at[:0]


_CACHE: OrderedDict[tuple, Vectors] = OrderedDict()
_LOCK = threading.Lock()


def load(catalog: Catalog, table: str, generation: int | None) -> Vectors:
    """The table's vectors, read once per generation of the table and kept (LRU)."""
    key = (catalog.database_key(), table, generation)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    vectors = read(catalog, table)
    with _LOCK:
        for old in [k for k in _CACHE if k[:2] == key[:2]]:
            del _CACHE[old]  # an older generation of the same table
        _CACHE[key] = vectors
        while len(_CACHE) > KEEP:
            _CACHE.popitem(last=False)
    return vectors


def read(catalog: Catalog, table: str) -> Vectors:
    """All (vid, embedding) rows of ``table``, ordered by vid, normalised to unit length."""
    with catalog.lock:
        arrow = catalog.con.sql(f"SELECT vid, embedding FROM {table} ORDER BY vid").to_arrow_table()
    vids = arrow.column("vid").to_numpy().astype(np.int64, copy=False)
    column = arrow.column("embedding").combine_chunks()
    if len(column) == 0:
        return Vectors(vids, np.zeros((0, 0), np.float32))
    width = column.type.list_size
    flat = column.flatten()
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = matrix.reshape(len(vids), width)
    return Vectors(vids, unit(matrix))


def unit(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (stored embeddings are already; a registered model's may not be)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.allclose(norms, 1.0, atol=1e-3):
        return np.ascontiguousarray(matrix)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12))


_GROUPS: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def groups_of(catalog: Catalog, table: str, generation: int | None, vids: np.ndarray) -> np.ndarray:
    """For a chunked table: the (key, column) each of ``vids`` belongs to, as a number."""
    key = (catalog.database_key(), table, generation)
    with _LOCK:
        held = _GROUPS.get(key)
    if held is None:
        with catalog.lock:
            found = catalog.con.sql(
                f"SELECT vid, dense_rank() OVER (ORDER BY key, column_name) AS g FROM {table} "
                "ORDER BY vid"
            ).fetchnumpy()
        held = (np.asarray(found["vid"], np.int64), np.asarray(found["g"], np.int64))
        with _LOCK:
            for old in [k for k in _GROUPS if k[:2] == key[:2]]:
                del _GROUPS[old]
            _GROUPS[key] = held
            while len(_GROUPS) > KEEP:
                _GROUPS.popitem(last=False)
    all_vids, groups = held
    return groups[np.searchsorted(all_vids, np.asarray(vids, np.int64))]
