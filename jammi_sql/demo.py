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


def show(db, sql: str, title: str | None = None) -> list[tuple]:
    """Print a statement and its result as an aligned table, as the shell would."""
    print(f"\njammi> {sql.strip()}")
    rel = db.sql(sql)
    names, rows = rel.columns, rel.fetchall()
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return "[" + ", ".join(f"{v:.3f}" for v in value[:3]) + f", …] ({len(value)})"
    text = str(value)
    return text if len(text) <= 70 else text[:67] + "..."


def main(argv: list[str] | None = None) -> int:
    import jammi_sql

    folder = Path(tempfile.mkdtemp(prefix="jammi-demo-"))
    db = jammi_sql.connect(str(folder / "demo.duckdb"))
    print(f"jammi-sql demo: database {folder / 'demo.duckdb'}, artifacts in {db.home}")
    tickets, queries = SAMPLES / "tickets.csv", SAMPLES / "queries.csv"

    print("\n1. Register the sample tickets as a source and embed them with the bundled model.")
    show(db, f"SELECT add_source('tickets', '{tickets}')")
    started = time.perf_counter()
    show(db, f"SELECT generate_text_embeddings('tickets', '{MODEL}', ['title', 'body'], 'id') AS rows_written")
    print(f"   ({time.perf_counter() - started:.1f} s, including loading the model once)")
    show(db, f"SELECT generate_text_embeddings('tickets', '{MODEL}', ['title', 'body'], 'id') AS rows_written")
    print("   The second run embeds nothing: only new or changed rows are embedded.")

    print("\n2. embed() is an ordinary SQL function returning FLOAT[384].")
    show(db, f"SELECT embed('{MODEL}', 'my card was charged twice') AS embedding")
    show(db, f"""SELECT round(array_cosine_similarity(embed('{MODEL}', 'refund please'),
                                             embed('{MODEL}', 'I want my money back')), 3) AS similar,
                   round(array_cosine_similarity(embed('{MODEL}', 'refund please'),
                                             embed('{MODEL}', 'the app is slow to start')), 3) AS unrelated""")

    print("\n3. Semantic search, joined back to the source table.")
    for question in ("someone logged into my account from abroad", "my phone dies quickly since the update"):
        show(db, f"""SELECT s.key AS id, t.category, s.column_name, round(s.score, 3) AS score, s.text
                     FROM semantic_search('tickets', '{MODEL}', '{question}', k := 3) s
                     JOIN read_csv('{tickets}') t ON t.id = s.key ORDER BY s.score DESC""")
    db.close()
    print("\nDone. Try it yourself: jammi-sql my.duckdb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
