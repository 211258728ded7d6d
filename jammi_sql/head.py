"""The projection head: a LoRA-style residual map after pooling, trained on a frozen encoder.

    h(x) = x + scaling * B(A(dropout(x)))        A: (r, d), B: (d, r), scaling = alpha / r

``B`` starts at zero, so at step 0 the fine-tuned model embeds exactly as its base does.
Because the encoder is frozen, training can run on cached pooled vectors.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, dim: int, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__()
        self.dim, self.r = dim, r
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(dim, r, bias=False)
        self.lora_B = nn.Linear(r, dim, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, d)
        return x + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    @classmethod
    def from_config(cls, dim: int, config: dict) -> ProjectionHead:
        """The head an ``adapter_config.json`` describes (inference: no dropout)."""
        return cls(
            dim,
            int(config["lora_rank"]),
            float(config["lora_alpha"]),
            rslora=bool(config.get("use_rslora", False)),
        )
