"""``filter := '<SQL predicate>'``: the rows of an embedding table whose source row matches,
found before the top-k so a search returns k rows whenever k rows match."""

from __future__ import annotations

import json

import duckdb
import numpy as np

from ..catalog.context import Context
from ..catalog.tables import EmbeddingTable
from ..data.sources import get_source, quote_ident, relation
from ..errors import InvalidArgumentError


def check_predicate(ctx: Context, predicate: str) -> None:
    """One SQL expression, or a jammi error that says what does not parse."""
    if not predicate.strip():
        raise InvalidArgumentError(
            "filter is empty; give a SQL condition over the source's columns, e.g. "
            "filter := 'year >= 2020', or leave it NULL"
        )
    parsed = json.loads(
        ctx.catalog.query("SELECT json_serialize_sql(?)", [f"SELECT 1 WHERE ({predicate})"])[0][0]
    )
    if parsed.get("error") or len(parsed.get("statements", [])) != 1:
        why = parsed.get("error_message", "more than one statement")
        raise InvalidArgumentError(
            f"filter {predicate!r} is not one SQL condition ({why}); write a condition over the "
            "source's columns, e.g. filter := 'year >= 2020 AND lang = ''en'''"
        )


def allowed_vids(ctx: Context, table: EmbeddingTable, predicate: str) -> np.ndarray:
    """Ascending vids of the table's rows whose key's source row satisfies ``predicate``."""
    check_predicate(ctx, predicate)
    source = get_source(ctx.catalog, table.source)
    matching = f"SELECT {quote_ident(table.key)} AS key FROM {relation(source)} WHERE ({predicate})"
    sql = f"SELECT e.vid FROM {table.table_name} e SEMI JOIN ({matching}) s ON e.key = s.key"
    try:
        with ctx.catalog.lock:
            found = ctx.catalog.con.sql(sql + " ORDER BY e.vid").fetchnumpy()["vid"]
    except duckdb.Error as exc:
        first = str(exc).split("\n")[0]
        columns = ", ".join(source.columns) if getattr(source, "columns", None) else ""
        raise InvalidArgumentError(
            f"filter {predicate!r} cannot be applied to source '{table.source}': {first}"
            + (f"; its columns are {columns}" if columns else "")
        ) from None
    return np.asarray(found, dtype=np.int64)
