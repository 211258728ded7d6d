"""The model being trained, in one of three shapes, and what it needs to embed and validate.

- ``projection_head``: the encoder stays frozen; every distinct text is encoded once and the
  head trains on the cached pooled vectors, so an epoch costs almost nothing.
- ``encoder_adapters``: LoRA inside the encoder; only ``lora_A``/``lora_B`` train.
- ``full``: every encoder weight trains.

Texts are handled by index into one list of distinct texts, so a text that occurs many times is
tokenized once, embedded once per batch, and recognised as the same text by in-batch negatives.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from ..config import FineTuneConfig
from ..evaluation.metrics import retrieval_metrics, similarity_metrics
from ..inference.encoder import Encoder, length_sorted_batches
from ..shapes import shape_named
from . import losses as L
from .dataset import TrainingSet
from .memory import free_memory

RETRIEVAL_METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10", "map_at_100")
# A training batch is embedded in length-sorted micro-batches of at most this many padded
# tokens, so short queries are not padded to the length of long documents.
TRAIN_TOKEN_BUDGET = 8192
# The encoder shapes keep a batch's activations for the backward pass unless they would take
# more than 1/MEMORY_SHARE of the free memory; then they recompute them there (gradient
# checkpointing). benchmarks/train_step.py, 32 SciFact pairs at 256 tokens (MiniLM-L6, 2 CPU
# cores): kept, 5.3-5.5 GB peak RSS and 11.6 s a step; recomputed, 2.0-2.1 GB and 14-18 s.
MEMORY_SHARE = 3


def activation_bytes(hf_config, tokens: int, longest: int) -> int:
    """What a BERT-like encoder keeps for the backward pass over ``tokens`` padded tokens in
    fp32: per layer and token about ten hidden-size values, two intermediate-size ones and
    three attention rows of ``longest`` (scores, probabilities, dropout)."""
    hidden = hf_config.hidden_size
    inner = getattr(hf_config, "intermediate_size", 4 * hidden)
    heads = getattr(hf_config, "num_attention_heads", 12)
    per_token = 10 * hidden + 2 * inner + 3 * heads * longest
    return hf_config.num_hidden_layers * tokens * per_token * 4


def needs_recompute(hf_config, batch_tokens: int, longest: int, device: torch.device) -> bool:
    """Whether a training batch's activations should be recomputed instead of kept."""
    return activation_bytes(hf_config, batch_tokens, longest) * MEMORY_SHARE > free_memory(device)


class Cancelled(Exception):
    """``should_stop()`` said so; the latest checkpoint is kept for a resume."""


# ---- the model being trained ---------------------------------------------------------
class Trainee:
    """An encoder plus what trains in it; embeds texts by their index in ``token_ids``."""

    def __init__(
        self,
        encoder: Encoder,
        adapter_type: str,
        config: FineTuneConfig,
        token_ids,
        should_stop,
        queries: np.ndarray | None = None,
        batch_tokens: int = 0,
    ):
        """``queries``: ids of the texts a query-side head applies to (``applies_to`` 'query');
        ``batch_tokens``: padded tokens of the largest batch that trains with gradients."""
        self.encoder, self.adapter_type, self.token_ids = encoder, adapter_type, token_ids
        self.shape = shape_named(adapter_type)
        self.module: torch.nn.Module = encoder  # what training forwards run through (DDP's wrapper)
        self.query_mask, self.recompute = None, False
        if queries is not None:
            self.query_mask = torch.zeros(len(token_ids), dtype=torch.bool, device=encoder.device)
            self.query_mask[torch.from_numpy(queries).to(encoder.device)] = True
        transformer = encoder.transformer
        if not self.shape.trains_encoder:
            transformer.requires_grad_(False)
        if self.shape.cached:
            # The encoder never changes: encode each distinct text once. clone() leaves
            # inference mode, so what trains can backpropagate into (not through) the cache.
            self.cache = encode_ids(encoder, token_ids, should_stop, pooled_only=True).clone()
        self.restart(config, config.seed)
        if not self.shape.cached:
            self.recompute = needs_recompute(
                transformer.config,
                batch_tokens,
                max(map(len, token_ids), default=0),
                encoder.device,
            )
            if self.recompute:
                transformer.config.use_cache = False
                kwargs = {"use_reentrant": False}  # the frozen base's inputs need no grad
                if hasattr(transformer, "activation_checkpointing_enable"):  # transformers >= 5
                    transformer.activation_checkpointing_enable(
                        activation_checkpointing_kwargs=kwargs
                    )
                else:
                    transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def restart(self, config: FineTuneConfig, seed: int) -> None:
        """Attach the shape with ``config``'s settings, its random draws from ``seed``; a cached
        shape (the head) does this again for each trial, so each starts from the base."""
        self.trainable = self.shape.attach(self.encoder, config, seed)
        self.initial = self.state()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.trainable.parameters() if p.requires_grad]

    def state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights that train."""
        return self.shape.state(self.trainable)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.shape.load_state(self.trainable, state)

    def train(self, mode: bool = True) -> None:
        self.trainable.train(mode)

    def syncing(self, steps: bool) -> contextlib.AbstractContextManager:
        """Around a micro-batch's forward and backward: under DDP, gradients are averaged
        across the workers only on the last micro-batch before an optimizer step."""
        no_sync = getattr(self.module, "no_sync", None)
        return contextlib.nullcontext() if steps or no_sync is None else no_sync()

    def embed(self, ids: np.ndarray) -> torch.Tensor:
        """Training-mode embeddings (n, D) of the texts ``ids``, with gradients."""
        if self.shape.cached:
            return self.project_cached(ids)
        lengths = [len(self.token_ids[i]) for i in ids]
        parts, order = [], []
        for batch in length_sorted_batches(lengths, TRAIN_TOKEN_BUDGET):
            parts.append(self.module(self.encoder.collate([self.token_ids[ids[j]] for j in batch])))
            order.append(batch)
        position = np.empty(len(ids), dtype=np.int64)
        position[np.concatenate(order)] = np.arange(len(ids))
        return torch.cat(parts)[torch.from_numpy(position).to(parts[0].device)]

    def project_cached(self, ids: np.ndarray) -> torch.Tensor:
        """The head on cached pooled vectors; a query-side head on the query texts only."""
        index = torch.from_numpy(ids).to(self.cache.device)
        is_query = self.query_mask[index] if self.query_mask is not None else False
        return self.encoder.project(self.cache[index], is_query)

    def embed_eval(self, ids: np.ndarray, should_stop) -> torch.Tensor:
        """Inference embeddings (n, D) of the texts ``ids``."""
        self.train(False)
        with torch.inference_mode():
            if self.shape.cached:
                return self.project_cached(ids)
            return encode_ids(self.encoder, [self.token_ids[i] for i in ids], should_stop)

    def save(
        self, output_dir: Path, config: FineTuneConfig, base_model_id: str, base_folder: Path
    ) -> None:
        """Write the artifact of the weights it holds, in its shape's format."""
        self.shape.save(
            output_dir, self.encoder, self.trainable, config, base_model_id, base_folder
        )


