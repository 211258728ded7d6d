"""The training loop: one function, nanoGPT-style, reporting only through callbacks.

Three shapes share it:

- ``projection_head`` (method 'lora', no target_modules): the encoder stays frozen; every
  distinct text is encoded once and the head trains on the cached pooled vectors.
- ``encoder_adapters`` (method 'lora' with target_modules): LoRA inside the encoder; only
  ``lora_A``/``lora_B`` train.
- ``full`` (method 'full'): every encoder weight trains.

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

from . import artifacts
from . import losses as L
from .config import FineTuneConfig
from .data import TrainingSet, epoch_batches, resolve_loss, split
from .encoder import Encoder, length_sorted_batches, pick_device
from .errors import InvalidArgumentError, TrainingError
from .evaluate import retrieval_metrics, similarity_metrics
from .head import ProjectionHead
from .lora import inject_lora, lora_state_dict

# The learning rate each shape uses when the config leaves it unset (None): measured on
# STS-B (see benchmarks/quality.py). A head on frozen vectors wants a far larger rate than
# weights inside the encoder, and a full fine-tune a far smaller one.
DEFAULT_LEARNING_RATE = {"projection_head": 2e-3, "encoder_adapters": 2e-4, "full": 2e-5}
DIVERGED_LOSS = 100.0  # a loss above this (or NaN) ...
DIVERGED_BATCHES = 3  # ... this many micro-batches in a row fails the job
CHECKPOINTS = 10  # write a checkpoint about every 1/10 of the optimizer steps
CHECKPOINT_FILE = "checkpoint.pt"


class Cancelled(Exception):
    """``should_stop()`` said so; the latest checkpoint is kept for a resume."""


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


def learning_rate_for(adapter_type: str, config: FineTuneConfig) -> float:
    lr = getattr(config, "learning_rate", None)
    return float(lr) if lr is not None else DEFAULT_LEARNING_RATE[adapter_type]


# ---- the model being trained, one of three shapes --------------------------------------
class Trainee:
    """An encoder plus what trains in it; embeds texts by their index in ``token_ids``."""

    def __init__(
        self, encoder: Encoder, adapter_type: str, config: FineTuneConfig, token_ids, should_stop
    ):
        self.encoder, self.adapter_type, self.token_ids = encoder, adapter_type, token_ids
        transformer = encoder.transformer
        if adapter_type != "full":
            transformer.requires_grad_(False)
        if adapter_type == "projection_head":
            self.head = ProjectionHead(
                encoder.dimensions,
                config.lora_rank,
                config.lora_alpha,
                config.lora_dropout,
                config.use_rslora,
            ).to(encoder.device)
            encoder.head = self.head
            # The encoder never changes: encode each distinct text once. clone() leaves
            # inference mode, so the head can backpropagate into (not through) the cache.
            self.cache = _encode(encoder, token_ids, should_stop, pooled_only=True).clone()
            self.trainable: torch.nn.Module = self.head
        else:
            if adapter_type == "encoder_adapters":
                inject_lora(
                    transformer,
                    config.target_modules,
                    config.lora_rank,
                    config.lora_alpha,
                    config.lora_dropout,
                    config.use_rslora,
                    config.layers_to_transform,
                    config.rank_pattern,
                )
            self.trainable = transformer
        self.initial = self.state()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.trainable.parameters() if p.requires_grad]

    def state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights that train."""
        if self.adapter_type == "encoder_adapters":
            sd = lora_state_dict(self.trainable)
        else:
            sd = self.trainable.state_dict()
        return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.trainable.load_state_dict(state, strict=self.adapter_type != "encoder_adapters")

    def train(self, mode: bool = True) -> None:
        self.trainable.train(mode)

    def embed(self, ids: np.ndarray) -> torch.Tensor:
        """Training-mode embeddings (n, D) of the texts ``ids``, with gradients."""
        if self.adapter_type == "projection_head":
            return self.encoder.project(self.cache[torch.from_numpy(ids)])
        return self.encoder(self.encoder.collate([self.token_ids[i] for i in ids]))

    def embed_eval(self, ids: np.ndarray, should_stop) -> torch.Tensor:
        """Inference embeddings (n, D) of the texts ``ids``."""
        self.train(False)
        with torch.inference_mode():
            if self.adapter_type == "projection_head":
                return self.encoder.project(self.cache[torch.from_numpy(ids)])
            return _encode(self.encoder, [self.token_ids[i] for i in ids], should_stop)

    def save(
        self, output_dir: Path, config: FineTuneConfig, base_model_id: str, base_folder: Path
    ) -> None:
        common = dict(base_model_id=base_model_id, base_model_path=str(base_folder))
        if self.adapter_type == "full":
            artifacts.save(output_dir, "full", config={}, encoder=self.encoder, **common)
            return
        meta = {
            "lora_rank": config.lora_rank,
            "lora_alpha": config.lora_alpha,
            "use_rslora": config.use_rslora,
        }
        if self.adapter_type == "projection_head":
            meta["head_layers"] = ["projection"]
        else:
            meta = {
                "model_type": self.encoder.transformer.config.model_type,
                **meta,
                "target_modules": list(config.target_modules),
                "layers_to_transform": config.layers_to_transform,
                "rank_pattern": dict(config.rank_pattern),
                "backbone_dtype": "f32",
            }
        artifacts.save(output_dir, self.adapter_type, config=meta, tensors=self.state(), **common)


