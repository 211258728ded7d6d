"""Checks of training data, run on the caller's thread before a job is written.

Everything here reads sources through the catalog's cursor and raises a ``jammi:`` error that
names the fix; nothing here writes.
"""

from __future__ import annotations

from .catalog import Catalog, Source
from .config import FineTuneConfig
from .errors import DataError, InvalidArgumentError
from .sources import is_numeric, quote_ident, relation, require_columns

MIN_TRAIN_ROWS = 2
MIN_ROWS = 4


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
    if kind == "scored_pairs":
        s = quote_ident(columns[2])
        checks.append(
            f"count(*) FILTER (WHERE {s} IS NULL OR isnan({s}::DOUBLE) OR isinf({s}::DOUBLE))"
        )
    total, *bad = catalog.query(f"SELECT count(*), {', '.join(checks)} FROM {relation(src)}")[0]
    for column, n in zip(texts, bad[: len(texts)], strict=True):
        if n:
            raise DataError(
                f"column '{column}' of source '{src.name}' has {n} NULL values; filter them out, "
                f"e.g. add_source('{src.name}_clean', 'SELECT * FROM ... WHERE {column} IS NOT NULL', "
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


def read_rows(catalog: Catalog, src: Source, columns: list[str]) -> list[tuple]:
    cols = ", ".join(quote_ident(c) for c in columns)
    return catalog.query(f"SELECT {cols} FROM {relation(src)}")
