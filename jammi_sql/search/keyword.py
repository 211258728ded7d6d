"""The keyword index of an embedding table: BM25 (bm25s, Lucene's variant) over the texts
``generate_text_embeddings`` stored, labelled by ``vid`` like the vector index.

Tokens are lower-cased words of two or more letters, English stop words removed, stemmed
with Snowball's English stemmer (PyStemmer). The index is rebuilt whole after each build of
the table (bm25s has no incremental update; it indexes about 100k short texts a second) into
``<home>/indexes/<table>/keyword-<tag>/``, named by ``keyword.json`` with the generation it
holds, written last and renamed into place: a kill leaves the old index or the new one, and
an index of another generation is rebuilt before it is used.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from .. import progress
from ..catalog.context import Context
from ..catalog.tables import EmbeddingTable
from .builds import building

FORMAT = 1
_LOADED: dict[tuple, tuple[str, object, np.ndarray]] = {}  # -> (folder, BM25, vids)
_LOCK = threading.Lock()


def _stemmer():
    try:
        import Stemmer
    except ImportError:  # tokens are matched unstemmed
        return None
    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(
        texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False
    )


def _where(ctx: Context, table: EmbeddingTable) -> Path:
    return ctx.home / "indexes" / table.table_name.split(".", 1)[1]


def _current(where: Path) -> dict | None:
    try:
        data = json.loads((where / "keyword.json").read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != FORMAT or not (where / data.get("folder", "")).is_dir():
        return None
    return data


def sync(ctx: Context, table: EmbeddingTable) -> None:
    """Build the table's keyword index for its current rows; recorded in the catalog."""
    import bm25s

    ctx.catalog.set_index_state(table.table_name, keyword_index=False)
    where = _where(ctx, table)
    where.mkdir(parents=True, exist_ok=True)
    with ctx.catalog.lock:
        arrow = ctx.catalog.con.sql(
            f"SELECT vid, text FROM {table.table_name} ORDER BY vid"
        ).to_arrow_table()
    vids = arrow.column("vid").to_numpy().astype(np.int64)
    texts = arrow.column("text").to_pylist()
    name = table.table_name.split(".", 1)[1].removeprefix("emb_")
    with progress.start(f"keyword index {name}", len(texts)) as task:
        retriever = bm25s.BM25()
        if texts:
            retriever.index(tokenize(texts), show_progress=False)
        task.update(len(texts))
    folder = f"keyword-{uuid.uuid4().hex[:8]}"
    tmp = where / f".{folder}.tmp"
    retriever.save(str(tmp), show_progress=False)
    np.save(tmp / "vids.npy", vids)
    os.replace(tmp, where / folder)
    pointer = where / f".keyword-{uuid.uuid4().hex[:8]}.json"
    pointer.write_text(
        json.dumps({"folder": folder, "generation": table.generation, "format": FORMAT})
    )
    os.replace(pointer, where / "keyword.json")
    for old in where.glob("*keyword-*"):
        if old.name != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    with _LOCK:
        _LOADED[(ctx.catalog.database_key(), table.table_name)] = (folder, retriever, vids)
    ctx.catalog.set_index_state(table.table_name, keyword_index=True)


def _load(ctx: Context, table: EmbeddingTable):
    """(BM25, vids) current with the table's rows, building it first where it is not."""
    import bm25s

    where = _where(ctx, table)
    current = _current(where)
    if current is None or current["generation"] != table.generation:
        if ctx.read_only:
            from ..errors import ReadOnlyError

            raise ReadOnlyError(
                f"the keyword index of {table.table_name} is missing or stale and this database "
                "is open read-only; open it writable once (keyword_search builds it), or run "
                "generate_text_embeddings again"
            )
        with building(ctx.catalog, table.table_name):
            fresh = ctx.catalog.get_embedding_table(table.source, table.model_id)
            sync(ctx, fresh)
            current = _current(where)
    key = (ctx.catalog.database_key(), table.table_name)
    with _LOCK:
        held = _LOADED.get(key)
        if held is not None and held[0] == current["folder"]:
            return held[1], held[2]
    retriever = bm25s.BM25.load(str(where / current["folder"]), show_progress=False, verbosity=0)
    vids = np.load(where / current["folder"] / "vids.npy")
    with _LOCK:
        _LOADED[key] = (current["folder"], retriever, vids)
    return retriever, vids


def scores(ctx: Context, table: EmbeddingTable, query: str) -> tuple[np.ndarray, np.ndarray]:
    """(vids, BM25 scores) of every row of the table for ``query`` (0 where no word matches)."""
    retriever, vids = _load(ctx, table)
    if len(vids) == 0:
        return vids, np.zeros(0, np.float32)
    words = tokenize([query])[0]
    vocabulary = retriever.vocab_dict
    words = [w for w in words if w in vocabulary]
    if not words:
        return vids, np.zeros(len(vids), np.float32)
    return vids, np.asarray(retriever.get_scores(words), dtype=np.float32)
