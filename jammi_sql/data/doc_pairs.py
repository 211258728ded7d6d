"""pairs_from_documents: (anchor, positive) training pairs from a source of unlabelled documents.

Two ways, chosen by whether a title column is given:

- title -> body: each document's title is the anchor and its text the positive (a short,
  query-like text against the document it names). Pure SQL; no model is loaded.
- adjacent chunks: each text is cut into token windows by the model's own tokenizer
  (``chunk_tokens``, overlapping by ``chunk_overlap``), and each window is paired with the next
  window of the same document: neighbouring passages are about the same thing.

The result is table ``jammi.pairs_<output>``, registered as source ``<output>`` (default
``<source>_pairs``) with columns ``anchor, positive``, and its lineage in
``jammi.source_lineage``: ready for ``fine_tune(output, model, ['anchor', 'positive'])``.

generate_questions: a registered local text-generation model writes questions for each
document (doc2query; :mod:`jammi_sql.data.generator`), each question -> its document, written the
same way. The pairs are only as good as the model's questions.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .. import progress
from ..catalog.context import Context
from ..catalog.models import BUNDLED_ID, missing_model_files
from ..errors import ArtifactError, DataError, InvalidArgumentError
from ..inference.infer import _encoder, check_chunking
from .hard_negatives import _check_output
from .sources import add_source, get_source, quote_ident, relation, require_columns

DEFAULT_CHUNK_TOKENS = 128
STAGED = "jammi_doc_pairs"


def pairs_from_documents(
    ctx: Context,
    source_name: str,
    text: str,
    title: str | None = None,
    model_id: str | None = None,
    output: str | None = None,
    chunk_tokens: int | None = None,
    overlap: int = 0,
) -> str:
    """Write the pairs and register them as a source; returns a one-line summary."""
    catalog = ctx.catalog
    src = get_source(catalog, source_name)
    require_columns(src, [text] + ([title] if title else []), text=True)
    output = output or f"{source_name}_pairs"
    _check_output(catalog, output)
    t = quote_ident(text)
    if title is not None:
        if chunk_tokens is not None or model_id is not None:
            raise InvalidArgumentError(
                "pairs_from_documents pairs a title with its whole text: leave model and "
                "chunk_tokens NULL with title, or drop title to pair adjacent chunks"
            )
        h = quote_ident(title)
        select = (
            f"SELECT trim({h}) AS anchor, {t} AS positive FROM {relation(src)} "
            f"WHERE length(trim({h})) > 0 AND length(trim({t})) > 0"
        )
        settings = {"title": title, "text": text}
        return _write(ctx, output, source_name, None, select, settings, "titles")
    model_id = ctx.models.resolve(model_id or BUNDLED_ID).model_id
    size = DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    if overlap is None:
        overlap = 0
    check_chunking(ctx, model_id, size, overlap)
    texts = [
        r[0]
        for r in catalog.query(
            f"SELECT {t} FROM {relation(src)} WHERE length(trim({t})) > 0 ORDER BY ALL"
        )
    ]
    owner, spans = _encoder(ctx, model_id).windows(texts, size, overlap)
    nxt = np.flatnonzero(owner[1:] == owner[:-1])  # window i and i + 1 of one document
    if len(nxt) == 0:
        raise DataError(
            f"no text of source '{source_name}' is longer than one window of {size} tokens, so "
            "there are no adjacent chunks to pair; give a smaller chunk_tokens, or a title column"
        )
    spans_arr = pa.array(spans, pa.string())
    staged = pa.table({"anchor": spans_arr.take(nxt), "positive": spans_arr.take(nxt + 1)})
    settings = {"text": text, "chunk_tokens": size, "chunk_overlap": overlap}
    select = f"SELECT anchor, positive FROM {STAGED}"
    return _write(ctx, output, source_name, model_id, select, settings, "chunks", staged)


MAX_PER_DOCUMENT, MAX_NEW_TOKENS = 20, 256


def generate_questions(
    ctx: Context,
    source_name: str,
    text: str,
    model_id: str,
    output: str | None = None,
    per_document: int = 1,
    max_new_tokens: int = 32,
    prompt: str | None = None,
    seed: int = 42,
) -> str:
    """Questions by ``model_id`` for each distinct text, as (question, text) pairs in a new
    source (default ``<source>_questions``); returns a one-line summary."""
    from .generator import generation_kind, load_generator

    catalog = ctx.catalog
    src = get_source(catalog, source_name)
    require_columns(src, [text], text=True)
    output = output or f"{source_name}_questions"
    _check_output(catalog, output)
    if not 1 <= per_document <= MAX_PER_DOCUMENT:
        raise InvalidArgumentError(
            f"per_document must be 1 to {MAX_PER_DOCUMENT} (got {per_document})"
        )
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InvalidArgumentError(
            f"max_new_tokens must be 1 to {MAX_NEW_TOKENS} (got {max_new_tokens})"
        )
    if prompt is not None and "{text}" not in prompt:
        raise InvalidArgumentError(
            "prompt must contain {text} where the document goes, e.g. 'Passage: {text}\\nQuestion:'"
        )
    ref = ctx.models.resolve(model_id)
    if ref.kind != "base" or generation_kind(ref.folder) is None:
        raise InvalidArgumentError(
            f"model '{ref.model_id}' cannot generate text (an embedding model); register a local "
            "text-generation model folder (a doc2query T5, or a causal language model) with "
            "register_model('name', '/path') and pass its id"
        )
    missing = missing_model_files(ref.folder)
    if missing:  # register_model checked; files went missing since (a tokenizer-less folder
        # would load an empty tokenizer in transformers and write noise)
        raise ArtifactError(
            f"model '{ref.model_id}' in {ref.folder} has no {' and no '.join(missing)} any "
            "more; restore the files, or register the complete folder again"
        )
    t = quote_ident(text)
    texts = [
        r[0]
        for r in catalog.query(
            f"SELECT DISTINCT {t} FROM {relation(src)} WHERE length(trim({t})) > 0 ORDER BY ALL"
        )
    ]
    if not texts:
        raise DataError(f"source '{source_name}' has no non-empty {text}; nothing to ask about")
    with progress.start(
        f"writing questions for {source_name} with {ref.model_id}", len(texts)
    ) as task:

        def advance(n: int) -> None:
            task.advance(n)
            progress.check()

        written = load_generator(ref.folder).questions(
            texts, per_document, max_new_tokens, prompt, seed, on_batch=advance
        )
    anchors = [q for qs in written for q in qs]
    if not anchors:
        raise DataError(
            f"model '{ref.model_id}' wrote no question for any text of '{source_name}' (only "
            "empty output); try a larger max_new_tokens, another prompt or another model"
        )
    positives = [d for d, qs in zip(texts, written, strict=True) for _ in qs]
    staged = pa.table({"anchor": anchors, "positive": positives}, schema=PAIRS)
    settings = {
        "text": text,
        "per_document": per_document,
        "max_new_tokens": max_new_tokens,
        "prompt": prompt,
        "seed": seed,
    }
    select = f"SELECT anchor, positive FROM {STAGED}"
    return _write(
        ctx,
        output,
        source_name,
        ref.model_id,
        select,
        settings,
        "questions",
        staged,
        "generate_questions",
    )


PAIRS = pa.schema([("anchor", pa.string()), ("positive", pa.string())])


def _write(
    ctx: Context,
    output: str,
    source_name: str,
    model_id: str | None,
    select: str,
    settings: dict,
    kind: str,
    staged: pa.Table | None = None,
    built_by: str = "pairs_from_documents",
) -> str:
    """Table ``jammi.pairs_<output>``, source ``<output>`` and its lineage, in one transaction."""
    cur = ctx.catalog.cursor()
    table = f"jammi.pairs_{output.lower()}"
    try:
        if staged is not None:
            cur.con.register(STAGED, staged)
        with cur.transaction() as tx:
            tx.execute(f"CREATE TABLE {table} AS {select}")
            rows = tx.query(f"SELECT count(*) FROM {table}")[0][0]
            if rows == 0:
                raise DataError(
                    f"source '{source_name}' has no row with both a title and a text, so no "
                    "pairs were written; check the column names"
                )
            add_source(tx, output, table, "table")
            tx.execute("DELETE FROM jammi.source_lineage WHERE source = ?", [output])
            tx.execute(
                "INSERT INTO jammi.source_lineage (source, built_by, from_source, model_id, "
                "corpus, settings, rows_written) VALUES (?, ?, ?, ?, NULL, ?, ?)",
                [output, built_by, source_name, model_id, json.dumps(settings), rows],
            )
    finally:
        if staged is not None:
            cur.con.unregister(STAGED)
        cur.con.close()
    what = {"titles": "title -> text", "chunks": "adjacent chunks"}.get(kind, "question -> text")
    return (
        f"{rows} pairs (anchor, positive) of {what} written to source '{output}' "
        f"(table {table}); fine-tune with fine_tune('{output}', model, ['anchor', 'positive'])"
    )
