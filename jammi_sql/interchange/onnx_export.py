"""The ONNX export: the whole embedding pipeline as one graph, from ``input_ids`` and
``attention_mask`` to the embedding (transformer, pooling, Dense modules and head,
normalisation), so onnxruntime alone serves it; ``onnx-int8`` quantizes its linear layers
dynamically to int8. Needs the optional extra ``jammi-sql[onnx]``.
"""

from __future__ import annotations

from importlib.util import find_spec

from ..errors import MissingPackageError


def require() -> None:
    """onnx and onnxruntime, or a ``jammi:`` error naming the extra to install."""
    missing = [name for name in ("onnx", "onnxruntime") if find_spec(name) is None]
    if missing:
        raise MissingPackageError(
            f"exporting to ONNX needs {' and '.join(missing)}; install them with "
            "pip install 'jammi-sql[onnx]'"
        )
