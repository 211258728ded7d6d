"""``evaluate_retrieval`` on SciFact vs sentence-transformers' InformationRetrievalEvaluator.

One run, same bundled model, same queries (the SciFact train queries with qrels) and
corpus (title + abstract). Prints the wall time of our first evaluation (embeds the
corpus), our second (reuses the materialized corpus embeddings, embeds only the queries)
and the peer's, the ratios, and the NDCG@10 each computed.

    .venv/bin/python benchmarks/eval_speed.py [--docs 5183]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import scifact_corpus, scifact_qrels, scifact_queries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--docs", type=int, default=None, help="use only the relevant docs plus this many others"
    )
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    import jammi_sql
    from jammi_sql.catalog.models import bundled_model_folder

    qrels = scifact_qrels()
    queries = {q: t for q, t in scifact_queries().items() if q in qrels}
    docs = scifact_corpus()
    if args.docs is not None:
        wanted = {d for ds in qrels.values() for d in ds}
        docs = [d for d in docs if d["_id"] in wanted] + [
            d for d in docs if d["_id"] not in wanted
        ][: args.docs]
    corpus = {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in docs}
    pairs = [(q, d) for q, ds in qrels.items() for d in ds if d in corpus]

    db = jammi_sql.connect(":memory:")
    db.con.execute(
        "CREATE TABLE corpus AS SELECT unnest(?) AS doc_id, unnest(?) AS text",
        [list(corpus), list(corpus.values())],
    )
    db.con.execute(
        "CREATE TABLE queries AS SELECT unnest(?) AS query_id, unnest(?) AS text",
        [list(queries), list(queries.values())],
    )
    db.con.execute(
        "CREATE TABLE qrels AS SELECT unnest(?) AS query_id, unnest(?) AS doc_id, 1 AS score",
        [[p[0] for p in pairs], [p[1] for p in pairs]],
    )
    for name in ("corpus", "queries", "qrels"):
        db.add_source(name, name)
    db.encode_text("all-MiniLM-L6-v2", "warm up: load the model")
    sql = "SELECT evaluate_retrieval('all-MiniLM-L6-v2', 'queries', 'corpus', 'qrels')"

    start = time.perf_counter()
    first = db.sql(sql).fetchall()[0][0]
    t_first = time.perf_counter() - start
    start = time.perf_counter()
    second = db.sql(sql).fetchall()[0][0]
    t_second = time.perf_counter() - start

    st = SentenceTransformer(str(bundled_model_folder()), device="cpu")
    st.encode(["warm up"])
    evaluator = InformationRetrievalEvaluator(
        queries,
        corpus,
        qrels,
        precision_recall_at_k=[1, 10, 100],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[100],
    )
    start = time.perf_counter()
    theirs = evaluator(st)
    t_peer = time.perf_counter() - start
    peer_ndcg = next(v for k, v in theirs.items() if k.endswith("cosine_ndcg@10"))

    print(f"SciFact: {len(queries)} queries, {len(corpus)} documents, bundled all-MiniLM-L6-v2")
    print(f"{'':44}{'seconds':>10}{'ndcg@10':>10}")
    print(f"{'jammi-sql evaluate_retrieval, first':44}{t_first:>10.2f}{first['ndcg_at_10']:>10.4f}")
    print(
        f"{'jammi-sql evaluate_retrieval, corpus cached':44}{t_second:>10.2f}{second['ndcg_at_10']:>10.4f}"
    )
    print(f"{'sentence-transformers IR evaluator':44}{t_peer:>10.2f}{peer_ndcg:>10.4f}")
    print(
        f"first run vs peer: {t_peer / t_first:.2f}x; second run vs first: {t_first / t_second:.1f}x; "
        f"second run vs peer: {t_peer / t_second:.1f}x"
    )
    db.close()


if __name__ == "__main__":
    main()
