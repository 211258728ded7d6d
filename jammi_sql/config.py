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

from .defaults import (
    BY_SHAPE,
    KIND_SHAPES,
    REFIT_BELOW_ROWS,
    SHAPE_DEFAULTS,
    check_for_shape,
    shape_defaults,
)
from .errors import InvalidArgumentError

DEFAULT_METHOD = None  # by data kind: defaults.KIND_SHAPES
DEFAULT_TASK = "text_embedding"
DEFAULT_K = 10  # semantic_search and evaluate_retrieval
DEFAULT_CHUNK_OVERLAP = 32  # tokens neighbouring windows share (generate_text_embeddings)
DEFAULT_SIMILARITY_COLUMNS = ["text_a", "text_b", "score"]
LOSSES = ("auto", "cosent", "multiple_negatives_ranking", "triplet", "info_nce")
SCHEDULES = ("constant", "cosine_decay", "linear_decay")
METHODS = ("lora", "full")
TASKS = {"text_embedding": "text_embedding", "embedding": "text_embedding"}
EARLY_STOPPING_METRICS = ("val_loss", "val_metric")
FLOAT_KEYS = ("learning_rate", "weight_decay", "loraplus_lr_ratio")  # the rest of BY_SHAPE: ints
SIDES = ("both", "query")


def _by_shape_help(key: str, what: str) -> str:
    shown = ", ".join(
        f"{v} ({k.replace('_', ' ')})" for k, v in _shape_values(key).items() if v is not None
    )
    return f"{what}; NULL = by shape: {shown}"


def _shape_values(key: str) -> dict[str, Any]:
    return {shape: values[key] for shape, values in SHAPE_DEFAULTS.items()}


