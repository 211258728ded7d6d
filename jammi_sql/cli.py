"""The ``jammi-sql`` command: an interactive SQL shell, and run-and-print for -c, -f and stdin.

Heavy imports stay inside functions: ``jammi-sql --help`` imports neither torch nor duckdb.
Each statement runs in a worker thread, so the main thread can draw progress bars and turn
Ctrl-C into ``con.interrupt()``; DuckDB stops at its next chunk, a Python UDF after its batch.
"""

from __future__ import annotations

import argparse
import csv
import json
import numbers
import os
import re
import sys
import threading
import time
from typing import Any

HISTORY_FILE = "~/.jammi_sql_history"
SHELL_MAX_ROWS = 40  # the shell shows this many rows and counts the rest
SHELL_MAX_WIDTH = 60  # and cuts longer cells
VECTOR_HEAD = 3  # a list longer than VECTOR_HEAD + 1 items shows its head and its length
DOT_SQL = {
    ".tables": "SELECT table_schema AS schema, table_name AS name, table_type AS type "
    "FROM information_schema.tables ORDER BY ALL",
    ".jobs": "SELECT job_id, status, progress, epoch, train_loss, val_loss "
    "FROM jammi.jobs ORDER BY created_at",
    ".models": "SELECT model_id, kind, base_model_id, dimensions FROM jammi.models "
    "ORDER BY created_at",
    ".sources": "SELECT name, kind, format, url FROM jammi.sources ORDER BY created_at",
}
SHELL_HELP = """\
End a statement with ; to run it (Alt-Enter runs the input as it is). Ctrl-C stops a
running query, Ctrl-D leaves. Commands:
  .tables   tables and views          .jobs     fine-tuning jobs
  .models   registered models         .sources  registered sources
  .help     this text                 .quit     leave (also .exit)"""
_DOLLAR = re.compile(r"\$([A-Za-z_]\w*)?\$")


# --- pure helpers: statement boundaries and cell formatting -------------------------------


def statement_complete(text: str) -> bool:
    """True when ``text`` ends a statement: its last character outside quotes and comments
    is ``;``. An unclosed quote, comment or $$-string means more lines are coming."""
    last, i = "", 0
    while i < len(text):
        if text[i] in "'\"":  # '' inside a string closes and reopens it: same effect
            end = text.find(text[i], i + 1)
            if end < 0:
                return False
            last, i = text[i], end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return False
            i = end + 2
        elif m := _DOLLAR.match(text, i):
            end = text.find(m.group(0), m.end())
            if end < 0:
                return False
            last, i = "$", end + len(m.group(0))
        else:
            last = last if text[i].isspace() else text[i]
            i += 1
    return last == ";"


def input_complete(text: str) -> bool:
    """Whether Enter in the shell submits ``text`` (else it starts a continuation line)."""
    stripped = text.strip()
    return not stripped or stripped.startswith(".") or statement_complete(stripped)


