"""The SQL functions that build training data (sources for ``fine_tune``) from other sources:
mined hard negatives, and pairs from unlabelled documents. Declared with the registry of
:mod:`jammi_sql.functions.declarations`, installed with the rest.
"""

from __future__ import annotations

from ..catalog.context import Context
from ..errors import InvalidArgumentError
from .registry import BIG, DBL, WRITES, Param, V, sql_function

MINE_PARAMS = (
    [Param(name, V) for name in ("source", "model", "anchor", "positive")]
    + [Param("corpus", V, None), Param("output", V, None)]
    + [Param(n, BIG, d) for n, d in (("num_negatives", 1), ("range_min", 0), ("range_max", 100))]
    + [
        Param(n, DBL, None)
        for n in ("absolute_margin", "relative_margin", "max_score", "min_score")
    ]
    + [Param("sampling", V, "top"), Param("seed", BIG, 42)]
)


@sql_function("mine_hard_negatives", MINE_PARAMS, V, **WRITES)
def mine_hard_negatives(ctx: Context, source, model, anchor, positive, corpus, output, *options):
    """Writes (anchor, positive, negative) rows to a new source `output` (default
    `<source>_hard_negatives`) for `fine_tune`: the corpus texts the model ranks highest for each
    anchor, not its positives, below its hardest positive by `absolute_margin` (or
    `relative_margin` of it), within `min_score`..`max_score`, ranks `range_min` to `range_max` of
    those, `sampling` 'top' or 'random'. `corpus`: a source embedded by `generate_text_embeddings`
    (reused; NULL: the source's positives). Says how many anchors got no negative."""
    from ..data.hard_negatives import mine_hard_negatives as mine
    from ..data.mining import MiningSettings

    if None in (source, model, anchor, positive):
        raise InvalidArgumentError("mine_hard_negatives needs a source, model, anchor and positive")
    given = {p.name: v for p, v in zip(MINE_PARAMS[6:], options, strict=True) if v is not None}
    return mine(ctx, source, model, anchor, positive, corpus, output, MiningSettings(**given))


@sql_function(
    "pairs_from_documents",
    [Param("source", V), Param("text", V), Param("title", V, None), Param("model", V, None)]
    + [Param("output", V, None), Param("chunk_tokens", BIG, None)]
    + [Param("chunk_overlap", BIG, 0)],
    V,
    **WRITES,
)
def pairs_from_documents(ctx: Context, source, text, title, model, output, chunk_tokens, overlap):
    """Writes (anchor, positive) training pairs from unlabelled documents to a new source
    `output` (default `<source>_pairs`): with `title`, each title -> its text; without, each
    token window of a text (`chunk_tokens`, default 128, by `model`'s tokenizer, default the
    bundled model) -> the next window of the same text."""
    from ..data.doc_pairs import pairs_from_documents as build

    if source is None or text is None:
        raise InvalidArgumentError("pairs_from_documents needs a source and its text column")
    return build(ctx, source, text, title, model, output, chunk_tokens, overlap)


@sql_function(
    "generate_questions",
    [Param("source", V), Param("text", V), Param("model", V), Param("output", V, None)]
    + [Param("per_document", BIG, 1), Param("max_new_tokens", BIG, 32)]
    + [Param("prompt", V, None), Param("seed", BIG, 42)],
    V,
    **WRITES,
)
def generate_questions(
    ctx: Context, source, text, model, output, per_document, max_new_tokens, prompt, seed
):
    """Writes (anchor, positive) pairs to a new source `output` (default `<source>_questions`):
    questions that `model`, a registered local text-generation model (a doc2query T5 or a causal
    language model), writes for each distinct `text` (`per_document` of them, sampled when more
    than one; `prompt` with {text} for a causal model), each paired with its text."""
    from ..data.doc_pairs import generate_questions as build

    if None in (source, text, model):
        raise InvalidArgumentError(
            "generate_questions needs a source, its text column and a text-generation model"
        )
    per_document = 1 if per_document is None else int(per_document)  # 0 is refused, not 1
    max_new_tokens = 32 if max_new_tokens is None else int(max_new_tokens)
    seed = 42 if seed is None else int(seed)
    return build(ctx, source, text, model, output, per_document, max_new_tokens, prompt, seed)
