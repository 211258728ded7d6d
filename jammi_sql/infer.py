"""Embedding texts with a model id: resolve, load once, encode, check the dimension."""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgumentError


def embed_texts(
    ctx, model_id: str, texts: list[str], *, query: bool = False, dims: int | None = None
) -> np.ndarray:
    """(n, d) float32 embeddings of ``texts`` with the model ``model_id``."""
    ref = ctx.models.resolve(model_id)
    encoder = ctx.models.encoder(ref)
    vectors = encoder.encode(texts, query=query)
    if dims is not None and vectors.shape[1] != dims:
        raise InvalidArgumentError(
            f"model '{ref.model_id}' embeds in {vectors.shape[1]} dimensions, but embed() on this "
            f"connection returns FLOAT[{dims}] (DuckDB fixes a function's type when it is installed); "
            f"open the database with jammi_sql.connect(path, dimensions={vectors.shape[1]}), or "
            "register the model first (the shell and the Python API follow the model registered last)"
        )
    ctx.models.note_used(ref)
    return vectors
