"""Full fine-tuning: every weight of the encoder trains; saved as a whole model folder that
loads on its own (with jammi and with sentence-transformers alike)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..artifacts import layout
from ..config import FineTuneConfig
from .shape import Shape


class Full(Shape):
    name = "full"
    trains_encoder = True
    whole_model = True

    def attach(self, encoder, config: FineTuneConfig, seed: int) -> nn.Module:
        return encoder.transformer

    def save(
        self,
        output_dir: Path,
        encoder,
        trainable: nn.Module,
        config: FineTuneConfig,
        base_model_id: str,
        base_folder: Path,
    ) -> None:
        def write_model(folder: Path) -> None:
            encoder.transformer.save_pretrained(str(folder), safe_serialization=True)
            encoder.tokenizer.save_pretrained(str(folder))

        spec = encoder.spec
        describe = dict(
            pooling=spec.pooling,
            normalize=spec.normalize,
            max_seq_length=spec.max_seq_length,
            do_lower_case=spec.do_lower_case,
            dimensions=encoder.dimensions,
        )
        layout.save(
            output_dir,
            self.name,
            config={},
            write_model=write_model,
            describe=describe,
            base_model_id=base_model_id,
            base_model_path=str(base_folder),
        )
