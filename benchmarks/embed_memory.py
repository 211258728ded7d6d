"""Peak memory of ``generate_text_embeddings`` at 10k, 100k and 1M short rows.

Each size runs in a fresh process on a database file (an in-memory database would hold
the table itself in RAM): it builds a table of short texts, adds it as a source and
embeds it, then prints its own peak RSS (to the end of the call, and after closing the
database, when DuckDB checkpoints the file), the time and the rate. The model is the tiny
random BERT of the tests (hidden 32, 2 layers; ``--model bundled`` for all-MiniLM-L6-v2):
the row counts are what matter here, and the embedding table of a 384-d model at 1M rows
is 1.5 GB on disk; ``--model wide``, a random 2-layer BERT of hidden 384, writes rows of the
bundled model's width at a fraction of its cost.

    .venv/bin/python benchmarks/embed_memory.py [--sizes 10000 100000 1000000] [--model tiny]
        [--memory-limit 500MB]

DuckDB keeps written blocks in its buffer cache up to its ``memory_limit`` (80% of RAM by
default), so RSS also shows that cache; ``--memory-limit`` bounds it as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent


def one_run(rows: int, model: str, work: Path, memory_limit: str | None) -> dict:
    """In the child process: embed ``rows`` short texts; report peak RSS and the rate."""
    import jammi_sql

    db = jammi_sql.connect(str(work / "bench.duckdb"), precision="fp32")
    if memory_limit:
        db.con.execute(f"SET memory_limit = '{memory_limit}'")
    if model in ("tiny", "wide"):
        sys.path.insert(0, str(HERE.parent / "tests"))
        from conftest import build_tiny_bert

        hidden = 384 if model == "wide" else 32
        db.register_model("tiny", build_tiny_bert(work / "tiny-bert", hidden=hidden))
    model_id = "all-MiniLM-L6-v2" if model == "bundled" else "tiny"
    db.con.execute(
        "CREATE TABLE texts AS SELECT i AS id, 'short text number ' || i || ' about '"
        " || (['cats', 'solar energy', 'databases', 'piano'])[1 + i % 4] AS body FROM range(?) r(i)",
        [rows],
    )
    db.add_source("texts", "texts")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    written = db.generate_text_embeddings("texts", model_id, ["body"], "id")
    seconds = time.perf_counter() - start
    peak_call = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    db.close()  # DuckDB checkpoints the file here
    return {
        "rows": rows,
        "written": int(written),
        "seconds": seconds,
        "rate": rows / seconds,
        "rss_setup_mb": rss_before,
        "peak_call_mb": peak_call,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", choices=["tiny", "wide", "bundled"], default="tiny")
    parser.add_argument(
        "--memory-limit", help="DuckDB's memory_limit for the run, e.g. 500MB (default: DuckDB's)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.model, Path(args.work), args.memory_limit)))
        return
    model = {
        "tiny": "tiny random BERT (hidden 32)",
        "wide": "random 2-layer BERT of hidden 384 (the bundled model's width)",
        "bundled": "all-MiniLM-L6-v2",
    }[args.model]
    limit = f"memory_limit {args.memory_limit}" if args.memory_limit else "DuckDB's memory_limit"
    print(f"generate_text_embeddings, short rows, model: {model}, database on disk, {limit}")
    print(
        f"{'rows':>10}{'seconds':>10}{'rows/s':>10}{'RSS before':>12}{'peak RSS':>10}"
        f"{'with close':>12}"
    )
    for rows in args.sizes:
        with tempfile.TemporaryDirectory() as work:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(rows), "--work", work]
                + ["--model", args.model]
                + (["--memory-limit", args.memory_limit] if args.memory_limit else []),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['rows']:>10,}{r['seconds']:>10.1f}{r['rate']:>10,.0f}"
            f"{r['rss_setup_mb']:>9.0f} MB{r['peak_call_mb']:>7.0f} MB{r['peak_rss_mb']:>9.0f} MB"
        )


if __name__ == "__main__":
    main()
