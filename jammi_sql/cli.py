"""The ``jammi-sql`` command: an interactive SQL shell, and run-and-print for -c, -f and stdin.

Heavy imports stay inside functions, so ``jammi-sql --help`` never imports torch.
Each statement runs in a worker thread, so the main thread can draw progress bars and turn
Ctrl-C into ``db.interrupt()``: DuckDB stops at its next chunk, a jammi call (embed,
generate_text_embeddings, evaluate_*) after its current micro-batch, and what it wrote rolls back.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from .defaults import PRECISIONS
from .display import (  # noqa: F401
    ProgressBars,
    format_lines,
    format_table,
    format_value,
    input_complete,
    json_decoder,
    statement_complete,
)

HISTORY_FILE = "~/.jammi_sql_history"
SHELL_MAX_ROWS = 40  # the shell shows this many rows and counts the rest
SHELL_MAX_WIDTH = 60  # and cuts longer cells
FORMATS = ("table", "csv", "json", "line")  # --csv, --json, --line; .mode in the shell
DOT_LISTINGS = (".tables", ".jobs", ".models", ".sources")
# The shell's commands: (command, what it does). .help prints them; the README lists them too.
DOT_COMMANDS = (
    (".tables", "tables and views"),
    (".jobs", "fine-tuning jobs"),
    (".models", "registered models"),
    (".sources", "registered sources"),
    (".job ID", "one job, with base vs fine-tuned metrics when it succeeded"),
    (
        ".schema [TABLE]",
        "CREATE statements of your tables and views, or of TABLE (a name, schema.name or "
        "LIKE pattern: .schema jammi.% shows jammi's catalog)",
    ),
    (".mode [MODE]", "print results as table, csv, json or line (no MODE: show it)"),
    (".timer on|off", "show how long each statement took (on at start)"),
    (".read FILE", "run the SQL in FILE"),
    (".help", "this text"),
    (".quit", "leave (also .exit and Ctrl-D)"),
)
SHELL_HELP = (
    "End a statement with ; to run it (Alt-Enter runs the input as it is). Ctrl-C stops a\n"
    "running query, Ctrl-D leaves. Commands:\n"
    + "\n".join(
        f"  {command:<16} " + "\n".ljust(20).join(textwrap.wrap(does, 70))
        for command, does in DOT_COMMANDS
    )
)


class Result(NamedTuple):
    """One statement's output: column names (None when it has no rows to show), their DuckDB
    types, up to the limit's rows, and the row count."""

    columns: list[str] | None
    types: list
    rows: list
    total: int


def _execute(db: Any, statement: Any, limit: int | None) -> Result:
    """Run one statement; keep up to ``limit`` rows and count the rest."""
    import duckdb

    cur = db.con.execute(statement)
    names = [d[0] for d in cur.description or []]
    types = [d[1] for d in cur.description or []]
    if names in (["Count"], ["Success"]) and statement.type != duckdb.StatementType.SELECT:
        return Result(None, [], [], 0)  # DDL, plain INSERT/UPDATE/DELETE, SET: nothing to print
    if limit is None:
        rows = cur.fetchall()
        return Result(names, types, rows, len(rows))
    rows, rest = cur.fetchmany(limit), 0
    while chunk := cur.fetchmany(10_000):  # count what the shell does not show
        rest += len(chunk)
    return Result(names, types, rows, len(rows) + rest)


