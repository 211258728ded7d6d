"""Do mined hard negatives help on held-out SciFact? Ours beside sentence-transformers'.

Prints measured figures side by side; never fails. In one run, on the same data (SciFact as
``benchmarks/quality.py`` splits it: 162 train queries held out, the others' train_pairs.jsonl
rows to train on, NDCG@10 of the held-out queries over the full 5,183-document corpus):

- base: all-MiniLM-L6-v2 as it is;
- ours, in-batch negatives: ``fine_tune`` on (query, document) pairs;
- ours, + mined: ``generate_text_embeddings`` of the corpus, ``mine_hard_negatives`` (relative
  margin 0.05, one negative, the NV-Retriever setting), ``fine_tune`` on (query, document,
  negative) with in-batch negatives plus the mined one (multiple_negatives_ranking; with
  ``--triplet-losses multiple_negatives_ranking,triplet`` also with the triplet margin loss);
- sentence-transformers: its ``mine_hard_negatives`` with the same settings, and its trainer
  with MultipleNegativesRankingLoss on the pairs and on the mined triplets (full fine-tuning
  at our 'full' shape's epochs, batch size and learning rate).

Wall times of mining and training are printed for each. A projection head is scored on the
base model's pooled corpus vectors, computed once (a head applies after pooling, so this equals
embedding the corpus again). ``--corpus-sample N`` keeps every document that is a training
positive or relevant to a held-out query plus random others up to N (seed 0), for a quicker run
on a small machine; ``--no-st-train`` skips the peer's training (its mining still runs). ``--scale 10000,100000`` instead times
mining alone against synthetic corpora of that many random 384-d vectors (1,000 anchors) and
reports each run's peak memory (a fresh process per size). ``--doc-pairs`` adds ours trained
without any labelled pair: ``pairs_from_documents`` of the corpus's title -> abstract (every
document, the held-out queries' relevant ones included: no query is seen), for each shape.

    python benchmarks/hard_negatives.py                      # head shape + the peer
    python benchmarks/hard_negatives.py --shapes head,full --no-peer
    python benchmarks/hard_negatives.py --scale 10000,100000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from quality import SciFact  # noqa: E402

import jammi_sql  # noqa: E402
from jammi_sql.catalog.models import bundled_model_folder  # noqa: E402
from jammi_sql.config import SHAPE_DEFAULTS  # noqa: E402
from jammi_sql.evaluation.metrics import retrieval_metrics  # noqa: E402
from jammi_sql.inference.encoder import Encoder  # noqa: E402
from jammi_sql.inference.loader import load_fine_tuned  # noqa: E402

BASE = "all-MiniLM-L6-v2"
SHAPES = {"head": ("lora", {}), "adapters": ("lora", {"target_modules": ["query", "value"]})}
SHAPES["full"] = ("full", {})
SHAPES["query-head"] = ("lora", {"applies_to": "query"})  # documents keep the base's vectors
MINING = {"relative_margin": 0.05, "num_negatives": 1}


def setup(db, task: SciFact) -> float:
    """Sources: pairs, corpus; the corpus embedded once. Returns the embedding seconds."""
    queries, docs = zip(*task.train, strict=True)
    db.con.register("p", pa.table({"query": list(queries), "document": list(docs)}))
    db.con.execute("CREATE TABLE pairs AS SELECT * FROM p")
    db.con.register("c", pa.table({"doc_id": task.doc_ids, "text": task.docs}))
    db.con.execute("CREATE TABLE corpus AS SELECT * FROM c")
    db.add_source("pairs", "pairs")
    db.add_source("corpus", "corpus")
    t0 = time.monotonic()
    db.generate_text_embeddings("corpus", BASE, ["text"], "doc_id")
    return time.monotonic() - t0


def ours(
    db, task: SciFact, shape: str, mined: bool | str, loss: str = "multiple_negatives_ranking"
) -> tuple[float, float]:
    method, extra = SHAPES[shape]
    name = f"sf-{shape}-{'pairs' if not mined else 'mined' if mined is True else mined}"
    config = {"max_seq_length": task.max_seq_length, "model_name": f"{name}-{loss}", **extra}
    if mined == "titles":
        source, columns = "papers_pairs", ["anchor", "positive"]
    elif mined:
        source, columns = "pairs_hard_negatives", ["anchor", "positive", "negative"]
        config["embedding_loss"] = loss
    else:
        source, columns = "pairs", ["query", "document"]
    t0 = time.monotonic()
    job = db.fine_tune(source, BASE, columns, method=method, config=config).wait()
    seconds = time.monotonic() - t0
    ref = db.ctx.models.resolve(job.model_id)
    if ref.adapter_folder is None:
        encoder = Encoder.from_folder(ref.folder, torch.device("cpu"))
        return task.score(lambda t, q: encoder.encode(t, query=q)), seconds
    encoder = load_fine_tuned(ref.adapter_folder, ref.folder, torch.device("cpu"))
    if encoder.head is None:
        return task.score(lambda t, q: encoder.encode(t, query=q)), seconds
    return score_on_pooled(task, encoder), seconds


def score_on_pooled(task: SciFact, encoder: Encoder) -> float:
    """NDCG@10 with the documents' vectors from the cached pooled corpus (``task.pooled``)."""
    with torch.inference_mode():
        docs = encoder.project(torch.from_numpy(task.pooled), False).numpy()
    queries = encoder.encode(task.queries, query=True)
    r = retrieval_metrics(queries, docs, task.query_ids, task.doc_ids, task.relevant)
    return r.metrics["ndcg_at_10"]