def encode_ids(
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
def index_texts(
    sets: list[TrainingSet], spec, separate_sides: bool = False
) -> tuple[list[str], list[np.ndarray]]:
    """Distinct texts (prompt included) and, per set, the (rows, columns) text-id array.

    Anchors of pairs and triplets get the model's query prompt, every other text its
    document prompt: the sides ``embed_query`` and ``embed`` use. With ``separate_sides``, a
    text used both as a query and as a document gets two ids (a query-side head needs them).
    """
    index: dict = {}
    out = []
    for ts in sets:
        ids = np.empty((len(ts), ts.n_texts), dtype=np.int64)
        for c in range(ts.n_texts):
            prompt = (
                spec.query_prompt
                if (c == 0 and ts.kind != "scored_pairs")
                else spec.document_prompt
            )
            side = c == 0 and ts.kind != "scored_pairs" and separate_sides
            for r, row in enumerate(ts.rows):
                key = (side, prompt + row[c]) if separate_sides else prompt + row[c]
                ids[r, c] = index.setdefault(key, len(index))
        out.append(ids)
    texts = [k[1] for k in index] if separate_sides else list(index)
    return texts, out


def batch_loss(
    loss_fn, emb: torch.Tensor, rows: np.ndarray, scores: np.ndarray | None
) -> torch.Tensor:
    """Loss of one batch: ``rows`` (B, columns) says which row of ``emb`` embeds each text.

    Equal rows mean equal texts, which is how in-batch negatives recognise duplicates.
    """
    index = torch.from_numpy(rows).to(emb.device)
    columns = [emb[index[:, c]] for c in range(rows.shape[1])]
    s = torch.from_numpy(scores).to(emb.device) if scores is not None else None
    return L.compute(loss_fn, columns, s, [index[:, c] for c in range(rows.shape[1])])


def distractors(train_ids: np.ndarray, val_ids: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Training documents (positives and negatives) to rank validation positives among.

    Without them, a validation anchor only has to pick its positive among the few other
    validation positives, and a good base model already scores NDCG@10 near 1.0 there, so no
    epoch can look better. At most ``limit`` of them, drawn by ``seed``.
    """
    if train_ids.shape[1] < 2 or not len(val_ids):
        return np.empty(0, dtype=np.int64)
    pool = np.setdiff1d(np.unique(train_ids[:, 1:]), np.unique(val_ids))
    if len(pool) > limit:
        pool = np.sort(np.random.default_rng(seed).choice(pool, limit, replace=False))
    return pool


def validate(
    trainee: Trainee,
    loss_fn,
    kind: str,
    ids: np.ndarray,
    scores,
    batch_size: int,
    should_stop,
    extra_docs: np.ndarray | None = None,
) -> dict:
    """Validation loss and metric: Spearman for scored pairs, retrieval for the rest.

    Retrieval ranks each anchor's positive among every validation document and ``extra_docs``
    (text ids of distractors, see :func:`distractors`).
    """
    extra_docs = np.empty(0, dtype=np.int64) if extra_docs is None else extra_docs
    uniq = np.unique(np.concatenate([ids.reshape(-1), extra_docs]))
    emb = trainee.embed_eval(uniq, should_stop)  # (U, D), rows in uniq order
    pos = np.searchsorted(uniq, ids)  # (n, k): row of each text in emb
    with torch.inference_mode():
        batch_losses = [
            float(
                batch_loss(
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
        docs = np.unique(
            np.concatenate([pos[:, 1:].reshape(-1), np.searchsorted(uniq, extra_docs)])
        )
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
        out.update({k: r.metrics[k] for k in RETRIEVAL_METRICS})
    return out