def run_statement(db: Any, statement: Any, *, limit: int | None = None, progress: str = "never"):
    """``_execute`` in a worker thread. Ctrl-C interrupts the query and, once the worker has
    stopped and the connection is free again, raises KeyboardInterrupt here."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        from jammi_sql.progress import watching

        try:
            with watching() if show else contextlib.nullcontext():
                box["result"] = _execute(db, statement, limit)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    show = progress == "always" or (progress == "auto" and sys.stderr.isatty())
    bars = ProgressBars(force=progress == "always") if show else None
    interrupted = False
    threading.Thread(target=work, name="jammi-sql query", daemon=True).start()
    try:
        while not done.is_set():
            # Event.wait, not Thread.join: a join cut short by Ctrl-C can mark the thread
            # stopped while its query still runs (CPython before 3.13)
            try:
                if not done.wait(0.1) and bars and not interrupted:
                    bars.update()
            except KeyboardInterrupt:
                if interrupted:
                    print("Stopping: a running function first finishes its batch", file=sys.stderr)
                interrupted = True
                db.interrupt()
    finally:
        if bars:
            bars.stop()
        from jammi_sql.progress import take_warnings

        for warning in take_warnings():  # e.g. texts cut at a model's limit
            print(f"Warning: {warning}", file=sys.stderr)
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


def _decoded(rows: list, types: list, keep_json_text: bool = False) -> list:
    """Rows with the JSON inside their values decoded (see ``json_decoder``); with
    ``keep_json_text`` a JSON column itself stays text (CSV writes it as it is)."""
    decoders = [None if keep_json_text and str(t) == "JSON" else json_decoder(t) for t in types]
    if not any(decoders):
        return rows
    return [[d(v) if d else v for d, v in zip(decoders, row, strict=True)] for row in rows]


def _print_result(
    columns: list[str], rows: list, total: int, fmt: str, shell: bool, types: list | None = None
) -> str:
    """Print one result; return its footer (row count) for the table format, else ''."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        nested = (list, tuple, dict)
        writer.writerows(
            [json.dumps(v, default=str) if isinstance(v, nested) else v for v in r]
            for r in _decoded(rows, types or [], keep_json_text=True)
        )
        return ""
    if fmt == "json":
        rows = _decoded(rows, types or [])
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str))
        return ""
    if fmt == "line":
        print("\n\n".join("\n".join(format_lines(columns, row)) for row in rows))
    else:
        print("\n".join(format_table(columns, rows, SHELL_MAX_WIDTH if shell else None)))
    shown = f", {len(rows)} shown" if total > len(rows) else ""
    return f"{total:,} row{'' if total == 1 else 's'}{shown}"


