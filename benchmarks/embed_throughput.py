"""Texts per second through ``SELECT embed(...)`` vs ``SentenceTransformer.encode``.

Same 2,000 texts (1,000 SciFact abstracts, 1,000 STSb sentences), same bundled model,
same process, both warm. Prints the figures side by side and the ratio (ours / peer).

    .venv/bin/python benchmarks/embed_throughput.py [--n 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import scifact_corpus, stsb  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    import jammi_sql
    from jammi_sql.models import bundled_model_folder

    data = texts(args.n)
    db = jammi_sql.connect(":memory:")
    db.con.execute("CREATE TABLE t AS SELECT unnest(?) AS body", [data])
    sql = "SELECT embed('all-MiniLM-L6-v2', body) FROM t"
    db.sql(
        "SELECT embed('all-MiniLM-L6-v2', body) FROM t LIMIT 64"
    ).fetchall()  # warm: load the model
    ours = best_of(args.repeats, lambda: db.sql(sql).fetchall())

    st = SentenceTransformer(str(bundled_model_folder()), device="cpu")
    st.encode(data[:64])
    peer = best_of(args.repeats, lambda: st.encode(data))

    print(
        f"texts: {len(data)} ({args.n // 2} SciFact abstracts + STSb sentences), "
        f"torch threads: {torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'':32}{'seconds':>10}{'texts/s':>10}")
    print(f"{'jammi-sql  SELECT embed(...)':32}{ours:>10.2f}{len(data) / ours:>10.1f}")
    print(f"{'sentence-transformers encode':32}{peer:>10.2f}{len(data) / peer:>10.1f}")
    print(f"ratio (jammi-sql / sentence-transformers): {peer / ours:.2f}x")
    db.close()


if __name__ == "__main__":
    main()
