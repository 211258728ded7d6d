"""Checkpoints: the training state, the weights that train, the optimizer, the schedule, the RNG.

A checkpoint is written atomically (a temporary file, then a rename), so a crash mid-write
leaves the previous one whole. A resumed run that loads one ends with the same weights as an
uninterrupted run. The file's place comes from :mod:`jammi_sql.artifacts.layout`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artifacts import layout as artifacts
from ..errors import TrainingError


@dataclass
class TrainState:
    """Where a run is: what a checkpoint saves, and what the job's metrics are built from.

    A projection head may run several trials (settings) one after the other; the fields from
    ``epoch`` to ``history`` are the current trial's, ``trials`` and ``winner`` span them all.
    """

    trial: int = 0  # the trial running now (0-based)
    trials: list[dict] = field(default_factory=list)  # results of the finished trials
    winner: dict | None = None  # the best finished trial: index, epoch, val, weights
    steps_before: int = 0  # optimizer steps of the finished trials
    epoch: int = 0  # epochs finished
    batch: int = 0  # micro-batches finished in the current epoch
    step: int = 0  # optimizer steps so far
    order: list[list[int]] | None = None  # the current epoch's batches (row indices)
    best_epoch: int = 0  # the trained epoch kept so far (0: none yet, or the base kept)
    bad_epochs: int = 0  # epochs since the last improvement
    stopped_early: bool = False
    base_val: dict | None = None  # validation of the base model (epoch 0)
    best_val: dict | None = None  # validation of the best trained epoch
    best_state: dict | None = None  # weights of the best epoch; None: the base's own
    history: list[dict] = field(default_factory=list)  # validation after each epoch
    refit: dict | None = None  # once started: the winner trained again on every row (config refit)

    def next_trial(self) -> None:
        """Start the next trial from the base model, keeping the results of the others."""
        self.trial, self.steps_before = self.trial + 1, self.steps_before + self.step
        self.epoch = self.batch = self.step = self.best_epoch = self.bad_epochs = 0
        self.order, self.stopped_early, self.best_state, self.history = None, False, None, []
        self.best_val = None


def pack(fingerprint: str, trainee, optimizer, scheduler, state: TrainState) -> dict:
    """What a checkpoint holds: the weights that train, the optimizer, the schedule, the RNG."""
    return {
        "fingerprint": fingerprint,
        "model": trainee.state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "run": dataclasses.asdict(state),
    }


def write(work_dir: Path, saved: dict) -> None:
    """Write a packed checkpoint under a temporary name, then rename it into place."""
    path = artifacts.checkpoint_file(work_dir)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(saved, tmp)
    os.replace(tmp, path)


def save(work_dir: Path, fingerprint: str, trainee, optimizer, scheduler, state: TrainState):
    write(work_dir, pack(fingerprint, trainee, optimizer, scheduler, state))


def read(work_dir: Path, fingerprint: str) -> dict | None:
    """The latest checkpoint of this run, or None; one of other data or settings is an error."""
    path = artifacts.checkpoint_file(work_dir)
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["fingerprint"] != fingerprint:
        raise TrainingError(
            "the checkpoint of this job was written for other data or settings; start a new job"
        )
    return saved


def state_of(saved: dict | None) -> TrainState | None:
    return None if saved is None else TrainState(**saved["run"])


def restore(saved: dict, trainee, optimizer, scheduler, rank: int = 0) -> None:
    """Load a checkpoint's weights, optimizer, schedule and RNG into the objects given;
    ``rank``: which worker's RNG state to take, where a distributed run saved each one's."""
    trainee.load_state(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rngs = saved.get("rngs") or [saved["rng"]]
    torch.set_rng_state(rngs[rank] if rank < len(rngs) else saved["rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
