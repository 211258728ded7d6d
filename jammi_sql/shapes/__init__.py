"""What fine-tuning can train in a model, one module per shape: ``head`` (a projection head
after pooling), ``adapters`` (LoRA inside the encoder, from ``lora``) and ``full``. Each says
how it attaches to an encoder, which weights train, what it saves and how it loads again
(``shape.Shape``); the trainer and the loader ask the shape, never its name."""

from __future__ import annotations

from ..errors import ArtifactError
from .adapters import Adapters
from .full import Full
from .head import Head
from .shape import Shape

SHAPES: dict[str, Shape] = {s.name: s for s in (Head(), Adapters(), Full())}


def shape_named(name: str) -> Shape:
    """The shape stored as ``name`` (an artifact's or a model record's adapter_type)."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ArtifactError(
            f"unknown model shape '{name}'; this jammi-sql knows {', '.join(SHAPES)}"
        ) from None
