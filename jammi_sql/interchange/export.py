"""``export_model``: any model jammi can embed with, written where other tools load it.

Formats and the shapes they fit:

- ``sentence-transformers`` (every shape): transformer (adapters merged), Pooling, Dense
  modules (a projection head becomes one), Normalize. A query-side head (``applies_to``
  'query') exports as two folders, ``query/`` (with the head) and ``document/`` (the base
  as it is), because sentence-transformers' Router (routing by task) is newer than most
  deployments and text-embeddings-inference does not read it: two plain folders load in every
  version and in TEI, each served as a model of its own.
- ``peft`` (encoder adapters only): PEFT's LoRA folder, unmerged, for the base model.

Everything is checked before anything is written, and the folder is written under a
temporary name and renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import layout as artifacts
from ..artifacts import peft
from ..catalog.context import Context
from ..catalog.models import BUNDLED_ID, ModelRef, hidden_size
from ..errors import InvalidArgumentError
from ..inference.encoder import Encoder
from ..inference.loader import load_fine_tuned
from . import sentence_transformers as st
from .card import Provenance, card

FORMATS = ("sentence-transformers", "peft", "onnx", "onnx-int8")
FITS = {  # format -> the shapes it can hold
    "sentence-transformers": ("base", "projection_head", "encoder_adapters", "full"),
    "peft": ("encoder_adapters",),
    "onnx": ("base", "projection_head", "encoder_adapters", "full"),
    "onnx-int8": ("base", "projection_head", "encoder_adapters", "full"),
}
CPU = torch.device("cpu")


@dataclass
class Exportable:
    """A resolved model and what it is: its shape and, for adapters and heads, the artifact."""

    ref: ModelRef
    shape: str
    artifact: artifacts.Artifact | None = None

    @property
    def query_side(self) -> bool:
        return self.artifact is not None and self.artifact.config.get("applies_to") == "query"

    def encoder(self) -> Encoder:
        """The model in fp32 on the CPU, adapters merged (never the shared inference cache)."""
        if self.ref.adapter_folder is not None:
            return load_fine_tuned(self.ref.adapter_folder, self.ref.folder, CPU)
        return Encoder.from_folder(self.ref.folder, CPU)


def export_model(
    ctx: Context, model: str, path: str, fmt: str = "sentence-transformers", overwrite: bool = False
) -> str:
    """Write ``model`` to the folder ``path`` in format ``fmt``; returns the folder written."""
    fmt = str(fmt or "sentence-transformers").lower()
    if fmt not in FORMATS:
        raise InvalidArgumentError(
            f"export format '{fmt}' is unknown; use one of {', '.join(FORMATS)}"
        )
    if not isinstance(path, str) or not path.strip():
        raise InvalidArgumentError(
            "export_model needs the path of a folder to write, e.g. "
            "export_model('my-model', '/tmp/my-model')"
        )
    item = exportable(ctx, model)
    if item.shape not in FITS[fmt]:
        fitting = [f for f, shapes in FITS.items() if item.shape in shapes]
        raise InvalidArgumentError(
            f"model '{item.ref.model_id}' is {_shape_words(item.shape)}, which format '{fmt}' "
            f"cannot hold ({fmt} holds {' and '.join(_shape_words(s) for s in FITS[fmt])}); use "
            f"format := '{fitting[0]}'"
        )
    ctx.check_write_path(path)  # a sandboxed server's clients write only where it serves
    artifacts.check_target(path, bool(overwrite))  # before loading anything
    if fmt.startswith("onnx"):
        from . import onnx_export

        onnx_export.require()
    provenance = gather(ctx, item)
    target = str(Path(path).expanduser().absolute())

    def fill(folder: Path) -> None:
        if fmt == "peft":
            assert item.artifact is not None
            art = item.artifact
            peft.write(folder, art.config, art.tensors, _base_name(ctx, item))
        elif fmt == "sentence-transformers":
            _write_sentence_transformers(folder, item, provenance, target)
        else:
            from . import onnx_export

            onnx_export.write(
                folder, item.encoder(), quantize=fmt == "onnx-int8", query_side=item.query_side
            )
            if item.query_side:
                provenance.layout = (
                    "A query-side projection head: `query/model.onnx` (with the head) for "
                    "queries and `document/model.onnx` (the base as it is) for documents."
                )
        provenance.layout = provenance.layout or LAYOUTS[fmt]
        (folder / "README.md").write_text(card(provenance, fmt, target))

    return str(artifacts.write_folder(path, fill, bool(overwrite)))


LAYOUTS = {
    "sentence-transformers": (
        "A sentence-transformers folder: the transformer at the root (any adapters merged into "
        "its weights), then the modules in `modules.json` (Pooling, Dense, Normalize)."
    ),
    "peft": (
        "A PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`), unmerged: "
        "load it onto the base model named above."
    ),
    "onnx": (
        "`model.onnx`: the whole pipeline (transformer, pooling, Dense/head, normalisation) "
        "from `input_ids` and `attention_mask` to the embedding, and the tokenizer files."
    ),
    "onnx-int8": (
        "`model.onnx`: the whole pipeline (transformer, pooling, Dense/head, normalisation), "
        "its linear layers dynamically quantized to int8, and the tokenizer files."
    ),
}


def _write_sentence_transformers(
    folder: Path, item: Exportable, provenance: Provenance, target: str
) -> None:
    encoder = item.encoder()
    if not item.query_side:
        st.write(folder, encoder)
        return
    provenance.layout = (
        "A query-side projection head: queries and documents embed differently, so this folder "
        "holds two sentence-transformers folders, `query/` (with the head) for queries and "
        "`document/` (the base model as it is) for documents. Embed each side with its folder."
    )
    for side, head in (("query", True), ("document", False)):
        (folder / side).mkdir()
        st.write(folder / side, encoder, head=head)
        (folder / side / "README.md").write_text(
            card(provenance, "sentence-transformers", f"{target}/{side}")
        )


def exportable(ctx: Context, model: str) -> Exportable:
    """The model's folders and shape (an unknown model is the registry's ``jammi:`` error)."""
    ref = ctx.models.resolve(model)
    if ref.kind == "base":
        return Exportable(ref, "base")
    if ref.adapter_folder is None:
        return Exportable(ref, "full")
    art = artifacts.load(ref.adapter_folder)
    return Exportable(ref, art.adapter_type, art)


def gather(ctx: Context, item: Exportable) -> Provenance:
    """What the catalog knows of the model: lineage, its job, the job's source and metrics."""
    lineage, seen = [item.ref.model_id], {item.ref.model_id}
    record = ctx.catalog.get_model(item.ref.model_id)
    while record is not None and record.base_model_id and record.base_model_id not in seen:
        lineage.append(record.base_model_id)
        seen.add(record.base_model_id)
        record = ctx.catalog.get_model(record.base_model_id)
    record = ctx.catalog.get_model(item.ref.model_id)
    job, source = {}, {}
    j = ctx.catalog.get_job(record.job_id) if record is not None and record.job_id else None
    if j is not None:
        job = dict(
            job_id=j.job_id, method=j.method, loss=j.loss, columns=j.columns, config=j.config
        )
        s = ctx.catalog.get_source(j.source)
        source = {"name": j.source}
        if s is not None:
            source.update(kind=s.kind, url=s.url, format=s.format)
    dims = (record.dimensions if record is not None else None) or hidden_size(item.ref.folder)
    return Provenance(
        model_id=item.ref.model_id,
        shape=item.shape,
        dimensions=int(dims or 0),
        lineage=lineage,
        applies_to="query" if item.query_side else "both",
        job=job,
        source=source,
        metrics=(record.metrics or {}) if record is not None else {},
    )


def _base_name(ctx: Context, item: Exportable) -> str:
    """What ``base_model_name_or_path`` says: the Hub id of the bundled model, else the folder."""
    record = ctx.catalog.get_model(item.ref.model_id)
    base = record.base_model_id if record is not None else None
    return BUNDLED_ID if base == BUNDLED_ID else str(item.ref.folder)


def _shape_words(shape: str) -> str:
    return {
        "base": "a base model",
        "projection_head": "a projection head",
        "encoder_adapters": "encoder adapters",
        "full": "a full fine-tune",
    }[shape]
