"""Embedding texts with a model id, the one path every caller takes: resolve, load once, encode.

``embed``/``embed_query`` (an arrow column), ``generate_text_embeddings``, the evaluations,
``semantic_search``'s query side and the Python API all come through :func:`embed_texts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import progress
from ..catalog.context import Context
from ..errors import InvalidArgumentError

SLICE = 4096  # texts tokenized and encoded at a time


def embed_texts(
    ctx: Context,
    model_id: str,
    texts: list[str],
    *,
    query: bool = False,
    on_batch: Callable[[int], None] | None = None,
    bar: str | None = None,
) -> np.ndarray:
    """(n, d) float32 embeddings of ``texts`` with the model ``model_id``; ``bar`` names a
    progress bar over the texts (shown by the shell and ``jammi_sql.progress`` watchers)."""
    if bar is not None and len(texts) > 1:
        with progress.start(bar, len(texts)) as task:
            vectors = embed_texts(ctx, model_id, texts, query=query, on_batch=_both(on_batch, task))
            task.update(len(texts))  # repeated texts are embedded once, so counts fall short
            return vectors
    from .loader import load

    ref = ctx.models.resolve(model_id)
    encoder = load(ref.folder, ref.adapter_folder, ctx.precision)

    def each_batch(n: int) -> None:  # the point where a cancelled call stops
        progress.check()
        if on_batch is not None:
            on_batch(n)

    if len(texts) <= SLICE:
        progress.check()
        vectors = encoder.encode(texts, query=query, on_batch=each_batch)
    else:  # tokenized a slice at a time: memory stays bounded and a cancel is seen soon
        vectors = np.empty((len(texts), encoder.dimensions), dtype=np.float32)
        for start in range(0, len(texts), SLICE):
            progress.check()
            part = texts[start : start + SLICE]
            vectors[start : start + len(part)] = encoder.encode(
                part, query=query, on_batch=each_batch
            )
    ctx.models.loaded(ref, encoder.precision, encoder.backend)  # memory only: reads never write
    return vectors


def _both(on_batch: Callable[[int], None] | None, task: progress.Task) -> Callable[[int], None]:
    def told(n: int) -> None:
        task.advance(n)
        if on_batch is not None:
            on_batch(n)

    return told


@dataclass
class Documents:
    """Texts embedded for a table: one row per text, or per window with chunking."""

    owner: np.ndarray  # the input text each row belongs to
    texts: list[str]  # each row's text (a window's span with chunking)
    vectors: np.ndarray  # (rows, d) float32
    truncated: int  # input texts cut at the model's limit


def check_chunking(ctx: Context, model_id: str, chunk_tokens: object, overlap: object) -> None:
    """chunk_tokens NULL, or a window that fits the model; 0 <= overlap < chunk_tokens."""
    if chunk_tokens is None:
        return
    encoder = _encoder(ctx, model_id)
    room = encoder.spec.max_seq_length - encoder.tokenizer.num_special_tokens_to_add()
    if not isinstance(chunk_tokens, int) or not 1 <= chunk_tokens <= room:
        raise InvalidArgumentError(
            f"chunk_tokens := {chunk_tokens} does not fit model '{model_id}', whose texts hold "
            f"{encoder.spec.max_seq_length} tokens; give 1 to {room} (its limit less "
            "its special tokens), or NULL for no chunking"
        )
    if not isinstance(overlap, int) or not 0 <= overlap < chunk_tokens:
        raise InvalidArgumentError(
            f"chunk_overlap := {overlap} must be at least 0 and below chunk_tokens ({chunk_tokens})"
        )


def embed_documents(
    ctx: Context,
    model_id: str,
    texts: list[str],
    chunk_tokens: int | None = None,
    overlap: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Documents:
    """Embeddings of ``texts`` whole (counting those cut at the model's limit), or of their
    token windows of ``chunk_tokens`` overlapping by ``overlap``. ``on_batch(n)`` hears
    after each micro-batch about how many of ``texts`` it finished (a share, with windows)."""
    owner, rows, truncated = split_documents(_encoder(ctx, model_id), texts, chunk_tokens, overlap)
    share = len(texts) / max(len(rows), 1)
    told = None if on_batch is None else (lambda n: on_batch(n * share))
    vectors = embed_texts(ctx, model_id, rows, on_batch=told)
    return Documents(owner, rows, vectors, truncated)


def split_documents(
    encoder, texts: list[str], chunk_tokens: int | None, overlap: int
) -> tuple[np.ndarray, list[str], int]:
    """What a table stores of ``texts``: (the input text of each row, each row's text, how
    many texts were cut at the model's limit). Whole texts, or their token windows. The
    local path and the workers of a Ray backfill both come through here."""
    if chunk_tokens is None:
        truncated = int((encoder.token_counts(texts) > encoder.spec.max_seq_length).sum())
        return np.arange(len(texts)), texts, truncated
    owner, rows = encoder.windows(texts, chunk_tokens, overlap)
    return owner, rows, 0


def document_rows(batch: pa.RecordBatch | pa.Table, docs: Documents, chunked: bool) -> pa.Table:
    """The rows an embedding table stores for a batch of (key, column_name, text, text_hash)
    and its documents: key, column_name, [chunk,] text, text_hash, embedding (no vid yet)."""
    owner = pa.array(docs.owner)
    columns = {
        "key": batch.column("key").take(owner),
        "column_name": batch.column("column_name").take(owner),
    }
    if chunked:  # 0-based position of each window in its text
        starts = np.flatnonzero(np.r_[True, np.diff(docs.owner) != 0])
        counts = np.diff(np.r_[starts, len(docs.owner)])
        columns["chunk"] = pa.array(
            np.arange(len(docs.owner)) - np.repeat(starts, counts), pa.int32()
        )
    columns["text"] = pa.array(docs.texts, pa.string())
    columns["text_hash"] = batch.column("text_hash").take(owner)
    flat = pa.array(docs.vectors.reshape(-1).astype(np.float32, copy=False))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, docs.vectors.shape[1])
    return pa.table(columns)


def max_tokens(ctx: Context, model_id: str) -> int:
    """How many tokens the model reads of a text (the rest is cut)."""
    return _encoder(ctx, model_id).spec.max_seq_length


def _encoder(ctx: Context, model_id: str):
    from .loader import load

    ref = ctx.models.resolve(model_id)
    return load(ref.folder, ref.adapter_folder, ctx.precision)


def settled_precision(ctx: Context, model_id: str) -> str:
    """The precision the model runs at here once ``ctx.precision`` settled (``auto``: what its
    guard chose), for workers elsewhere to load it at the same."""
    return _encoder(ctx, model_id).precision


def model_dimensions(ctx: Context, model_id: str) -> int:
    """The width of the model's embeddings (it loads the model, as embedding would)."""
    from .loader import load

    ref = ctx.models.resolve(model_id)
    return load(ref.folder, ref.adapter_folder, ctx.precision).dimensions


def check_dims(dims: object, width: int) -> int:
    """A Matryoshka cut ``dims``: a whole number from 1 to the model's width."""
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= width:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"dims := {dims!r} must be a whole number from 1 to the model's width ({width})"
        )
    return dims


def embed_column(ctx: Context, models: pa.Array, texts: pa.Array, query: bool) -> pa.Array:
    """``embed(model, text)`` over one arrow batch: a FLOAT[] list per row, as wide as its
    model's embeddings; each model's rows are embedded together."""
    models = models.combine_chunks() if isinstance(models, pa.ChunkedArray) else models
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    valid = pc.and_(pc.is_valid(texts), pc.is_valid(models))
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, vectors) per model
    widths = np.zeros(len(texts), dtype=np.int64)
    for model in pc.unique(models.filter(valid)).to_pylist():
        rows = np.flatnonzero(
            pc.and_(valid, pc.equal(models, model)).to_numpy(zero_copy_only=False)
        )
        vectors = embed_texts(ctx, model, texts.take(pa.array(rows)).to_pylist(), query=query)
        progress.tally(f"embedding with {model.rsplit('/', 1)[-1]}", len(rows))
        widths[rows] = vectors.shape[1]
        parts.append((rows, vectors))
    offsets = np.concatenate([[0], np.cumsum(widths)])
    values = np.empty(int(offsets[-1]), dtype=np.float32)
    for rows, vectors in parts:  # row r's values go to offsets[r] .. offsets[r] + d
        values[(offsets[rows][:, None] + np.arange(vectors.shape[1])).reshape(-1)] = (
            vectors.reshape(-1)
        )
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(values), mask=pc.invert(valid)
    )
