#!/usr/bin/env python3
"""Measure peer vector-search engines on the same vectors and queries as our engine.

Runs in its own virtual environment (see benchmarks/peer_venv.sh); it needs only
numpy and the peer libraries and never imports jammi_sql.

    .venv-peers/bin/python benchmarks/search_peers.py --peer lancedb \
        --vectors V.npy --queries Q.npy --k 10 [--workdir DIR] [--threads N]

V.npy: (n, d) float32, unit-normalised rows.  Q.npy: (m, d) float32, unit-normalised.

For every peer setting one JSON object is printed on stdout, one per line:

    {"peer": ..., "setting": ..., "n": ..., "build_s": ..., "build_mib": ...,
     "p50_ms": ..., "p99_ms": ..., "recall_at_10": ...}

plus a few extra keys (index, threads, version, ...).  Every run also prints the
exact numpy baseline (peer "numpy": V @ q then argpartition, one query at a
time) so the figures are comparable within the same process and venv; pass
--no-numpy to leave it out.  Diagnostics go to stderr.

Peers:
  lancedb     LanceDB table on disk in --workdir, one vector index per --lancedb-index
              (default both IVF_PQ, LanceDB's default index, and IVF_HNSW_SQ, its
              HNSW-type index), cosine metric; queried with tbl.search(q).limit(k)
              at LanceDB's defaults, then once more with recall-raising settings.
  duckdb-vss  in-memory DuckDB table v FLOAT[d] with
              CREATE INDEX ... USING HNSW (v) WITH (metric='cosine'), queried with
              ORDER BY array_cosine_distance(v, ?::FLOAT[d]) LIMIT k at the default
              hnsw_ef_search and once more with a larger one.  The vss extension is
              loaded from the duckdb-extension-vss wheel (no network needed).
              pandas must be installed too: without it duckdb 1.5.5's Python client
              spends ~27 ms binding each 384-float query parameter.
  numpy       exact search, the ground truth's own cost.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time

PEERS = ("lancedb", "duckdb-vss", "numpy")
LANCEDB_INDEXES = ("ivf_pq", "ivf_hnsw_sq")
WARMUP = 5


def log(msg: str) -> None:
    print(f"[search_peers] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class PeakRss:
    """Peak resident-set growth (MiB) over a block of work.

    On Linux the kernel's high-water mark (VmHWM) is reset by writing 5 to
    /proc/self/clear_refs, so the peak is that of the block alone.  Elsewhere it
    falls back to getrusage's ru_maxrss, which can only show growth beyond the
    process's earlier peak.
    """

    def __enter__(self):
        gc.collect()
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset = True
        except OSError:
            pass
        self.base_kib = _status_kib("VmRSS") if self.reset else None
        if self.base_kib is None:
            self.reset = False
            self.base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        peak = _status_kib("VmHWM") if self.reset else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mib = max(0.0, (peak - self.base_kib) / 1024.0)
        return False


# --------------------------------------------------------------------------- timing


def measure(search, queries, truth, k):
    """Run each query alone: WARMUP untimed, then every query timed once."""
    import numpy as np

    for q in queries[:WARMUP]:
        search(q)
    lat = np.empty(len(queries))
    hits = 0
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        ids = search(q)
        lat[i] = time.perf_counter() - t0
        hits += len(set(int(x) for x in ids[:k]) & truth[i])
    return {
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 4),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4),
        "mean_ms": round(float(lat.mean()) * 1e3, 4),
        f"recall_at_{k}": round(hits / (k * len(queries)), 4),
    }


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


# --------------------------------------------------------------------------- peers


def run_numpy(V, Q, truth, k, common):
    import numpy as np

    def search(q):
        s = V @ q
        top = np.argpartition(-s, k - 1)[:k]
        return top[np.argsort(-s[top])]

    row = {
        "peer": "numpy",
        "setting": "exact V@q + argpartition",
        **common,
        "build_s": 0.0,
        "build_mib": 0.0,
        "version": np.__version__,
    }
    row.update(measure(search, Q, truth, k))
    emit(row)


def run_lancedb(V, Q, truth, k, common, workdir, indexes, tune):
    for kind in indexes:
        _lancedb_index(V, Q, truth, k, common, workdir, kind, tune)
        gc.collect()


def _lancedb_index(V, Q, truth, k, common, workdir, kind, tune):
    import lancedb
    import numpy as np
    import pyarrow as pa
    from lancedb.index import IvfHnswSq, IvfPq

    n, d = V.shape
    path = os.path.join(workdir, f"lancedb-{kind}")
    shutil.rmtree(path, ignore_errors=True)
    with PeakRss() as mem:
        t0 = time.perf_counter()
        db = lancedb.connect(path)
        data = pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), d),
            }
        )
        tbl = db.create_table("vecs", data=data, mode="overwrite")
        del data
        t1 = time.perf_counter()
        if kind == "ivf_pq":
            # LanceDB's default index type; its defaults for the rest
            # (num_partitions ~ sqrt(n), num_sub_vectors = d/16, 8 bits).
            cfg = IvfPq(distance_type="cosine")
        else:
            # HNSW-type index.  LanceDB's doc for it: "Setting [num_partitions]
            # to 1 works well for most tables", i.e. one HNSW graph.
            cfg = IvfHnswSq(distance_type="cosine", num_partitions=1)
        tbl.create_index("vector", config=cfg)
        t2 = time.perf_counter()
    build = {
        "build_s": round(t2 - t0, 4),
        "index_s": round(t2 - t1, 4),
        "ingest_s": round(t1 - t0, 4),
        "build_mib": round(mem.mib, 1),
    }
    try:
        log(f"lancedb {kind} index stats: {tbl.index_stats('vector_idx')}")
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        log(f"lancedb {kind} index stats unavailable: {exc}")

    # Second setting raises recall (LanceDB's defaults: nprobes 20, no refine,
    # ef = 1.5 * k).  Defaults picked on 20k random unit vectors, d=384.
    if kind == "ivf_pq":
        np_, rf = tune["nprobes"], tune["refine_factor"]
        second = (f"nprobes={np_},refine_factor={rf}", lambda b: b.nprobes(np_).refine_factor(rf))
    else:
        ef = tune["ef"]
        second = (f"ef={ef}", lambda b: b.ef(ef))

    for name, tweak in (("default", lambda b: b), second):

        def search(q, tweak=tweak):
            # Selecting _distance explicitly: without it Lance logs a
            # deprecation warning on every query.
            b = tweak(tbl.search(q).distance_type("cosine").select(["id", "_distance"]).limit(k))
            return b.to_arrow().column("id").to_numpy()

        row = {
            "peer": "lancedb",
            "setting": f"{kind.upper()} {name}",
            "index": kind.upper(),
            **common,
            **build,
            "version": lancedb.__version__,
        }
        row.update(measure(search, Q, truth, k))
        emit(row)


def _vss_extension_path(duckdb) -> str:
    """The vss binary shipped by the duckdb-extension-vss wheel, for this duckdb."""
    import duckdb_extension_vss

    root = os.path.join(os.path.dirname(duckdb_extension_vss.__file__), "extensions")
    path = os.path.join(root, f"v{duckdb.__version__}", "vss.duckdb_extension")
    if not os.path.exists(path):
        have = sorted(os.listdir(root)) if os.path.isdir(root) else []
        raise SystemExit(
            f"vss extension for duckdb {duckdb.__version__} not in wheel "
            f"(has {have}); pin duckdb to the wheel's version"
        )
    return path


def run_duckdb_vss(V, Q, truth, k, common, threads, ef_high):
    import duckdb
    import numpy as np

    n, d = V.shape
    try:
        import pandas  # noqa: F401
    except ImportError:
        # duckdb 1.5.5's Python client tries (and fails) to import pandas for
        # every element of a list parameter: ~27 ms per 384-float query vector.
        log("WARNING: pandas missing; DuckDB query-vector binding will dominate latency")
    with PeakRss() as mem:
        t0 = time.perf_counter()
        con = duckdb.connect(":memory:")
        con.execute(f"LOAD '{_vss_extension_path(duckdb)}'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute(f"CREATE TABLE vecs (id INTEGER, v FLOAT[{d}])")
        try:
            import pyarrow as pa

            src = pa.table(
                {
                    "id": pa.array(np.arange(n, dtype=np.int32)),
                    "v": pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), d),
                }
            )
            con.register("src", src)
            con.execute(f"INSERT INTO vecs SELECT id, v::FLOAT[{d}] FROM src")
            con.unregister("src")
            del src
        except ImportError:
            con.executemany(
                "INSERT INTO vecs VALUES (?, ?)", [(i, V[i].tolist()) for i in range(n)]
            )
        t1 = time.perf_counter()
        con.execute("CREATE INDEX vecs_hnsw ON vecs USING HNSW (v) WITH (metric = 'cosine')")
        t2 = time.perf_counter()
    build = {
        "build_s": round(t2 - t0, 4),
        "index_s": round(t2 - t1, 4),
        "ingest_s": round(t1 - t0, 4),
        "build_mib": round(mem.mib, 1),
    }

    sql = f"SELECT id FROM vecs ORDER BY array_cosine_distance(v, ?::FLOAT[{d}]) LIMIT {int(k)}"
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN " + sql, [Q[0].tolist()]).fetchall())
    index_used = "HNSW_INDEX_SCAN" in plan
    if not index_used:
        log("WARNING: duckdb plan does not use the HNSW index:\n" + plan)

    def search(q):
        return [r[0] for r in con.execute(sql, [q.tolist()]).fetchall()]

    for name, ef in (("default (hnsw_ef_search=64)", None), (f"hnsw_ef_search={ef_high}", ef_high)):
        if ef:
            con.execute(f"SET hnsw_ef_search = {int(ef)}")
        row = {
            "peer": "duckdb-vss",
            "setting": name,
            "index": "HNSW",
            **common,
            **build,
            "index_used": index_used,
            "version": duckdb.__version__,
        }
        row.update(measure(search, Q, truth, k))
        emit(row)
    con.close()


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--peer",
        action="append",
        choices=PEERS + ("all",),
        help="peer to measure; repeatable (default: all)",
    )
    ap.add_argument("--vectors", required=True, help="(n, d) float32 .npy, unit rows")
    ap.add_argument("--queries", required=True, help="(m, d) float32 .npy, unit rows")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--workdir",
        help="scratch folder for on-disk peers (default: a temporary folder, removed afterwards)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="cap worker threads of every library (0: their defaults)",
    )
    ap.add_argument(
        "--lancedb-index",
        default=",".join(LANCEDB_INDEXES),
        help=f"comma list from {LANCEDB_INDEXES}",
    )
    ap.add_argument(
        "--lancedb-nprobes", type=int, default=50, help="nprobes of LanceDB IVF_PQ's second setting"
    )
    ap.add_argument(
        "--lancedb-refine",
        type=int,
        default=30,
        help="refine_factor of LanceDB IVF_PQ's second setting",
    )
    ap.add_argument(
        "--lancedb-ef", type=int, default=200, help="ef of LanceDB IVF_HNSW_SQ's second setting"
    )
    ap.add_argument(
        "--duckdb-ef", type=int, default=200, help="hnsw_ef_search for DuckDB's second setting"
    )
    ap.add_argument("--no-numpy", action="store_true", help="leave out the exact numpy baseline")
    args = ap.parse_args(argv)

    peers = args.peer or ["all"]
    peers = list(PEERS) if "all" in peers else list(dict.fromkeys(peers))
    if not args.no_numpy and "numpy" not in peers:
        peers.append("numpy")
    if args.no_numpy and "numpy" not in (args.peer or []) and "numpy" in peers:
        peers.remove("numpy")
    indexes = [x.strip().lower() for x in args.lancedb_index.split(",") if x.strip()]
    bad = [x for x in indexes if x not in LANCEDB_INDEXES]
    if bad:
        ap.error(f"--lancedb-index: unknown {bad}; choose from {LANCEDB_INDEXES}")

    if args.threads:
        # Must be set before the libraries start their thread pools.
        t = str(args.threads)
        # Not LANCE_IO_THREADS: at 1 it deadlocks LanceDB 0.40's create_index.
        for var in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "LANCE_CPU_THREADS",
        ):
            os.environ[var] = t
    import numpy as np

    V = np.load(args.vectors, mmap_mode=None).astype(np.float32, copy=False)
    Q = np.load(args.queries).astype(np.float32, copy=False)
    if V.ndim != 2 or Q.ndim != 2 or V.shape[1] != Q.shape[1]:
        raise SystemExit(f"bad shapes: vectors {V.shape}, queries {Q.shape}")
    V = np.ascontiguousarray(V)
    Q = np.ascontiguousarray(Q)
    n, d = V.shape
    k = args.k
    if len(Q) <= WARMUP:
        log(f"note: only {len(Q)} queries; warm-up reuses them")

    # Ground truth: exact top-k by inner product (= cosine on unit vectors).
    truth = []
    for start in range(0, len(Q), 256):
        S = Q[start : start + 256] @ V.T
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        truth.extend(set(int(x) for x in row) for row in top)

    common = {"n": n, "d": d, "queries": len(Q), "k": k, "threads": args.threads or None}
    own_tmp = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix="search_peers-")
    os.makedirs(workdir, exist_ok=True)
    failed = 0
    try:
        for peer in peers:
            log(f"{peer}: n={n} d={d} queries={len(Q)} k={k}")
            try:
                if peer == "numpy":
                    run_numpy(V, Q, truth, k, common)
                elif peer == "lancedb":
                    run_lancedb(
                        V,
                        Q,
                        truth,
                        k,
                        common,
                        workdir,
                        indexes,
                        {
                            "nprobes": args.lancedb_nprobes,
                            "refine_factor": args.lancedb_refine,
                            "ef": args.lancedb_ef,
                        },
                    )
                elif peer == "duckdb-vss":
                    run_duckdb_vss(V, Q, truth, k, common, args.threads, args.duckdb_ef)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - report, go on
                failed += 1
                log(f"{peer} failed: {type(exc).__name__}: {exc}")
                emit({"peer": peer, "n": n, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
