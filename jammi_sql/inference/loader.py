"""Loaded encoders: a base folder, or a fine-tuned model folder on its base; one per process.

A projection head sits after pooling; encoder adapters are merged into the base weights, so
an adapted model embeds as fast as its base; a full fine-tune is an ordinary model folder.
The files are read by :mod:`jammi_sql.artifacts.layout`; this module turns them into modules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artifacts import layout as artifacts
from ..errors import ArtifactError
from ..shapes.head import ProjectionHead
from ..shapes.lora import inject_lora, merge_lora
from .encoder import Encoder


@dataclass
class EncoderCache:
    """One loaded encoder per key for the whole process, shared by every query."""

    _items: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple, build: Callable[[], Encoder]) -> Encoder:
        with self._lock:
            encoder = self._items.get(key)
            if encoder is None:
                encoder = self._items[key] = build()
            return encoder


CACHE = EncoderCache()


def load(
    folder: str | Path, adapter_folder: str | Path | None = None, precision: str = "auto"
) -> Encoder:
    """The encoder of a base model folder, or of a fine-tuned folder on that base (cached),
    at ``precision`` (see :mod:`jammi_sql.inference.precision`)."""
    from .precision import settle

    def build() -> Encoder:
        if adapter_folder is None:
            return settle(Encoder.from_folder(folder), precision)
        return settle(load_fine_tuned(adapter_folder, folder), precision)

    return CACHE.get((str(folder), str(adapter_folder), precision), build)


def load_fine_tuned(
    folder: str | Path, base_folder: str | Path | None = None, device: torch.device | None = None
) -> Encoder:
    """The inference encoder of a fine-tuned model folder, in eval mode (not cached).

    ``base_folder`` defaults to the ``base_model_path`` recorded at save time.
    """
    art = artifacts.load(folder)
    if art.adapter_type == "full":
        return Encoder.from_folder(art.folder, device)
    base = Path(base_folder or art.base_model_path or "")
    if not base_folder and not (base / "config.json").is_file():
        raise ArtifactError(
            f"the base model of '{art.folder}' ({art.base_model_id}) is not at '{base}'; "
            "register it again with register_model"
        )
    encoder = Encoder.from_folder(base, device)
    cfg = art.config
    if art.adapter_type == "projection_head":
        head = ProjectionHead.from_config(encoder.dimensions, cfg)
        artifacts.check_tensors(set(head.state_dict()), art)
        head.load_state_dict(art.tensors, strict=False)
        encoder.head = head.to(encoder.device).eval()
        encoder.head_side = cfg.get("applies_to", "both")
        return encoder
    if cfg["model_type"] not in (None, encoder.transformer.config.model_type):  # None: PEFT's
        raise ArtifactError(
            f"adapters in '{art.folder}' were trained on a {cfg['model_type']} model, but the base "
            f"at '{base}' is a {encoder.transformer.config.model_type} model"
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
    expected = {k for k in encoder.transformer.state_dict() if ".lora_A." in k or ".lora_B." in k}
    artifacts.check_tensors(expected, art)
    encoder.transformer.load_state_dict(art.tensors, strict=False)
    merge_lora(encoder.transformer)
    return encoder.eval()
