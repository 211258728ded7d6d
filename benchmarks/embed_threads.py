"""Do torch's threads and DuckDB's fight over the cores? Texts/s of ``SELECT embed(...)`` for
each split of DuckDB threads x torch threads, on a table DuckDB scans in parallel.

DuckDB runs a query on up to ``threads`` threads, one per row group, and each calls embed()'s
vectorized UDF on its own chunks; each call runs the model on torch's intra-op threads. A table
of a few thousand rows is one row group (122,880 rows) and runs on one thread, so the table
here lives in a database attached with small row groups: what a large table does, at a size
that measures in minutes. Also ``generate_text_embeddings`` (which batches on its own).

    .venv/bin/python benchmarks/embed_threads.py [--n 4096] [--row-group 2048] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import scifact_corpus, stsb  # noqa: E402


def texts(n: int) -> list[str]:
    """One SciFact abstract to every three STSb sentences: a mix of long and short."""
    abstracts = [d["text"] for d in scifact_corpus()]
    sentences = [a for a, _, _ in stsb("train")]
    return [abstracts[i // 4] if i % 4 == 0 else sentences[i] for i in range(n)]


def measure(n: int, row_group: int, repeats: int, precision: str, duck: int, threads: int):
    """Texts/s at one split, in a fresh process: torch fixes a thread's pool size the first time
    that thread runs an op, so DuckDB's worker threads keep what they started with."""
    import torch

    torch.set_num_threads(threads)
    import jammi_sql

    folder = tempfile.mkdtemp(prefix="jammi-threads-")
    db = jammi_sql.connect(os.path.join(folder, "main.duckdb"), precision=precision)
    db.con.execute(f"SET threads = {duck}")
    db.con.execute(f"ATTACH '{folder}/small.duckdb' AS small (ROW_GROUP_SIZE {row_group})")
    db.con.execute("CREATE TABLE small.t AS SELECT unnest(?) AS body", [texts(n)])
    groups = db.sql("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('small.t')")
    sql = "SELECT embed('all-MiniLM-L6-v2', body) FROM small.t"
    db.sql(f"{sql} LIMIT 64").fetchall()  # warm: the model loads once
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        db.sql(sql).fetchall()
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"rate": n / best, "groups": groups.fetchall()[0][0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--row-group", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # DUCK,TORCH: a child
    args = parser.parse_args()
    common = [str(args.n), str(args.row_group), str(args.repeats), args.precision]
    if args.one:
        duck, threads = map(int, args.one.split(","))
        return measure(args.n, args.row_group, args.repeats, args.precision, duck, threads)

    cores = os.cpu_count() or 1
    counts = sorted({1, max(1, cores // 2), cores})
    rows = []
    for duck, threads in itertools.product(counts, counts):
        child = [sys.executable, __file__, "--one", f"{duck},{threads}", "--n", common[0],
                 "--row-group", common[1], "--repeats", common[2], "--precision", common[3]]  # fmt: skip
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((duck, threads, result["rate"]))
        print(f"  duckdb {duck} x torch {threads}: {result['rate']:7.1f} texts/s "
              f"({result['groups']} row groups)", flush=True)  # fmt: skip
    print(f"\n{args.n} texts (1 SciFact abstract to 3 STSb sentences), {cores} cores")
    print("| DuckDB threads | torch threads | SELECT embed texts/s |\n|---|---|---|")
    top = max(r[2] for r in rows)
    for duck, threads, rate in rows:
        print(f"| {duck} | {threads} | {rate:,.1f}{' (best)' if rate == top else ''} |")


if __name__ == "__main__":
    main()
