"""Checks of training data, run on the caller's thread before a job is written.

Everything here reads sources through the catalog's cursor and raises a ``jammi:`` error that
names the fix; nothing here writes.
"""

from __future__ import annotations

from ..catalog.tables import Catalog, Source
from ..config import FineTuneConfig
from ..errors import DataError, InvalidArgumentError
from .sources import is_numeric, quote_ident, relation, require_columns

MIN_TRAIN_ROWS = 2
MIN_ROWS = 4
# A text that is nothing but whitespace: DuckDB's trim() strips spaces only, so tabs, newlines
# and Unicode spaces (what Python's str.strip() also strips) are matched here (RE2 syntax).
BLANK = r"[\s\v\pZ\x{85}\x{1c}-\x{1f}]*"


def data_kind(src: Source, columns: list[str]) -> str:
    """'scored_pairs', 'pairs' or 'triplets', from the columns named and their types."""
    if len(columns) not in (2, 3) or len(set(columns)) != len(columns):
        raise InvalidArgumentError(
            "columns must name 2 or 3 distinct source columns: [text_a, text_b, score], "
            "[anchor, positive] or [anchor, positive, negative]"
        )
    require_columns(src, columns)
    require_columns(src, columns[:2], text=True)
    if len(columns) == 2:
        return "pairs"
    if is_numeric(src.column_type(columns[2])):
        return "scored_pairs"
    require_columns(src, columns[2:], text=True)
    return "triplets"


def check_rows(
    catalog: Catalog, src: Source, columns: list[str], kind: str, cfg: FineTuneConfig
) -> int:
    """NULL texts, NULL or NaN scores and too few rows, counted by DuckDB in one pass.

    Returns the number of rows.
    """
    texts = columns if kind != "scored_pairs" else columns[:2]
    checks = [f"count(*) FILTER (WHERE {quote_ident(c)} IS NULL)" for c in texts]
    checks += [
        f"count(*) FILTER (WHERE regexp_full_match({quote_ident(c)}, '{BLANK}'))" for c in texts
    ]
    if kind == "scored_pairs":
        s = quote_ident(columns[2])
        checks.append(
            f"count(*) FILTER (WHERE {s} IS NULL OR isnan({s}::DOUBLE) OR isinf({s}::DOUBLE))"
        )
    total, *bad = catalog.query(f"SELECT count(*), {', '.join(checks)} FROM {relation(src)}")[0]
    nulls, empties = bad[: len(texts)], bad[len(texts) : 2 * len(texts)]
    for column, n, e in zip(texts, nulls, empties, strict=True):
        if (n or e) and n + e == total:
            what = "NULL" if n == total else "empty or whitespace-only" if e == total else "blank"
            raise DataError(
                f"column '{column}' of source '{src.name}' has {n + e} {what} texts, every row: "
                "there is no text to train on; name the column that holds the texts"
            )
        if n or e:
            what = f"{n} NULL values" if n else f"{e} empty or whitespace-only texts"
            keep = f"regexp_matches({column}, ''[^\\s\\pZ]'')"  # a visible character
            raise DataError(
                f"column '{column}' of source '{src.name}' has {what}; filter them out, e.g. "
                f"add_source('{src.name}_clean', 'SELECT * FROM ... WHERE {keep}', "
                "format := 'query')"
            )
    if kind == "scored_pairs" and bad[-1]:
        raise DataError(
            f"score column '{columns[2]}' of source '{src.name}' has {bad[-1]} NULL, NaN or infinite "
            "values; every pair needs a finite score"
        )
    n_val = int(round(total * cfg.validation_fraction))
    if total - n_val < MIN_TRAIN_ROWS or total < MIN_ROWS:
        raise DataError(
            f"source '{src.name}' has {total} rows, too few to train on; give at least {MIN_ROWS} "
            f"rows (with validation_fraction {cfg.validation_fraction}, {MIN_TRAIN_ROWS} left for "
            "training)"
        )
    return total


SCORE_NAMES = ("score", "label", "similarity", "sim", "rating", "relevance")


def check_not_text_scores(catalog: Catalog, src: Source, columns: list[str], loss: str) -> None:
    """A third column of text that holds scores must not train a triplet loss silently."""
    third = columns[2]
    c = quote_ident(third)
    rows, total, numbers = catalog.query(
        f"SELECT count(*), count({c}), count(TRY_CAST({c} AS DOUBLE)) FROM {relation(src)}"
    )[0]
    if rows == 0:  # a header-only file reads as text; check_rows says what is wrong: no rows
        return
    if loss == "cosent" or third.lower() in SCORE_NAMES or (total and numbers == total):
        raise DataError(
            f"column '{third}' of source '{src.name}' is text (VARCHAR); as a third column text is "
            "read as triplet negatives, and scores must be numbers. Cast it in a query source: "
            f"add_source('{src.name}_scored', 'SELECT {columns[0]}, {columns[1]}, "
            f"CAST({third} AS DOUBLE) AS {third} FROM ...', format := 'query')"
        )


def read_rows(catalog: Catalog, src: Source, columns: list[str]) -> list[tuple]:
    cols = ", ".join(quote_ident(c) for c in columns)
    return catalog.query(f"SELECT {cols} FROM {relation(src)}")
