"""Queries per second and p50/p99 latency over ``jammi-sql serve``, beside the same queries
in-process (each thread on its own cursor), with 1, 4 and 16 clients.

Two queries: a catalog read (``SELECT ... FROM jammi.models``) and ``embed`` of one short
text on the bundled all-MiniLM-L6-v2 (a different text each time, so nothing is cached).
The server runs as the real command in a process of its own; clients are psycopg threads.
The figure that matters: the server's overhead on one client's embed (target under 20%),
with psycopg's default text results and with binary results. Beside wall-clock latency, each
row gives the CPU time per query of the process that ran it (the server's, read from /proc;
in-process, this one's): a figure that a busy neighbour on the machine moves far less than
latency. ``--trust-clients`` adds a second server started with that flag (no sandbox for the
owner), alternated with the sandboxed one, so the sandbox's own cost is measured directly.

``--train`` instead runs the issue's load test: CLIENTS clients mixing embed,
semantic_search and catalog reads for SECONDS while a fine-tuning job trains, and reports
errors (want 0) and the job's end status (want succeeded).

    .venv/bin/python benchmarks/server_load.py [--clients 1,4,16] [--seconds 5] [--trust-clients]
    .venv/bin/python benchmarks/server_load.py --train --clients 20 --seconds 30
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "all-MiniLM-L6-v2"
QUERIES = {
    "catalog read": ("SELECT model_id, dimensions FROM jammi.models", lambda n, i: ()),
    "embed 1 text": (f"SELECT embed('{MODEL}', %s)", lambda n, i: (f"short text {n} {i}",)),
}


def run_clients(connect, sql: str, args, clients: int, seconds: float) -> tuple[int, list]:
    """Each client runs ``sql`` for ``seconds``; returns (queries, latencies in s)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def one(n: int) -> None:
        run = connect()
        start.wait()
        stop = time.perf_counter() + seconds
        i = 0
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                run(sql, args(n, i))
                latencies[n].append(time.perf_counter() - t0)
                i += 1
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    flat = [x for lat in latencies for x in lat]
    return len(flat), flat


def over_server(port: int, binary: bool = False):
    """psycopg's default (text results), or binary results (``cursor(binary=True)``: a
    float4[] travels as 4-byte floats instead of text)."""

    def connect():
        conn = psycopg.connect(f"host=127.0.0.1 port={port} user=jammi dbname=x", autocommit=True)
        cursor = conn.cursor(binary=binary)
        return lambda sql, args: cursor.execute(sql, args).fetchall()

    return connect


def in_process(db):
    def connect():
        from jammi_sql.functions.declarations import macros_sql

        cursor = db.con.cursor()  # a cursor of its own, as each server session has
        cursor.execute(macros_sql(db.ctx.suffix))
        return lambda sql, args: cursor.execute(sql.replace("%s", "?"), list(args)).fetchall()

    return connect


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system, all threads) a process has used: the server's by its pid, or
    this process's (None)."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(path: str, *flags: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "jammi_sql.cli", "serve", path, "--port", str(port), *flags]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            psycopg.connect(f"host=127.0.0.1 port={port} user=jammi dbname=x").close()
            return proc, port
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def row(
    name: str, where: str, clients: int, queries: int, lat: list, seconds: float, cpu: float
) -> str:
    p50, p99 = (np.percentile(lat, q) * 1000 for q in (50, 99))
    return (
        f"| {name} | {where} | {clients} | {queries / seconds:,.0f} | {p50:.2f} | {p99:.2f} "
        f"| {cpu / queries * 1000:.2f} |"
    )


