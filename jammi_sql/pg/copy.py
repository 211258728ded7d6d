"""COPY ... TO STDOUT and COPY ... FROM STDIN over the wire: psql's ``\\copy`` and drivers'
``cursor.copy()``, in PostgreSQL's text and CSV formats.

Out: the query (or table) runs as any SELECT does on the session's cursor, and each row goes
to the client as one CopyData message, formatted as PostgreSQL formats it. In: the client's
CopyData is parsed (CSV by pyarrow, the text format's escapes by hand) into text columns, and
one ``INSERT INTO table SELECT ...`` casts them to the table's types, so the rows land all
together or not at all. The binary format is refused with a message that says what to use.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from pg_mimic import PgError, messages
from pg_mimic.results import encode_row

from .dialect import READ_ONLY, pg_error

_COPY = re.compile(
    r"^\s*COPY\s+(?P<source>\(.*\)|[\w.\"]+(?:\s*\([^()]*\))?)\s+"
    r"(?P<direction>TO\s+STDOUT|FROM\s+STDIN)\b(?P<options>.*?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(r"E'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|[^\s,()]+")
_VALUED = {"delimiter", "null", "quote", "escape", "encoding", "format"}
_BOOLEANS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
_TEXT_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
STAGED = "jammi_copy_in"
SEND_ROWS = 2048  # rows read, sent and drained to the socket at a time


@dataclass
class Copy:
    """One COPY statement: what, which way, and how its rows are written."""

    source: str  # a table name (with its column list, if any) or "(query)"
    into: bool  # FROM STDIN
    format: str = "text"
    delimiter: str | None = None
    null: str | None = None
    header: bool = False
    quote: str = '"'
    escape: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("text", "csv"):
            raise PgError(
                "0A000",
                f"jammi: COPY in {self.format} format is not supported; use FORMAT text or "
                "FORMAT csv (psql: \\copy ... WITH (FORMAT csv, HEADER))",
            )
        csv_format = self.format == "csv"
        self.delimiter = (
            self.delimiter if self.delimiter is not None else "," if csv_format else "\t"
        )
        self.null = self.null if self.null is not None else "" if csv_format else "\\N"
        self.escape = self.escape or self.quote
        if len(self.delimiter) != 1 or len(self.quote) != 1 or len(self.escape) != 1:
            raise PgError(
                "22023", "jammi: COPY's DELIMITER, QUOTE and ESCAPE are one character each"
            )

    @property
    def query(self) -> str:
        """The SELECT whose rows COPY TO sends."""
        if self.source.startswith("("):
            return self.source[1:-1]
        table, _, columns = self.source.partition("(")
        return f"SELECT {columns.rstrip(')') if columns else '*'} FROM {table}"

    @property
    def table(self) -> tuple[str, list[str] | None]:
        table, _, columns = self.source.partition("(")
        names = [c.strip() for c in columns.rstrip(")").split(",")] if columns else None
        return table.strip(), names


def parse(sql: str) -> Copy | None:
    """The COPY to or from the client that ``sql`` is, or None (a COPY to a server file is
    DuckDB's to run)."""
    found = _COPY.match(sql)
    if not found:
        return None
    into = found.group("direction").upper().startswith("FROM")
    if into and found.group("source").startswith("("):
        raise PgError("42601", "jammi: COPY (query) FROM STDIN cannot be: copy into a table")
    settings: dict[str, Any] = {}
    tokens = _TOKEN.findall(found.group("options"))
    i = 0
    while i < len(tokens):
        key = tokens[i].lower()
        i += 1
        if key in ("with", "as"):
            continue
        if key in ("csv", "binary", "text"):
            settings["format"] = key
        elif key == "header":
            if i < len(tokens) and tokens[i].lower() in _BOOLEANS:
                settings["header"] = _BOOLEANS[tokens[i].lower()]
                i += 1
            else:
                settings["header"] = True
        elif key in _VALUED and i < len(tokens):
            if tokens[i].lower() == "as":
                i += 1
            value = _unquote(tokens[i]) if i < len(tokens) else ""
            i += 1
            if key == "format":
                settings["format"] = value.lower()
            elif key != "encoding" or value.upper().replace("-", "") in ("UTF8", "UNICODE"):
                if key != "encoding":
                    settings[key] = value
            else:
                raise PgError("0A000", f"jammi: COPY ENCODING '{value}': only UTF8 is supported")
        else:
            raise PgError(
                "0A000",
                f"jammi: COPY option {tokens[i - 1]} is not supported; supported: FORMAT text|csv, "
                "HEADER, DELIMITER, NULL, QUOTE, ESCAPE",
            )
    return Copy(found.group("source").strip(), into, **settings)


def _unquote(token: str) -> str:
    if token[:2] in ("E'", "e'"):
        return _unescape(token[2:-1].replace("''", "'"))  # E'\t': the text format's escapes
    if token.startswith("'"):
        return token[1:-1].replace("''", "'")
    return token


def _response(tag: bytes, columns: int) -> bytes:
    payload = struct.pack("!bh", 0, columns) + struct.pack("!h", 0) * columns
    return tag + struct.pack("!i", len(payload) + 4) + payload


def _data(line: str) -> bytes:
    body = line.encode("utf-8")
    return messages.COPY_DATA + struct.pack("!i", len(body) + 4) + body


async def copy_out(connection: Any, copy: Copy) -> int:
    """Run the query and send its rows to the client; the number of rows."""
    session = connection.session
    statement = await session.prepare(copy.query, [])
    portal = statement.bind([])
    columns = await portal.start()
    if columns is None:
        raise PgError("42601", "jammi: COPY (query) TO STDOUT needs a query that returns rows")
    line = _csv_line if copy.format == "csv" else _text_line
    stream = connection.stream
    stream.write(_response(b"H", len(columns)))
    if copy.header:
        stream.write(_data(line([c.name for c in columns], copy)))
    sent = 0
    async for rows in batches(portal):  # a batch at a time: a large table never sits whole
        for row in rows:
            values = [None if v is None else v.decode("utf-8") for v in encode_row(row, columns)]
            stream.write(_data(line(values, copy)))
        sent += len(rows)
        await stream.drain()
    stream.write(messages.COPY_DONE + struct.pack("!i", 4))
    return sent


async def batches(portal: Any) -> AsyncIterator[list[tuple]]:
    """A portal's rows, ``SEND_ROWS`` at a time, so a large result never sits whole in memory
    (the simple query protocol sends its rows this way too)."""
    more = True
    while more:
        rows, more = await portal.execute(SEND_ROWS)
        yield rows


def _text_line(values: list[str | None], copy: Copy) -> str:
    def escaped(v: str) -> str:
        v = v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return v.replace(copy.delimiter, "\\" + copy.delimiter) if copy.delimiter != "\t" else v

    return copy.delimiter.join(copy.null if v is None else escaped(v) for v in values) + "\n"


def _csv_line(values: list[str | None], copy: Copy) -> str:
    specials = (copy.delimiter, copy.quote, "\n", "\r")

    def field(v: str | None) -> str:
        if v is None:
            return copy.null
        if v == copy.null or any(s in v for s in specials) or v.startswith("\\."):
            doubled = v.replace(copy.escape, copy.escape * 2) if copy.escape != copy.quote else v
            doubled = doubled.replace(copy.quote, copy.escape + copy.quote)
            return copy.quote + doubled + copy.quote
        return v

    return copy.delimiter.join(field(v) for v in values) + "\n"


async def copy_in(connection: Any, copy: Copy) -> int:
    """Read the client's rows and insert them into the table in one statement."""
    session = connection.session
    if session.shared.readonly:
        raise PgError("25006", READ_ONLY)
    table, names = copy.table
    probe = await session.prepare(f"SELECT {', '.join(names) if names else '*'} FROM {table}", [])
    columns = await probe.describe()
    names = [c.name for c in columns]
    connection.stream.write(_response(b"G", len(names)))
    await connection.stream.drain()
    chunks = []
    while True:
        tag, payload = await connection.stream.read_message()
        if tag == messages.COPY_DATA:
            chunks.append(payload)
        elif tag == messages.COPY_DONE:
            break
        elif tag == messages.COPY_FAIL:
            reason = payload.rstrip(b"\0").decode("utf-8", "replace")
            raise PgError("57014", f"COPY from stdin failed: {reason}")
        elif tag not in (messages.FLUSH, messages.SYNC):
            raise PgError("08P01", f"unexpected message type {tag!r} during COPY from stdin")
    data = b"".join(chunks)
    staged = _read_csv(data, names, copy) if copy.format == "csv" else _read_text(data, names, copy)
    quoted = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
    sql = f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM {STAGED}"

    def insert() -> None:
        cursor = session.cursor
        cursor.register(STAGED, staged)
        try:
            cursor.execute(sql)
        finally:
            cursor.unregister(STAGED)

    try:
        await session.run(insert)
    except BaseException as exc:
        raise pg_error(exc, session.shared.readonly) from None
    return staged.num_rows


def _read_csv(data: bytes, names: list[str], copy: Copy) -> pa.Table:
    if not data.strip():
        return _strings([[] for _ in names], names)
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(copy.header)),
            parse_options=pacsv.ParseOptions(
                delimiter=copy.delimiter,
                quote_char=copy.quote,
                double_quote=copy.escape == copy.quote,
                escape_char=False if copy.escape == copy.quote else copy.escape,
                newlines_in_values=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=[copy.null],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise PgError("22P04", f"jammi: bad COPY data: {str(exc).splitlines()[0]}") from None


def _read_text(data: bytes, names: list[str], copy: Copy) -> pa.Table:
    lines = data.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[-1] == "\\.":  # the old end-of-data marker
        lines.pop()
    lines = lines[int(copy.header) :]
    columns: list[list[str | None]] = [[] for _ in names]
    for number, line in enumerate(lines, 1 + int(copy.header)):
        fields = _split(line.rstrip("\r"), copy.delimiter)
        if len(fields) != len(names):
            raise PgError(
                "22P04",
                f"jammi: bad COPY data: line {number} has {len(fields)} fields, the table "
                f"{len(names)} ({', '.join(names)})",
            )
        for column, value in zip(columns, fields, strict=True):
            column.append(None if value == copy.null else _unescape(value))
    return _strings(columns, names)


def _split(line: str, delimiter: str) -> list[str]:
    """A text-format line's fields: a delimiter after a backslash is data, not a separator."""
    if "\\" not in line:
        return line.split(delimiter)
    fields, field, chars = [], [], iter(line)
    for ch in chars:
        if ch == "\\":
            field += [ch, next(chars, "")]
        elif ch == delimiter:
            fields.append("".join(field))
            field = []
        else:
            field.append(ch)
    return [*fields, "".join(field)]


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r"\\(.)", lambda m: _TEXT_ESCAPES.get(m.group(1), m.group(1)), value)


def _strings(columns: list[list[str | None]], names: list[str]) -> pa.Table:
    return pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, columns, strict=True)})
