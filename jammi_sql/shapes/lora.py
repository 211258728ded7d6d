"""LoRA: a low-rank update beside a frozen ``nn.Linear``, with PEFT's names and maths.

    y = W x + b + scaling * B(A(dropout(x)))        scaling = alpha / r  (alpha / sqrt(r) with rsLoRA)

``lora_B`` starts at zero, so a freshly injected adapter is an exact no-op. ``merge()`` folds
``scaling * B @ A`` into ``W`` for inference, so an adapted model runs as fast as its base.
See peft/tuners/lora/layer.py (Hu et al., 2021, arXiv:2106.09685; rsLoRA: Kalajdzievski, 2023).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..errors import InvalidArgumentError


class LoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        rslora: bool = False,
        generator: torch.Generator | None = None,
    ):
        """``generator``: where A's initial draws come from (a job's own, seeded: the global
        stream is shared with every other thread of the process)."""
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)  # as PEFT
        nn.init.zeros_(self.lora_B.weight)
        self.lora_A.to(base.weight.device, base.weight.dtype)
        self.lora_B.to(base.weight.device, base.weight.dtype)
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, in)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True


def _layer_index(name: str) -> int | None:
    match = re.search(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.", f".{name}.")
    return int(match.group(1)) if match else None


def candidate_modules(model: nn.Module) -> list[str]:
    """Distinct final name parts of the model's ``nn.Linear`` modules (what targets may name)."""
    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    )


def inject_lora(
    model: nn.Module,
    target_modules: list[str],
    r: int,
    alpha: float,
    dropout: float = 0.0,
    rslora: bool = False,
    layers_to_transform: list[int] | None = None,
    rank_pattern: dict[str, int] | None = None,
    seed: int | None = None,
) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends with a target suffix; returns the wrapped names.

    ``all-linear`` targets every linear layer of the encoder (an output head, if any, is
    never wrapped). An unmatched target raises, listing the names that exist. ``seed`` makes the
    adapters' initial weights depend on it alone (not on what else used torch's global RNG).
    """
    rank_pattern = rank_pattern or {}
    all_linear = "all-linear" in target_modules
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    layer_ids = {_layer_index(n) for n, _ in linears} - {None}
    if layers_to_transform is not None:
        missing = sorted(set(layers_to_transform) - layer_ids)
        if missing:
            raise InvalidArgumentError(
                f"layers_to_transform {missing} do not exist; this model has layers "
                f"0..{max(layer_ids) if layer_ids else -1}"
            )
    chosen, matched_targets = [], set()
    for name, module in linears:
        targets = [
            t for t in target_modules if t != "all-linear" and (name == t or name.endswith("." + t))
        ]
        if not (targets or all_linear):
            continue
        layer = _layer_index(name)
        if layers_to_transform is not None and layer not in layers_to_transform:
            continue
        matched_targets.update(targets)
        chosen.append((name, module))
    unmatched = [t for t in target_modules if t != "all-linear" and t not in matched_targets]
    if unmatched or not chosen:
        raise InvalidArgumentError(
            f"target_modules {unmatched or target_modules} match no linear layer of this model; "
            f"its linear modules are named {', '.join(candidate_modules(model))} (or use 'all-linear')"
        )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    for name, module in chosen:
        rank = next((v for k, v in rank_pattern.items() if k in name), r)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, rank, alpha, dropout, rslora, generator))
    return [n for n, _ in chosen]


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, under names that :func:`load_lora_state` accepts."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if ".lora_A." in k or ".lora_B." in k
    }


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and unwrap it: a plain, fast model again."""
    for name, module in list(lora_modules(model).items()):
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.base)
    return model


def check_targets(
    folder: str,
    target_modules: list[str],
    layers_to_transform: list[int] | None = None,
    rank_pattern: dict[str, int] | None = None,
) -> None:
    """Match ``target_modules`` on a model folder's structure, built on the meta device
    (no weights loaded); an unmatched target raises as :func:`inject_lora` does."""
    from ..hf import transformers

    AutoConfig, AutoModel = transformers("AutoConfig", "AutoModel")

    hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModel.from_config(hf_config)
    inject_lora(
        skeleton,
        target_modules,
        1,
        1.0,
        layers_to_transform=layers_to_transform,
        rank_pattern=rank_pattern,
    )
