"""The training loop: a short loop over named phases, reporting only through callbacks.

Three shapes share it (see :mod:`jammi_sql.training.trainee`): a projection head on cached vectors
(method 'lora', no target_modules), LoRA adapters inside the encoder (method 'lora' with
target_modules), and full fine-tuning (method 'full').

It knows nothing of DuckDB or job ids: the caller gives a :class:`~jammi_sql.training.dataset.TrainingSet`,
a config and folders, and hears back through ``on_progress`` and ``should_stop``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts.layout import CHECKPOINT_FILE
from ..config import BY_SHAPE, FineTuneConfig, adapter_type_for, refits, resolve
from ..defaults import trial_configs
from ..inference.encoder import Encoder, pick_device
from ..shapes import Shape, shape_named
from . import checkpoint, selection
from . import losses as L
from .checkpoint import TrainState
from .dataset import TrainingSet, resolve_loss, split, why_no_validation
from .trainee import Cancelled, Trainee, distractors, index_texts, validate
from .trial import Progress, Run

__all__ = ["CHECKPOINT_FILE", "Cancelled", "Progress", "TrainResult", "run_training"]

MAX_DISTRACTORS = 2000  # training documents that validation positives are ranked among


@dataclass
class Plan:
    """The steps and epochs each trial plans, and the refit's steps at most (any trial's
    setting may win it): what a job's progress counts through."""

    steps: list[int]
    epochs: list[int]
    refit_steps: int = 0

    @property
    def total_steps(self) -> int:
        return sum(self.steps) + self.refit_steps

    def before(self, trial: int) -> tuple[int, int]:
        """(steps, epochs) planned before ``trial`` (``len(steps)``: the refit)."""
        return sum(self.steps[:trial]), sum(self.epochs[:trial])


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


def _fingerprint(data: TrainingSet, config: FineTuneConfig, method: str) -> str:
    h = hashlib.sha256()
    settings = {k: v for k, v in config.to_dict().items() if k != "model_name"}
    h.update(json.dumps([settings, method, data.kind], sort_keys=True, default=str).encode())
    for row in data.rows:
        h.update(repr(row).encode())
    return h.hexdigest()


