"""Embedding texts with a model id, the one path every caller takes: resolve, load once, encode.

``embed``/``embed_query`` (an arrow column), ``generate_text_embeddings``, the evaluations,
``semantic_search``'s query side and the Python API all come through :func:`embed_texts`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .context import Context


def embed_texts(
    ctx: Context,
    model_id: str,
    texts: list[str],
    *,
    query: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(n, d) float32 embeddings of ``texts`` with the model ``model_id``."""
    from .encoders import load

    ref = ctx.models.resolve(model_id)
    encoder = load(ref.folder, ref.adapter_folder, ctx.precision)
    vectors = encoder.encode(texts, query=query, on_batch=on_batch)
    ctx.models.note_used(ref, encoder.precision)
    return vectors


def model_dimensions(ctx: Context, model_id: str) -> int:
    """The width of the model's embeddings (it loads the model, as embedding would)."""
    from .encoders import load

    ref = ctx.models.resolve(model_id)
    return load(ref.folder, ref.adapter_folder, ctx.precision).dimensions


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
