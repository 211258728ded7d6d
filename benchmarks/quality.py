"""Does fine-tuning help? Base model vs each shape, on held-out data. Prints figures; never fails.

- STS-B: train on sts-train.csv (scored pairs, CoSENT), Spearman on sts-dev.csv.
- SciFact: hold out a fifth of the train queries; train on the remaining rows of
  train_pairs.jsonl (query -> title + ' ' + abstract, MultipleNegativesRanking); NDCG@10 of the
  held-out queries over the full corpus, with qrels/train.tsv.

Each job runs with the default FineTuneConfig (only max_seq_length is capped, see --max-seq-length),
exactly as ``fine_tune`` would run it.

    python benchmarks/quality.py                       # everything (about 50 minutes on 2 CPU cores)
    python benchmarks/quality.py --shapes head,adapters --tasks stsb
    python benchmarks/quality.py --quick               # 1,000 training rows: a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jammi_sql.config import FineTuneConfig  # noqa: E402
from jammi_sql.data import make_training_set  # noqa: E402
from jammi_sql.encoder import Encoder  # noqa: E402
from jammi_sql.encoders import load_fine_tuned  # noqa: E402
from jammi_sql.evaluate import retrieval_metrics, similarity_metrics  # noqa: E402
from jammi_sql.models import BUNDLED_ID, bundled_model_folder  # noqa: E402
from jammi_sql.train import run_training  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAPES = {
    "head": ("lora", {}),
    "adapters": ("lora", {"target_modules": ["query", "value"]}),
    "full": ("full", {}),
}


def read_stsb(path: Path) -> list[tuple[str, str, float]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [
            (r[5], r[6], float(r[4])) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Task:
    name: str
    kind: str
    metric: str

    def train_rows(self) -> list[tuple]: ...

    def evaluate(self, encoder: Encoder) -> float: ...


class STSB(Task):
    name, kind, metric = "stsb", "scored_pairs", "spearman"

    def __init__(self, limit: int | None):
        self.train = read_stsb(DATA / "stsb" / "sts-train.csv")[:limit]
        self.dev = read_stsb(DATA / "stsb" / "sts-dev.csv")

    def train_rows(self) -> list[tuple]:
        return self.train

    def evaluate(self, encoder: Encoder) -> float:
        a = encoder.encode([r[0] for r in self.dev])
        b = encoder.encode([r[1] for r in self.dev])
        return similarity_metrics(a, b, np.array([r[2] for r in self.dev]))["spearman"]


class SciFact(Task):
    name, kind, metric = "scifact", "pairs", "ndcg_at_10"

    def __init__(self, limit: int | None, seed: int = 0):
        root = DATA / "scifact"
        pairs = read_jsonl(root / "train_pairs.jsonl")
        qids = sorted({p["query_id"] for p in pairs})
        held = set(np.random.default_rng(seed).permutation(qids)[: len(qids) // 5].tolist())
        self.train = [
            (p["query"], f"{p['title']} {p['text']}") for p in pairs if p["query_id"] not in held
        ]
        self.train = self.train[:limit]
        queries = {q["_id"]: q["text"] for q in read_jsonl(root / "queries.jsonl")}
        self.relevant: dict[str, set[str]] = {}
        with open(root / "qrels" / "train.tsv", encoding="utf-8") as f:
            for row in list(csv.reader(f, delimiter="\t"))[1:]:
                if row[0] in held and float(row[2]) > 0:
                    self.relevant.setdefault(row[0], set()).add(row[1])
        self.query_ids = sorted(self.relevant)
        self.queries = [queries[q] for q in self.query_ids]
        corpus = read_jsonl(root / "corpus.jsonl")
        self.doc_ids = [d["_id"] for d in corpus]
        self.docs = [f"{d['title']} {d['text']}" for d in corpus]
        self._pooled_corpus: np.ndarray | None = None  # the base's pooled corpus, for heads

    def train_rows(self) -> list[tuple]:
        return self.train

    def evaluate(self, encoder: Encoder) -> float:
        if encoder.head is not None and self._pooled_corpus is not None:
            pooled = (
                self._pooled_corpus
            )  # a head changes nothing before pooling: reuse the base's pass
        else:
            pooled = encoder.encode(self.docs, pooled_only=True)
            if self._pooled_corpus is None:  # the first model evaluated is the base
                self._pooled_corpus = pooled
        with torch.inference_mode():
            corpus = encoder.project(torch.from_numpy(pooled)).numpy()
        queries = encoder.encode(self.queries, query=True)
        result = retrieval_metrics(queries, corpus, self.query_ids, self.doc_ids, self.relevant)
        return result.metrics["ndcg_at_10"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default="head,adapters,full")
    ap.add_argument("--tasks", default="stsb,scifact")
    ap.add_argument("--quick", action="store_true", help="train on 1,000 rows only")
    ap.add_argument("--limit", type=int, default=None, help="train on this many rows only")
    ap.add_argument(
        "--max-seq-length",
        type=int,
        default=None,
        help="cap max_seq_length (default: 128 for STS-B, the model's 256 for SciFact)",
    )
    ap.add_argument(
        "--config", default="{}", help="extra config keys as JSON, e.g. '{\"epochs\": 1}'"
    )
    args = ap.parse_args()
    limit = 1000 if args.quick else args.limit
    extra = json.loads(args.config)
    base_folder = bundled_model_folder()
    device = torch.device("cpu")
    tasks = {"stsb": lambda: STSB(limit), "scifact": lambda: SciFact(limit)}
    print(
        f"model {BUNDLED_ID}, {torch.get_num_threads()} threads, default FineTuneConfig + {extra or 'nothing'}"
    )
    rows = []
    for task_name in args.tasks.split(","):
        task = tasks[task_name]()
        seq = args.max_seq_length or (128 if task_name == "stsb" else 256)
        t0 = time.monotonic()
        base = task.evaluate(Encoder.from_folder(base_folder, device))
        print(
            f"{task_name}: base {task.metric} {base:.4f} ({time.monotonic() - t0:.0f}s to evaluate)",
            flush=True,
        )
        for shape in args.shapes.split(","):
            method, shape_cfg = SHAPES[shape]
            config = FineTuneConfig.from_mapping({"max_seq_length": seq, **shape_cfg, **extra})
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.monotonic()
                result = run_training(
                    base_folder,
                    make_training_set(task.kind, task.train_rows()),
                    config,
                    method,
                    work_dir=Path(tmp) / "work",
                    output_dir=Path(tmp) / "model",
                    on_progress=lambda p: None,
                    should_stop=lambda: False,
                    device=device,
                )
                seconds = time.monotonic() - t0
                encoder = load_fine_tuned(result.output_dir, base_folder, device)
                score = task.evaluate(encoder)
            m = result.metrics
            rows.append((task_name, shape, base, score, seconds, m))
            print(
                f"{task_name} {shape:9s} {task.metric} {score:.4f} (base {base:.4f}, {score - base:+.4f}); "
                f"trained {seconds:.0f}s, lr {m['learning_rate']:g}, best epoch {m['best_epoch']}/{m['epochs_run']}, "
                f"validation {m['metric']} {m['base'][m['metric']]:.4f} -> {m['fine_tuned'][m['metric']]:.4f}",
                flush=True,
            )
    print()
    print(
        f"{'task':8s} {'shape':9s} {'metric':11s} {'base':>7s} {'tuned':>7s} {'delta':>8s} {'train s':>8s}  best/run"
    )
    for task_name, shape, base, score, seconds, m in rows:
        print(
            f"{task_name:8s} {shape:9s} {m['metric']:11s} {base:7.4f} {score:7.4f} {score - base:+8.4f} "
            f"{seconds:8.0f}  {m['best_epoch']}/{m['epochs_run']}"
        )


if __name__ == "__main__":
    main()
