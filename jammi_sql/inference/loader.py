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
from ..shapes import shape_named
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
    shape = shape_named(art.adapter_type)
    if shape.whole_model:
        return Encoder.from_folder(art.folder, device)
    base = Path(base_folder or art.base_model_path or "")
    if not base_folder and not (base / "config.json").is_file():
        raise ArtifactError(
            f"the base model of '{art.folder}' ({art.base_model_id}) is not at '{base}'; "
            "register it again with register_model"
        )
    encoder = Encoder.from_folder(base, device)
    shape.load(encoder, art, base)
    return encoder.eval()