def format_value(value: Any, *, nested: bool = False) -> str:
    """One cell as text: NULL, short floats, and long vectors as ``[0.013, -0.052, …] (384)``."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}" if nested else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        items = [format_value(v, nested=True) for v in value[: VECTOR_HEAD + 1]]
        if len(value) <= VECTOR_HEAD + 1:
            return "[" + ", ".join(items) + "]"
        return "[" + ", ".join(items[:VECTOR_HEAD]) + f", …] ({len(value)})"
    if isinstance(value, dict):
        items = [f"{k}: {format_value(v, nested=True)}" for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, str):
        text = value.replace("\n", "\\n")
        return f"'{text}'" if nested else text
    return str(value)


def format_table(columns: list[str], rows: list[tuple], max_width: int | None = None) -> list[str]:
    """Rows as aligned lines, psql style: numbers align right, cells cut at ``max_width``."""

    def cut(text: str) -> str:
        return text if max_width is None or len(text) <= max_width else text[: max_width - 1] + "…"

    def is_number(v: Any) -> bool:
        return v is None or (isinstance(v, numbers.Number) and not isinstance(v, bool))

    cells = [[cut(format_value(v)) for v in row] for row in rows]
    right = [bool(rows) and all(is_number(r[i]) for r in rows) for i in range(len(columns))]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: list[str], align: list[bool]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, align, strict=True)
        ]
        return (" " + " | ".join(parts)).rstrip()

    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    return [line(columns, [False] * len(columns)), rule] + [line(r, right) for r in cells]


# --- running statements ---------------------------------------------------------------------


class _ProgressBars:
    """Mirrors ``jammi_sql.progress.active()`` into rich bars on stderr: drawn once a task
    exists, gone when the statement ends."""

    def __init__(self, force: bool):
        self.force, self.bars, self.ids = force, None, {}

    def update(self) -> None:
        from jammi_sql import progress

        tasks = progress.active()
        if self.bars is None and tasks:
            from rich.console import Console
            from rich.progress import Progress

            console = Console(stderr=True, force_terminal=self.force or None)
            self.bars = Progress(*Progress.get_default_columns(), console=console, transient=True)
            self.bars.start()
        seen = set()
        for task in tasks:
            key = (task.description, task.started)
            seen.add(key)
            if key not in self.ids:
                self.ids[key] = self.bars.add_task(task.description, total=task.total or None)
            self.bars.update(self.ids[key], completed=task.done)
        for key in set(self.ids) - seen:
            self.bars.remove_task(self.ids.pop(key))

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()


def _execute(db: Any, statement: Any, limit: int | None) -> tuple[list[str] | None, list, int]:
    """Run one statement; return its column names (None when it has no rows to show), up to
    ``limit`` rows, and the row count."""
    import duckdb

    db.sync()  # a model registered by the previous statement may change FLOAT[d]
    cur = db.con.execute(statement)
    names = [d[0] for d in cur.description or []]
    if names in (["Count"], ["Success"]) and statement.type != duckdb.StatementType.SELECT:
        return None, [], 0  # DDL, plain INSERT/UPDATE/DELETE, SET: nothing to print
    if limit is None:
        rows = cur.fetchall()
        return names, rows, len(rows)
    rows, rest = cur.fetchmany(limit), 0
    while chunk := cur.fetchmany(10_000):  # count what the shell does not show
        rest += len(chunk)
    return names, rows, len(rows) + rest


def run_statement(db: Any, statement: Any, *, limit: int | None = None, progress: str = "never"):
    """``_execute`` in a worker thread. Ctrl-C interrupts the query and, once the worker has
    stopped and the connection is free again, raises KeyboardInterrupt here."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = _execute(db, statement, limit)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="jammi-sql query", daemon=True).start()
    show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
    bars = _ProgressBars(force=progress == "always") if show else None
    interrupted = False
    try:
        while not done.is_set():
            # Event.wait, not Thread.join: a join cut short by Ctrl-C can mark the thread
            # stopped while its query still runs (CPython before 3.13)
            try:
                if not done.wait(0.1) and bars and not interrupted:
                    bars.update()
            except KeyboardInterrupt:
                interrupted = True
                db.con.interrupt()
    finally:
        if bars:
            bars.stop()
    if interrupted:
        raise KeyboardInterrupt
    if "error" in box:
        raise box["error"]
    return box["result"]


def error_text(exc: BaseException) -> str:
    """What a user sees: our ``jammi:`` message, else DuckDB's own (``Parser Error: ...``)."""
    import duckdb

    from jammi_sql.errors import user_message

    plain = str(exc) if isinstance(exc, duckdb.Error) else f"{type(exc).__name__}: {exc}"
    return user_message(exc) or plain