class Setup:
    """What every trial shares, built once: the split and its tokens, the trainee (with the
    head's cached vectors), the loss, the validation distractors and the fingerprint. The
    trials (``trial.Run``) read it; only a refit changes it (``use_every_row``)."""

    # ---- the job
    kind: str  # the rows' kind: scored_pairs, pairs or triplets
    adapter_type: str  # the shape's name, as artifacts and jammi.models store it
    shape: Shape
    config: FineTuneConfig  # the user's config with the shape's defaults filled in
    user_set: set[str]  # the settings the user gave (trials leave them as they are)
    loss_name: str
    loss_fn: torch.nn.Module
    metric: str  # what validation ranks epochs and trials by: spearman or ndcg_at_10
    fingerprint: str  # what a checkpoint must match to be resumed
    should_stop: Callable[[], bool]
    group: Any  # this worker's distributed.Group in a Ray Train run, else None
    # ---- the data: rows as ids into the distinct texts, and those texts' token counts
    train_set: TrainingSet
    val_set: TrainingSet
    n_train: int
    n_val: int
    train_ids: np.ndarray  # (rows, columns) text ids
    val_ids: np.ndarray
    train_scores: np.ndarray | None  # scored pairs' scores
    val_scores: np.ndarray | None
    text_len: np.ndarray  # tokens per distinct text
    row_len: np.ndarray | None  # a row's longest text, where batches are length-bucketed
    extra_docs: np.ndarray | None  # training documents validation ranks positives among
    # ---- the model
    encoder: Encoder
    trainee: Trainee

    def __init__(
        self,
        base_folder: Path,
        data: TrainingSet,
        config: FineTuneConfig,
        method: str,
        device: torch.device,
        should_stop: Callable[[], bool],
        group=None,
    ):
        """``group``: this worker's :class:`~jammi_sql.training.distributed.Group` when
        workers share the run (DDP), else None."""
        self.kind, self.should_stop, self.group = data.kind, should_stop, group
        self.adapter_type = adapter_type_for(method, config)
        self.shape = shape_named(self.adapter_type)
        self.loss_name = resolve_loss(data.kind, config.embedding_loss)
        self.metric = "spearman" if data.kind == "scored_pairs" else "ndcg_at_10"
        self.fingerprint = _fingerprint(data, config, method)
        self.user_set = {k for k in BY_SHAPE if getattr(config, k) is not None}

        # ---- data: split, distinct texts, tokens, distractors for retrieval validation
        self.train_set, self.val_set = split(data, config.validation_fraction, config.seed)
        self.n_train, self.n_val = len(self.train_set), len(self.val_set)
        torch.manual_seed(config.seed)
        self.encoder = Encoder.from_folder(base_folder, device)
        self.config = resolve(config, self.adapter_type, self.encoder.dimensions, data.kind)
        query_side = config.applies_to == "query"
        texts, (self.train_ids, self.val_ids) = index_texts(
            [self.train_set, self.val_set], self.encoder.spec, query_side
        )
        token_ids = self.encoder.tokenize(texts, config.max_seq_length)
        self.text_len = text_len = np.array([len(t) for t in token_ids])
        self.train_scores, self.val_scores = self.train_set.scores(), self.val_set.scores()
        self.extra_docs = None
        if self.kind != "scored_pairs":
            self.extra_docs = distractors(
                self.train_ids, self.val_ids, MAX_DISTRACTORS, config.seed
            )
        # Length bucketing keeps padding low, except for in-batch negatives and cached vectors.
        bucket = self.loss_name not in L.IN_BATCH_NEGATIVES and not self.shape.cached
        self.row_len = text_len[self.train_ids].max(axis=1) if bucket else None
        queries = None
        if query_side:  # the anchors: a text id is a query or a document, never both
            queries = np.unique(np.concatenate([self.train_ids[:, 0], self.val_ids[:, 0]]))
        # The most padded tokens one forward with gradients sees: each column of a (mini-)batch
        # padded to that column's longest text.
        rows = self.config.mini_batch_size or self.config.batch_size
        batch_tokens = rows * int(text_len[self.train_ids].max(axis=0, initial=0).sum())
        self.trainee = Trainee(
            self.encoder,
            self.adapter_type,
            self.config,
            token_ids,
            should_stop,
            queries,
            batch_tokens,
        )
        if group is not None:
            group.wrap(self.trainee)
        dims = [*self.config.matryoshka_dims, self.encoder.dimensions]
        self.loss_fn = L.build(
            self.loss_name, self.config.temperature, dims if len(set(dims)) > 1 else None
        )

    def trials(self) -> list[FineTuneConfig]:
        if not self.shape.cached:  # settings are tried where a trial costs seconds
            return [self.config]
        return trial_configs(self.config, self.user_set, self.encoder.dimensions, self.loss_name)

    def steps(
        self, config: FineTuneConfig, rows: int | None = None, epochs: int | None = None
    ) -> int:
        batches = math.ceil((rows or len(self.train_set)) / config.batch_size)
        return (epochs or config.epochs) * math.ceil(batches / config.gradient_accumulation_steps)

    def use_every_row(self) -> None:
        """Train on the validation rows too (a refit); there is nothing left to validate on."""
        self.train_set = TrainingSet(self.kind, self.train_set.rows + self.val_set.rows)
        self.train_ids = np.concatenate([self.train_ids, self.val_ids])
        if self.train_scores is not None:
            self.train_scores = np.concatenate([self.train_scores, self.val_scores])
        if self.row_len is not None:
            self.row_len = self.text_len[self.train_ids].max(axis=1)
        self.val_set = TrainingSet(self.kind, [])

    def validate(self) -> dict | None:
        if not len(self.val_set):
            return None
        return validate(
            self.trainee,
            self.loss_fn,
            self.kind,
            self.val_ids,
            self.val_scores,
            self.config.batch_size,
            self.should_stop,
            self.extra_docs,
        )


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

    Keys the config leaves NULL take the shape's defaults (``config.SHAPE_DEFAULTS``); a
    projection head tries ``trials`` settings and keeps the best on validation. Checkpoints go
    to ``work_dir``; with ``resume`` the run continues from the latest one and ends with the
    same weights an uninterrupted run would. Raises :class:`Cancelled` when ``should_stop()``
    turns true, :class:`TrainingError` when the loss diverges. It trains in this process
    whatever ``config.workers`` says: :func:`jammi_sql.training.distributed.run_distributed`
    takes the same arguments and runs the same loop on Ray Train workers.
    """
    base_folder, work_dir, output_dir = Path(base_folder), Path(work_dir), Path(output_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    base_model_id = base_model_id or str(base_folder)
    setup = Setup(base_folder, data, config, method, device or pick_device(), should_stop)
    saved = checkpoint.read(work_dir, setup.fingerprint) if resume else None
    best, weights, result = train(
        setup, data, config, saved, functools.partial(checkpoint.write, work_dir), on_progress
    )
    save_model(setup.trainee, best, weights, output_dir, base_model_id, base_folder)
    return dataclasses.replace(result, output_dir=output_dir)


def fingerprint(data: TrainingSet, config: FineTuneConfig, method: str) -> str:
    """What a checkpoint must have been written for, to be resumed."""
    return _fingerprint(data, config, method)


def train(
    setup: Setup,
    data: TrainingSet,
    config: FineTuneConfig,
    saved: dict | None,
    write: Callable[[dict], None],
    on_progress: Callable[[Progress], None],
) -> tuple[FineTuneConfig, dict, TrainResult]:
    """The trials, then the refit: (the kept setting, its weights, the result less its folder).

    ``saved``: the checkpoint to resume from; ``write`` takes each new one
    (:func:`checkpoint.pack`'s). Both ends of a run call it: :func:`run_training` in this
    process, and each Ray Train worker of a distributed run (training.distributed).
    """
    rank = setup.group.rank if setup.group is not None else 0
    # ---- start: from the checkpoint, or from the base model, validated as epoch 0
    state = checkpoint.state_of(saved) or TrainState()
    if saved is None:
        state.base_val = setup.validate()  # epoch 0: what fine-tuning is judged against
    empty = None if setup.n_val else why_no_validation(data, config.validation_fraction)
    reason = selection.cannot_judge(setup.n_val, state.base_val, setup.metric, empty)
    trials = setup.trials()[: 1 if reason else None]  # nothing to choose between: one setting
    refit = reason is None and refits(setup.config, len(data))
    started = time.monotonic()
    # ---- the plan that progress counts through: every trial's steps, then the refit's at most
    plan = Plan([setup.steps(c) for c in trials], [c.epochs for c in trials])
    plan.refit_steps = max(setup.steps(c, len(data)) for c in trials) if refit else 0
    shown: list[Progress] = []  # the latest report

    def report(p: Progress) -> None:
        shown[:] = [p]
        on_progress(p)

    # ---- trials, each: a fresh head, then epochs of train, validate, keep the best, checkpoint
    while state.trial < len(trials):
        run = Run(setup, trials[state.trial], state.trial, judged=reason is None)
        run.place(*plan.before(state.trial), plan.total_steps)
        if saved is not None and (state.step or state.batch or state.epoch):
            checkpoint.restore(saved, setup.trainee, run.optimizer, run.scheduler, rank)

        run.attach(write, report)
        run.report(state, [], min(state.epoch + 1, run.config.epochs))  # the step budget
        while state.epoch < run.config.epochs and not state.stopped_early:
            run.train_epoch(state)
            logs = run.end_epoch(state)
            run.save(state)
            run.report(state, logs, state.epoch)
        settings = {k: getattr(run.config, k) for k in BY_SHAPE if k != "trials"}
        result = selection.close_trial(
            state, settings, run.score, reason is None, setup.trainee.state, run.trial_margin(state)
        )
        run.report(
            state, [], state.epoch, _trial_logs(result, setup.metric) if len(trials) > 1 else []
        )
        state.next_trial()
        saved = None
        run.save(state)

    # ---- the winner's weights become the artifact (the base's own if it clearly did better),
    # ---- or, on a small set, the winner's setting trained again on every row
    if state.refit is None:
        selection.settle(state, setup.metric, setup.n_val, judged=reason is None)
    if refit and state.winner["epoch"] > 0:
        _refit(setup, state, trials[state.winner["trial"]], saved, write, report, plan, rank)
    if shown:  # the plan is done, whatever early stopping and the refit left out of it
        on_progress(dataclasses.replace(shown[0], step=plan.total_steps, logs=[], trial_logs=[]))
    return _finish(setup, state, trials, reason, time.monotonic() - started)


def _finish(
    setup: Setup, state: TrainState, trials: list, reason: str | None, seconds: float
) -> tuple[FineTuneConfig, dict, TrainResult]:
    """The kept setting, its weights (the base's own where it did better) and the result."""
    winner = state.winner
    best = trials[winner["trial"]]
    if setup.trainee.shape.cached:  # the kept trial's settings, for its weights below
        setup.trainee.restart(best, best.seed)
    weights = winner["weights"]
    if weights is None:
        weights = setup.trainee.initial
    metrics = selection.summary(state, setup.metric, setup.kind, reason, setup.n_val)
    if state.refit:
        metrics["refit"] = state.refit
        metrics["kept"]["why"] += (
            f"; then that setting trained again on all {state.refit['rows']} rows (the validation "
            f"rows too) for {state.refit['epochs']} epochs (refit): the validation figures are "
            "those of the run that chose it"
        )
    metrics.update(
        loss=setup.loss_name,
        adapter_type=setup.adapter_type,
        dimensions=setup.encoder.dimensions,
        settings={k: getattr(best, k) for k in BY_SHAPE},
        early_stopping_metric=best.early_stopping_metric,
        n_train=setup.n_train,
        n_validation=setup.n_val,
        device=str(setup.encoder.device),
        workers=setup.group.world if setup.group is not None else 1,
        activations="recomputed" if setup.trainee.recompute else "kept",  # trainee.py says when
        train_seconds=round(seconds, 2),
    )
    kept = state.trials[winner["trial"]]
    return (
        best,
        weights,
        TrainResult(
            output_dir=Path(),
            adapter_type=setup.adapter_type,
            loss=setup.loss_name,
            dimensions=setup.encoder.dimensions,
            best_epoch=winner["epoch"],
            epochs_run=kept["epochs_run"],
            stopped_early=kept["stopped_early"],
            metrics=metrics,
        ),
    )


def save_model(
    trainee: Trainee,
    best: FineTuneConfig,
    weights: dict,
    output_dir: Path,
    base_model_id: str,
    base_folder: Path,
) -> None:
    """Write the artifact: ``trainee`` holding ``weights``, in the format of its shape."""
    trainee.load_state(weights)
    trainee.train(False)
    trainee.save(output_dir, best, base_model_id, base_folder)


def _refit(
    setup: Setup,
    state: TrainState,
    config: FineTuneConfig,
    saved: dict | None,
    write: Callable[[dict], None],
    on_progress: Callable[[Progress], None],
    plan: Plan,
    rank: int = 0,
) -> None:
    """Train the winning setting again from the base, on every row, for the epochs validation
    kept (the same schedule, stopped there); ``state.refit`` marks the phase, so a killed job
    resumes inside it to the same weights."""
    winner = state.winner
    if state.refit is None:
        rows = setup.n_train + setup.n_val
        state.refit = {"trial": winner["trial"] + 1, "epochs": winner["epoch"], "rows": rows}
    setup.use_every_row()
    torch.manual_seed(config.seed)
    if not setup.trainee.shape.cached:  # a cached shape starts afresh in Run
        setup.trainee.load_state(setup.trainee.initial)
    run = Run(setup, config, winner["trial"], judged=False)
    run.planned = setup.steps(config, epochs=state.refit["epochs"])
    run.place(*plan.before(len(plan.steps)), plan.total_steps)
    if saved is not None and (state.step or state.batch or state.epoch):
        checkpoint.restore(saved, setup.trainee, run.optimizer, run.scheduler, rank)
    run.attach(write, on_progress)
    while state.epoch < state.refit["epochs"]:
        run.train_epoch(state)
        run.end_epoch(state)
        run.save(state)
        run.report(state, [], state.epoch)
    winner["weights"] = setup.trainee.state()


def _trial_logs(result: dict, metric: str) -> list[tuple[int, int, str, float]]:
    """A finished trial's settings and score, for jammi.job_metrics (split 'trial')."""
    trial, epoch = result["trial"], result["kept_epoch"]
    rows = [
        (trial, epoch, k, float(result[k]))
        for k in ("learning_rate", "weight_decay", "epochs", "batch_size", "lora_rank")
    ]
    value = result["val"].get(metric)
    if value is not None:
        rows.append((trial, epoch, f"val_{metric}", float(value)))
    return rows