def _encode(
    encoder: Encoder, token_ids: list[list[int]], should_stop, pooled_only: bool = False
) -> torch.Tensor:
    """(n, D) embeddings of tokenized texts in length-sorted batches, in eval mode."""
    was_training = encoder.transformer.training
    encoder.transformer.eval()
    out: torch.Tensor | None = None
    with torch.inference_mode():
        for batch in length_sorted_batches([len(x) for x in token_ids]):
            if should_stop():
                raise Cancelled()
            v = encoder.pooled(encoder.collate([token_ids[i] for i in batch]))
            v = v if pooled_only else encoder.project(v)
            if out is None:
                out = torch.empty((len(token_ids), v.shape[1]), dtype=v.dtype, device=v.device)
            out[torch.from_numpy(batch).to(v.device)] = v
    encoder.transformer.train(was_training)
    assert out is not None
    return out


# ---- data: distinct texts, validation ----------------------------------------------------
def _index_texts(sets: list[TrainingSet], spec) -> tuple[list[str], list[np.ndarray]]:
    """Distinct texts (prompt included) and, per set, the (rows, columns) text-id array.

    Anchors of pairs and triplets get the model's query prompt, every other text its
    document prompt: the sides ``embed_query`` and ``embed`` use.
    """
    index: dict[str, int] = {}
    out = []
    for ts in sets:
        ids = np.empty((len(ts), ts.n_texts), dtype=np.int64)
        for c in range(ts.n_texts):
            prompt = (
                spec.query_prompt
                if (c == 0 and ts.kind != "scored_pairs")
                else spec.document_prompt
            )
            for r, row in enumerate(ts.rows):
                ids[r, c] = index.setdefault(prompt + row[c], len(index))
        out.append(ids)
    return list(index), out


def _batch_loss(
    loss_fn, emb: torch.Tensor, rows: np.ndarray, scores: np.ndarray | None
) -> torch.Tensor:
    """Loss of one batch: ``rows`` (B, columns) says which row of ``emb`` embeds each text.

    Equal rows mean equal texts, which is how in-batch negatives recognise duplicates.
    """
    index = torch.from_numpy(rows).to(emb.device)
    columns = [emb[index[:, c]] for c in range(rows.shape[1])]
    s = torch.from_numpy(scores).to(emb.device) if scores is not None else None
    return L.compute(loss_fn, columns, s, [index[:, c] for c in range(rows.shape[1])])


def _validate(
    trainee: Trainee, loss_fn, kind: str, ids: np.ndarray, scores, batch_size: int, should_stop
) -> dict:
    """Validation loss and metric: Spearman for scored pairs, retrieval for the rest."""
    uniq = np.unique(ids)
    emb = trainee.embed_eval(uniq, should_stop)  # (U, D), rows in uniq order
    pos = np.searchsorted(uniq, ids)  # (n, k): row of each text in emb
    with torch.inference_mode():
        batch_losses = [
            float(
                _batch_loss(
                    loss_fn,
                    emb,
                    pos[i : i + batch_size],
                    None if scores is None else scores[i : i + batch_size],
                )
            )
            for i in range(0, len(ids), batch_size)
        ]
    vectors = emb.float().cpu().numpy()
    out = {"loss": float(np.mean(batch_losses))}
    if kind == "scored_pairs":
        m = similarity_metrics(vectors[pos[:, 0]], vectors[pos[:, 1]], scores)
        out.update(spearman=m["spearman"], pearson=m["pearson"])
    else:  # anchors retrieve among every positive (and negative) of the validation rows
        queries = np.unique(pos[:, 0])
        docs = np.unique(pos[:, 1:])
        relevant: dict[str, set[str]] = {}
        for row in pos:
            relevant.setdefault(f"q{row[0]}", set()).add(f"d{row[1]}")
        r = retrieval_metrics(
            vectors[queries],
            vectors[docs],
            [f"q{i}" for i in queries],
            [f"d{i}" for i in docs],
            relevant,
            ignore_identical_ids=False,
        )
        out.update({k: v for k, v in r.metrics.items() if k != "n_queries"})
    return out


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
    lr = learning_rate_for(adapter_type, config)
    watch_loss = config.early_stopping_metric == "val_loss"
    metric_name = "spearman" if data.kind == "scored_pairs" else "ndcg_at_10"

    # ---- data: split, distinct texts, tokens -----------------------------------------------
    train_set, val_set = split(data, config.validation_fraction, config.seed)
    torch.manual_seed(config.seed)
    encoder = Encoder.from_folder(base_folder, device)
    texts, (train_ids, val_ids) = _index_texts([train_set, val_set], encoder.spec)
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
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)

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
        "best_state": None,
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
        run["base_val"] = run["best_val"] = _validate(
            trainee, loss_fn, data.kind, val_ids, val_scores, config.batch_size, should_stop
        )
    if run["best_state"] is None:
        run["best_state"] = trainee.initial

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
            loss = _batch_loss(
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
            val = _validate(
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
            run["best_epoch"], run["best_state"] = epoch + 1, trainee.state()
        run["epoch"], run["batch"], run["order"] = epoch + 1, 0, None
        save_checkpoint()
        report(logs, train_loss, epoch + 1)

    # ---- the best weights (the base's own if no epoch beat it) become the artifact
    trainee.load_state(run["best_state"])
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
