"""The ONNX export: the whole embedding pipeline as one graph, from ``input_ids`` and
``attention_mask`` to the embedding (transformer, pooling, Dense modules and head,
normalisation), so onnxruntime alone serves it (the graph is built by
:mod:`jammi_sql.inference.onnx_backend`, the same one ``precision := 'onnx'`` runs), with the
tokenizer beside it. ``onnx-int8`` quantizes its matrix multiplications dynamically to int8.
A query-side head exports as ``query/`` and ``document/``, as for sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..inference.encoder import Encoder
from ..inference.onnx_backend import require, write_graph

__all__ = ["require", "write"]
MODEL_FILE = "model.onnx"


def write(folder: Path, encoder: Encoder, *, quantize: bool, query_side: bool = False) -> None:
    sides = (("query", True), ("document", False)) if query_side else (("", False),)
    for side, query in sides:
        target = folder / side if side else folder
        target.mkdir(exist_ok=True)
        write_graph(encoder, target / MODEL_FILE, query=query, int8=quantize)
        encoder.tokenizer.save_pretrained(str(target))
        spec = encoder.spec
        prompt = spec.query_prompt if query else spec.document_prompt
        (target / "jammi_onnx.json").write_text(
            json.dumps(
                {
                    "model": MODEL_FILE,
                    "inputs": ["input_ids", "attention_mask"],
                    "output": "sentence_embedding",
                    "dimensions": encoder.dimensions,
                    "max_seq_length": spec.max_seq_length,
                    "prompt": prompt,
                    "normalized": spec.normalize,
                    "int8": quantize,
                },
                indent=2,
            )
        )
