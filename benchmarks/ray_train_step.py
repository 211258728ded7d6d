"""Seconds per training step: one process vs Ray Train workers (config ``workers``), same job.

all-MiniLM-L6-v2 trains on the first STS-B train pairs with CoSENT, no validation, the same
config but ``workers``; batch_size is the global batch either way. Per step: the loop's own time
(``metrics.train_seconds``, from the first step to the last, checkpoints included) over its
steps; wall: the whole call, Ray's start (a local instance, the workers, the process group)
included. One process uses torch's threads (one per core; ``--one-thread`` adds a run on one),
each Ray worker gets one CPU (one torch thread). Prints figures; never fails.

    python benchmarks/ray_train_step.py                 # 640 pairs, 1 epoch, batch 32
    python benchmarks/ray_train_step.py --workers 2 4 --shapes full --one-thread
"""

from __future__ import annotations

import argparse
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
from jammi_sql.training.distributed import run_distributed  # noqa: E402
from jammi_sql.training.train import run_training  # noqa: E402


def run(shape: str, workers: int, rows, args) -> tuple[float, float, int]:
    """(seconds per step in the loop, wall seconds, steps)."""
    config = FineTuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        validation_fraction=0.0,
        warmup_steps=0,
        target_modules=["query", "value"] if shape == "adapters" else [],
        workers=workers,
    )
    steps = args.epochs * -(-len(rows) // args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = (run_distributed if workers > 1 else run_training)(
            bundled_model_folder(),
            make_training_set("scored_pairs", rows),
            config,
            "full" if shape == "full" else "lora",
            work_dir=Path(tmp) / "work",
            output_dir=Path(tmp) / "out",
            on_progress=lambda p: None,
            should_stop=lambda: False,
            resume=False,
            base_model_id="all-MiniLM-L6-v2",
        )
        wall = time.perf_counter() - start
    return result.metrics["train_seconds"] / steps, wall, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--shapes", nargs="+", default=["adapters", "full"])
    parser.add_argument("--one-thread", action="store_true", help="also one process on 1 thread")
    args = parser.parse_args()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        "?",
    )
    print(f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    rows = common.stsb("train")[: args.limit]
    print(f"{len(rows)} STS-B pairs, batch {args.batch_size}, {args.epochs} epoch(s)")
    print("shape      workers  threads  s/step  wall s  steps")
    threads = torch.get_num_threads()
    for shape in args.shapes:
        runs = [(1, threads)] + [(1, 1)] * args.one_thread + [(w, 1) for w in args.workers]
        for workers, each in runs:
            torch.set_num_threads(each if workers == 1 else threads)
            per_step, wall, steps = run(shape, workers, rows, args)
            print(f"{shape:<10} {workers:>7}  {each:>7}  {per_step:6.3f}  {wall:6.1f}  {steps:>5}")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