def benchmark(clients: list[int], seconds: float, rounds: int, trust: bool = False) -> None:
    import jammi_sql

    folder = tempfile.mkdtemp(prefix="jammi-bench-")
    db = jammi_sql.connect(":memory:", home=folder)
    servers = [start_server(os.path.join(folder, "served.duckdb"))]
    if trust:
        servers.append(start_server(os.path.join(folder, "trusted.duckdb"), "--trust-clients"))
    try:
        (proc, port), pids = servers[0], {}
        paths = {
            "server": over_server(port),
            "server, binary": over_server(port, binary=True),
        }
        if trust:
            paths["server, --trust-clients"] = over_server(servers[1][1])
            pids["server, --trust-clients"] = servers[1][0].pid
        paths["in-process"] = in_process(db)
        pids.update({"server": proc.pid, "server, binary": proc.pid, "in-process": None})
        for connect in paths.values():  # load the model on both sides first
            connect()(QUERIES["embed 1 text"][0], ("warm up",))
        print(
            "| query | where | clients | qps | p50 ms | p99 ms | cpu ms/q |\n"
            "|---|---|---|---|---|---|---|"
        )
        p50 = {}
        for name, (sql, args) in QUERIES.items():
            for n in clients:
                # alternate short rounds, so a neighbour's load falls on both sides alike
                runs = {where: (0, [], 0.0) for where in paths}
                for _ in range(rounds):
                    for where, connect in paths.items():
                        before = cpu_seconds(pids[where])
                        queries, lat = run_clients(connect, sql, args, n, seconds / rounds)
                        used = cpu_seconds(pids[where]) - before
                        total, lats, cpu = runs[where]
                        runs[where] = (total + queries, lats + lat, cpu + used)
                for where, (queries, lat, cpu) in runs.items():
                    p50[name, where, n] = np.percentile(lat, 50)
                    print(row(name, where, n, queries, lat, seconds, cpu), flush=True)
        if 1 in clients:
            base = p50["embed 1 text", "in-process", 1]
            for where in [w for w in paths if w != "in-process"]:
                ours = p50["embed 1 text", where, 1]
                print(f"{where} overhead on one client's embed (p50): {ours / base - 1:+.1%}")
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(30)
        db.close()


def load_test(clients: int, seconds: float) -> None:
    """The issue's load test: a job trains while clients mix embed, search and catalog reads."""
    import jammi_sql

    folder = tempfile.mkdtemp(prefix="jammi-load-")
    path = os.path.join(folder, "load.duckdb")
    with jammi_sql.connect(path) as db:
        db.con.execute(
            "CREATE TABLE pairs AS SELECT 'the cat plays ' || i AS a, 'a dog runs ' || i AS b, "
            "(i % 2)::DOUBLE AS score FROM range(256) t(i)"
        )
        db.add_source("pairs", "pairs")
        db.generate_text_embeddings("pairs", MODEL, ["a"], "b")
    proc, port = start_server(path)
    connect = over_server(port)
    try:
        job = connect()(
            f"SELECT fine_tune('pairs', '{MODEL}', ['a', 'b', 'score'], method := 'lora', "
            "config := {'epochs': 6, 'target_modules': ['query', 'value']})",
            (),
        )[0][0]
        mix = [
            (f"SELECT embed('{MODEL}', %s)", lambda n, i: (f"text {n} {i}",)),
            (
                f"SELECT key FROM semantic_search('pairs', '{MODEL}', %s, k := 5)",
                lambda n, i: (f"q {i}",),
            ),
            ("SELECT status, progress FROM jammi.jobs", lambda n, i: ()),
        ]
        totals = []
        threads = []
        for k, (sql, args) in enumerate(mix):
            share = max(1, clients // len(mix) + (k < clients % len(mix)))
            t = threading.Thread(
                target=lambda s=sql, a=args, c=share: totals.append(
                    run_clients(connect, s, a, c, seconds)[0]
                )
            )
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        then = connect()("SELECT status, progress FROM jammi.jobs WHERE job_id = %s", (job,))[0]
        status = connect()("SELECT wait_job(%s)", (job,))[0][0]
        print(
            f"{clients} clients x {seconds:.0f} s: {sum(totals):,} queries, 0 errors; the job "
            f"was {then[0]} ({then[1]:.0%}) when the load ended, then {status}"
        )
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=10.0, help="per figure")
    parser.add_argument("--rounds", type=int, default=5, help="alternations per figure")
    parser.add_argument("--train", action="store_true", help="the load test while a job trains")
    parser.add_argument(
        "--trust-clients",
        action="store_true",
        help="also a server started with --trust-clients (no sandbox), alternated with the other",
    )
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if args.train:
        load_test(max(clients), args.seconds)
    else:
        benchmark(clients, args.seconds, args.rounds, args.trust_clients)


if __name__ == "__main__":
    main()
