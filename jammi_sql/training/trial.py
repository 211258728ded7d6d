"""One trial of a run: a fresh head (for a projection head), its optimizer, its schedule, and
the epochs that train it (forward, backward, clip, step, log, checkpoint, validate).

A run of an encoder shape is one trial; a projection head may run several on the same cached
vectors (see :func:`jammi_sql.defaults.trial_configs`). Reports only through ``on_progress``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import FineTuneConfig
from ..errors import TrainingError
from . import checkpoint, gradcache, selection
from . import losses as L
from .checkpoint import TrainState
from .dataset import epoch_batches
from .trainee import Cancelled, batch_loss

DIVERGED_LOSS = 100.0  # a loss above this (or NaN) ...
DIVERGED_BATCHES = 3  # ... this many micro-batches in a row fails the job
CHECKPOINTS = 10  # write a checkpoint about every 1/10 of the optimizer steps


@dataclass
class Progress:
    """What a run reports. ``step`` and ``epoch`` count through the job's whole plan (every
    trial's epochs, then at most the refit's), and ``total_steps`` is that plan's size, fixed
    at the start: a trial that stops early jumps ``step`` to where the next trial starts, so
    none of the three ever goes back."""

    epoch: int
    step: int
    total_steps: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    logs: list[tuple[str, str, float]] = field(default_factory=list)  # (split, name, value)
    trial_logs: list[tuple[int, int, str, float]] = field(
        default_factory=list
    )  # (trial, epoch, ...)


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


def _adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where this torch can (5x faster steps on CPU than the per-tensor default)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


def _groups(trainee, config: FineTuneConfig) -> list[dict]:
    """AdamW's parameter groups: matrices decay, biases and norms do not; LoRA's B matrices
    (``lora_B``, zero at step 0) learn at ``loraplus_lr_ratio`` times the rate (LoRA+, Hayou
    et al. 2024), so a short run moves them as far as A."""
    ratio = config.loraplus_lr_ratio or 1.0
    named = [(n, p) for n, p in trainee.trainable.named_parameters() if p.requires_grad]
    b = {id(p) for n, p in named if ".lora_B." in f".{n}" and p.ndim >= 2}
    groups = [
        {"params": [p for _, p in named if p.ndim >= 2 and id(p) not in b]},
        {"params": [p for _, p in named if id(p) in b], "lr": config.learning_rate * ratio},
        {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0},
    ]
    for g in groups:
        g.setdefault("weight_decay", config.weight_decay)
    return [g for g in groups if g["params"]]


class Run:
    """One trial: a fresh head (for a projection head), its optimizer and its schedule."""

    def __init__(self, setup, config: FineTuneConfig, trial: int, judged: bool):
        self.setup, self.config, self.trial, self.judged = setup, config, trial, judged
        self.trainee, self.should_stop = setup.trainee, setup.should_stop
        self.lr = config.learning_rate
        if self.trainee.shape.cached:  # each trial of settings starts from the base
            torch.manual_seed(config.seed + trial)  # dropout's masks
            self.trainee.restart(config, config.seed + trial)
        # ---- optimizer (no weight decay on biases and norms; LoRA+ rate for B)
        self.params = self.trainee.parameters()
        self.optimizer = _adamw(_groups(self.trainee, config), self.lr)
        # ---- schedule: step budget, warmup (at most a tenth of the steps), decay
        self.accum = config.gradient_accumulation_steps
        self.total_steps = setup.steps(config)
        warmup = min(config.warmup_steps, self.total_steps // 10)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(config.lr_schedule, warmup, self.total_steps)
        )
        self.planned = self.total_steps  # steps this run will take (a refit stops early)
        self.checkpoint_every = max(1, round(self.total_steps / CHECKPOINTS))
        self.log_every = max(1, min(10, self.total_steps // 20))
        self.bad_batches, self.window, self.train_loss = 0, [], None
        # where this run sits in the job's plan (see Progress); run_training places it
        self.steps_before, self.epochs_before, self.plan_steps = 0, 0, self.total_steps

    def score(self, val: dict) -> float:
        """Higher is better; NaN never wins."""
        watch_loss = self.config.early_stopping_metric == "val_loss"
        s = -val["loss"] if watch_loss else val.get(self.setup.metric, float("nan"))
        return s if math.isfinite(s) else -math.inf

    def margin(self, state: TrainState) -> float:
        """How far below the best epoch so far a later epoch may score and still be kept: one
        standard error of the validation score (0 when watching the loss)."""
        if self.config.early_stopping_metric == "val_loss" or not state.history:
            return 0.0
        best = max(state.history, key=self.score).get(self.setup.metric, math.nan)
        return selection.noise(self.setup.metric, best, len(self.setup.val_set))

    def trial_margin(self, state: TrainState) -> float:
        """How much higher than the winner so far this trial must score to replace it."""
        watch_loss = self.config.early_stopping_metric == "val_loss"
        return selection.trial_margin(state, self.setup.metric, len(self.setup.val_set), watch_loss)

    def progress(self, state: TrainState, logs: list, epoch: int) -> Progress:
        latest = state.history[-1] if state.history else state.base_val
        seen = [h["loss"] for h in state.history] + (
            [state.base_val["loss"]] if state.base_val else []
        )
        return Progress(
            epoch=self.epochs_before + epoch,
            step=self.steps_before + state.step,
            total_steps=self.plan_steps,
            train_loss=self.train_loss,
            val_loss=latest["loss"] if latest else None,
            best_val_loss=min(seen) if seen else None,
            logs=logs,
        )

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, gradcache.Backward]:
        """Forward: embed the batch's distinct texts once, then the loss on them; returns the
        loss and its backward pass (GradCache's, with ``mini_batch_size``)."""
        setup = self.setup
        if setup.group is not None:
            return gradcache.plain(self.shared_batch(rows))
        uniq, inv = np.unique(setup.train_ids[rows], return_inverse=True)
        inv = inv.reshape(len(rows), -1)  # (B, columns): row of emb for each text
        scores = None if setup.train_scores is None else setup.train_scores[rows]

        def loss_of(emb: torch.Tensor) -> torch.Tensor:  # emb: (distinct texts, D)
            return batch_loss(setup.loss_fn, emb, inv, scores)

        mini = self.config.mini_batch_size
        if mini is None or mini >= len(uniq):
            return gradcache.plain(loss_of(self.trainee.embed(uniq)))
        lengths = np.array([len(self.trainee.token_ids[i]) for i in uniq])
        return gradcache.cached(self.trainee.embed, uniq, lengths, mini, loss_of)

    def shared_batch(self, rows: np.ndarray) -> torch.Tensor:
        """The loss of the whole batch ``rows`` when workers share it (DDP): this worker embeds
        its share, the embeddings of every share are gathered with their gradients, and the
        loss runs on all of them, so in-batch negatives span the whole batch. Every worker
        computes the same loss; the gathered gradients come back to each share, and DDP's
        average over the workers makes the step the one-process step at this batch."""
        setup, group = self.setup, self.setup.group
        mine = group.share(rows)
        # A worker without rows (a last batch smaller than the workers) still runs the model
        # on one row and keeps none of it: DDP waits for every worker's gradients.
        ids = setup.train_ids[mine if len(mine) else rows[:1]]  # (rows, columns)
        uniq, inv = np.unique(ids, return_inverse=True)
        emb = self.trainee.embed(uniq)  # (distinct texts, D)
        local = emb[torch.from_numpy(inv.reshape(ids.shape)).to(emb.device)][: len(mine)]
        full = group.gather(local, len(rows))  # (B, columns, D), rows in ``rows`` order
        text_ids = torch.from_numpy(setup.train_ids[rows]).to(emb.device)  # equal ids: equal texts
        scores = setup.train_scores
        s = None if scores is None else torch.from_numpy(scores[rows]).to(emb.device)
        columns = range(full.shape[1])
        return L.compute(
            setup.loss_fn, [full[:, c] for c in columns], s, [text_ids[:, c] for c in columns]
        )

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

    def attach(
        self, write: Callable[[dict], None], on_progress: Callable[[Progress], None]
    ) -> None:
        """Where checkpoints (:func:`checkpoint.pack`'s) and progress reports go."""
        self.write, self.on_progress = write, on_progress

    def place(self, steps_before: int, epochs_before: int, plan_steps: int) -> None:
        """Put this run in the job's plan: the steps and epochs planned before it, and all."""
        self.steps_before, self.epochs_before, self.plan_steps = (
            steps_before,
            epochs_before,
            plan_steps,
        )

    def save(self, state: TrainState) -> None:
        setup = self.setup
        self.write(
            checkpoint.pack(setup.fingerprint, self.trainee, self.optimizer, self.scheduler, state)
        )

    def report(self, state: TrainState, logs: list, epoch: int | None = None, trials=None) -> None:
        progress = self.progress(state, logs, epoch or state.epoch + 1)
        self.on_progress(dataclasses.replace(progress, trial_logs=trials or []))

    def train_epoch(self, state: TrainState) -> None:
        cfg = self.config
        if state.order is None:
            batches = epoch_batches(
                len(self.setup.train_set), cfg.batch_size, cfg.seed, state.epoch, self.setup.row_len
            )
            state.order = [b.tolist() for b in batches]
        self.trainee.train()
        self.optimizer.zero_grad(set_to_none=True)
        for b in range(state.batch, len(state.order)):
            if self.should_stop():
                raise Cancelled()
            steps = not ((b + 1) % self.accum and b + 1 < len(state.order))
            with self.trainee.syncing(steps):  # DDP averages gradients on a step's last batch
                loss, backward = self.batch(np.asarray(state.order[b]))
                value = float(loss.detach())
                if self.check_divergence(value, state.step):  # a NaN batch adds nothing
                    backward(1 / self.accum)
                    self.window.append(value)
            if not steps:
                continue
            self.step()
            state.step, state.batch = state.step + 1, b + 1
            if state.step % self.log_every == 0 and self.window:
                self.train_loss, self.window = float(np.mean(self.window)), []
                lr = self.scheduler.get_last_lr()[0]
                self.report(
                    state, [("train", "loss", self.train_loss), ("train", "learning_rate", lr)]
                )
            if state.step % self.checkpoint_every == 0:
                self.save(state)

    def end_epoch(self, state: TrainState) -> list:
        """Validate, keep the best, stop early when it stops improving; returns the logs."""
        epoch, logs = state.epoch, []
        val = self.setup.validate()
        if val is not None:
            state.history.append(val)
            logs = [
                ("val", k, float(v))
                for k, v in val.items()
                if isinstance(v, float) and math.isfinite(v)
            ]
            earlier = [self.score(h) for h in state.history[:-1]]
            if not self.judged:  # validation cannot choose: the last epoch is the model
                state.best_val, state.best_epoch = val, epoch + 1
            elif selection.keeps_later(self.score(val), earlier, self.margin(state)):
                state.best_val, state.best_epoch = val, epoch + 1
                state.best_state = self.trainee.state()
            if self.judged and self.score(val) > max(earlier, default=-math.inf):
                state.bad_epochs = 0
            elif self.judged:
                state.bad_epochs += 1
                patience = self.config.early_stopping_patience
                state.stopped_early = (
                    0 < patience <= state.bad_epochs and epoch + 1 < self.config.epochs
                )
        else:  # nothing to validate on: the last epoch is the model
            state.best_epoch = epoch + 1
        state.epoch, state.batch, state.order = epoch + 1, 0, None
        return logs
