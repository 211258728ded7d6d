"""Training steps on long texts: time and peak memory, ours (activations kept or recomputed)
beside sentence-transformers + peft LoRA, on the same SciFact batches.

Each side trains query/value LoRA adapters (rank 8, alpha 16, dropout 0.05, AdamW 1e-3) on
all-MiniLM-L6-v2 with in-batch negatives, batches of 32 (claim, title + abstract) pairs from
SciFact's train_pairs.jsonl at max_seq_length 256. Each variant runs in a process of its own, so
its peak RSS is its own. The first step warms up; the table shows the mean of the others.
Prints figures side by side; never fails.

    python benchmarks/train_step.py             # 4 steps per variant (~3 minutes on 2 cores)
    python benchmarks/train_step.py --steps 8
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import common
import numpy as np
import torch

BATCH, MAX_LEN = 32, 256
VARIANTS = {
    "ours, activations kept": "kept",
    "ours, recomputed (gradient checkpointing)": "recomputed",
    "sentence-transformers + peft LoRA": "peer",
}


def pairs(steps: int) -> list[tuple[str, str]]:
    rows = common.read_jsonl(common.DATA / "scifact" / "train_pairs.jsonl")
    order = np.random.default_rng(0).permutation(len(rows))[: steps * BATCH]
    return [(rows[i]["query"], f"{rows[i]['title']} {rows[i]['text']}") for i in order]


def ours(data: list[tuple[str, str]], recompute: bool, steps: int) -> list[float]:
    from jammi_sql.catalog.models import bundled_model_folder
    from jammi_sql.config import FineTuneConfig, resolve
    from jammi_sql.inference.encoder import Encoder
    from jammi_sql.training import trainee as T
    from jammi_sql.training.losses import MultipleNegativesRankingLoss

    T.needs_recompute = lambda *args: recompute
    encoder = Encoder.from_folder(bundled_model_folder(), torch.device("cpu"))
    texts = sorted({t for p in data for t in p})
    index = {t: i for i, t in enumerate(texts)}
    config = FineTuneConfig.from_mapping({"target_modules": ["query", "value"]})
    config = resolve(config, "encoder_adapters", encoder.dimensions)
    trainee = T.Trainee(encoder, "encoder_adapters", config, encoder.tokenize(texts, MAX_LEN),
                        lambda: False, batch_tokens=1)  # fmt: skip
    trainee.train()
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-3)
    loss_fn, times = MultipleNegativesRankingLoss(), []
    for s in range(steps):
        rows = np.array([[index[a], index[b]] for a, b in data[s * BATCH : (s + 1) * BATCH]])
        t0 = time.perf_counter()
        uniq, inverse = np.unique(rows, return_inverse=True)
        loss = T.batch_loss(loss_fn, trainee.embed(uniq), inverse.reshape(rows.shape), None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    return times


def peer(data: list[tuple[str, str]], steps: int) -> list[float]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    from jammi_sql.catalog.models import bundled_model_folder

    model = SentenceTransformer(str(bundled_model_folder()), device="cpu")
    model.max_seq_length = MAX_LEN
    common.add_peer_lora(model)
    model.train()
    loss_fn = losses.MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for s in range(steps):
        batch = data[s * BATCH : (s + 1) * BATCH]
        t0 = time.perf_counter()
        features = [model.tokenize([a for a, _ in batch]), model.tokenize([d for _, d in batch])]
        loss_fn(features, None).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    return times


def one(variant: str, steps: int) -> None:
    torch.manual_seed(0)
    data = pairs(steps)
    times = peer(data, steps) if variant == "peer" else ours(data, variant == "recomputed", steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT {np.mean(times[1:]):.2f} {peak:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return one(args.variant, args.steps)
    print(f"{BATCH} SciFact pairs a step at {MAX_LEN} tokens, {torch.get_num_threads()} threads")
    print(f"{'variant':<44} {'s a step':>9} {'peak RSS MB':>12}")
    for name, variant in VARIANTS.items():
        run = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--steps", str(args.steps)],
            capture_output=True, text=True,
        )  # fmt: skip
        found = [line.split() for line in run.stdout.splitlines() if line.startswith("RESULT")]
        if not found:
            print(f"{name:<44} failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        print(f"{name:<44} {float(found[0][1]):>9.2f} {float(found[0][2]):>12.0f}")


if __name__ == "__main__":
    main()
