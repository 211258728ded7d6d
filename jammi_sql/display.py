"""Helpers for the shell and the demo: statement boundaries, result formatting, progress bars."""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable
from typing import Any

VECTOR_HEAD = 3  # a list longer than VECTOR_HEAD + 1 items shows its head and its length
_DOLLAR = re.compile(r"\$([A-Za-z_]\w*)?\$")


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


def json_decoder(duck_type: Any) -> Callable[[Any], Any] | None:
    """A function that turns the JSON texts inside a value of ``duck_type`` (a DuckDB type from
    a cursor's description) into Python objects, so JSON nests in JSON output instead of
    arriving as an escaped string; None when the type holds no JSON."""
    if duck_type is None:
        return None
    if str(duck_type) == "JSON":
        return lambda v: None if v is None else json.loads(v)
    kind = getattr(duck_type, "id", None)
    if kind in ("list", "array"):
        item = json_decoder(duck_type.children[0][1])
        return item and (lambda v: None if v is None else [item(x) for x in v])
    if kind == "map":
        value = json_decoder(duck_type.children[1][1])
        return value and (lambda v: None if v is None else {k: value(x) for k, x in v.items()})
    if kind == "struct":
        fields = {name: json_decoder(t) for name, t in duck_type.children}
        if not any(fields.values()):
            return None
        keep = lambda x: x  # noqa: E731
        return lambda v: (
            None if v is None else {k: (fields.get(k) or keep)(x) for k, x in v.items()}
        )
    return None


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


def format_lines(columns: list[str], row: tuple) -> list[str]:
    """One row as ``column = value`` lines, names aligned right (DuckDB's ``.mode line``)."""
    width = max((len(c) for c in columns), default=0)
    return [f"{c.rjust(width)} = {format_value(v)}" for c, v in zip(columns, row, strict=True)]


# --- running statements ---------------------------------------------------------------------


def metrics_comparison(metrics: dict | None) -> tuple[list[str], list[tuple]]:
    """A job's validation metrics as rows (measure, base, fine_tuned, delta)."""
    columns = ["measure", "base", "fine_tuned", "delta"]
    if not metrics or not metrics.get("base"):
        return columns, []
    base, tuned, delta = (
        metrics["base"],
        metrics.get("fine_tuned") or {},
        metrics.get("delta") or {},
    )
    return columns, [(name, base.get(name), tuned.get(name), delta.get(name)) for name in base]


def job_summary(job: tuple, metrics: dict | None) -> list[str]:
    """Lines that report a finished job and its before/after comparison."""
    job_id, status, model_id, error = job
    if status != "succeeded":
        return [f"job {job_id} {status}" + (f": {error}" if error else "")]
    lines = [f"job {job_id} succeeded: model '{model_id}'"]
    columns, rows = metrics_comparison(metrics)
    if rows:
        lines.append(f"validation ({metrics.get('metric')}), base model vs fine-tuned:")
        lines += format_table(columns, [tuple(_round(v) for v in row) for row in rows])
    if metrics and metrics.get("note"):
        lines.append(metrics["note"])
    return lines


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


class ProgressBars:
    """Mirrors ``jammi_sql.progress.active()`` into rich bars on stderr: drawn once a task
    exists, gone when the statement ends."""

    def __init__(self, force: bool):
        self.force, self.bars, self.ids = force, None, {}

    def update(self) -> None:
        from jammi_sql import progress

        tasks = progress.active()
        if self.bars is None and tasks:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            console = Console(stderr=True, force_terminal=self.force or None)
            columns = [TextColumn("{task.description}"), BarColumn(bar_width=15)]
            columns += [
                TaskProgressColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[count]}"),
            ]
            self.bars = Progress(*columns, console=console, transient=True)
            self.bars.start()
        seen = set()
        for task in tasks:
            key = (task.description, task.started)
            seen.add(key)
            if key not in self.ids:
                # what is left of the width once the other columns (about 48 characters) are drawn
                room = max(16, self.bars.console.width - 48 + (0 if task.counted else 18))
                shown = task.description
                shown = shown if len(shown) <= room else shown[: room - 1] + "…"
                self.ids[key] = self.bars.add_task(shown, total=task.total or None, count="")
            of = f"/{task.total:,}" if task.total else " texts"  # a tally has no total
            count = f"{task.done:,.0f}{of} {task.rate:,.0f}/s" if task.counted else ""
            self.bars.update(self.ids[key], completed=task.done, count=count)
        for key in set(self.ids) - seen:
            self.bars.remove_task(self.ids.pop(key))

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()
