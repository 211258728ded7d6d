"""The projection head: a residual map after pooling, trained on a frozen encoder.

Two forms, both exactly the identity at step 0 (so the fine-tuned model starts as its base):

    low rank  (r < d):  h(x) = x + scaling * B(A(dropout(x)))   A: (r, d), B: (d, r) zero-init,
                        scaling = alpha / r (alpha / sqrt(r) with rsLoRA), as LoRA
    full rank (r >= d): h(x) = x + D(dropout(x))                D: (d, d) zero-init, so W = I + D

Weight decay on ``D`` (or on ``A``/``B``) pulls the map back toward the identity, which is what
keeps a head on a strong model from drifting away from what it already knows. Because the
encoder is frozen, training runs on cached pooled vectors.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..artifacts import layout
from ..config import FineTuneConfig
from .shape import Shape


class ProjectionHead(nn.Module):
    def __init__(
        self,
        dim: int,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        rslora: bool = False,
        seed: int | None = None,
    ):
        """``seed``: A's initial draws depend on it alone, not on torch's global RNG (which every
        thread of the process shares)."""
        super().__init__()
        self.dim, self.r = dim, min(r, dim)
        self.full_rank = r >= dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if self.full_rank:
            self.weight = nn.Parameter(torch.zeros(dim, dim))  # D in W = I + D
            self.scaling = 1.0
            return
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_A = nn.Linear(dim, r, bias=False)
        self.lora_B = nn.Linear(r, dim, bias=False)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B.weight)

    @property
    def form(self) -> str:
        return "full_rank" if self.full_rank else "low_rank"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, d)
        if self.full_rank:
            return x + self.dropout(x) @ self.weight.T
        return x + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    @torch.no_grad()
    def matrix(self) -> torch.Tensor:
        """The head as one linear map W (d, d), h(x) = x @ W.T (inference: no dropout); what a
        sentence-transformers ``Dense`` module with identity activation and no bias holds."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        if self.full_rank:
            return (eye + self.weight.double()).float()
        delta = self.lora_B.weight.double() @ self.lora_A.weight.double() * self.scaling
        return (eye + delta).float()

    @classmethod
    def from_config(cls, dim: int, config: dict) -> ProjectionHead:
        """The head an ``adapter_config.json`` describes (inference: no dropout)."""
        return cls(
            dim,
            int(config["lora_rank"]),
            float(config["lora_alpha"]),
            rslora=bool(config.get("use_rslora", False)),
        )


class Head(Shape):
    """A projection head after pooling, on a frozen encoder: trains on cached pooled vectors
    (seconds), each trial of settings from a fresh identity head."""

    name = "projection_head"
    cached = True

    def attach(self, encoder, config: FineTuneConfig, seed: int) -> nn.Module:
        head = ProjectionHead(
            encoder.dimensions,
            config.lora_rank,
            config.lora_alpha,
            config.lora_dropout,
            config.use_rslora,
            seed,
        ).to(encoder.device)
        encoder.head, encoder.head_side = head, config.applies_to
        return head

    def describe(self, encoder, trainable: nn.Module, config: FineTuneConfig) -> dict:
        head = trainable
        return {
            "lora_rank": head.dim if head.full_rank else head.r,
            "lora_alpha": config.lora_alpha,
            "use_rslora": config.use_rslora,
            "head_layers": ["projection"],
            "head_form": head.form,
            "applies_to": config.applies_to,
        }

    def load(self, encoder, art, base: Path) -> None:
        head = ProjectionHead.from_config(encoder.dimensions, art.config)
        layout.check_tensors(set(head.state_dict()), art)
        head.load_state_dict(art.tensors, strict=False)
        encoder.head = head.to(encoder.device).eval()
        encoder.head_side = art.config.get("applies_to", "both")
