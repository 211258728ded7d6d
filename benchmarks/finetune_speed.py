"""Fine-tuning speed: our engine vs sentence-transformers' trainer, same data and settings.

Both sides train all-MiniLM-L6-v2 with CoSENT on STS-B train pairs, with the same epochs,
batch size, learning rate, warmup, schedule, weight decay, clipping, seed and max_seq_length,
and no validation (our ``validation_fraction`` is 0, so both see the same pairs).

- head      ours: a projection head on cached vectors;  peer: ST + peft LoRA on query/value
- adapters  ours: LoRA on query/value inside the encoder; peer: ST + peft LoRA on query/value
- full      ours: every weight;                          peer: ST, every weight

Times run from loading the model to trained weights (ours also writes its artifact and its
checkpoints, about every tenth of the steps); both libraries are imported and warmed up first.
Prints figures side by side; never fails.

    python benchmarks/finetune_speed.py                        # all 5,749 pairs, 3 epochs (~25 min)
    python benchmarks/finetune_speed.py --limit 1000 --epochs 1 # a few minutes
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import common  # noqa: E402

from jammi_sql.catalog.models import bundled_model_folder  # noqa: E402
from jammi_sql.config import FineTuneConfig  # noqa: E402
from jammi_sql.training.dataset import make_training_set  # noqa: E402
from jammi_sql.training.train import run_training  # noqa: E402

STSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "sts-train.csv"


def read_pairs(limit: int | None) -> list[tuple[str, str, float]]:
    with open(STSB, newline="", encoding="utf-8") as f:
        rows = [
            (r[5], r[6], float(r[4])) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    return rows[:limit] if limit else rows


def ours(shape: str, rows, args) -> float:
    method = "full" if shape == "full" else "lora"
    config = FineTuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        max_seq_length=args.max_seq_length,
        validation_fraction=0.0,
        lr_schedule="cosine_decay",
        target_modules=["query", "value"] if shape == "adapters" else [],
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_training(
            bundled_model_folder(),
            make_training_set("scored_pairs", rows),
            config,
            method,
            work_dir=Path(tmp) / "work",
            output_dir=Path(tmp) / "model",
            on_progress=lambda p: None,
            should_stop=lambda: False,
            device=torch.device("cpu"),
        )
        return time.perf_counter() - t0


def theirs(shape: str, rows, args) -> float:
    """sentence-transformers' own trainer (with peft LoRA on query/value unless 'full')."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    data = Dataset.from_dict(
        {
            "sentence1": [r[0] for r in rows],
            "sentence2": [r[1] for r in rows],
            "score": [r[2] for r in rows],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = SentenceTransformer(str(bundled_model_folder()), device="cpu")
        model.max_seq_length = args.max_seq_length
        if shape != "full":
            common.add_peer_lora(model)
        training_args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            warmup_steps=args.warmup,
            lr_scheduler_type="cosine",
            weight_decay=0.01,
            max_grad_norm=1.0,
            seed=42,
            save_strategy="no",
            report_to="none",
            logging_steps=10**6,
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=training_args, train_dataset=data, loss=CoSENTLoss(model)
        )
        trainer.train()
        return time.perf_counter() - t0


def warm_up() -> None:
    """Import both libraries and load the model once, so no side pays first-use costs."""
    from sentence_transformers import SentenceTransformer

    from jammi_sql.inference.encoder import Encoder

    SentenceTransformer(str(bundled_model_folder()), device="cpu")
    Encoder.from_folder(bundled_model_folder(), torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default="head,adapters,full")
    ap.add_argument("--limit", type=int, default=0, help="training pairs (default 0: all 5,749)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs (default 3, as the config's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--max-seq-length", type=int, default=128)
    args = ap.parse_args()
    rows = read_pairs(args.limit or None)
    shapes = args.shapes.split(",")
    n = len(rows) * args.epochs
    print(
        f"{len(rows)} STS-B pairs x {args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr:g}, "
        f"max_seq_length {args.max_seq_length}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    warm_up()
    peer_times: dict[str, float] = {}
    results = []
    for shape in shapes:
        peer_kind = "full" if shape == "full" else "lora"
        if peer_kind not in peer_times:
            peer_times[peer_kind] = theirs(shape, rows, args)
            print(
                f"  sentence-transformers ({'peft LoRA q/v' if peer_kind == 'lora' else 'full'}): "
                f"{peer_times[peer_kind]:.1f}s",
                flush=True,
            )
        t = ours(shape, rows, args)
        print(f"  jammi-sql {shape}: {t:.1f}s", flush=True)
        results.append((shape, t, peer_times[peer_kind], peer_kind))
    print()
    print(
        f"{'shape':9s} {'peer':22s} {'ours s':>8s} {'peer s':>8s} {'ours pairs/s':>13s} "
        f"{'peer pairs/s':>13s} {'speed-up':>9s}"
    )
    for shape, t, p, kind in results:
        peer = "ST + peft LoRA q/v" if kind == "lora" else "ST full"
        print(f"{shape:9s} {peer:22s} {t:8.1f} {p:8.1f} {n / t:13.1f} {n / p:13.1f} {p / t:8.2f}x")


if __name__ == "__main__":
    main()
