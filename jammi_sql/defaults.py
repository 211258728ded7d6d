"""Defaults by shape: what a fine_tune config key left NULL means, what a head's trials try,
and which settings a shape cannot take.

One table, read by ``FineTuneConfig`` (help text, resolution) and by the README (generated).
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidArgumentError

SHAPES = ("projection_head", "encoder_adapters", "full")
# Inference precision (jammi_sql.connect(precision=...)); auto: reduced where the hardware runs
# it natively and the calibration texts keep cosine >= MIN_COSINE to fp32, else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "onnx", "onnx-int8")
MIN_COSINE = 0.999
# What a config key left NULL means, per shape: one table, measured with benchmarks/quality.py
# on held-out splits of STSb and SciFact (see the README's "Defaults, and why"). A head trains on
# cached vectors, so it affords many epochs and several trials; the encoder shapes do not.
# lora_rank "dim" means the model's full dimension (a full-rank head, W = I + D).
SHAPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "projection_head": {
        "lora_rank": "dim",
        "learning_rate": 1e-3,
        "weight_decay": 30.0,
        "loraplus_lr_ratio": 1.0,
        "epochs": 10,
        "batch_size": 64,
        "trials": 4,
    },
    # Encoder shapes: batch 32 gives in-batch losses 31 negatives per anchor (batch 8 gained
    # nothing on SciFact), at a rate that moves the weights: adapters at 2e-4 or full at 2e-5
    # stayed at the base on SciFact; 2e-3 adapters lost 0.026 there. LoRA+ (B, zero at the
    # start, learns 8x faster than A) raised query/value adapters on five SciFact tuning folds
    # from +0.018 to +0.028 mean NDCG@10 (better on three folds, level on two). Five epochs rather
    # than three (SciFact trains only 17 steps an epoch) raised that to +0.036 mean; on STS-B dev
    # it changed nothing but the time (+0.014 either way). Rank 16 rather than 8 (same time):
    # +0.040 against +0.036 mean on the five folds (on a GPU; better on four), +0.060 against
    # +0.055 on the STSb tuning split.
    "encoder_adapters": {
        "lora_rank": 16,
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "loraplus_lr_ratio": 8.0,
        "epochs": 5,
        "batch_size": 32,
        "trials": 1,
    },
    "full": {
        "lora_rank": None,  # no adapter: every weight trains
        "learning_rate": 5e-5,
        "weight_decay": 0.01,
        "loraplus_lr_ratio": None,  # no adapter
        "epochs": 3,
        "batch_size": 32,
        "trials": 1,
    },
}
BY_SHAPE = tuple(SHAPE_DEFAULTS["full"])
# The shape fine_tune trains when neither method nor target_modules is given, by the kind of
# data its columns name. A projection head reweights what the model already encodes: on
# retrieval pairs that is the largest gain for seconds of training, but on similarity data it
# gains in-distribution only (STS-B dev +0.002; every head at or below the base on STSb sources
# it never saw) while query/value adapters teach the encoder new similarity (+0.015 on STS-B
# dev, +0.028 on those unseen sources). See the README's "Defaults, and why".
KIND_SHAPES: dict[str, dict[str, Any]] = {
    "scored_pairs": {
        "method": "lora",
        "target_modules": ["query", "value"],
        "why": "scored pairs: a projection head gains on pairs like its training pairs only; "
        "query/value adapters carry similarity to texts the job never saw",
    },
    "pairs": {
        "method": "lora",
        "target_modules": [],
        "why": "retrieval pairs: a projection head on cached vectors trains in seconds and "
        "gained the most on held-out retrieval",
    },
    "triplets": {
        "method": "lora",
        "target_modules": [],
        "why": "triplets: a projection head on cached vectors trains in seconds and gained the "
        "most on held-out retrieval",
    },
}
# Defaults of a shape that differ by data kind (over SHAPE_DEFAULTS; a key the user set wins).
# Adapters on scored pairs: three epochs at batch 16 and half the learning rate (CoSENT
# compares every pair of the batch, so it needs no large batch). Seeds 42, 1, 2 on STS-B dev:
# +0.0173, +0.0147, +0.0139; on STSb sources the job never saw (deft-forum, deft-news; quality.py
# --tune --held-sources), seeds 42, 1: +0.0348, +0.0361. Two epochs at 1e-3 transferred as well
# (+0.037) but gained +0.010 on STS-B dev; three at 1e-3 gained +0.014 there and +0.025 on new
# sources. The README's "The shape by data" has the table.
KIND_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("encoder_adapters", "scored_pairs"): {"epochs": 3, "batch_size": 16, "learning_rate": 5e-4},
}
# Below this many rows a job, once validation has chosen its setting and epoch, trains that
# setting again on every row, the validation rows too (config ``refit``). On SciFact's 735
# training pairs the tenth held out for validation cost query/value adapters 0.013 NDCG@10
# held out (+0.002 trained on every row, -0.011 on nine tenths). Training again can up to double
# a job's time (adapters on SciFact: 625 s to 1,561 s on a 2-core CPU); on large sets a tenth
# more rows is worth little for that price.
REFIT_BELOW_ROWS = 5000
# What each further trial of a head changes, relative to the first (the defaults above); a key
# the user set is never changed. A trial is seconds on cached vectors, so trying is cheap. With
# AdamW, decay on the head's D (W = I + D) bounds how far the map moves from the identity (about
# 1/weight_decay per entry). A later trial must beat the winner so far by a clear margin
# (selection.trial_margin: one standard error on Spearman, 0.005 on NDCG@10), so near-ties keep
# the more conservative setting.
HEAD_TRIALS: dict[str, list[dict[str, Any]]] = {  # from the most conservative first
    # Scored pairs: a head validated on the training distribution prefers less decay, yet on a
    # held-out distribution (sts-dev) decay 10 lost 0.005 Spearman where decay 30 gained, so the
    # first trials keep 30. The last is nearly unregularised (the full-rank head at 1e-3
    # gained +0.043 on a similarity set of its own): kept only when validation shows it clearly
    # better (on STSb it led by 0.0075, under one standard error, and lost 0.016 on sts-dev).
    "cosent": [{}, {"learning_rate": 3e-3}, {"learning_rate": 3e-4}, {"weight_decay": 1.0}],
    "default": [
        {},
        {"learning_rate": 3e-3},
        {"learning_rate": 1e-3, "weight_decay": 10.0},
        {"learning_rate": 3e-3, "weight_decay": 10.0},
    ],
}


def shape_defaults(shape: str, kind: str | None = None) -> dict[str, Any]:
    """What a config key left NULL means for ``shape`` trained on data of ``kind``."""
    return {**SHAPE_DEFAULTS[shape], **KIND_DEFAULTS.get((shape, kind or ""), {})}


def shape_table() -> str:
    """The README's shape by data kind, per-shape defaults and the head's trials, generated
    from the tables above."""
    rows = [
        "| columns (data kind) | method and target_modules left unset train | why |",
        "|---|---|---|",
    ]
    for kind, rule in KIND_SHAPES.items():
        shape = (
            "encoder adapters on " + ", ".join(rule["target_modules"])
            if rule["target_modules"]
            else "a projection head"
        )
        rows.append(f"| {kind.replace('_', ' ')} | {shape} | {rule['why'].split(': ', 1)[1]} |")
    keys = [k for k in BY_SHAPE]
    rows += ["", "| shape | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    variants = [(shape, None, values) for shape, values in SHAPE_DEFAULTS.items()]
    variants += [(s, kind, shape_defaults(s, kind)) for (s, kind) in KIND_DEFAULTS]
    for shape, kind, values in variants:
        name = shape.replace("_", " ") + (f", {kind.replace('_', ' ')}" if kind else "")
        shown = [
            "the model's dimension"
            if values[k] == "dim"
            else "-"
            if values[k] is None
            else f"{values[k]:g}"
            for k in keys
        ]
        rows.append(f"| {name} | " + " | ".join(shown) + " |")
    rows += ["", "| head trial | scored pairs (CoSENT) | pairs and triplets |", "|---|---|---|"]
    lists = [HEAD_TRIALS["cosent"], HEAD_TRIALS["default"]]

    def text(changes: list[dict], i: int) -> str:
        if i >= len(changes):
            return "-"
        return ", ".join(f"{k} {v:g}" for k, v in changes[i].items()) or "the defaults above"

    for i in range(max(map(len, lists))):
        rows.append(f"| {i + 1} | {text(lists[0], i)} | {text(lists[1], i)} |")
    return "\n".join(rows)


def trial_configs(config: Any, user_set: set[str], dimensions: int, loss: str = "") -> list:
    """The settings a head's trials use: the resolved ``FineTuneConfig``, then ``HEAD_TRIALS``
    variations of the keys the user left unset; duplicates dropped, ``config.trials`` kept."""
    out: list = []
    for change in HEAD_TRIALS.get(loss, HEAD_TRIALS["default"]):
        change = {k: v for k, v in change.items() if k not in user_set}
        if "lora_rank" in change:
            change["lora_rank"] = min(change["lora_rank"], dimensions)
        candidate = config.replace(**change)
        if candidate not in out:
            out.append(candidate)
        if len(out) == config.trials:
            break
    return out


def check_for_shape(
    config: Any, adapter_type: str, dimensions: int | None, kind: str | None = None
) -> None:
    if config.applies_to == "query" and (
        adapter_type != "projection_head" or kind == "scored_pairs"
    ):
        raise InvalidArgumentError(
            "config applies_to = 'query' trains a projection head on the query side of "
            "(query, document) pairs or triplets; drop target_modules and method 'full', and "
            "give [anchor, positive] columns (scored pairs have no query side)"
        )
    if config.trials is not None and config.trials > 1 and adapter_type != "projection_head":
        raise InvalidArgumentError(
            f"config trials = {config.trials} is only for a projection head (which trains on "
            "cached vectors, so trying settings is cheap); drop trials, or target_modules and "
            "method 'full'"
        )
    if getattr(config, "workers", 1) > 1 and adapter_type == "projection_head":
        raise InvalidArgumentError(
            f"config workers = {config.workers} trains encoder adapters (target_modules) or "
            "method 'full' on Ray Train; a projection head trains on cached vectors in seconds "
            "in one process, so drop workers, or give target_modules or method := 'full'"
        )
    if config.loraplus_lr_ratio is not None and adapter_type == "full":
        raise InvalidArgumentError(
            f"config loraplus_lr_ratio = {config.loraplus_lr_ratio:g} sets how fast LoRA's B "
            "matrices learn, and method 'full' has none; drop loraplus_lr_ratio, or use "
            "method 'lora'"
        )
    if dimensions and max(config.matryoshka_dims, default=0) > dimensions:
        raise InvalidArgumentError(
            f"config matryoshka_dims = {config.matryoshka_dims} has a width above the model's "
            f"dimension ({dimensions}); use widths of at most {dimensions}"
        )
    if dimensions and config.lora_rank is not None and config.lora_rank > dimensions:
        raise InvalidArgumentError(
            f"config lora_rank = {config.lora_rank} is above the model's dimension ({dimensions}); "
            f"use at most {dimensions} (a head of rank {dimensions} is full rank)"
        )
