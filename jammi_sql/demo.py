"""``jammi-sql demo``: the end-to-end tour on the bundled model and the shipped sample data.

The sample is 40 original support tickets and 40 short user questions, one per ticket,
in ``jammi_sql/samples/``. The demo embeds the tickets, searches them, fine-tunes on 30
of the questions and compares base and fine-tuned retrieval on the 10 it held out.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
MODEL = "all-MiniLM-L6-v2"


def show(db, sql: str) -> list[tuple]:
    """Print a statement and its result as an aligned table, as the shell would."""
    from .display import format_table

    print(f"\njammi> {sql.strip()}")
    rel = db.sql(sql)
    rows = rel.fetchall()
    print("\n".join(format_table(rel.columns, rows, max_width=70)))
    return rows


def _follow(db, job_id: str) -> None:
    """Print the job's progress until it ends."""
    last, job = None, db.job(job_id)
    while True:
        record = job.record()
        status, progress, epoch = record.status, record.progress, record.epoch
        if (status, epoch) != last:
            print(f"   {status:10} {progress:6.1%}  epoch {epoch}")
            last = (status, epoch)
        if status not in ("queued", "running"):
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    import jammi_sql

    folder = Path(tempfile.mkdtemp(prefix="jammi-demo-"))
    db = jammi_sql.connect(str(folder / "demo.duckdb"))
    print(f"jammi-sql demo: database {folder / 'demo.duckdb'}, artifacts in {db.home}")
    embed_and_search(db)
    job_id = fine_tune(db)
    compare(db, job_id)
    db.close()
    print(f"\nDone. Explore what the demo built: jammi-sql {folder / 'demo.duckdb'}")
    return 0


TICKETS, QUERIES = SAMPLES / "tickets.csv", SAMPLES / "queries.csv"


def embed_and_search(db) -> None:
    tickets = TICKETS
    print("\n1. Register the sample tickets as a source and embed them with the bundled model.")
    show(db, f"SELECT add_source('tickets', '{tickets}') AS added")
    started = time.perf_counter()
    show(
        db,
        f"SELECT generate_text_embeddings('tickets', '{MODEL}', ['title', 'body'], 'id') AS rows_written",
    )
    print(f"   ({time.perf_counter() - started:.1f} s, including loading the model once)")
    show(
        db,
        f"SELECT generate_text_embeddings('tickets', '{MODEL}', ['title', 'body'], 'id') AS rows_written",
    )
    print("   The second run embeds nothing: only new or changed rows are embedded.")

    print("\n2. embed() is an ordinary SQL function returning FLOAT[384].")
    show(db, f"SELECT embed('{MODEL}', 'my card was charged twice') AS embedding")
    show(
        db,
        f"""SELECT round(array_cosine_similarity(embed('{MODEL}', 'refund please'),
                                             embed('{MODEL}', 'I want my money back')), 3) AS similar,
                   round(array_cosine_similarity(embed('{MODEL}', 'refund please'),
                                             embed('{MODEL}', 'the app is slow to start')), 3) AS unrelated""",
    )

    print("\n3. Semantic search, joined back to the source table.")
    for question in (
        "someone logged into my account from abroad",
        "my phone dies quickly since the update",
    ):
        show(
            db,
            f"""SELECT s.key AS id, t.category, s.column_name, round(s.score, 3) AS score, s.text
                     FROM semantic_search('tickets', '{MODEL}', '{question}', k := 3) s
                     JOIN read_csv('{tickets}') t ON t.id = s.key ORDER BY s.score DESC""",
        )


def fine_tune(db) -> str:
    tickets, queries = TICKETS, QUERIES
    print("\n4. Fine-tune on 30 of the sample questions; hold the other 10 out for evaluation.")
    show(
        db,
        f"""SELECT add_source('train_pairs', $$
        SELECT q.query AS question, t.title || '. ' || t.body AS ticket
        FROM read_csv('{queries}') q JOIN read_csv('{tickets}') t ON t.id = q.ticket_id
        WHERE q.ticket_id % 4 <> 0$$, format := 'query') AS added""",
    )
    job_id = show(
        db,
        f"""SELECT fine_tune('train_pairs', '{MODEL}', ['question', 'ticket'],
                                 config := {{'epochs': 10, 'model_name': 'tickets-minilm'}}) AS job_id""",
    )[0][0]
    _follow(db, job_id)
    return (
        show(
            db,
            f"SELECT status, progress, epoch, step, total_steps, round(train_loss, 4) AS train_loss, "
            f"round(val_loss, 4) AS val_loss, model_id FROM jammi.jobs WHERE job_id = '{job_id}'",
        )[0]
        and job_id
    )


def compare(db, job_id: str) -> None:
    from .display import job_summary

    tickets, queries = TICKETS, QUERIES

    print("\n5. Base vs fine-tuned on the 10 held-out questions.")
    show(
        db,
        f"""SELECT add_source('heldout_queries', $$SELECT 'q' || ticket_id AS query_id, query AS text
                 FROM read_csv('{queries}') WHERE ticket_id % 4 = 0$$, format := 'query') AS added""",
    )
    show(
        db,
        f"""SELECT add_source('corpus', $$SELECT id::VARCHAR AS doc_id, title || '. ' || body AS text
                 FROM read_csv('{tickets}')$$, format := 'query') AS added""",
    )
    show(
        db,
        f"""SELECT add_source('qrels', $$SELECT 'q' || ticket_id AS query_id,
                 ticket_id::VARCHAR AS doc_id, 1 AS score FROM read_csv('{queries}')$$, format := 'query') AS added""",
    )
    show(
        db,
        f"""SELECT model, round(r.ndcg_at_10, 4) AS ndcg_at_10, round(r.mrr_at_10, 4) AS mrr_at_10,
                        round(r.recall_at_1, 4) AS recall_at_1, r.n_queries
                 FROM (SELECT '{MODEL}' AS model UNION ALL SELECT 'tickets-minilm') m,
                      LATERAL (SELECT evaluate_retrieval(m.model, 'heldout_queries', 'corpus', 'qrels') AS r)""",
    )
    print(
        "\n   The job itself compared base and fine-tuned on its validation split (jammi.jobs.metrics):"
    )
    job = db.job(job_id)
    print(
        "\n".join(
            "   " + line
            for line in job_summary((job_id, job.status, job.model_id, job.error), job.metrics)
        )
    )


if __name__ == "__main__":
    sys.exit(main())
