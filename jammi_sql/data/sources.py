"""Named sources: files (csv, parquet, json/jsonl, globs), DuckDB tables and views, SQL queries.

A source stores enough to be read again later: ``relation(source)`` gives the SQL that
reads it, for use in a FROM clause.
"""

from __future__ import annotations

import glob
import os
import re

import duckdb

from ..catalog.tables import UNFINISHED, Catalog, Source
from ..errors import AlreadyExistsError, DataError, InUseError, InvalidArgumentError, NotFoundError

FORMATS = ("csv", "tsv", "parquet", "json", "jsonl", "table", "query")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME = 64
TEXT_TYPES = ("VARCHAR",)
NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "FLOAT",
    "DOUBLE",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
)


def is_numeric(type_name: str) -> bool:
    return type_name in NUMERIC_TYPES or type_name.startswith("DECIMAL")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _strip_compression(path: str) -> str:
    for ext in (".gz", ".zst"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def infer_format(url: str, con: duckdb.DuckDBPyConnection) -> str:
    ext = os.path.splitext(_strip_compression(url))[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    if _looks_like_query(url):
        return "query"
    if _table_exists(con, url):
        return "table"
    if ext:
        raise InvalidArgumentError(
            f"unsupported file format '{ext}' for '{url}'; use a .csv, .tsv, .parquet, .json or "
            f".jsonl file, or pass format := 'csv' (or 'parquet', 'json', 'jsonl')"
        )
    raise NotFoundError(
        f"'{url}' is neither a file nor a table or view; give a file path, a table name, or "
        "a SQL query with format := 'query'"
    )


def _looks_like_query(url: str) -> bool:
    return bool(re.match(r"^\s*(SELECT|WITH|FROM|VALUES|\()", url, re.IGNORECASE))


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    try:
        con.execute(f"DESCRIBE SELECT * FROM {_table_ref(name)}")
        return True
    except duckdb.Error:
        return False


def _table_ref(name: str) -> str:
    return ".".join(quote_ident(part) for part in name.split("."))


def relation(source: Source) -> str:
    """SQL that reads the source, usable as ``SELECT ... FROM <relation>``."""
    url = source.url
    if source.format == "table":
        return _table_ref(url)
    if source.format == "query":
        return f"({url})"
    path = quote_literal(url)
    if source.format == "csv":
        return f"read_csv({path}, header = true)"
    if source.format == "tsv":
        return f"read_csv({path}, header = true, delim = '\t')"
    if source.format == "parquet":
        return f"read_parquet({path})"
    if source.format == "jsonl":
        return f"read_json({path}, format = 'newline_delimited')"
    return f"read_json({path})"


def describe(con: duckdb.DuckDBPyConnection, source: Source) -> tuple[list[str], list[str]]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation(source)}").fetchall()
    return [r[0] for r in rows], [str(r[1]) for r in rows]


def add_source(catalog: Catalog, name: str, url: str, format: str | None = None) -> Source:
    """Validate and register a source; nothing is written unless it can be read."""
    if name is None or not str(name).strip():
        raise InvalidArgumentError(
            "add_source needs a source name, e.g. add_source('training', 'data/pairs.csv')"
        )
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidArgumentError(
            f"source name '{name[:80]}' is invalid; use up to {MAX_NAME} letters, digits and '_' "
            "(starting with a letter or '_')"
        )
    if catalog.get_source(name) is not None:
        raise AlreadyExistsError(
            f"source '{name}' already exists; choose another name or SELECT remove_source('{name}') first"
        )
    if not url:
        raise InvalidArgumentError(
            "add_source needs a url: a file path, a table name or a SQL query"
        )
    con = catalog.con
    fmt = (format or "").lower().strip() or infer_format(url, con)
    if fmt not in FORMATS:
        raise InvalidArgumentError(
            f"unsupported format '{format}'; use one of {', '.join(FORMATS)}"
        )
    kind = {"table": "table", "query": "query"}.get(fmt, "file")
    if kind == "file":
        url = _find_file(catalog, url)
        if not glob.glob(url):
            raise NotFoundError(
                f"no file matches '{url}'; check the path (globs like data/*.csv are allowed)"
            )
    elif kind == "table" and not _table_exists(con, url):
        raise NotFoundError(
            f"table or view '{url}' does not exist; create it first or give a file path"
        )
    source = Source(name, kind, url, fmt, [], [])
    try:
        source.columns, source.column_types = describe(con, source)
    except duckdb.Error as e:
        raise DataError(f"cannot read source '{name}' as {fmt}: {str(e).splitlines()[0]}") from None
    catalog.add_source(source)
    return source


def _find_file(catalog: Catalog, url: str) -> str:
    """The absolute path of a file source: from the current directory when a file matches
    there, else from the first folder of DuckDB's ``file_search_path`` where one does (where
    ``read_csv`` looks too; the shell adds a script's own folder)."""
    path = os.path.expanduser(url)
    if os.path.isabs(path) or glob.glob(path):
        return os.path.abspath(path)
    folders = catalog.query("SELECT current_setting('file_search_path')")[0][0] or ""
    for folder in filter(None, folders.split(",")):
        if glob.glob(os.path.join(folder, path)):
            return os.path.abspath(os.path.join(folder, path))
    return os.path.abspath(path)


def remove_source(catalog: Catalog, name: str, cascade: bool = False) -> list[str]:
    """Unregister a source; its data (file, table) is untouched. Embedding tables built from
    it are refused, naming them, unless ``cascade`` drops them too. Returns those dropped."""
    if not name:
        raise InvalidArgumentError(
            "remove_source needs a source name, e.g. remove_source('training')"
        )
    if catalog.get_source(name) is None:
        get_source(catalog, name)  # the unknown-source error, listing the known ones
    waiting = (*UNFINISHED, "interrupted")  # an interrupted job reads it again on resume
    busy = [j.job_id for j in catalog.jobs() if j.source == name and j.status in waiting]
    if busy:
        raise InUseError(
            f"source '{name}' is read by unfinished job {', '.join(busy)}; wait for it, or "
            f"cancel_job('{busy[0]}') (delete_job for an interrupted one) first"
        )
    tables = catalog.embedding_tables(source=name)
    if tables and not cascade:
        names = ", ".join(t.table_name for t in tables)
        raise InUseError(
            f"source '{name}' has embedding tables built from it ({names}); drop them with it: "
            f"SELECT remove_source('{name}', cascade := true)"
        )
    catalog.remove_source(name, tables)
    return [t.table_name for t in tables]


def get_source(catalog: Catalog, name: str) -> Source:
    """A registered source with its columns as they are now (a table may have changed)."""
    source = catalog.get_source(name)
    if source is not None:
        try:
            with catalog.lock:
                source.columns, source.column_types = describe(catalog.con, source)
        except duckdb.Error as e:
            raise DataError(
                f"source '{name}' can no longer be read ({str(e).splitlines()[0]}); restore it or "
                f"SELECT remove_source('{name}') and add it again"
            ) from None
    if source is None:
        known = [s.name for s in catalog.sources()]
        listing = ", ".join(known) if known else "none yet"
        raise NotFoundError(
            f"unknown source '{name}'; known sources: {listing}. Register it with add_source('{name}', 'path')"
        )
    return source


def require_columns(source: Source, columns: list[str], *, text: bool = False) -> None:
    for column in columns:
        if column not in source.columns:
            raise NotFoundError(
                f"source '{source.name}' has no column '{column}'; its columns are {', '.join(source.columns)}"
            )
        if text and source.column_type(column) not in TEXT_TYPES:
            raise DataError(
                f"column '{column}' of source '{source.name}' is {source.column_type(column)}, not text; "
                f"cast it in a query source, e.g. add_source('{source.name}_text', "
                f"'SELECT *, CAST({column} AS VARCHAR) AS {column}_text FROM ...', format := 'query')"
            )