def sample_corpus(task: SciFact, n: int) -> None:
    """Keep the documents the split needs (training positives, held-out relevant ones) and
    random others, ``n`` in all at least."""
    needed = {d for ds in task.relevant.values() for d in ds}
    positives = {doc for _, doc in task.train}
    keep = [i for i, (d, t) in enumerate(zip(task.doc_ids, task.docs, strict=True))
            if d in needed or t in positives]  # fmt: skip
    others = np.setdiff1d(np.arange(len(task.docs)), keep)
    extra = np.random.default_rng(0).choice(others, max(0, n - len(keep)), replace=False)
    chosen = sorted([*keep, *extra.tolist()])
    task.doc_ids = [task.doc_ids[i] for i in chosen]
    task.docs = [task.docs[i] for i in chosen]


def peer(task: SciFact, train: bool = True) -> list[tuple[str, float, float]]:
    """sentence-transformers: mining, then its trainer on pairs and on the mined triplets."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import mine_hard_negatives

    pairs = Dataset.from_dict(
        {"anchor": [r[0] for r in task.train], "positive": [r[1] for r in task.train]}
    )
    model = SentenceTransformer(str(bundled_model_folder()), device="cpu")
    model.max_seq_length = task.max_seq_length
    t0 = time.monotonic()
    triplets = mine_hard_negatives(
        pairs, model, corpus=task.docs, sampling_strategy="top", batch_size=64, verbose=False,
        **MINING,
    )  # fmt: skip
    mining = time.monotonic() - t0
    print(f"  st mine_hard_negatives: {len(triplets)} triplets in {mining:.1f} s", flush=True)
    out = [("st mining (embeds corpus)", float("nan"), mining)]
    d = SHAPE_DEFAULTS["full"]
    for label, data in (("st in-batch", pairs), ("st + mined", triplets))[: 2 if train else 0]:
        model = SentenceTransformer(str(bundled_model_folder()), device="cpu")
        model.max_seq_length = task.max_seq_length
        with tempfile.TemporaryDirectory() as tmp:
            args = SentenceTransformerTrainingArguments(
                output_dir=tmp, num_train_epochs=d["epochs"], per_device_train_batch_size=d["batch_size"],
                learning_rate=d["learning_rate"], warmup_steps=0.1, lr_scheduler_type="cosine",
                weight_decay=d["weight_decay"], max_grad_norm=1.0, seed=42, save_strategy="no",
                report_to="none", logging_steps=10**6, use_cpu=True, dataloader_num_workers=0,
                disable_tqdm=True,
            )  # fmt: skip
            loss = losses.MultipleNegativesRankingLoss(model)
            t0 = time.monotonic()
            SentenceTransformerTrainer(
                model=model, args=args, train_dataset=data, loss=loss
            ).train()
            seconds = time.monotonic() - t0
        model.eval()
        score = task.score(lambda t, q, m=model: m.encode(t, batch_size=64, convert_to_numpy=True))
        print(f"  {label:24s} {score:.4f} in {seconds:.0f} s", flush=True)
        out.append((label, score, seconds))
    return out


def quality(args) -> None:
    task = SciFact()
    if args.corpus_sample:
        sample_corpus(task, args.corpus_sample)
    print(f"all-MiniLM-L6-v2, {torch.get_num_threads()} threads; every figure from this run")
    encoder = Encoder.from_folder(bundled_model_folder(), torch.device("cpu"))
    t0 = time.monotonic()
    task.pooled = encoder.encode(task.docs, pooled_only=True)
    base = score_on_pooled(task, encoder)
    print(f"scifact: {len(task.train)} training pairs, {len(task.docs)} documents (pooled in "
          f"{time.monotonic() - t0:.0f} s); base ndcg@10 {base:.4f}", flush=True)  # fmt: skip
    rows = [("base", base, float("nan"))]
    with tempfile.TemporaryDirectory() as tmp:
        db = jammi_sql.connect(str(Path(tmp) / "bench.duckdb"))
        embed_s = setup(db, task)
        t0 = time.monotonic()
        summary = db.mine_hard_negatives("pairs", BASE, "query", "document", corpus="corpus",
                                         **MINING)  # fmt: skip
        mine_s = time.monotonic() - t0
        print(f"  corpus embedded in {embed_s:.1f} s (once, reused); mining {mine_s:.1f} s: "
              f"{summary}", flush=True)  # fmt: skip
        rows.append(("ours mining (reads corpus)", float("nan"), mine_s))
        if args.doc_pairs:
            corpus = common.scifact_corpus()
            titles = {d["_id"]: (d["title"], d["text"]) for d in corpus}
            kept = [titles[i] for i in task.doc_ids]
            db.con.register("t", pa.table({"title": [a for a, _ in kept],
                                           "abstract": [b for _, b in kept]}))  # fmt: skip
            db.con.execute("CREATE TABLE papers AS SELECT * FROM t")
            db.add_source("papers", "papers")
            print(f"  {db.pairs_from_documents('papers', 'abstract', title='title')}", flush=True)
        runs = (False, True, "titles") if args.doc_pairs else (False, True)
        for shape in args.shapes.split(","):
            for mined in runs:
                for loss in args.triplet_losses.split(",") if mined is True else [""]:
                    score, seconds = ours(db, task, shape, mined, *([loss] if loss else []))
                    how = {False: "in-batch", True: "+ mined", "titles": "titles only"}[mined]
                    short = {"multiple_negatives_ranking": "mnrl"}.get(loss, loss)
                    label = f"ours {shape} {how}" + (f" {short}" if short else "")
                    print(f"  {label:28s} {score:.4f} in {seconds:.0f} s", flush=True)
                    rows.append((label, score, seconds))
        db.close()
    if args.peer:
        rows += peer(task, args.st_train)
    print(f"\n{'run':28s} {'ndcg@10':>8s} {'delta':>8s} {'wall s':>8s}")
    for label, score, seconds in rows:
        delta = f"{score - base:+8.4f}" if np.isfinite(score) else f"{'':8s}"
        shown = f"{score:8.4f}" if np.isfinite(score) else f"{'':8s}"
        print(f"{label:28s} {shown} {delta} {seconds:8.1f}")


def scale_one(n: int) -> None:
    """Mine 1,000 anchors against ``n`` random corpus vectors; print seconds and peak memory."""
    from jammi_sql.catalog.tables import EmbeddingTable

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = jammi_sql.connect(str(Path(tmp) / "scale.duckdb"))
        dims = Encoder.from_folder(bundled_model_folder()).dimensions
        db.con.execute(
            f"CREATE TABLE docs AS SELECT i AS id, 'doc ' || i AS text FROM range({n}) t(i)"
        )
        db.con.execute(
            "CREATE TABLE qa AS SELECT 'query ' || i AS q, 'doc ' || i AS d FROM range(1000) t(i)"
        )
        vectors = rng.normal(size=(n, dims)).astype(np.float32)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dims)
        db.con.register("v", pa.table({"key": np.arange(n), "embedding": emb}))
        db.con.execute(
            f"CREATE TABLE jammi.emb_docs__synthetic AS SELECT key, 'text' AS column_name, "
            f"'doc ' || key AS text, md5('doc ' || key) AS text_hash, embedding::FLOAT[{dims}] "
            "AS embedding FROM v"
        )
        del vectors, emb
        db.con.unregister("v")
        db.add_source("docs", "docs")
        db.add_source("qa", "qa")
        db.ctx.catalog.put_embedding_table(
            EmbeddingTable(
                "jammi.emb_docs__synthetic",
                "docs",
                "sentence-transformers/all-MiniLM-L6-v2",
                ["text"],
                "id",
                dims,
                n,
            )
        )
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.monotonic()
        summary = db.mine_hard_negatives("qa", BASE, "q", "d", corpus="docs", num_negatives=3)
        seconds = time.monotonic() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        matrix = 1000 * n * 4 / 2**20
        print(f"{n:>9,d} rows: {seconds:6.1f} s, peak RSS {peak:,.0f} MiB ({before:,.0f} MiB "
              f"before mining; a full 1000 x {n:,d} float32 score matrix alone: {matrix:,.0f} "
              f"MiB); {summary.split(';')[1].strip()}", flush=True)  # fmt: skip
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default="head", help="ours: head, query-head, adapters, full")
    ap.add_argument("--no-peer", dest="peer", action="store_false")
    ap.add_argument(
        "--triplet-losses",
        default="multiple_negatives_ranking",
        help="losses ours trains the mined triplets with, e.g. multiple_negatives_ranking,triplet",
    )
    ap.add_argument("--no-st-train", dest="st_train", action="store_false")
    ap.add_argument("--corpus-sample", type=int, default=0, help="documents kept (0: all)")
    ap.add_argument("--doc-pairs", action="store_true", help="also: title -> abstract, no labels")
    ap.add_argument("--scale", default="", help="corpus sizes to time mining at, e.g. 10000,100000")
    ap.add_argument("--scale-one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_one:
        scale_one(args.scale_one)
    elif args.scale:
        print("mining 1,000 anchors (3 negatives each) against random 384-d corpus vectors")
        for n in map(int, args.scale.split(",")):
            subprocess.run([sys.executable, __file__, "--scale-one", str(n)], check=False)
    else:
        quality(args)


if __name__ == "__main__":
    main()
