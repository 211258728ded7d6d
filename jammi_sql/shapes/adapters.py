"""Encoder adapters: LoRA inside the encoder (``lora.py``), only ``lora_A``/``lora_B`` train;
saved as those weights alone, merged into the base weights when loaded to embed."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifacts import layout
from ..config import FineTuneConfig
from ..errors import ArtifactError
from .lora import inject_lora, lora_state_dict, merge_lora
from .shape import Shape


class Adapters(Shape):
    name = "encoder_adapters"

    def attach(self, encoder, config: FineTuneConfig, seed: int) -> nn.Module:
        transformer = encoder.transformer  # frozen by the trainer: only the adapters train
        inject_lora(
            transformer,
            config.target_modules,
            config.lora_rank,
            config.lora_alpha,
            config.lora_dropout,
            config.use_rslora,
            config.layers_to_transform,
            config.rank_pattern,
            seed=seed,
        )
        return transformer

    def weights(self, trainable: nn.Module) -> dict[str, torch.Tensor]:
        return lora_state_dict(trainable)

    def load_state(self, trainable: nn.Module, state: dict[str, torch.Tensor]) -> None:
        trainable.load_state_dict(state, strict=False)  # the adapters; the base stays

    def describe(self, encoder, trainable: nn.Module, config: FineTuneConfig) -> dict:
        return {
            "model_type": encoder.transformer.config.model_type,
            "lora_rank": config.lora_rank,
            "lora_alpha": config.lora_alpha,
            "use_rslora": config.use_rslora,
            "target_modules": list(config.target_modules),
            "layers_to_transform": config.layers_to_transform,
            "rank_pattern": dict(config.rank_pattern),
            "backbone_dtype": "f32",
        }

    def load(self, encoder, art, base: Path) -> None:
        cfg, model_type = art.config, encoder.transformer.config.model_type
        if cfg["model_type"] not in (None, model_type):  # None: PEFT's
            raise ArtifactError(
                f"adapters in '{art.folder}' were trained on a {cfg['model_type']} model, but "
                f"the base at '{base}' is a {model_type} model"
            )
        inject_lora(
            encoder.transformer,
            list(cfg["target_modules"]),
            int(cfg["lora_rank"]),
            float(cfg["lora_alpha"]),
            rslora=bool(cfg["use_rslora"]),
            layers_to_transform=cfg["layers_to_transform"],
            rank_pattern=dict(cfg["rank_pattern"] or {}),
        )
        expected = {
            k for k in encoder.transformer.state_dict() if ".lora_A." in k or ".lora_B." in k
        }
        layout.check_tensors(expected, art)
        encoder.transformer.load_state_dict(art.tensors, strict=False)
        merge_lora(encoder.transformer)
