"""Texts per second through ``SELECT embed(...)`` vs ``SentenceTransformer.encode``.

Same texts (half SciFact abstracts, half STSb sentences), same bundled model, same process,
all warm: ours at ``--precision`` (default auto), sentence-transformers as users run it
(fp32) and with its model cast to bf16. Prints the figures side by side, both ratios
(ours / peer) and the lowest cosine of our embeddings to the fp32 peer's.

    .venv/bin/python benchmarks/embed_throughput.py [--n 2000] [--repeats 3] [--precision auto]
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
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--no-bf16-peer", action="store_true", help="skip the bf16 peer")
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import jammi_sql
    from jammi_sql.catalog.models import bundled_model_folder

    data = texts(args.n)
    db = jammi_sql.connect(":memory:", precision=args.precision)
    db.con.execute("CREATE TABLE t AS SELECT unnest(?) AS body", [data])
    sql = "SELECT embed('all-MiniLM-L6-v2', body) FROM t"
    db.sql(f"{sql} LIMIT 64").fetchall()  # warm: load the model (and run its precision check)
    ours = best_of(args.repeats, lambda: db.sql(sql).fetchall())
    mine = np.array([v for (v,) in db.sql(sql).fetchall()], dtype=np.float32)
    precision = db.sql(
        "SELECT precision FROM jammi.models WHERE model_id = 'sentence-transformers/all-MiniLM-L6-v2'"
    ).fetchall()[0][0]

    st = SentenceTransformer(str(bundled_model_folder()), device="cpu")
    st.encode(data[:64])
    peer = best_of(args.repeats, lambda: st.encode(data))
    reference = st.encode(data)
    rows = [("jammi-sql  SELECT embed(...)", ours), ("sentence-transformers fp32", peer)]
    if not args.no_bf16_peer:
        st.to(torch.bfloat16)
        st.encode(data[:64])
        rows.append(("sentence-transformers bf16", best_of(args.repeats, lambda: st.encode(data))))

    cos = (
        (mine * reference).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(reference, axis=1)
    )
    print(
        f"texts: {len(data)} ({args.n // 2} SciFact abstracts + STSb sentences), "
        f"torch threads: {torch.get_num_threads()}, best of {args.repeats}, "
        f"jammi-sql precision: {args.precision} -> {precision}"
    )
    print(f"{'':32}{'seconds':>10}{'texts/s':>10}")
    for name, seconds in rows:
        print(f"{name:32}{seconds:>10.2f}{len(data) / seconds:>10.1f}")
    for name, seconds in rows[1:]:
        print(f"ratio (jammi-sql / {name}): {seconds / ours:.2f}x")
    print(f"min cosine, jammi-sql vs sentence-transformers fp32: {cos.min():.5f}")
    db.close()


if __name__ == "__main__":
    main()
