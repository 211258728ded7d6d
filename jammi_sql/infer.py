"""Embedding texts with a model id, the one path every caller takes: resolve, load once, encode.

``embed``/``embed_query`` (an arrow column), ``generate_text_embeddings``, the evaluations,
``semantic_search``'s query side and the Python API all come through :func:`embed_texts`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import progress
from .context import Context
from .errors import InvalidArgumentError

SLICE = 4096  # texts tokenized and encoded at a time


def embed_texts(
    ctx: Context,
    model_id: str,
    texts: list[str],
    *,
    query: bool = False,
    dims: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(n, d) float32 embeddings of ``texts`` with the model ``model_id``.

    ``dims``: the width the caller must return (``embed``'s FLOAT[d]); another is an error.
    """
    from .encoders import load

    ref = ctx.models.resolve(model_id)
    encoder = load(ref.folder, ref.adapter_folder)
    if dims is not None and encoder.dimensions != dims:
        raise InvalidArgumentError(
            f"model '{ref.model_id}' embeds in {encoder.dimensions} dimensions, but embed() on this "
            f"connection returns FLOAT[{dims}] (DuckDB fixes a function's type when it is installed); "
            f"open the database with jammi_sql.connect(path, dimensions={encoder.dimensions}), or "
            "register the model first (the shell and the Python API follow the model registered last)"
        )

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
    ctx.models.note_used(ref)
    return vectors


def model_dimensions(ctx: Context, model_id: str) -> int:
    """The width of the model's embeddings (it loads the model, as embedding would)."""
    from .encoders import load

    ref = ctx.models.resolve(model_id)
    return load(ref.folder, ref.adapter_folder).dimensions


def embed_column(ctx: Context, models: pa.Array, texts: pa.Array, query: bool) -> pa.Array:
    """``embed(model, text)`` over one arrow batch: each model's rows embedded together."""
    models = models.combine_chunks() if isinstance(models, pa.ChunkedArray) else models
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    dims = ctx.dimensions
    out = np.zeros((len(texts), dims), dtype=np.float32)
    valid = pc.and_(pc.is_valid(texts), pc.is_valid(models))
    for model in pc.unique(models.filter(valid)).to_pylist():
        rows = np.flatnonzero(
            pc.and_(valid, pc.equal(models, model)).to_numpy(zero_copy_only=False)
        )
        chosen = texts.take(pa.array(rows)).to_pylist()
        out[rows] = embed_texts(ctx, model, chosen, query=query, dims=dims)
    flat = pa.array(out.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dims, mask=pc.invert(valid))
