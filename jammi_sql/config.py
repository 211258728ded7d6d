"""FineTuneConfig: the ``config`` of ``fine_tune``, a dataclass that validates itself.

Each field's metadata holds its help text once; the README's options table and the
error messages are built from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgumentError

DEFAULT_METHOD = "lora"
DEFAULT_TASK = "text_embedding"
DEFAULT_K = 10  # semantic_search and evaluate_retrieval
DEFAULT_SIMILARITY_COLUMNS = ["text_a", "text_b", "score"]
LOSSES = ("auto", "cosent", "multiple_negatives_ranking", "triplet")
SCHEDULES = ("constant", "cosine_decay", "linear_decay")
METHODS = ("lora", "full")
TASKS = {"text_embedding": "text_embedding", "embedding": "text_embedding"}
EARLY_STOPPING_METRICS = ("val_loss", "val_metric")


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


def _rate_help() -> str:
    r = DEFAULT_LEARNING_RATE
    return (
        f"base learning rate; NULL = by method: {r['full']:g} for 'full', {r['encoder_adapters']:g} "
        f"for LoRA adapters, and for a projection head {r['projection_head', 'cosent']:g} with "
        f"CoSENT, {r['projection_head', 'multiple_negatives_ranking']:g} with in-batch negatives "
        "or triplets"
    )


def _opt(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class FineTuneConfig:
    lora_rank: int = _opt(8, "low-rank dimension")
    lora_alpha: float = _opt(
        16.0, "scaling factor (scaling = alpha / rank, or alpha / sqrt(rank) with use_rslora)"
    )
    lora_dropout: float = _opt(0.05, "dropout on the LoRA path")
    use_rslora: bool = _opt(False, "rank-stabilized scaling")
    target_modules: list = _opt(
        [],
        "module-name suffixes to inject LoRA into (query, value, ..., or all-linear); empty = projection head",
    )
    layers_to_transform: list | None = _opt(
        None, "0-based layer indices to inject into; NULL = every layer"
    )
    rank_pattern: dict = _opt(
        {}, "per-module rank overrides, keys matched as substrings of the module name"
    )
    learning_rate: float | None = _opt(None, _rate_help())
    epochs: int = _opt(3, "training epochs")
    batch_size: int = _opt(8, "micro-batch size")
    max_seq_length: int = _opt(512, "max tokens per text (never more than the model's own limit)")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimizer step")
    validation_fraction: float = _opt(0.1, "holdout fraction for early stopping and metrics")
    early_stopping_patience: int = _opt(
        3, "epochs without validation improvement before stopping; the best weights are restored"
    )
    early_stopping_metric: str = _opt(
        "val_metric",
        "what early stopping and the choice of the best epoch watch: 'val_metric' (Spearman for "
        "scored pairs, NDCG@10 otherwise) or 'val_loss'",
    )
    warmup_steps: int = _opt(100, "linear warmup from 0 to the base rate")
    lr_schedule: str = _opt(
        "cosine_decay", "'constant', 'cosine_decay' or 'linear_decay' after warmup"
    )
    embedding_loss: str = _opt(
        "auto", "'cosent', 'multiple_negatives_ranking', 'triplet' (auto: from the columns)"
    )
    weight_decay: float = _opt(0.01, "AdamW weight decay")
    max_grad_norm: float = _opt(1.0, "gradient clipping")
    seed: int = _opt(42, "same seed, same data, same machine: same weights")
    model_name: str | None = _opt(None, "the fine-tuned model's id (derived when omitted)")

    def __post_init__(self) -> None:
        self.validate()

    # ---- construction -------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | str | None) -> FineTuneConfig:
        """Build from a dict or JSON text; unknown keys are rejected with a suggestion.

        ``None`` values mean "use the default", which is what an omitted STRUCT field
        looks like after DuckDB unifies STRUCT literals.
        """
        if values is None or values == "":
            values = {}
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(
                    f"config is not valid JSON ({e.msg}); pass a STRUCT such as "
                    "{'epochs': 2} or a JSON object string"
                ) from None
        if not isinstance(values, dict):
            raise InvalidArgumentError(
                "config must be a STRUCT or a JSON object, e.g. {'epochs': 2}"
            )
        known = cls.keys()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise InvalidArgumentError(
                    f"unknown config key '{key}'; {hint}valid keys are {', '.join(known)}"
                )
        given = {
            k: v
            for k, v in values.items()
            if v is not None or k in ("layers_to_transform", "model_name")
        }
        return cls(**given)

    @classmethod
    def from_json(cls, text: str | None) -> FineTuneConfig:
        """From the JSON that SQL hands over: ``to_json`` of a STRUCT, or of a JSON string."""
        if text is None or not text.strip() or text.strip() == "null":
            return cls.from_mapping(None)
        try:
            value = json.loads(text)
            if isinstance(value, str):  # a JSON string passed where a STRUCT was expected
                value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(
                f"config is not valid JSON ({e.msg} at character {e.pos}); pass a STRUCT such as "
                "{'epochs': 2} or a JSON object string such as '{\"epochs\": 2}'"
            ) from None
        return cls.from_mapping(value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> FineTuneConfig:
        return dataclasses.replace(self, **changes)

    # ---- validation ---------------------------------------------------------------
    def validate(self) -> None:
        def bad(key: str, want: str) -> InvalidArgumentError:
            return InvalidArgumentError(
                f"config {key} = {getattr(self, key)!r} is invalid; it must be {want}"
            )

        def as_int(key: str, low: int) -> None:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < low:
                raise bad(key, f"an integer >= {low}")
            setattr(self, key, int(v))

        def as_float(
            key: str, low: float, high: float | None = None, open_low: bool = False
        ) -> None:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise bad(key, "a number")
            if (v <= low if open_low else v < low) or (high is not None and v >= high):
                rng = f"{'>' if open_low else '>='} {low}" + (
                    f" and < {high}" if high is not None else ""
                )
                raise bad(key, f"a number {rng}")
            setattr(self, key, float(v))

        for key in (
            "lora_rank",
            "epochs",
            "batch_size",
            "max_seq_length",
            "gradient_accumulation_steps",
        ):
            as_int(key, 1)
        for key in ("warmup_steps", "early_stopping_patience", "seed"):
            as_int(key, 0)
        as_float("lora_alpha", 0.0, open_low=True)
        as_float("lora_dropout", 0.0, 1.0)
        if self.learning_rate is not None:  # None: the method's own default (see train.py)
            as_float("learning_rate", 0.0, open_low=True)
        as_float("validation_fraction", 0.0, 0.9)
        as_float("weight_decay", 0.0)
        as_float("max_grad_norm", 0.0, open_low=True)
        if not isinstance(self.use_rslora, bool):
            raise bad("use_rslora", "true or false")
        if self.lr_schedule not in SCHEDULES:
            raise bad("lr_schedule", "one of " + ", ".join(SCHEDULES))
        if self.embedding_loss not in LOSSES:
            raise bad("embedding_loss", "one of " + ", ".join(LOSSES))
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise bad("early_stopping_metric", "one of " + ", ".join(EARLY_STOPPING_METRICS))
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if not isinstance(self.target_modules, (list, tuple)) or not all(
            isinstance(t, str) and t for t in self.target_modules
        ):
            raise bad("target_modules", "a list of module-name suffixes such as ['query', 'value']")
        self.target_modules = list(self.target_modules)
        if self.layers_to_transform is not None:
            if isinstance(self.layers_to_transform, int):
                self.layers_to_transform = [self.layers_to_transform]
            if not isinstance(self.layers_to_transform, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0
                for i in self.layers_to_transform
            ):
                raise bad("layers_to_transform", "NULL or a list of 0-based layer indices")
            self.layers_to_transform = sorted(set(self.layers_to_transform))
        if not isinstance(self.rank_pattern, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in self.rank_pattern.items()
        ):
            raise bad(
                "rank_pattern", "a map from module-name pattern to a rank >= 1, e.g. {'query': 16}"
            )
        if self.model_name is not None:
            if not isinstance(self.model_name, str) or not self.model_name.strip():
                raise bad("model_name", "a non-empty name")
            bad_chars = set(self.model_name) & set('\\:*?"<>|') or ".." in self.model_name
            if bad_chars or self.model_name.startswith("/"):
                raise bad("model_name", "a name of letters, digits, '-', '_', '.' and '/'")


def adapter_type_for(method: str, config: FineTuneConfig) -> str:
    """'full', 'encoder_adapters' (LoRA with target_modules) or 'projection_head'."""
    method = normalize_method(method)
    if method == "full":
        return "full"
    return "encoder_adapters" if config.target_modules else "projection_head"


def learning_rate_for(adapter_type: str, config: FineTuneConfig, loss: str | None = None) -> float:
    """The configured rate, or the default for this shape (and, for a head, this loss)."""
    if config.learning_rate is not None:
        return float(config.learning_rate)
    return DEFAULT_LEARNING_RATE.get((adapter_type, loss), DEFAULT_LEARNING_RATE[adapter_type])


def normalize_task(task: str) -> str:
    try:
        return TASKS[task]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown task '{task}'; use 'text_embedding' (alias 'embedding')"
        ) from None


def normalize_method(method: str) -> str:
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InvalidArgumentError(f"unknown method '{method}'{hint}; use 'lora' or 'full'")
    return method


def options_table() -> str:
    """The README's config table, generated from the dataclass."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(FineTuneConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "NULL" if default is None else json.dumps(default)
        rows.append(f"| {f.name} | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)
