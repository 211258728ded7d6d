"""What every shape answers: how it attaches to an encoder to train, which weights train,
what it saves, and how a saved one attaches again to embed.

The encoder is passed in (``jammi_sql.inference.encoder.Encoder``: this folder sits below
inference), so a shape holds no model of its own; the trainer and the loader ask the shape
and never branch on its name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifacts import layout
from ..config import FineTuneConfig


class Shape:
    """One thing fine-tuning can train in a model; subclasses in head.py, adapters.py, full.py."""

    name: str  # the adapter_type in artifacts and in jammi.models
    # trains on pooled vectors computed once (the encoder never runs with gradients), and
    # starts afresh for each trial of settings
    cached: bool = False
    # every weight of the encoder trains (else the encoder is frozen first)
    trains_encoder: bool = False
    # the artifact is a whole model folder that loads on its own, without the base
    whole_model: bool = False

    def attach(self, encoder, config: FineTuneConfig, seed: int) -> nn.Module:
        """Make ``encoder`` trainable in this shape; returns the module whose weights train
        (its initial random draws come from ``seed`` alone)."""
        raise NotImplementedError

    def state(self, trainable: nn.Module) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights that train (what a checkpoint and the artifact hold)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.weights(trainable).items()}

    def weights(self, trainable: nn.Module) -> dict[str, torch.Tensor]:
        return trainable.state_dict()

    def load_state(self, trainable: nn.Module, state: dict[str, torch.Tensor]) -> None:
        trainable.load_state_dict(state)

    def save(
        self,
        output_dir: Path,
        encoder,
        trainable: nn.Module,
        config: FineTuneConfig,
        base_model_id: str,
        base_folder: Path,
    ) -> None:
        """Write the artifact (``jammi_sql.artifacts.layout``) of a trained ``trainable``: by
        default its weights and ``describe``'s settings, loaded on the base again."""
        layout.save(
            output_dir,
            self.name,
            config=self.describe(encoder, trainable, config),
            tensors=self.state(trainable),
            base_model_id=base_model_id,
            base_model_path=str(base_folder),
        )

    def describe(self, encoder, trainable: nn.Module, config: FineTuneConfig) -> dict:
        """What the saved weights need to load again (the artifact's adapter_config.json)."""
        raise NotImplementedError

    def load(self, encoder, art, base: Path) -> None:
        """Attach a saved artifact ``art`` to ``encoder``, its base loaded from ``base``, for
        inference (a whole model loads on its own instead)."""
        raise NotImplementedError
