"""Dense, BM25 and hybrid search side by side: NDCG@10 on SciFact's 162 held-out queries (the
split benchmarks/quality.py holds out) over the full 5,183-document corpus, every search run
through SQL (semantic_search, keyword_search, hybrid_search) with the bundled model and the
defaults (rrf_k 60, equal weights; chosen from the RRF paper, not tuned here). The 130-query
tuning fold 0 is printed too, as a second sample. Prints figures, never asserts.

    python benchmarks/hybrid.py [--model sentence-transformers/all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scifact_corpus, scifact_qrels, scifact_queries  # noqa: E402

import jammi_sql  # noqa: E402


def split() -> tuple[list[str], list[str]]:
    """(held-out 162, tuning fold 0's 130) query ids, exactly as quality.py draws them."""
    order = np.random.default_rng(20240601).permutation(sorted(scifact_qrels(), key=int))
    held = order[-162:].tolist()
    end = len(order) - 162
    return held, order[end - 130 : end].tolist()


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    gain = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return gain / ideal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--database", default=":memory:")
    args = ap.parse_args()
    db = jammi_sql.connect(args.database)
    corpus = scifact_corpus()
    db.con.register(
        "scifact_rows",
        pa.table(
            {
                "doc_id": [d["_id"] for d in corpus],
                "body": [f"{d['title']} {d['text']}" for d in corpus],
            }
        ),
    )
    db.con.execute("CREATE TABLE scifact AS SELECT * FROM scifact_rows")
    db.sql("SELECT add_source('scifact', 'scifact')").fetchall()
    t = time.perf_counter()
    db.sql(
        f"SELECT generate_text_embeddings('scifact', '{args.model}', ['body'], 'doc_id')"
    ).fetchall()
    print(f"embedded {len(corpus):,} documents in {time.perf_counter() - t:.0f} s ({args.model})")
    qrels, queries = scifact_qrels(), scifact_queries()
    searches = {
        "dense (semantic_search)": "SELECT key FROM semantic_search('scifact', ?, ?, k := 10)",
        "BM25 (keyword_search)": "SELECT key FROM keyword_search('scifact', ?, k := 10, model := ?)",
        "hybrid (hybrid_search, RRF)": "SELECT key FROM hybrid_search('scifact', ?, ?, k := 10)",
    }
    held, tuning = split()
    print("| search | NDCG@10, 162 held-out queries | NDCG@10, tuning fold 0 (130) | ms/query |")
    print("|---|---|---|---|")
    for name, sql in searches.items():
        scores, spent = {}, 0.0
        for label, ids in (("held", held), ("tuning", tuning)):
            values = []
            for qid in ids:
                params = (
                    [queries[qid], args.model] if "keyword" in sql else [args.model, queries[qid]]
                )
                t = time.perf_counter()
                ranked = [str(r[0]) for r in db.con.execute(sql, params).fetchall()]
                spent += time.perf_counter() - t
                values.append(ndcg_at_10(ranked, qrels[qid]))
            scores[label] = float(np.mean(values))
        ms = 1000 * spent / (len(held) + len(tuning))
        print(f"| {name} | {scores['held']:.4f} | {scores['tuning']:.4f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
