"""``jammi-sql demo``: the end-to-end tour on the bundled model and the shipped sample data.

The sample (``jammi_sql/samples/``, original text) is the help centre of an invented company:
283 articles in plain language and 566 questions as employees type them, full of internal
codenames, error codes and team nicknames that no off-the-shelf model knows. The demo embeds
and searches the articles, fine-tunes on the questions about three quarters of the articles,
and compares base and fine-tuned retrieval on the questions about the other quarter, which
the job never saw.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
ARTICLES, QUESTIONS = SAMPLES / "kb_articles.csv", SAMPLES / "kb_questions.csv"
MODEL = "all-MiniLM-L6-v2"
TUNED = "helpdesk-minilm"
HELD_OUT = "article_id % 4 = 0"  # questions about these articles are never trained on
PLAIN = "the VPN is unavailable for everyone on my team"
JARGON = "KS-503 for everyone on my team"  # a held-out question
ANSWER = 92  # the article that answers PLAIN and JARGON
TRAIN_PAIRS = f"""
        SELECT q.question, a.title || '. ' || a.body AS article
        FROM read_csv('{QUESTIONS}') q JOIN read_csv('{ARTICLES}') a ON a.id = q.article_id
        WHERE NOT ({HELD_OUT})"""


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
        if (record.status, record.epoch) != last:
            print(f"   {record.status:10} {record.progress:6.1%}  epoch {record.epoch}")
            last = (record.status, record.epoch)
        if record.status not in ("queued", "running"):
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


def embed_and_search(db) -> None:
    print(
        "\n1. Register the help-centre articles as a source and embed them with the bundled model."
    )
    show(db, f"SELECT add_source('articles', '{ARTICLES}') AS added")
    started = time.perf_counter()
    show(
        db,
        f"SELECT generate_text_embeddings('articles', '{MODEL}', ['title', 'body'], 'id') AS rows_written",
    )
    print(f"   ({time.perf_counter() - started:.1f} s, including loading the model once)")
    show(
        db,
        f"SELECT generate_text_embeddings('articles', '{MODEL}', ['title', 'body'], 'id') AS rows_written",
    )
    print("   The second run embeds nothing: only new or changed rows are embedded.")

    print("\n2. embed() is an ordinary SQL function returning a FLOAT[] of the model's 384 values.")
    show(
        db,
        f"""SELECT round(array_cosine_similarity(embed('{MODEL}', 'my VPN account is locked'),
                             embed('{MODEL}', 'the remote access client says my account is blocked')), 3) AS similar,
                   round(array_cosine_similarity(embed('{MODEL}', 'my VPN account is locked'),
                             embed('{MODEL}', 'how do I book a meeting room')), 3) AS unrelated""",
    )

    print("\n3. Search in plain words works; the company's own words do not: the base model has")
    print("   never seen error 'KS-503' (KS: Kestrel, the VPN client; 503: unavailable). The right")
    print(
        f"   answer is article {ANSWER}, whose questions are held out from the fine-tuning below;"
    )
    print(
        f"   each search shows the top three and where article {ANSWER} ranks among all articles."
    )
    for question in (PLAIN, JARGON):
        _search(db, MODEL, question)


def _search(db, model: str, question: str) -> None:
    """The top three articles for ``question``, and where the right one ranks among all."""
    show(
        db,
        f"""WITH hits AS (SELECT key AS id, max(score) AS score
                       FROM semantic_search('articles', '{model}', '{question}', k := 1000) GROUP BY key)
            SELECT rank() OVER (ORDER BY h.score DESC) AS rank, h.id, round(h.score, 3) AS score, a.title
            FROM hits h JOIN read_csv('{ARTICLES}') a ON a.id = h.id
            QUALIFY rank <= 3 OR h.id = {ANSWER} ORDER BY rank""",
    )


def fine_tune(db) -> str:
    print(
        "\n4. Fine-tune on the questions about three quarters of the articles, with every default."
    )
    show(
        db,
        f"SELECT add_source('train_pairs', $${TRAIN_PAIRS}$$, format := 'query') AS added",
    )
    job_id = show(
        db,
        f"""SELECT fine_tune('train_pairs', '{MODEL}', ['question', 'article'],
                                 config := {{'model_name': '{TUNED}'}}) AS job_id""",
    )[0][0]
    _follow(db, job_id)
    show(
        db,
        f"SELECT status, progress, step, total_steps, round(train_loss, 4) AS train_loss, model_id "
        f"FROM jammi.jobs WHERE job_id = '{job_id}'",
    )
    print("\n   A projection head trains on cached vectors, so the job tried several settings and")
    print("   kept the best on its validation split (it never saw the held-out articles either):")
    show(
        db,
        f"""PIVOT (SELECT step AS trial, name, round(value, 5) AS value FROM jammi.job_metrics
                       WHERE job_id = '{job_id}' AND split = 'trial')
                ON name USING first(value) ORDER BY trial""",
    )
    return job_id


def add_held_out_sources(db) -> None:
    """Sources heldout_questions, corpus and qrels: what evaluate_retrieval scores on."""
    for name, sql in (
        (
            "heldout_questions",
            f"SELECT id::VARCHAR AS query_id, question AS text FROM read_csv('{QUESTIONS}') WHERE {HELD_OUT}",
        ),
        (
            "corpus",
            f"SELECT id::VARCHAR AS doc_id, title || '. ' || body AS text FROM read_csv('{ARTICLES}')",
        ),
        (
            "qrels",
            f"SELECT id::VARCHAR AS query_id, article_id::VARCHAR AS doc_id, 1 AS score FROM read_csv('{QUESTIONS}')",
        ),
    ):
        db.sql(f"SELECT add_source('{name}', $${sql}$$, format := 'query')").fetchall()


def compare(db, job_id: str) -> None:
    from .display import job_summary

    print("\n5. Base vs fine-tuned on the held-out questions: articles the job never saw.")
    add_held_out_sources(db)
    show(
        db,
        f"""WITH r AS (SELECT m.model, evaluate_retrieval(m.model, 'heldout_questions', 'corpus', 'qrels') AS e
                   FROM (VALUES ('{MODEL}'), ('{TUNED}')) m(model))
            SELECT model, round(e.ndcg_at_10, 4) AS ndcg_at_10, round(e.recall_at_1, 4) AS recall_at_1,
                   round(e.mrr_at_10, 4) AS mrr_at_10, e.n_queries FROM r
            UNION ALL
            SELECT 'delta', round(max(e.ndcg_at_10) FILTER (model = '{TUNED}') - max(e.ndcg_at_10) FILTER (model = '{MODEL}'), 4),
                   round(max(e.recall_at_1) FILTER (model = '{TUNED}') - max(e.recall_at_1) FILTER (model = '{MODEL}'), 4),
                   round(max(e.mrr_at_10) FILTER (model = '{TUNED}') - max(e.mrr_at_10) FILTER (model = '{MODEL}'), 4),
                   NULL FROM r""",
    )
    print(
        f"\n6. The same company-speak search with the fine-tuned model (article {ANSWER} is the answer):"
    )
    db.sql(
        f"SELECT generate_text_embeddings('articles', '{TUNED}', ['title', 'body'], 'id')"
    ).fetchall()
    _search(db, TUNED, JARGON)
    print(
        "\n   The job's own report (jammi.jobs.metrics), base vs fine-tuned on its validation split:"
    )
    job = db.job(job_id)
    lines = job_summary((job_id, job.status, job.model_id, job.error), job.metrics)
    print("\n".join("   " + line for line in lines))


if __name__ == "__main__":
    sys.exit(main())
