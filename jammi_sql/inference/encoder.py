"""Encoder: tokenize, forward, pool, normalize; length-sorted batches.

An :class:`Encoder` is a Hugging Face transformer used the way its sentence-transformers
config says (pooling mode, ``Normalize``, ``max_seq_length``, query prompt), optionally with
a projection head after pooling. It knows nothing of DuckDB.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len_tokens", "lasttoken")

# Micro-batches are cut so that (texts x longest text) stays under this many tokens: short
# texts go in large batches, long ones in small batches, and nothing pads far. Measured on
# 2 CPU cores, 4096 beat 2048, 8192 and 16384 (by 7% to 70%).
TOKEN_BUDGET = 4096
MAX_BATCH = 256


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class ModelSpec:
    """How a model folder wants to be used, read from its sentence-transformers config."""

    folder: Path
    pooling: str = "mean"
    normalize: bool = False
    max_seq_length: int = 512
    query_prompt: str = ""
    document_prompt: str = ""
    do_lower_case: bool = False
    dense: tuple[Path, ...] = ()  # sentence-transformers Dense module folders, in order

    @classmethod
    def read(cls, folder: str | Path) -> ModelSpec:
        folder = Path(folder)
        pooling, normalize, dense = "mean", False, []
        modules_file = folder / "modules.json"
        if modules_file.exists():
            for module in json.loads(modules_file.read_text()):
                kind = module.get("type", "").rsplit(".", 1)[-1]
                if kind == "Pooling":
                    pooling = _pooling_mode(folder / module.get("path", ""))
                elif kind == "Dense":
                    dense.append(folder / module.get("path", ""))
                elif kind == "Normalize":
                    normalize = True
        st_config = _read_json(folder / "sentence_bert_config.json")
        hf_config = _read_json(folder / "config.json")
        model_max = int(hf_config.get("max_position_embeddings", 512) or 512)
        max_len = int(st_config.get("max_seq_length") or model_max)
        prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
        return cls(
            folder=folder,
            pooling=pooling,
            normalize=normalize,
            max_seq_length=min(max_len, model_max),
            query_prompt=prompts.get("query", "") or "",
            document_prompt=prompts.get("document", "") or "",
            do_lower_case=bool(st_config.get("do_lower_case", False)),
            dense=tuple(dense),
        )


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _pooling_mode(pooling_dir: Path) -> str:
    config = _read_json(pooling_dir / "config.json")
    for key, mode in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
        ("pooling_mode_lasttoken", "lasttoken"),
        ("pooling_mode_mean_tokens", "mean"),
    ):
        if config.get(key):
            return mode
    return config.get("pooling_mode", "mean")


class Dense(nn.Module):
    """A sentence-transformers ``Dense`` module: ``activation(W x + b)`` (plus ``x`` with
    ``use_residual``), read from its folder (``config.json`` and the weights)."""

    def __init__(self, folder: Path):
        super().__init__()
        config = _read_json(folder / "config.json")
        self.linear = nn.Linear(
            int(config["in_features"]), int(config["out_features"]), bias=config.get("bias", True)
        )
        name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
        activation = getattr(nn, str(name).rsplit(".", 1)[-1], None)
        if not str(name).startswith("torch.") or not isinstance(activation, type):
            raise ValueError(f"the Dense module in '{folder}' has activation {name!r}")
        self.activation = activation()
        self.use_residual = bool(config.get("use_residual", False))
        if self.use_residual and self.linear.in_features != self.linear.out_features:
            self.residual = nn.Linear(self.linear.in_features, self.linear.out_features, bias=False)
        if (folder / "model.safetensors").is_file():
            from safetensors.torch import load_file

            state = load_file(str(folder / "model.safetensors"))
        else:
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        self.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Token states (B, T, H) and attention mask (B, T) -> one vector per text (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    if mode == "mean_sqrt_len_tokens":
        return summed / counts.sqrt()
    return summed / counts


class Encoder(nn.Module):
    """transformer -> pooling -> the folder's Dense modules -> optional head -> optional L2
    normalisation.

    A head with ``head_side`` 'query' applies to query embeddings only (``encode(query=True)``):
    documents embed exactly as with the base model.
    """

    def __init__(
        self, spec: ModelSpec, transformer: nn.Module, tokenizer, head: nn.Module | None = None
    ):
        super().__init__()
        self.spec = spec
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.head = head
        self.dense = nn.ModuleList(Dense(f) for f in spec.dense)  # part of "pooling" here
        self.head_side = "both"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.precision = "fp32"  # the transformer's weights (see jammi_sql.inference.precision)
        self.fidelity: float | None = None  # lowest calibration cosine to fp32, when measured
        self.backend = "torch"  # or "onnxruntime" (see jammi_sql.inference.onnx_backend)
        self.runtime: Callable[[dict, bool], np.ndarray] | None = None  # runs encode's batches

    # ---- loading ------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | Path, device: torch.device | None = None) -> Encoder:
        from ..hf import transformers

        AutoModel, AutoTokenizer, hf_logging = transformers(
            "AutoModel", "AutoTokenizer", "utils.logging"
        )

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in query output
        spec = ModelSpec.read(folder)
        tokenizer = AutoTokenizer.from_pretrained(str(spec.folder), local_files_only=True)
        if spec.do_lower_case and hasattr(tokenizer, "do_lower_case"):
            tokenizer.do_lower_case = True
        transformer = AutoModel.from_pretrained(str(spec.folder), local_files_only=True)
        encoder = cls(spec, transformer, tokenizer)
        return encoder.to(device or pick_device()).eval()

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dimensions(self) -> int:
        """The width of pooled vectors: the last Dense module's, else the transformer's."""
        if len(self.dense):
            return int(self.dense[-1].linear.out_features)
        return int(self.transformer.config.hidden_size)

    # ---- the pieces training reuses ------------------------------------------------
    def tokenize(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids per text, truncated to the model's limit (or a smaller one), unpadded."""
        limit = min(max_length or self.spec.max_seq_length, self.spec.max_seq_length)
        return self.tokenizer(
            list(texts),
            truncation=True,
            max_length=limit,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]

    def token_counts(self, texts: list[str]) -> np.ndarray:
        """Tokens per text, special tokens included, before any truncation."""
        ids = self.tokenizer(
            list(texts),
            truncation=False,
            verbose=False,  # no "longer than the maximum" warning: counting is the point
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    def windows(self, texts: list[str], size: int, overlap: int) -> tuple[np.ndarray, list[str]]:
        """Each text cut into windows of ``size`` tokens (the model's tokenizer) that overlap
        by ``overlap``, the last one ending at the text's end; a shorter text is one window.

        Returns the text index of every window, in order, and the windows' texts (spans of
        the original text, so nothing is lost to detokenisation).
        """
        offsets = self.tokenizer(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["offset_mapping"]
        counts = np.fromiter((len(o) for o in offsets), dtype=np.int64, count=len(offsets))
        step = size - overlap
        per_text = 1 + np.maximum(0, -(-(counts - size) // step))  # windows per text
        owner = np.repeat(np.arange(len(texts)), per_text)
        position = np.arange(len(owner)) - np.repeat(np.cumsum(per_text) - per_text, per_text)
        first = np.minimum(position * step, np.maximum(counts[owner] - size, 0))  # token index
        last = np.minimum(first + size, counts[owner]) - 1
        spans = [
            texts[t][offsets[t][a][0] : offsets[t][b][1]] if b >= a else texts[t]
            for t, a, b in zip(owner.tolist(), first.tolist(), last.tolist(), strict=True)
        ]
        return owner, spans

    def collate(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """Pad a micro-batch only to its own longest text."""
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        device = self.device
        return {
            "input_ids": torch.from_numpy(input_ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }

    def pooled(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled transformer output through the Dense modules, before the head: (B, H),
        float32 whatever the weights."""
        hidden = self.transformer(**features).last_hidden_state  # (B, T, H)
        out = pool(hidden.float(), features["attention_mask"], self.spec.pooling)
        for dense in self.dense:
            out = dense(out)
        return out

    def project(self, pooled: torch.Tensor, query: bool | torch.Tensor = False) -> torch.Tensor:
        """Head and normalisation applied to pooled vectors (B, H) -> (B, D).

        ``query``: whether the rows are queries (a bool, or a (B,) mask), for a query-side head.
        """
        out = pooled
        if self.head is not None and self.head_side == "query":
            if isinstance(query, torch.Tensor):
                out = torch.where(query[:, None], self.head(pooled), pooled)
            elif query:
                out = self.head(pooled)
        elif self.head is not None:
            out = self.head(pooled)
        return nn.functional.normalize(out, dim=-1) if self.spec.normalize else out

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.project(self.pooled(features))

    # ---- inference ----------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        *,
        query: bool = False,
        pooled_only: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings (n, D) float32 for ``texts``; duplicates are encoded once.

        ``pooled_only`` skips the head and normalisation (what a projection head trains on).
        ``on_batch(n)`` is told after each micro-batch how many distinct texts it finished.
        """
        prompt = self.spec.query_prompt if query else self.spec.document_prompt
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        inputs = [prompt + t for t in unique] if prompt else list(unique)
        out_dim = self.dimensions if pooled_only or self.head is None else None
        vectors: np.ndarray | None = None
        if not inputs:
            return np.zeros((0, out_dim or self.dimensions), dtype=np.float32)
        ids = self.tokenize(inputs)
        for batch in length_sorted_batches([len(x) for x in ids]):
            feats = self.collate([ids[i] for i in batch])
            if self.runtime is not None and not pooled_only:
                emb = self.runtime(feats, query)
            else:
                pooled = self.pooled(feats)
                emb = pooled if pooled_only else self.project(pooled, query)
                emb = emb.float().cpu().numpy()
            if vectors is None:
                vectors = np.empty((len(inputs), emb.shape[1]), dtype=np.float32)
            vectors[batch] = emb
            if on_batch is not None:
                on_batch(len(batch))
        assert vectors is not None
        return vectors[inverse.reshape(-1)]


def length_sorted_batches(lengths: list[int], budget: int = TOKEN_BUDGET) -> list[np.ndarray]:
    """Indices grouped into micro-batches of similar length, longest first.

    A batch grows while (size x its longest length) fits in ``budget`` tokens.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(lengths[order[start]], 1)
        size = max(1, min(MAX_BATCH, budget // longest))
        batches.append(order[start : start + size])
        start += size
    return batches