def _opt(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class FineTuneConfig:
    lora_rank: int | None = _opt(
        None,
        _by_shape_help(
            "lora_rank", "low-rank dimension; a head of rank >= the model's dimension is full rank"
        ),
    )
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
    learning_rate: float | None = _opt(None, _by_shape_help("learning_rate", "base learning rate"))
    epochs: int | None = _opt(None, _by_shape_help("epochs", "training epochs"))
    batch_size: int | None = _opt(None, _by_shape_help("batch_size", "micro-batch size"))
    trials: int | None = _opt(
        None,
        _by_shape_help(
            "trials",
            "settings a projection head tries on the same cached vectors, keeping the best on "
            "validation (each in jammi.job_metrics with split 'trial')",
        ),
    )
    applies_to: str = _opt(
        "both",
        "'both', or 'query': a projection head applied to query embeddings only (embed_query), "
        "so documents embedded with the base model stay valid and are never embedded again",
    )
    max_seq_length: int = _opt(512, "max tokens per text (never more than the model's own limit)")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimizer step")
    validation_fraction: float = _opt(0.1, "holdout fraction for early stopping and metrics")
    refit: bool | None = _opt(
        None,
        "once validation has chosen the trial and epoch, train that setting again on every row "
        "(the validation rows too) for that many epochs; NULL = on for sets of fewer than "
        f"{REFIT_BELOW_ROWS:,} rows, where the tenth held out costs quality (it can up to double "
        "the training time)",
    )
    early_stopping_patience: int = _opt(
        3,
        "epochs without validation improvement before stopping; the kept epoch's weights are restored",
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
        "auto",
        "'cosent', 'multiple_negatives_ranking', 'triplet', 'info_nce' (symmetric InfoNCE) "
        "(auto: from the columns)",
    )
    temperature: float = _opt(0.05, "info_nce's softmax temperature (0.05 = scale 20)")
    matryoshka_dims: list = _opt(
        [],
        "widths the loss also trains at, e.g. [256, 128, 64] (Matryoshka: the first d dimensions "
        "then work on their own); empty = the full width only",
    )
    mini_batch_size: int | None = _opt(
        None,
        "texts embedded at once with gradients (GradCache): batch_size can then exceed memory "
        "(more in-batch negatives) with the same gradients; NULL = the whole batch at once",
    )
    workers: int = _opt(
        1,
        "processes that train an encoder shape together on Ray Train (DDP; jammi-sql[ray]), "
        "each embedding its share of every batch: batch_size stays the global batch, in-batch "
        "negatives span all of it, and the result is that of one process; 1 = in this process",
    )
    weight_decay: float | None = _opt(
        None,
        _by_shape_help(
            "weight_decay", "AdamW weight decay (for a head: the pull back toward the identity)"
        ),
    )
    loraplus_lr_ratio: float | None = _opt(
        None,
        _by_shape_help(
            "loraplus_lr_ratio",
            "LoRA+: the adapters' B matrices learn at this multiple of learning_rate (A at "
            "learning_rate), which B, starting at zero, needs to move in a short run",
        ),
    )
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

        for key in ("max_seq_length", "gradient_accumulation_steps", "workers"):
            as_int(key, 1)
        for key in BY_SHAPE:  # NULL: the shape's default (see SHAPE_DEFAULTS)
            if getattr(self, key) is not None and key not in FLOAT_KEYS:
                as_int(key, 1)
        for key in ("warmup_steps", "early_stopping_patience", "seed"):
            as_int(key, 0)
        as_float("lora_alpha", 0.0, open_low=True)
        as_float("lora_dropout", 0.0, 1.0)
        if self.learning_rate is not None:
            as_float("learning_rate", 0.0, open_low=True)
        as_float("validation_fraction", 0.0, 0.9)
        if self.weight_decay is not None:
            as_float("weight_decay", 0.0)
        if self.loraplus_lr_ratio is not None:
            as_float("loraplus_lr_ratio", 0.0, open_low=True)
        as_float("max_grad_norm", 0.0, open_low=True)
        as_float("temperature", 0.0, open_low=True)
        if self.mini_batch_size is not None:
            as_int("mini_batch_size", 1)
            if self.workers > 1:
                raise InvalidArgumentError(
                    f"config mini_batch_size (GradCache) does not combine with workers = "
                    f"{self.workers} yet; drop mini_batch_size (the workers already share each "
                    "batch's activations among them), or train with workers 1"
                )
        if not isinstance(self.use_rslora, bool):
            raise bad("use_rslora", "true or false")
        if self.refit is not None and not isinstance(self.refit, bool):
            raise bad("refit", "true, false or NULL (by the set's size)")
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
        self._check_model_name(bad)
        self._check_retrieval_keys(bad)

    def _check_retrieval_keys(self, bad) -> None:
        dims = self.matryoshka_dims
        if isinstance(dims, int) and not isinstance(dims, bool):
            dims = self.matryoshka_dims = [dims]
        if not isinstance(dims, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims
        ):
            raise bad("matryoshka_dims", "a list of widths >= 1, e.g. [256, 128, 64]")
        self.matryoshka_dims = list(dims)
        if self.applies_to not in SIDES:
            raise bad("applies_to", "one of " + ", ".join(SIDES))

    def _check_model_name(self, bad) -> None:
        if self.model_name is None:
            return
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise bad("model_name", "a non-empty name")
        bad_chars = set(self.model_name) & set('\\:*?"<>|') or ".." in self.model_name
        if bad_chars or self.model_name.startswith("/"):
            raise bad("model_name", "a name of letters, digits, '-', '_', '.' and '/'")
        if len(self.model_name) > 200 or any(
            len(part.encode()) > 120 for part in self.model_name.split("/")
        ):
            raise bad(
                "model_name", "at most 200 characters (120 between slashes): it names a folder"
            )


def refits(config: FineTuneConfig, rows: int) -> bool:
    """Whether a job trains its chosen setting again on every row (``refit``; NULL: by size)."""
    return config.refit if config.refit is not None else rows < REFIT_BELOW_ROWS


def adapter_type_for(method: str, config: FineTuneConfig) -> str:
    """'full', 'encoder_adapters' (LoRA with target_modules) or 'projection_head'."""
    method = normalize_method(method)
    if method == "full":
        return "full"
    return "encoder_adapters" if config.target_modules else "projection_head"


def choose_shape(
    method: str | None, config: FineTuneConfig, kind: str
) -> tuple[str, FineTuneConfig, dict]:
    """The method and config a job trains, and why: with neither ``method`` nor
    ``target_modules`` given, the shape ``KIND_SHAPES`` names for data of ``kind``; anything
    the user gave wins. The third value is what the job's metrics say about the choice."""
    if method is None and not config.target_modules:
        rule = KIND_SHAPES[kind]
        config = config.replace(target_modules=list(rule["target_modules"]))
        shape = adapter_type_for(rule["method"], config)
        return rule["method"], config, {"trained": shape, "chosen_by": "data", "why": rule["why"]}
    method = normalize_method(method or "lora")
    shape = adapter_type_for(method, config)
    given = "method" if not config.target_modules else "target_modules"
    why = f"{given} given: {shape.replace('_', ' ')}"
    return method, config, {"trained": shape, "chosen_by": "user", "why": why}


def resolve(
    config: FineTuneConfig, adapter_type: str, dimensions: int, kind: str | None = None
) -> FineTuneConfig:
    """The config with every key left NULL filled in from ``SHAPE_DEFAULTS``.

    Raises a ``jammi:`` error for settings the shape or the model cannot take (a rank above the
    model's dimension, trials for an encoder shape).
    """
    check_for_shape(config, adapter_type, dimensions, kind)
    filled = {}
    for key, value in shape_defaults(adapter_type, kind).items():
        if getattr(config, key) is None and value is not None:
            filled[key] = dimensions if value == "dim" else value
    return config.replace(**filled)


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
