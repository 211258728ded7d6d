"""The training loop: a short loop over named phases, reporting only through callbacks.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from . import losses as L
from .artifacts import CHECKPOINT_FILE
from .checkpoint import TrainState
from .config import (
    DEFAULT_LEARNING_RATE,
    FineTuneConfig,
    adapter_type_for,
    learning_rate_for,
)
from .data import TrainingSet, epoch_batches, resolve_loss, split
from .encoder import Encoder, pick_device
from .errors import TrainingError
from .trainee import Cancelled, Trainee, batch_loss, index_texts, validate

__all__ = [
    "CHECKPOINT_FILE",
    "DEFAULT_LEARNING_RATE",
    "Cancelled",
    "Progress",
    "TrainResult",
    "adapter_type_for",
    "learning_rate_for",
    "run_training",
]

DIVERGED_LOSS = 100.0  # a loss above this (or NaN) ...
DIVERGED_BATCHES = 3  # ... this many micro-batches in a row fails the job
CHECKPOINTS = 10  # write a checkpoint about every 1/10 of the optimizer steps


@dataclass
class Progress:
    epoch: int
    step: int
    total_steps: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
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


def _json_number(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


class _Run:
    """What one run is built from: the split and its tokens, the trainee, the loss, the
    optimizer and its schedule. Built once; a resume rebuilds it and loads a checkpoint."""

    def __init__(self, base_folder: Path, data: TrainingSet, config: FineTuneConfig, method: str,
                 device: torch.device, should_stop: Callable[[], bool]):  # fmt: skip
        self.config, self.kind, self.should_stop = config, data.kind, should_stop
        self.adapter_type = adapter_type_for(method, config)
        self.loss_name = resolve_loss(data.kind, config.embedding_loss)
        self.lr = learning_rate_for(self.adapter_type, config, self.loss_name)
        self.metric = "spearman" if data.kind == "scored_pairs" else "ndcg_at_10"
        self.fingerprint = _fingerprint(data, config, method)

        # ---- data: split, distinct texts, tokens
        self.train_set, self.val_set = split(data, config.validation_fraction, config.seed)
        torch.manual_seed(config.seed)
        self.encoder = Encoder.from_folder(base_folder, device)
        texts, (self.train_ids, self.val_ids) = index_texts(
            [self.train_set, self.val_set], self.encoder.spec
        )
        token_ids = self.encoder.tokenize(texts, config.max_seq_length)
        text_len = np.array([len(t) for t in token_ids])
        self.train_scores, self.val_scores = self.train_set.scores(), self.val_set.scores()
        # Length bucketing keeps padding low, except for in-batch negatives and cached vectors.
        bucket = (
            self.loss_name != "multiple_negatives_ranking"
            and self.adapter_type != "projection_head"
        )
        self.row_len = text_len[self.train_ids].max(axis=1) if bucket else None

        # ---- model, loss, optimizer (no weight decay on biases and norms)
        self.trainee = Trainee(self.encoder, self.adapter_type, config, token_ids, should_stop)
        self.loss_fn = L.build(self.loss_name)
        self.params = self.trainee.parameters()
        groups = [
            {
                "params": [p for p in self.params if p.ndim >= 2],
                "weight_decay": config.weight_decay,
            },
            {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer = _adamw([g for g in groups if g["params"]], self.lr)

        # ---- schedule: step budget, warmup (at most a tenth of the steps), decay
        self.accum = config.gradient_accumulation_steps
        batches_per_epoch = math.ceil(len(self.train_set) / config.batch_size)
        self.total_steps = config.epochs * math.ceil(batches_per_epoch / self.accum)
        warmup = min(config.warmup_steps, self.total_steps // 10)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(config.lr_schedule, warmup, self.total_steps)
        )
        self.checkpoint_every = max(1, round(self.total_steps / CHECKPOINTS))
        self.log_every = max(1, min(10, self.total_steps // 20))
        self.bad_batches, self.window, self.train_loss = 0, [], None

    def validate(self) -> dict | None:
        if not len(self.val_set):
            return None
        return validate(
            self.trainee, self.loss_fn, self.kind, self.val_ids, self.val_scores,
            self.config.batch_size, self.should_stop,
        )  # fmt: skip

    def score(self, val: dict) -> float:
        """Higher is better; NaN never wins."""
        watch_loss = self.config.early_stopping_metric == "val_loss"
        s = -val["loss"] if watch_loss else val.get(self.metric, float("nan"))
        return s if math.isfinite(s) else -math.inf

    def progress(self, state: TrainState, logs: list, epoch: int) -> Progress:
        latest = state.history[-1] if state.history else state.base_val
        seen = [h["loss"] for h in state.history] + (
            [state.base_val["loss"]] if state.base_val else []
        )
        return Progress(
            epoch=epoch,
            step=state.step,
            total_steps=self.total_steps,
            train_loss=self.train_loss,
            val_loss=latest["loss"] if latest else None,
            best_val_loss=min(seen) if seen else None,
            logs=logs,
        )

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """Forward: embed the batch's distinct texts once, then the loss on them."""
        uniq, inv = np.unique(self.train_ids[rows], return_inverse=True)
        emb = self.trainee.embed(uniq)  # (distinct texts, D)
        inv = inv.reshape(len(rows), -1)  # (B, columns): row of emb for each text
        scores = None if self.train_scores is None else self.train_scores[rows]
        return batch_loss(self.loss_fn, emb, inv, scores)

    def check_divergence(self, value: float, step: int) -> bool:
        """NaN or a huge loss several batches running fails the job; returns whether finite."""
        finite = math.isfinite(value)
        self.bad_batches = self.bad_batches + 1 if (not finite or value > DIVERGED_LOSS) else 0
        if self.bad_batches >= DIVERGED_BATCHES:
            raise TrainingError(
                f"training diverged at step {step} (loss {value:.4g} for {DIVERGED_BATCHES} batches in a row); lower "
                f"learning_rate (now {self.lr:g}) or max_grad_norm (now {self.config.max_grad_norm:g}), "
                "or check the data for broken rows"
            )
        return finite

    def step(self) -> None:
        """Clip, step, schedule."""
        torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_epoch(self, state: TrainState, save: Callable[[], None], report) -> None:
        cfg = self.config
        if state.order is None:
            batches = epoch_batches(
                len(self.train_set), cfg.batch_size, cfg.seed, state.epoch, self.row_len
            )
            state.order = [b.tolist() for b in batches]
        self.trainee.train()
        self.optimizer.zero_grad(set_to_none=True)
        for b in range(state.batch, len(state.order)):
            if self.should_stop():
                raise Cancelled()
            loss = self.batch(np.asarray(state.order[b]))
            value = float(loss.detach())
            if self.check_divergence(value, state.step):  # a NaN batch adds nothing
                (loss / self.accum).backward()
                self.window.append(value)
            if (b + 1) % self.accum and b + 1 < len(state.order):
                continue
            self.step()
            state.step, state.batch = state.step + 1, b + 1
            if state.step % self.log_every == 0 and self.window:
                self.train_loss, self.window = float(np.mean(self.window)), []
                lr = self.scheduler.get_last_lr()[0]
                report([("train", "loss", self.train_loss), ("train", "learning_rate", lr)])
            if state.step % self.checkpoint_every == 0:
                save()

    def end_epoch(self, state: TrainState) -> list:
        """Validate, keep the best, stop early when it stops improving; returns the logs."""
        epoch, logs = state.epoch, []
        val = self.validate()
        if val is not None:
            state.history.append(val)
            logs = [
                ("val", k, float(v))
                for k, v in val.items()
                if isinstance(v, float) and math.isfinite(v)
            ]
            if self.score(val) > self.score(state.best_val):
                state.best_val, state.best_epoch, state.bad_epochs = val, epoch + 1, 0
                state.best_state = self.trainee.state()
            else:
                state.bad_epochs += 1
                patience = self.config.early_stopping_patience
                state.stopped_early = (
                    0 < patience <= state.bad_epochs and epoch + 1 < self.config.epochs
                )
        else:  # nothing to validate on: the last epoch is the model
            state.best_epoch = epoch + 1
        state.epoch, state.batch, state.order = epoch + 1, 0, None
        return logs


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
    run = _Run(base_folder, data, config, method, device or pick_device(), should_stop)

    # ---- start: from the checkpoint, or from the base model, validated as epoch 0
    state = None
    if resume:
        state = checkpoint.load(
            work_dir, run.fingerprint, run.trainee, run.optimizer, run.scheduler
        )
    if state is None:
        state = TrainState()
        state.base_val = state.best_val = run.validate()  # fine-tuning must beat the base

    def save() -> None:
        checkpoint.save(work_dir, run.fingerprint, run.trainee, run.optimizer, run.scheduler, state)

    def report(logs: list, epoch: int | None = None) -> None:
        on_progress(run.progress(state, logs, epoch or state.epoch + 1))

    # ---- epochs: train, validate, keep the best, checkpoint, report
    started = time.monotonic()
    report([], min(state.epoch + 1, config.epochs))  # the step budget, before step 1
    while state.epoch < config.epochs and not state.stopped_early:
        run.train_epoch(state, save, report)
        logs = run.end_epoch(state)
        save()
        report(logs, state.epoch)

    # ---- the best weights (the base's own if no epoch beat it) become the artifact
    if len(run.val_set):
        run.trainee.load_state(
            state.best_state if state.best_state is not None else run.trainee.initial
        )
    run.trainee.train(False)
    run.trainee.save(output_dir, config, base_model_id or str(base_folder), base_folder)
    metrics = _summary(run, state)
    metrics.update(
        n_train=len(run.train_set),
        n_validation=len(run.val_set),
        total_steps=run.total_steps,
        train_seconds=round(time.monotonic() - started, 2),
    )
    return TrainResult(
        output_dir=output_dir,
        adapter_type=run.adapter_type,
        loss=run.loss_name,
        dimensions=run.encoder.dimensions,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stopped_early=state.stopped_early,
        metrics=metrics,
    )


