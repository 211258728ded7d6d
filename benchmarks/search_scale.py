"""Search at scale: query latency (p50/p99) and recall@10 against exact search, for our exact
path, our HNSW index (both through SQL: semantic_search), a numpy matrix product over the same
vectors, and peers in the same run (LanceDB, DuckDB 1.5.5's vss HNSW; run in .venv-peers by
benchmarks/search_peers.py); index build time and memory. Prints figures, never asserts.

Vectors: embedding a million texts with the bundled model takes hours on a 2-core CPU, so the
corpus is made from real ones. ~20k real sentences (STS-B train, SciFact titles and
abstracts) are embedded with the bundled all-MiniLM-L6-v2 through ``encode_text``; each corpus
vector is a random mix of three of them plus a little noise, normalised, which keeps the
real vectors' geometry without exact duplicates. Queries are STS-B dev sentences (never in
the basis), embedded with ``encode_text_query``. The vectors are written straight into the
embedding table with the schema ``generate_text_embeddings`` gives it (that path is tested
in tests/test_search.py); the index is built by ``create_vector_index``.

    python benchmarks/search_scale.py [--sizes 100000 1000000] [--queries 200] [--peers lancedb duckdb-vss]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scifact_corpus, stsb  # noqa: E402

import jammi_sql  # noqa: E402
from jammi_sql.catalog.tables import EmbeddingTable  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WORK = Path(os.environ.get("JAMMI_BENCH_DIR", "/tmp/jammi-bench-search"))
PEERS_PY = Path(__file__).resolve().parents[1] / ".venv-peers" / "bin" / "python"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def basis_and_queries(db, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    cache = WORK / "basis.npz"
    if cache.exists():
        held = np.load(cache)
        if len(held["queries"]) >= n_queries:
            return held["basis"], held["queries"][:n_queries]
    sentences = sorted({s for a, b, _ in stsb("train") for s in (a, b)})
    for doc in scifact_corpus():
        sentences.append(doc["title"])
        sentences.append(doc["text"][:600])
    dev = sorted({s for a, b, _ in stsb("dev") for s in (a, b)} - set(sentences))
    rng = np.random.default_rng(7)
    dev = [dev[i] for i in rng.choice(len(dev), n_queries, replace=False)]
    t = time.perf_counter()
    basis = np.asarray(db.encode_text(MODEL, sentences), dtype=np.float32)
    queries = np.asarray(db.encode_text_query(MODEL, dev), dtype=np.float32)
    print(f"embedded {len(sentences):,} basis sentences in {time.perf_counter() - t:.0f} s")
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(cache, basis=basis, queries=queries)
    return basis, queries


def corpus(basis: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, basis.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        picks = rng.integers(0, len(basis), size=(m, 3))
        weights = rng.dirichlet([1.0, 1.0, 1.0], size=m).astype(np.float32)
        v = np.einsum("mk,mkd->md", weights, basis[picks])
        v += rng.normal(scale=0.01, size=v.shape).astype(np.float32)
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def load_table(db, vectors: np.ndarray) -> None:
    """A source 'docs' of n keys, and its embedding table holding ``vectors``."""
    n, d = vectors.shape
    db.con.execute(f"CREATE TABLE docs AS SELECT i AS id, 'doc ' || i AS body FROM range({n}) r(i)")
    db.sql("SELECT add_source('docs', 'docs')").fetchall()
    name = "jammi.emb_docs__sentence_transformers_all_minilm_l6_v2"
    db.con.execute(
        f"CREATE TABLE {name} (key BIGINT NOT NULL, column_name VARCHAR NOT NULL, text VARCHAR "
        f"NOT NULL, text_hash VARCHAR NOT NULL, embedding FLOAT[{d}] NOT NULL, vid BIGINT NOT NULL)"
    )
    for start in range(0, n, 100_000):
        part = vectors[start : start + 100_000]
        ids = np.arange(start, start + len(part), dtype=np.int64)
        batch = pa.table(
            {
                "key": ids,
                "column_name": pa.array(["body"] * len(part)),
                "text": pa.array([f"doc {i}" for i in ids]),
                "text_hash": pa.array([""] * len(part)),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), d),
                "vid": ids,
            }
        )
        db.con.register("batch", batch)
        db.con.execute(f"INSERT INTO {name} SELECT * FROM batch")
        db.con.unregister("batch")
    table = EmbeddingTable(name, "docs", MODEL, ["body"], "id", d, n, generation=1)
    db.ctx.catalog.put_embedding_table(table)


def timed(fn, queries: np.ndarray, warm: int = 3) -> tuple[list, np.ndarray]:
    for q in queries[:warm]:
        fn(q)
    results, times = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t)
    return results, np.array(times) * 1000


def recall_at_10(found: list, truth: list) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def row(name: str, ms: np.ndarray | None, recall: float | None, extra: str = "") -> str:
    p50 = f"{np.percentile(ms, 50):8.2f}" if ms is not None else "       -"
    p99 = f"{np.percentile(ms, 99):8.2f}" if ms is not None else "       -"
    rec = f"{recall:6.3f}" if recall is not None else "     -"
    return f"| {name:<44} | {p50} | {p99} | {rec} | {extra} |"


def run_size(n: int, basis: np.ndarray, queries: np.ndarray, peers: list[str]) -> None:
    path = WORK / f"search_{n}.duckdb"
    for leftover in (path, Path(f"{path}.wal"), Path(f"{path}.jammi")):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
            missing_ok=True
        )
    vectors = corpus(basis, n)
    db = jammi_sql.connect(str(path))
    t = time.perf_counter()
    load_table(db, vectors)
    print(
        f"\n## {n:,} vectors of {vectors.shape[1]} dims (table written in {time.perf_counter() - t:.0f} s)"
    )
    lines = []

    # numpy: the matrix product over the same vectors, top 10 by argpartition
    def numpy_top(q):
        s = vectors @ q
        best = np.argpartition(-s, 10)[:10]
        return best[np.argsort(-s[best])].tolist()

    truth, ms = timed(numpy_top, queries)
    lines.append(row("numpy matrix product (exact)", ms, 1.0))
    numpy_p50 = np.percentile(ms, 50)

    sql = f"SELECT key FROM semantic_search('docs', '{MODEL}', ?::FLOAT[], k := 10{{}})"

    def ours(extra):
        cur = db._cursor()  # a cursor with the TEMP macros installed
        return lambda q: [r[0] for r in cur.execute(sql.format(extra), [q.tolist()]).fetchall()]

    t = time.perf_counter()
    ours(", exact := true")(queries[0])
    cold = time.perf_counter() - t
    found, ms = timed(ours(", exact := true"), queries)
    lines.append(
        row(
            "jammi exact (semantic_search exact := true)",
            ms,
            recall_at_10(found, truth),
            f"first query {cold:.1f} s (reads the vectors); {np.percentile(ms, 50) / numpy_p50:.2f}x numpy",
        )
    )

    before = rss_mib()
    t = time.perf_counter()
    db.sql(f"SELECT create_vector_index('docs', '{MODEL}')").fetchall()
    build = time.perf_counter() - t
    grown = rss_mib() - before
    size = db.sql("SELECT index_bytes FROM jammi.embedding_tables").fetchall()[0][0]
    for ef in (256, 64, 512):  # the default first; another expansion_search keeps the graph
        if ef != 256:
            db.sql(
                f"SELECT create_vector_index('docs', '{MODEL}', expansion_search := {ef})"
            ).fetchall()
        found, ms = timed(ours(""), queries)
        note = (
            f"build {build:.0f} s, +{grown:.0f} MiB RSS, file {size / 2**20:.0f} MiB (default)"
            if ef == 256
            else "same graph"
        )
        lines.append(
            row(
                f"jammi HNSW (usearch f16, M=16, ef_search={ef})",
                ms,
                recall_at_10(found, truth),
                note,
            )
        )
    db.sql(f"SELECT create_vector_index('docs', '{MODEL}', expansion_search := 256)").fetchall()

    allowed = db.con.execute("SELECT count(*) FROM docs WHERE id % 10 = 3").fetchall()[0][0]
    mask = np.arange(n) % 10 == 3

    def numpy_filtered(q):
        s = np.where(mask, vectors @ q, -np.inf)
        best = np.argpartition(-s, 10)[:10]
        return best[np.argsort(-s[best])].tolist()

    truth_f, _ = timed(numpy_filtered, queries[:50], warm=0)
    found, ms = timed(ours(", filter := 'id % 10 = 3'"), queries[:50])
    lines.append(
        row(
            "jammi HNSW, filter keeping 10% (id % 10 = 3)",
            ms,
            recall_at_10(found, truth_f),
            f"{allowed:,} rows match",
        )
    )
    db.close()

    if peers and PEERS_PY.exists():
        np.save(WORK / "V.npy", vectors)
        np.save(WORK / "Q.npy", queries)
        for peer in peers:
            out = subprocess.run(
                [str(PEERS_PY), str(Path(__file__).with_name("search_peers.py")), "--peer", peer]
                + ["--vectors", str(WORK / "V.npy"), "--queries", str(WORK / "Q.npy")]
                + ["--k", "10", "--workdir", str(WORK / f"peer-{peer}-{n}")],
                capture_output=True,
                text=True,
            )
            for line in out.stdout.splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                ms_ = np.array([r["p50_ms"], r["p99_ms"]])
                lines.append(
                    f"| {r['peer'] + ' ' + r.get('setting', ''):<44} | {r['p50_ms']:8.2f} | "
                    f"{r['p99_ms']:8.2f} | {r['recall_at_10']:6.3f} | "
                    + (
                        f"build {r['build_s']:.0f} s, +{r['build_mib']:.0f} MiB"
                        if r.get("build_s")
                        else ""
                    )
                    + " |"
                )
                del ms_
            if out.returncode:
                lines.append(f"| {peer}: failed ({out.stderr.strip().splitlines()[-1:]}) | | | | |")
    elif peers:
        lines.append("| peers: .venv-peers missing (bash benchmarks/peer_venv.sh) | | | | |")

    print("| search (k = 10) | p50 ms | p99 ms | recall@10 | notes |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))
    print(
        f"(peak RSS of this process so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--peers", nargs="*", default=["lancedb", "duckdb-vss"])
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cpu = open("/proc/cpuinfo").read()
    native = "native bf16" if ("avx512_bf16" in cpu or "amx_bf16" in cpu) else "no native bf16"
    print(f"machine: {os.cpu_count()} cores, {native}")
    with jammi_sql.connect(":memory:") as db:
        basis, queries = basis_and_queries(db, args.queries)
    for n in args.sizes:
        run_size(n, basis, queries, args.peers)


if __name__ == "__main__":
    main()
