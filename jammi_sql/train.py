"""The training loop: one function, nanoGPT-style, reporting only through callbacks.

Three shapes share it (see :mod:`jammi_sql.trainee`): a projection head on cached vectors
(method 'lora', no target_modules), LoRA adapters inside the encoder (method 'lora' with
target_modules), and full fine-tuning (method 'full').

It knows nothing of DuckDB or job ids: the caller gives a :class:`~jammi_sql.data.TrainingSet`,
a config and folders, and hears back through ``on_progress`` and ``should_stop``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import losses as L
from .config import FineTuneConfig
from .data import TrainingSet, epoch_batches, resolve_loss, split
from .encoder import Encoder, pick_device
from .errors import InvalidArgumentError, TrainingError
from .trainee import Cancelled, Trainee, batch_loss, index_texts, validate

__all__ = ["Cancelled", "Progress", "TrainResult", "run_training"]

# The learning rate each shape uses when the config leaves it unset (None), measured with
# benchmarks/quality.py on held-out data. Full fine-tuning at 2e-4 falls below the base model
# on STS-B; at 2e-5 it gains most. A head on frozen vectors overfits CoSENT above 2e-4 (train
# loss falls, held-out Spearman drops), yet barely moves under in-batch negatives at 2e-4 and
# gains on SciFact at 2e-3. Whatever the rate, the best epoch is kept, or the base if none beat it.
DEFAULT_LEARNING_RATE = {
    ("projection_head", "cosent"): 2e-4,
    ("projection_head", "multiple_negatives_ranking"): 2e-3,
    ("projection_head", "triplet"): 2e-3,
    "projection_head": 2e-4,
    "encoder_adapters": 2e-4,
    "full": 2e-5,
}
DIVERGED_LOSS = 100.0  # a loss above this (or NaN) ...
DIVERGED_BATCHES = 3  # ... this many micro-batches in a row fails the job
CHECKPOINTS = 10  # write a checkpoint about every 1/10 of the optimizer steps
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class Progress:
    epoch: int
    step: int
    total_steps: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    learning_rate: float
    logs: list[tuple[str, str, float]] = field(default_factory=list)  # (split, name, value)


@dataclass
class TrainResult:
    output_dir: Path
    adapter_type: str
    loss: str
    dimensions: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    metrics: dict  # JSON-able: base and fine-tuned validation metrics side by side, and more


def adapter_type_for(method: str, config: FineTuneConfig) -> str:
    if method == "full":
        return "full"
    if method != "lora":
        raise InvalidArgumentError(f"unknown method '{method}'; use 'lora' or 'full'")
    return "encoder_adapters" if config.target_modules else "projection_head"


def learning_rate_for(adapter_type: str, config: FineTuneConfig, loss: str | None = None) -> float:
    """The configured rate, or the default for this shape (and, for a head, this loss)."""
    if config.learning_rate is not None:
        return float(config.learning_rate)
    return DEFAULT_LEARNING_RATE.get((adapter_type, loss), DEFAULT_LEARNING_RATE[adapter_type])


def _schedule(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear_decay":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _fingerprint(data: TrainingSet, config: FineTuneConfig, method: str) -> str:
    h = hashlib.sha256()
    settings = {k: v for k, v in config.to_dict().items() if k != "model_name"}
    h.update(json.dumps([settings, method, data.kind], sort_keys=True, default=str).encode())
    for row in data.rows:
        h.update(repr(row).encode())
    return h.hexdigest()


def _adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where this torch can (5x faster steps on CPU than the per-tensor default)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


def _save_checkpoint(work_dir: Path, state: dict) -> None:
    """Atomically: a crash mid-write leaves the previous checkpoint whole."""
    tmp = work_dir / f"{CHECKPOINT_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, work_dir / CHECKPOINT_FILE)


def _json_number(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


# ---- the loop ------------------------------------------------------------------------------
def run_training(
    base_folder: Path,
    data: TrainingSet,
    config: FineTuneConfig,
    method: str,
    *,
    work_dir: Path,
    output_dir: Path,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    resume: bool = False,
    device: torch.device | None = None,
    base_model_id: str | None = None,
) -> TrainResult:
    """Fine-tune the model in ``base_folder`` on ``data``; write the artifact to ``output_dir``.

    Checkpoints go to ``work_dir``; with ``resume`` the run continues from the latest one and
    ends with the same weights an uninterrupted run would. Raises :class:`Cancelled` when
    ``should_stop()`` turns true, :class:`TrainingError` when the loss diverges.
    """
    base_folder, work_dir, output_dir = Path(base_folder), Path(work_dir), Path(output_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = device or pick_device()
    adapter_type = adapter_type_for(method, config)
    loss_name = resolve_loss(data.kind, config.embedding_loss)
    lr = learning_rate_for(adapter_type, config, loss_name)
    watch_loss = config.early_stopping_metric == "val_loss"
    metric_name = "spearman" if data.kind == "scored_pairs" else "ndcg_at_10"

    # ---- data: split, distinct texts, tokens -----------------------------------------------
    train_set, val_set = split(data, config.validation_fraction, config.seed)
    torch.manual_seed(config.seed)
    encoder = Encoder.from_folder(base_folder, device)
    texts, (train_ids, val_ids) = index_texts([train_set, val_set], encoder.spec)
    token_ids = encoder.tokenize(texts, config.max_seq_length)
    text_len = np.array([len(t) for t in token_ids])
    train_scores, val_scores = train_set.scores(), val_set.scores()
    # Length bucketing keeps padding low, except for in-batch negatives and cached vectors.
    bucket = loss_name != "multiple_negatives_ranking" and adapter_type != "projection_head"
    row_len = text_len[train_ids].max(axis=1) if bucket else None

    trainee = Trainee(encoder, adapter_type, config, token_ids, should_stop)
    loss_fn = L.build(loss_name)
    params = trainee.parameters()
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},  # biases, norms
    ]
    optimizer = _adamw([g for g in groups if g["params"]], lr)

    # ---- schedule: step budget, warmup (at most a tenth of the steps), decay ------------------
    accum = config.gradient_accumulation_steps
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = config.epochs * steps_per_epoch
    warmup = min(config.warmup_steps, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config.lr_schedule, warmup, total_steps)
    )
    checkpoint_every = max(1, round(total_steps / CHECKPOINTS))
    log_every = max(1, min(10, total_steps // 20))
    fingerprint = _fingerprint(data, config, method)

    # ---- state that a checkpoint carries -----------------------------------------------------
    run = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "order": None,
        "best_epoch": 0,
        "bad_epochs": 0,
        "stopped_early": False,
        "base_val": None,
        "best_val": None,
        "best_state": None,  # None: the base's own weights, which a resume rebuilds anyway
        "history": [],
    }
    checkpoint = work_dir / CHECKPOINT_FILE
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != fingerprint:
            raise TrainingError(
                "the checkpoint of this job was written for other data or settings; start a new job"
            )
        trainee.load_state(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        run = saved["run"]
    elif len(val_set):  # the base model is epoch 0: fine-tuning must beat it
        run["base_val"] = run["best_val"] = validate(
            trainee, loss_fn, data.kind, val_ids, val_scores, config.batch_size, should_stop
        )

    def score(val: dict) -> float:  # higher is better; NaN never wins
        s = -val["loss"] if watch_loss else val.get(metric_name, float("nan"))
        return s if math.isfinite(s) else -math.inf

    def save_checkpoint() -> None:
        _save_checkpoint(
            work_dir,
            {
                "fingerprint": fingerprint,
                "model": trainee.state(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "run": run,
            },
        )

    def report(logs: list, train_loss: float | None, epoch: int) -> None:
        latest = run["history"][-1] if run["history"] else run["base_val"]
        losses_seen = [h["loss"] for h in run["history"]] + (
            [run["base_val"]["loss"]] if run["base_val"] else []
        )
        on_progress(
            Progress(
                epoch=epoch,
                step=run["step"],
                total_steps=total_steps,
                train_loss=train_loss,
                val_loss=latest["loss"] if latest else None,
                best_val_loss=min(losses_seen) if losses_seen else None,
                learning_rate=scheduler.get_last_lr()[0],
                logs=logs,
            )
        )

    started = time.monotonic()
    bad_batches, window_losses, train_loss = 0, [], None
    report([], None, min(run["epoch"] + 1, config.epochs))  # the step budget, before step 1
    while run["epoch"] < config.epochs and not run["stopped_early"]:
        epoch = run["epoch"]
        if run["order"] is None:
            run["order"] = [
                b.tolist()
                for b in epoch_batches(
                    len(train_set), config.batch_size, config.seed, epoch, row_len
                )
            ]
        order = run["order"]
        trainee.train()
        optimizer.zero_grad(set_to_none=True)
        for b in range(run["batch"], len(order)):
            if should_stop():
                raise Cancelled()
            # ---- forward: embed the batch's distinct texts once, then the loss on them
            rows = np.asarray(order[b])
            uniq, inv = np.unique(train_ids[rows], return_inverse=True)
            emb = trainee.embed(uniq)  # (distinct texts, D)
            inv = inv.reshape(len(rows), -1)  # (B, columns): row of emb for each text
            loss = batch_loss(
                loss_fn, emb, inv, None if train_scores is None else train_scores[rows]
            )
            value = float(loss.detach())

            # ---- divergence: NaN or a huge loss several batches running fails the job
            finite = math.isfinite(value)
            bad_batches = bad_batches + 1 if (not finite or value > DIVERGED_LOSS) else 0
            if bad_batches >= DIVERGED_BATCHES:
                raise TrainingError(
                    f"training diverged at step {run['step']} (loss {value:.4g} for {DIVERGED_BATCHES} "
                    f"batches in a row); lower learning_rate (now {lr:g}) or max_grad_norm "
                    f"(now {config.max_grad_norm:g}), or check the data for broken rows"
                )

            # ---- backward: accumulate; a NaN batch adds nothing
            if finite:
                (loss / accum).backward()
                window_losses.append(value)
            if (b + 1) % accum and b + 1 < len(order):
                continue

            # ---- clip, step, schedule
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            run["step"] += 1
            run["batch"] = b + 1

            # ---- log, checkpoint
            if run["step"] % log_every == 0 and window_losses:
                train_loss = float(np.mean(window_losses))
                window_losses = []
                logs = [
                    ("train", "loss", train_loss),
                    ("train", "learning_rate", scheduler.get_last_lr()[0]),
                ]
                report(logs, train_loss, epoch + 1)
            if run["step"] % checkpoint_every == 0:
                save_checkpoint()

        # ---- validate, keep the best, stop early when it stops improving
        logs = []
        if len(val_set):
            val = validate(
                trainee, loss_fn, data.kind, val_ids, val_scores, config.batch_size, should_stop
            )
            run["history"].append(val)
            logs = [
                ("val", k, float(v))
                for k, v in val.items()
                if isinstance(v, float) and math.isfinite(v)
            ]
            if score(val) > score(run["best_val"]):
                run["best_val"], run["best_epoch"], run["bad_epochs"] = val, epoch + 1, 0
                run["best_state"] = trainee.state()
            else:
                run["bad_epochs"] += 1
                patience = config.early_stopping_patience
                run["stopped_early"] = (
                    0 < patience <= run["bad_epochs"] and epoch + 1 < config.epochs
                )
        else:  # nothing to validate on: the last epoch is the model
            run["best_epoch"] = epoch + 1
        run["epoch"], run["batch"], run["order"] = epoch + 1, 0, None
        save_checkpoint()
        report(logs, train_loss, epoch + 1)

    # ---- the best weights (the base's own if no epoch beat it) become the artifact
    if len(val_set):
        best = run["best_state"]
        trainee.load_state(best if best is not None else trainee.initial)
    trainee.train(False)
    trainee.save(output_dir, config, base_model_id or str(base_folder), base_folder)
    metrics = _summary(
        run, data.kind, metric_name, loss_name, adapter_type, encoder.dimensions, config, lr
    )
    metrics.update(
        n_train=len(train_set),
        n_validation=len(val_set),
        total_steps=total_steps,
        train_seconds=round(time.monotonic() - started, 2),
    )
    return TrainResult(
        output_dir=output_dir,
        adapter_type=adapter_type,
        loss=loss_name,
        dimensions=encoder.dimensions,
        best_epoch=run["best_epoch"],
        epochs_run=run["epoch"],
        stopped_early=run["stopped_early"],
        metrics=metrics,
    )


def _summary(
    run: dict,
    kind: str,
    metric_name: str,
    loss_name: str,
    adapter_type: str,
    dim: int,
    config: FineTuneConfig,
    lr: float,
) -> dict:
    """The job's metrics: base and fine-tuned validation figures side by side, and the delta."""
    base, tuned = run["base_val"], run["best_val"]
    out = {
        "metric": metric_name,
        "loss": loss_name,
        "adapter_type": adapter_type,
        "dimensions": dim,
        "learning_rate": lr,
        "best_epoch": run["best_epoch"],
        "epochs_run": run["epoch"],
        "stopped_early": run["stopped_early"],
        "early_stopping_metric": config.early_stopping_metric,
        "epochs": [{k: _json_number(v) for k, v in h.items()} for h in run["history"]],
    }
    if base is None:
        out.update(
            base=None,
            fine_tuned=None,
            delta=None,
            improved=None,
            note="no validation rows (too few rows or validation_fraction 0): the last epoch was kept",
        )
        return out
    pick = (
        ("loss", metric_name, "pearson")
        if kind == "scored_pairs"
        else ("loss", metric_name, "mrr_at_10", "recall_at_10")
    )
    rename = {"loss": "val_loss"}
    out["base"] = {rename.get(k, k): _json_number(base.get(k)) for k in pick}
    out["fine_tuned"] = {rename.get(k, k): _json_number(tuned.get(k)) for k in pick}
    out["delta"] = {
        rename.get(k, k): _json_number(tuned[k] - base[k]) if k in base and k in tuned else None
        for k in pick
    }
    out["improved"] = run["best_epoch"] > 0
    out["note"] = (
        None
        if out["improved"]
        else (
            f"no epoch beat the base model on validation {config.early_stopping_metric}, so the "
            "fine-tuned model equals its base; try more data, another learning_rate or more epochs"
        )
    )
    return out
