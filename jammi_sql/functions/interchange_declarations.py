"""The SQL functions that move models in and out of jammi-sql: ``export_model`` (the import
side is ``register_model``, which also reads sentence-transformers and PEFT folders). Declared
with the registry of :mod:`jammi_sql.functions.declarations`, installed with the rest.
"""

from __future__ import annotations

from ..catalog.context import Context
from ..errors import InvalidArgumentError
from .registry import WRITES, Param, V, sql_function


@sql_function(
    "export_model",
    [Param("model", V), Param("path", V), Param("format", V, "sentence-transformers")]
    + [Param("overwrite", "BOOLEAN", False)],
    V,
    shows="VARCHAR path written",
    **WRITES,
)
def export_model(ctx: Context, model, path, format, overwrite):
    """Writes a model of any shape to the folder `path` with a model card (README.md):
    'sentence-transformers' (adapters merged, a head as a Dense module; a query-side head as
    `query/` and `document/` folders), 'peft' (encoder adapters, unmerged), 'onnx' or
    'onnx-int8' (the whole pipeline, pooling and normalisation included). A non-empty `path` is
    refused unless `overwrite := true`; the folder is written whole or not at all."""
    from ..interchange.export import export_model as export

    if model is None:
        raise InvalidArgumentError(
            "export_model needs a model id, e.g. export_model('my-model', '/tmp/out')"
        )
    return export(ctx, model, path, format, bool(overwrite))
