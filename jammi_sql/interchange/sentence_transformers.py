"""An encoder written as a sentence-transformers folder: the transformer (adapters already
merged) at the root, then ``Pooling``, the base's ``Dense`` modules, the projection head as
one more ``Dense`` (identity activation, no bias: ``W = I + scaling * B @ A``), and
``Normalize``. ``SentenceTransformer(folder)`` loads it, and so does text-embeddings-inference,
which reads Dense modules from ``modules.json``. sentence-transformers itself is never
imported: the files are written directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..inference.encoder import Encoder

POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
IDENTITY = "torch.nn.modules.linear.Identity"


def write(folder: Path, encoder: Encoder, *, head: bool = True) -> None:
    """Write ``encoder`` (fp32) into ``folder``; ``head=False`` leaves its projection head out
    (the document side of a query-side head)."""
    from huggingface_hub.utils import disable_progress_bars
    from safetensors.torch import save_file

    disable_progress_bars()  # no "Writing model shards" bar in query output
    spec = encoder.spec
    encoder.transformer.save_pretrained(str(folder), safe_serialization=True)
    encoder.tokenizer.save_pretrained(str(folder))
    modules = [_module(0, "", "Transformer"), _module(1, "1_Pooling", "Pooling")]
    (folder / "1_Pooling").mkdir()
    pooling = _read_json(_base_module(spec.folder, "Pooling") / "config.json")
    if not any(pooling.get(k) for k in POOLING_KEYS.values()):
        pooling = {POOLING_KEYS[spec.pooling]: True}
    pooling["word_embedding_dimension"] = int(encoder.transformer.config.hidden_size)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    for source in spec.dense:  # the base's own Dense modules, as they were
        path = f"{len(modules)}_Dense"
        shutil.copytree(source, folder / path)
        modules.append(_module(len(modules), path, "Dense"))
    if head and encoder.head is not None:
        path = f"{len(modules)}_Dense"
        (folder / path).mkdir()
        weight = encoder.head.matrix().contiguous()  # (d, d)
        d = int(weight.shape[0])
        config = {"in_features": d, "out_features": d, "bias": False}
        (folder / path / "config.json").write_text(
            json.dumps({**config, "activation_function": IDENTITY}, indent=2)
        )
        save_file({"linear.weight": weight}, str(folder / path / "model.safetensors"))
        modules.append(_module(len(modules), path, "Dense"))
    if spec.normalize:
        path = f"{len(modules)}_Normalize"
        (folder / path).mkdir()
        modules.append(_module(len(modules), path, "Normalize"))
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": spec.max_seq_length, "do_lower_case": spec.do_lower_case})
    )
    st_config = _read_json(spec.folder / "config_sentence_transformers.json")
    prompts = {
        k: v for k, v in (("query", spec.query_prompt), ("document", spec.document_prompt)) if v
    }
    st_config.setdefault("prompts", prompts)
    st_config.setdefault("similarity_fn_name", "cosine")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))


def _module(idx: int, path: str, kind: str) -> dict:
    return {
        "idx": idx,
        "name": str(idx),
        "path": path,
        "type": f"sentence_transformers.models.{kind}",
    }


def _base_module(folder: Path, kind: str) -> Path:
    """The base folder's module of a kind (its folder), or a path that does not exist."""
    for module in _read_json(folder / "modules.json") or []:
        if module.get("type", "").rsplit(".", 1)[-1] == kind:
            return folder / module.get("path", "")
    return folder / f"no-{kind}"


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else {}