def _print_result(columns: list[str], rows: list, total: int, fmt: str, shell: bool) -> str:
    """Print one result; return its footer (row count) for the table format, else ''."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        nested = (list, tuple, dict)
        writer.writerows([json.dumps(v, default=str) if isinstance(v, nested) else v for v in r]
                         for r in rows)  # fmt: skip
        return ""
    if fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str))
        return ""
    print("\n".join(format_table(columns, rows, SHELL_MAX_WIDTH if shell else None)))
    shown = f", {len(rows)} shown" if total > len(rows) else ""
    return f"{total:,} row{'' if total == 1 else 's'}{shown}"


def run_sql(db: Any, sql: str, *, fmt: str = "table", shell: bool = False, progress: str = "never"):
    """Run every statement of ``sql``, printing those that return rows (and, in the shell,
    the time taken). Stops at the first error, printed to stderr. Returns an exit code:
    0, 1 on an error, 130 on Ctrl-C."""
    import duckdb

    try:
        for statement in db.con.extract_statements(sql):
            started = time.perf_counter()
            limit = SHELL_MAX_ROWS if shell else None
            columns, rows, total = run_statement(db, statement, limit=limit, progress=progress)
            footer = ""
            if statement.type == duckdb.StatementType.EXPLAIN and fmt == "table":
                print("\n".join(str(row[-1]) for row in rows))
            elif columns is not None:
                footer = _print_result(columns, rows, total, fmt, shell)
            if shell:
                footer = ", ".join(filter(None, [footer, f"{time.perf_counter() - started:.3f} s"]))
            if footer:
                print(f"({footer})")
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"Error: {error_text(exc)}", file=sys.stderr)
        return 1
    return 0


# --- the shell ------------------------------------------------------------------------------


def prompt_session(**kwargs: Any) -> Any:
    """A prompt_toolkit session where Enter submits only a complete statement."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    keys = KeyBindings()

    @keys.add("enter")
    def _enter(event: Any) -> None:
        buffer = event.current_buffer
        if input_complete(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    kwargs.setdefault("history", FileHistory(os.path.expanduser(HISTORY_FILE)))
    more = lambda width, *_: "...> ".rjust(width)  # noqa: E731
    return PromptSession(multiline=True, key_bindings=keys, prompt_continuation=more,
                         lexer=PygmentsLexer(SqlLexer), auto_suggest=AutoSuggestFromHistory(),
                         **kwargs)  # fmt: skip


def shell(db: Any, session: Any = None, *, progress: str = "auto") -> int:
    """Read, run, print until Ctrl-D or .quit. Errors and Ctrl-C keep the shell."""
    session = session or prompt_session()
    while True:
        try:
            text = session.prompt("jammi> ").strip()
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        command = text.split()[0].lower() if text.startswith(".") else ""
        if command in (".quit", ".exit"):
            return 0
        if command == ".help":
            print(SHELL_HELP)
        elif command in DOT_SQL:
            run_sql(db, DOT_SQL[command], shell=True)
        elif command:
            print(f"Error: unknown command {command}; try .help", file=sys.stderr)
        elif text:
            run_sql(db, text, shell=True, progress=progress)


# --- entry point ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from jammi_sql import __version__

    parser = argparse.ArgumentParser(
        prog="jammi-sql",
        description="DuckDB with jammi's SQL functions (embed, fine_tune, semantic_search, ...).",
        epilog="other commands:\n  jammi-sql demo    the end-to-end demo on the bundled model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("db", nargs="?", default=":memory:", help="database file (default: in memory)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-c", "--command", metavar="SQL", help="run SQL, print, exit")
    source.add_argument("-f", "--file", help="run the SQL in FILE, print, exit")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv", default="table")
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json")
    add("--home", metavar="DIR", help="models and job logs (default: DB.jammi/ or $JAMMI_HOME)")
    add("--progress", choices=["auto", "always", "never"], default="auto",
        help="progress bars on stderr (auto: when stderr is a terminal)")  # fmt: skip
    add("--version", action="version", version=f"jammi-sql {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from jammi_sql import demo

        return int(demo.main() or 0)
    args = _parser().parse_args(argv)
    sql = args.command
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as f:
                sql = f.read()
        except OSError as exc:
            print(f"Error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
    interactive = sql is None and sys.stdin.isatty()
    if sql is None and not interactive:
        sql = sys.stdin.read()

    import jammi_sql

    try:
        db = jammi_sql.connect(args.db, home=args.home)
    except Exception as exc:
        print(f"Error: {error_text(exc)}", file=sys.stderr)
        return 1
    try:
        if interactive:
            print(f"jammi-sql {jammi_sql.__version__} on {args.db}; .help for help, Ctrl-D quits")
            return shell(db, progress=args.progress)
        return run_sql(db, sql, fmt=args.fmt, progress=args.progress)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
