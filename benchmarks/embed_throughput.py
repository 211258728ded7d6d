"""Texts per second through ``SELECT embed(...)`` vs ``SentenceTransformer.encode``.

Same texts (half SciFact abstracts, half STSb sentences), same bundled model, same process,
all warm: ours at each ``--precision`` (default: torch fp32, torch bf16, ONNX Runtime fp32 and
int8, and auto), sentence-transformers as users run it (fp32) and with its model cast to
bf16. Prints the CPU and its flags, the figures side by side, each ratio to the fp32 peer and
the lowest cosine of each to the fp32 peer's embeddings.

    .venv/bin/python benchmarks/embed_throughput.py [--n 2000] [--repeats 3]
        [--precision fp32 bf16 onnx onnx-int8 auto]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import scifact_corpus, scifact_qrels, scifact_queries, stsb  # noqa: E402


def texts(n: int) -> list[str]:
    abstracts = [d["text"] for d in scifact_corpus()][: n // 2]
    sentences = [a for a, _, _ in stsb("train")][: n - len(abstracts)]
    return abstracts + sentences


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu() -> str:
    """The CPU's model name and the flags that decide bf16 and int8 speed."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "?"
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    have = [f for f in FLAGS if f in flags]
    return f"{name}; {os.cpu_count()} cores visible; flags: {' '.join(have) or 'none of ' + ', '.join(FLAGS)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16", "onnx", "onnx-int8", "auto"],
        choices=["auto", "fp32", "bf16", "fp16", "onnx", "onnx-int8"],
    )  # fmt: skip
    parser.add_argument("--no-bf16-peer", action="store_true", help="skip the bf16 peer")
    parser.add_argument(
        "--ndcg", type=int, default=0, metavar="Q",
        help="also NDCG@10 of each precision on Q SciFact queries (corpus: their relevant "
        "abstracts and 1,000 others)",
    )  # fmt: skip
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import jammi_sql
    from jammi_sql.catalog.models import bundled_model_folder

    data = texts(args.n)
    print(f"CPU: {cpu()}", flush=True)
    st = SentenceTransformer(str(bundled_model_folder()), device="cpu")
    st.encode(data[:64])
    peer = best_of(args.repeats, lambda: st.encode(data))
    reference = st.encode(data)
    print(
        f"texts: {len(data)} ({args.n // 2} SciFact abstracts + STSb sentences), "
        f"torch threads: {torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'':44}{'seconds':>9}{'texts/s':>9}{'x ST fp32':>10}{'min cos':>9}")

    def show(name: str, seconds: float, cos: float) -> None:
        rows.append((name, seconds, cos))
        print(
            f"{name:44}{seconds:>9.2f}{len(data) / seconds:>9.1f}{peer / seconds:>9.2f}x{cos:>9.5f}",
            flush=True,
        )

    rows: list[tuple[str, float, float]] = []
    show("sentence-transformers fp32", peer, 1.0)
    if not args.no_bf16_peer:
        st.to(torch.bfloat16)
        st.encode(data[:64])
        seconds = best_of(args.repeats, lambda: st.encode(data))
        show("sentence-transformers bf16", seconds, _min_cos(st.encode(data), reference))
    st = None  # free the peer before ours load

    sql = "SELECT embed('all-MiniLM-L6-v2', body) FROM t"
    ndcg: dict[str, float] = {}
    for precision in args.precision:
        db = jammi_sql.connect(":memory:", precision=precision)
        db.con.execute("CREATE TABLE t AS SELECT unnest(?) AS body", [data])
        db.sql(f"{sql} LIMIT 64").fetchall()  # warm: load the model (and run its checks)
        seconds = best_of(args.repeats, lambda db=db: db.sql(sql).fetchall())
        mine = np.array([v for (v,) in db.sql(sql).fetchall()], dtype=np.float32)
        ran, backend = db.sql(
            "SELECT precision, backend FROM jammi.models "
            "WHERE model_id = 'sentence-transformers/all-MiniLM-L6-v2'"
        ).fetchall()[0]
        label = f"jammi-sql {precision}" + (f" -> {ran}" if ran != precision else "")
        show(f"{label} ({backend})", seconds, _min_cos(mine, reference))
        if args.ndcg:
            ndcg[rows[-1][0]] = retrieval(db, args.ndcg)
        db.close()

    for name, value in ndcg.items():
        print(f"NDCG@10 on {args.ndcg} SciFact queries, {name}: {value:.4f}")


def retrieval(db, n_queries: int) -> float:
    """NDCG@10 through evaluate_retrieval on the first queries with relevant abstracts."""
    qrels = scifact_qrels()
    queries = [(q, t) for q, t in scifact_queries().items() if q in qrels][:n_queries]
    relevant = {d for q, _ in queries for d in qrels[q]}
    corpus = scifact_corpus()
    docs = [d for d in corpus if d["_id"] in relevant]
    docs += [d for d in corpus if d["_id"] not in relevant][:1000]
    pairs = [(q, d) for q, _ in queries for d in qrels[q]]
    run = db.con.execute
    run("CREATE TABLE q AS SELECT unnest(?) AS query_id, unnest(?) AS text",
        [[q for q, _ in queries], [t for _, t in queries]])  # fmt: skip
    run("CREATE TABLE c AS SELECT unnest(?) AS doc_id, unnest(?) AS text",
        [[d["_id"] for d in docs], [d["title"] + " " + d["text"] for d in docs]])  # fmt: skip
    run("CREATE TABLE r AS SELECT unnest(?) AS query_id, unnest(?) AS doc_id, 1 AS score",
        [[q for q, _ in pairs], [d for _, d in pairs]])  # fmt: skip
    for name in ("q", "c", "r"):
        db.add_source(name, name)
    return db.evaluate_retrieval("all-MiniLM-L6-v2", "q", "c", "r")["ndcg_at_10"]


def _min_cos(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


if __name__ == "__main__":
    main()