def _summary(run: _Run, state: TrainState) -> dict:
    """The job's metrics: base and fine-tuned validation figures side by side, and the delta."""
    config = run.config
    base, tuned = state.base_val, state.best_val
    out = {
        "metric": run.metric,
        "loss": run.loss_name,
        "adapter_type": run.adapter_type,
        "dimensions": run.encoder.dimensions,
        "learning_rate": run.lr,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "early_stopping_metric": config.early_stopping_metric,
        "epochs": [{k: _json_number(v) for k, v in h.items()} for h in state.history],
    }
    if base is None:
        note = "no validation rows (too few rows or validation_fraction 0): the last epoch was kept"
        out.update(base=None, fine_tuned=None, delta=None, improved=None, note=note)
        return out
    retrieval = ("mrr_at_10", "recall_at_10")
    pick = ("loss", run.metric, *(("pearson",) if run.kind == "scored_pairs" else retrieval))
    rename = {"loss": "val_loss"}
    out["base"] = {rename.get(k, k): _json_number(base.get(k)) for k in pick}
    out["fine_tuned"] = {rename.get(k, k): _json_number(tuned.get(k)) for k in pick}
    out["delta"] = {
        rename.get(k, k): _json_number(tuned[k] - base[k]) if k in base and k in tuned else None
        for k in pick
    }
    out["improved"] = state.best_epoch > 0
    out["note"] = (
        None
        if out["improved"]
        else (
            f"no epoch beat the base model on validation {config.early_stopping_metric}, so the "
            "fine-tuned model equals its base; try more data, another learning_rate or more epochs"
        )
    )
    return out