def run_sql(
    db: Any,
    sql: str,
    *,
    fmt: str = "table",
    shell: bool = False,
    progress: str = "never",
    timer: bool | None = None,
):
    """Run every statement of ``sql``, printing those that return rows (and, in the shell
    unless ``timer`` is False, the time taken). The shell shows the first rows of a table
    (or line) result and counts the rest. Stops at the first error, printed to stderr.
    Returns an exit code: 0, 1 on an error, 130 on Ctrl-C."""
    import duckdb

    timer = shell if timer is None else timer
    try:
        for statement in db.con.extract_statements(sql):
            started = time.perf_counter()
            limit = SHELL_MAX_ROWS if shell and fmt in ("table", "line") else None
            result = run_statement(db, statement, limit=limit, progress=progress)
            footer = ""
            if statement.type == duckdb.StatementType.EXPLAIN and fmt == "table":
                print("\n".join(str(row[-1]) for row in result.rows))
            elif result.columns is not None:
                footer = _print_result(
                    result.columns, result.rows, result.total, fmt, shell, result.types
                )
            if timer:
                footer = ", ".join(filter(None, [footer, f"{time.perf_counter() - started:.3f} s"]))
            if footer:
                print(f"({footer})")
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("Interrupted: the statement was cancelled (Ctrl-C)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (| head): stop quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
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
    return PromptSession(
        multiline=True,
        key_bindings=keys,
        prompt_continuation=more,
        lexer=PygmentsLexer(SqlLexer),
        auto_suggest=AutoSuggestFromHistory(),
        **kwargs,
    )


def _finished_jobs(db: Any, since: Any) -> Any:
    """Print jobs that ended since ``since`` with their before/after metrics; the new mark."""
    from .display import job_summary

    jobs = db.ctx.catalog.finished_jobs(since)
    for job in jobs:
        print(
            "\n".join(job_summary((job.job_id, job.status, job.model_id, job.error), job.metrics))
        )
    return jobs[-1].finished_at if jobs else since


@dataclass
class ShellSettings:
    """What .mode and .timer set."""

    mode: str = "table"
    timer: bool = True


def shell(db: Any, session: Any = None, *, progress: str = "auto") -> int:
    """Read, run, print until Ctrl-D or .quit. Errors and Ctrl-C keep the shell.

    Between statements it reports jobs that ended, with base-vs-fine-tuned metrics.
    """
    session = session or prompt_session()
    settings = ShellSettings()
    finished = db.ctx.catalog.finished_jobs()
    mark = finished[-1].finished_at if finished else None
    while True:
        mark = _finished_jobs(db, mark)
        try:
            text = session.prompt("jammi> ").strip()
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if text.startswith("."):
            if not dot_command(db, text, settings, progress):
                return 0
        elif text:
            run_sql(
                db, text, fmt=settings.mode, shell=True, progress=progress, timer=settings.timer
            )


def dot_command(db: Any, text: str, settings: ShellSettings, progress: str = "never") -> bool:
    """Run one shell command (``.tables``, ``.mode csv``, ...); False when it is ``.quit``."""
    command, *args = text.split(maxsplit=1)
    command, arg = command.lower(), args[0].strip() if args else ""
    if command in (".quit", ".exit"):
        return False
    if command == ".help":
        print(SHELL_HELP)
    elif command == ".job" and arg and len(arg.split()) == 1:
        _show_job(db, arg)
    elif command in DOT_LISTINGS and not arg:
        columns, rows = db.ctx.catalog.listing(command[1:])
        print(f"({_print_result(columns, rows, len(rows), 'table', True)})")
    elif command == ".schema":
        _show_schema(db, arg or None)
    elif command == ".mode" and arg.lower() in FORMATS:
        settings.mode = arg.lower()
    elif command == ".mode" and not arg:
        print(settings.mode)
    elif command == ".timer" and arg.lower() in ("on", "off"):
        settings.timer = arg.lower() == "on"
    elif command == ".timer" and not arg:
        print("on" if settings.timer else "off")
    elif command == ".read" and arg:
        run_script(db, arg, fmt=settings.mode, shell=True, progress=progress, timer=settings.timer)
    elif command in {c.split()[0] for c, _ in DOT_COMMANDS}:
        usage = next(c for c, _ in DOT_COMMANDS if c.split()[0] == command)
        print(f"Error: usage: {usage}; .help lists the commands", file=sys.stderr)
    else:
        print(f"Error: unknown command {command}; try .help", file=sys.stderr)
    return True


SCHEMA_SQL = """
SELECT sql FROM (
    SELECT schema_name, table_name AS name, sql FROM duckdb_tables() WHERE NOT internal
    UNION ALL
    SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal
)
WHERE CASE WHEN $pattern IS NULL THEN schema_name <> 'jammi'
           ELSE name ILIKE $pattern OR schema_name || '.' || name ILIKE $pattern END
ORDER BY schema_name <> 'main', schema_name, name
"""


def _show_schema(db: Any, pattern: str | None) -> None:
    """``.schema``: the CREATE statements of the tables and views that match."""
    found = db.con.execute(SCHEMA_SQL, {"pattern": pattern}).fetchall()
    if pattern and not found:
        print(f"Error: no table or view matches '{pattern}'; .tables lists them", file=sys.stderr)
    for (sql,) in found:
        print(sql)


def read_script(path: str) -> str | None:
    """The text of the script at ``path``, or None after printing why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        print(f"Error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None


def search_script_folder(db: Any, path: str) -> None:
    """Let relative paths in the script at ``path`` name files beside it: its folder joins
    DuckDB's ``file_search_path``, where ``read_csv('x.csv')`` (and ``add_source``) look for
    a file the current directory lacks. It stays there for the session, so sources and jobs
    the script set up can read their files again later."""
    folder = os.path.dirname(os.path.abspath(path))
    current = db.con.execute("SELECT current_setting('file_search_path')").fetchone()[0]
    folders = [f for f in (current or "").split(",") if f]
    if folder not in folders:
        value = ",".join([*folders, folder]).replace("'", "''")
        db.con.execute(f"SET GLOBAL file_search_path = '{value}'")


def run_script(db: Any, path: str, **options: Any) -> int:
    """Run the SQL in the file at ``path`` (``.read``; ``-f``) with ``run_sql``'s options;
    relative file paths in it that the current directory lacks are looked up beside it."""
    sql = read_script(path)
    if sql is None:
        return 1
    search_script_folder(db, path)
    return run_sql(db, sql, **options)


def _show_job(db: Any, job_id: str) -> None:
    from .display import job_summary

    try:
        job = db.ctx.jobs.get(job_id)
    except Exception as exc:
        print(f"Error: {error_text(exc)}", file=sys.stderr)
        return
    if job.status in ("queued", "running", "interrupted"):
        print(
            f"job {job.job_id} {job.status}: {job.progress:.0%}, epoch {job.epoch}, step {job.step}"
            f"/{job.total_steps}, train_loss {job.train_loss}, val_loss {job.val_loss}"
        )
    else:
        print(
            "\n".join(job_summary((job.job_id, job.status, job.model_id, job.error), job.metrics))
        )


# --- entry point ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from jammi_sql import __version__

    parser = argparse.ArgumentParser(
        prog="jammi-sql",
        description="DuckDB with jammi's SQL functions (embed, fine_tune, semantic_search, ...).",
        epilog="other commands:\n  jammi-sql demo    the end-to-end demo on the bundled model\n"
        "  jammi-sql serve   a PostgreSQL-wire server (jammi-sql serve --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("db", nargs="?", default=":memory:", help="database file (default: in memory)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-c", "--command", metavar="SQL", help="run SQL, print, exit")
    source.add_argument("-f", "--file", help="run the SQL in FILE, print, exit")
    fmt = parser.add_mutually_exclusive_group()
    for name in FORMATS[1:]:
        fmt.add_argument(
            f"--{name}",
            dest="fmt",
            action="store_const",
            const=name,
            help=f"print results as {name.upper()} instead of a table"
            if name != "line"
            else "print each row as lines of column = value",
        )
    parser.set_defaults(fmt="table")
    add("--readonly", action="store_true", help="open DB read-only (no jammi function writes)")
    add(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="inference precision (default auto: bf16/fp16 where the hardware has it and a "
        "fidelity check passes, else fp32)",
    )
    add("--home", metavar="DIR", help="models and job logs (default: DB.jammi/ or $JAMMI_HOME)")
    add(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bars on stderr",
    )
    add("--version", action="version", version=f"jammi-sql {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from jammi_sql.pg import server

        return server.main(argv[1:])
    if argv[:1] == ["demo"]:
        from jammi_sql import demo

        return demo.main(argv[1:])
    args = _parser().parse_args(argv)
    sql = args.command
    if args.file is not None and (sql := read_script(args.file)) is None:
        return 1  # before a database file is created
    interactive = sql is None and sys.stdin.isatty()
    if sql is None and not interactive:
        sql = sys.stdin.read()

    import jammi_sql

    try:
        db = jammi_sql.connect(
            args.db, home=args.home, read_only=args.readonly, precision=args.precision
        )
    except Exception as exc:
        print(f"Error: {error_text(exc)}", file=sys.stderr)
        return 1
    try:
        if interactive:
            print(f"jammi-sql {jammi_sql.__version__} on {args.db}; .help for help, Ctrl-D quits")
            code = shell(db, progress=args.progress)
        else:
            if args.file is not None:
                search_script_folder(db, args.file)
            code = run_sql(db, sql, fmt=args.fmt, progress=args.progress)
        _note_unfinished_jobs(db)
        return code
    finally:
        db.close()


def _note_unfinished_jobs(db: Any) -> None:
    """A job runs in this process: when a script ends before its jobs do, say what happens."""
    for job_id in db.ctx.unfinished_jobs():
        print(
            f"Note: job {job_id} has not finished, and a job runs only while the process that "
            "started it is alive; "
            f"jammi-sql exits now, so it will show as interrupted (resume_job('{job_id}') "
            f"continues it). To wait for it, end the script with SELECT wait_job('{job_id}');",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
