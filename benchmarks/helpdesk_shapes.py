"""Every fine-tune shape on the demo's help-centre sample: a domain retrieval set with jargon.

The demo (``jammi-sql demo``) trains a head; this trains each shape the same way, with every
default, through the Python API, on the questions about three quarters of the 283 articles, and
prints base vs fine-tuned NDCG@10 of the questions about the other quarter, which no job saw.

    python benchmarks/helpdesk_shapes.py                                   # head, adapters, full
    python benchmarks/helpdesk_shapes.py '{"target_modules": ["query", "value"],
                                           "learning_rate": 5e-4}'          # any configs, as JSON

A config's ``method`` key picks the method ('lora' unless given). Prints measured figures;
never fails.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import jammi_sql
from jammi_sql.demo import MODEL, TRAIN_PAIRS, add_held_out_sources

SHAPES = [{}, {"target_modules": ["query", "value"]}, {"method": "full"}]


def main() -> None:
    configs = [json.loads(a) for a in sys.argv[1:]] or SHAPES
    db = jammi_sql.connect(str(Path(tempfile.mkdtemp(prefix="helpdesk-")) / "h.duckdb"))
    db.sql(f"SELECT add_source('train_pairs', $${TRAIN_PAIRS}$$, format := 'query')").fetchall()
    add_held_out_sources(db)  # heldout_questions, corpus, qrels: as the demo scores them

    def ndcg(model: str) -> float:
        sql = f"SELECT evaluate_retrieval('{model}', 'heldout_questions', 'corpus', 'qrels')"
        return db.sql(sql + ".ndcg_at_10").fetchall()[0][0]

    base = ndcg(MODEL)
    print(f"help-centre sample, held-out questions: base ndcg_at_10 {base:.4f}", flush=True)
    for i, config in enumerate(configs):
        config = dict(config)
        method = config.pop("method", "lora")
        started = time.monotonic()
        job = db.fine_tune(
            "train_pairs", MODEL, ["question", "article"], method=method,
            config={"model_name": f"shape-{i}", **config},
        )  # fmt: skip
        job.wait()
        seconds = time.monotonic() - started
        record = job.record()
        if record.status != "succeeded":
            print(f"  {method} {config}: {record.status} {record.error}", flush=True)
            continue
        score = ndcg(f"shape-{i}")
        print(f"  {method:4s} {json.dumps(config):45s} {score:.4f} ({score - base:+.4f}) "
              f"in {seconds:.0f} s", flush=True)  # fmt: skip
    db.close()


if __name__ == "__main__":
    main()
