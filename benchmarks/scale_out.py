"""``generate_text_embeddings`` here vs on Ray Data (``engine := 'ray'``) with 1 and 2 workers.

One process, one database file, a local Ray instance (every CPU of this machine): each way
embeds the same ``--rows`` STSb sentences into a table of its own (a first build), then the
same 16 rows (the fixed cost of a call: with Ray, starting the actors, shipping the model
through the object store and loading it). Printed side by side: seconds, rows per second for
the whole call and from the first rows done to the last (the steady rate, as the progress bar
shows it), the fixed cost, and the lowest cosine of each Ray table to the local one. The bytes a row costs are printed beneath: the Arrow block sent to
a worker and the one it sends back, and the row in the table on disk.

    .venv/bin/python benchmarks/scale_out.py [--rows 4000] [--model bundled|tiny] [--precision auto]

The local path runs torch on every core; a Ray worker is an actor with one CPU (torch on
one thread), so 2 workers use the same two cores as the local path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def sentences(n: int) -> list[str]:
    from common import stsb

    seen: dict[str, None] = {}
    for a, b, _ in stsb("train"):
        seen.setdefault(a)
        seen.setdefault(b)
        if len(seen) >= n:
            break
    return list(seen)[:n]


def timed(db, source: str, model: str, engine: str, workers: int | None) -> tuple[float, float]:
    """(seconds of the call, rows per second from the first rows done to the last): the
    second leaves out the fixed cost, which ends when the first rows come back."""
    import threading

    from jammi_sql import progress
    from jammi_sql.search.embeddings import generate_text_embeddings

    seen: list[tuple[float, float]] = []  # (time, rows done) at each change
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            for task in progress.active():
                if task.description.startswith("embedding") and task.done > 0:
                    if not seen or seen[-1][1] != task.done:
                        seen.append((time.perf_counter(), task.done))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    with progress.call(db.ctx):
        generate_text_embeddings(
            db.ctx, source, model, ["body"], "id", engine=engine, workers=workers
        )
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    if len(seen) < 2:
        return seconds, float("nan")
    (t0, n0), (t1, n1) = seen[0], seen[-1]
    return seconds, (n1 - n0) / max(t1 - t0, 1e-9)


def table(db, source: str, model: str) -> dict:
    from jammi_sql.search.embeddings import table_name

    rows = db.sql(f"SELECT key, embedding FROM {table_name(source, model)}").fetchall()
    return {k: np.asarray(e, dtype=np.float32) for k, e in rows}


def min_cosine(a: dict, b: dict) -> float:
    keys = sorted(a)
    assert keys == sorted(b)
    x, y = np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])
    return float(((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--model", choices=["bundled", "tiny"], default="bundled")
    parser.add_argument("--precision", default="auto", help="as jammi_sql.connect takes it")
    args = parser.parse_args()

    import jammi_sql
    from jammi_sql.inference.infer import settled_precision
    from jammi_sql.scale import cluster

    work = Path(tempfile.mkdtemp(prefix="jammi-scale-"))
    db = jammi_sql.connect(
        str(work / "bench.duckdb"), home=str(work / "home"), precision=args.precision
    )
    model = "all-MiniLM-L6-v2"
    if args.model == "tiny":
        sys.path.insert(0, str(HERE.parent / "tests"))
        from conftest import build_tiny_bert

        db.register_model("tiny", build_tiny_bert(work / "tiny-bert"))
        model = "tiny"
    texts = sentences(args.rows)
    db.con.execute("CREATE TABLE texts (id BIGINT, body VARCHAR)")
    db.con.executemany("INSERT INTO texts VALUES (?, ?)", list(enumerate(texts)))
    ways = [("local", "local", None), ("Ray, 1 worker", "ray", 1), ("Ray, 2 workers", "ray", 2)]
    for i, _ in enumerate(ways):
        db.add_source(f"big{i}", "texts")
        db.add_source(f"small{i}", "SELECT * FROM texts WHERE id < 16", format="query")

    start = time.perf_counter()
    cluster.connect()
    ray_start = time.perf_counter() - start
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "?")
    load = os.getloadavg()[0]
    print(
        f"{len(texts):,} STSb sentences, model {model}, precision "
        f"{settled_precision(db.ctx, model)}; {os.cpu_count()} CPUs ({cpu}); "
        f"load average {load:.1f} at the start; Ray started locally in {ray_start:.1f} s"
    )
    print(
        f"{'':<16}{'seconds':>9}{'rows/s':>9}{'steady rows/s':>15}{'fixed cost':>12}"
        f"{'min cosine':>12}"
    )
    reference = None
    for i, (name, engine, workers) in enumerate(ways):
        small, _ = timed(db, f"small{i}", model, engine, workers)
        seconds, steady = timed(db, f"big{i}", model, engine, workers)
        got = table(db, f"big{i}", model)
        assert len(got) == len(texts), (len(got), len(texts))
        cosine = "" if reference is None else f"{min_cosine(reference, got):>12.5f}"
        reference = reference or got
        print(
            f"{name:<16}{seconds:>9.1f}{len(texts) / seconds:>9.1f}{steady:>15.1f}"
            f"{small:>10.1f} s{cosine}"
        )
    sent = db.sql(
        "SELECT avg(strlen(body)) + 8 + 4 + 32 FROM texts"  # text, key, column, md5
    ).fetchall()[0][0]
    width = len(next(iter(reference.values())))
    db.close()
    size = (work / "bench.duckdb").stat().st_size
    print(
        f"bytes a row: ~{sent:.0f} sent to a worker (key, column name, text, md5), "
        f"~{sent + 4 * width:.0f} back ({width} float32 added); the database file holds "
        f"{size / (3 * len(texts) + 48):,.0f} a row (3 tables of {len(texts):,} rows and "
        "3 of 16, indexes aside)"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
