"""ONNX Runtime: the whole embedding pipeline as one graph, and a backend that runs it.

The graph goes from ``input_ids`` and ``attention_mask`` (int64, (B, T)) to the embedding
(float32, (B, D)): transformer, pooling, the folder's Dense modules, the projection head and
L2 normalisation; sentence-transformers' own ONNX export stops at the transformer's token
states. Prompts are text, so whoever feeds the graph adds them. ``int8`` quantizes the
graph's matrix multiplications dynamically (onnxruntime's ``quantize_dynamic``: int8 weights,
activations quantized per batch).

Needs the optional packages ``onnx`` and ``onnxruntime`` (``pip install 'jammi-sql[onnx]'``).
"""

from __future__ import annotations

import tempfile
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MissingPackageError
from .encoder import Encoder

OPSET = 17
INPUTS = ("input_ids", "attention_mask")


def require() -> None:
    """onnx and onnxruntime, or a ``jammi:`` error naming the extra to install."""
    missing = [name for name in ("onnx", "onnxruntime") if find_spec(name) is None]
    if missing:
        raise MissingPackageError(
            f"ONNX needs {' and '.join(missing)}; install them with pip install 'jammi-sql[onnx]'"
        )


class Pipeline(nn.Module):
    """An encoder's forward pass from token ids to the final embedding, for one side."""

    def __init__(self, encoder: Encoder, query: bool):
        super().__init__()
        self.encoder, self.query = encoder, query

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.encoder.project(self.encoder.pooled(features), self.query)  # (B, D)


def write_graph(encoder: Encoder, path: Path, *, query: bool = False, int8: bool = False) -> None:
    """The pipeline of an fp32 CPU encoder as one ONNX file (one self-contained file)."""
    require()
    example = encoder.collate([[1, 2, 3], [1, 2]])  # (2, 3): padding shows in the trace
    args = tuple(example[name].cpu() for name in INPUTS)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    target = path if not int8 else path.with_suffix(".fp32.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it records
        torch.onnx.export(
            Pipeline(encoder, query).eval(),
            args,
            str(target),
            input_names=list(INPUTS),
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    if int8:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # its advice to pre-process, on the root logger
        try:  # per channel: min calibration cosine 0.971 on all-MiniLM-L6-v2 (0.819 per tensor)
            quantize_dynamic(str(target), str(path), per_channel=True, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        target.unlink()


class Runtime:
    """One onnxruntime session per side (two only for a query-side head)."""

    def __init__(self, encoder: Encoder, int8: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        sides = (
            (False, True) if encoder.head is not None and encoder.head_side == "query" else (False,)
        )
        self.sessions = {}
        with tempfile.TemporaryDirectory(prefix="jammi-onnx-") as folder:
            for side in sides:
                path = Path(folder) / f"{'query' if side else 'document'}.onnx"
                write_graph(encoder, path, query=side, int8=int8)
                self.sessions[side] = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )

    def __call__(self, features: dict[str, torch.Tensor], query: bool) -> np.ndarray:
        session = self.sessions.get(bool(query), self.sessions[False])
        feed = {name: features[name].cpu().numpy() for name in INPUTS}
        return session.run(None, feed)[0]


def attach(encoder: Encoder, int8: bool) -> Encoder:
    """The encoder, its ``encode`` now run by onnxruntime on the CPU (fp32 or int8)."""
    if encoder.device.type != "cpu":
        encoder = encoder.to("cpu")
    encoder.transformer.float()
    encoder.runtime = Runtime(encoder, int8)
    encoder.precision = "onnx-int8" if int8 else "onnx"
    encoder.backend = "onnxruntime"
    return encoder
