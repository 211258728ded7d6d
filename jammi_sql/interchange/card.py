"""The model card (README.md) an exported folder carries: what the model is, where it came
from, how it was trained and how it scored, and how to load it. Pure text from a
:class:`Provenance`; the catalog is read by :mod:`jammi_sql.interchange.export`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

SHAPES = {
    "base": "a base model, exported as it is",
    "projection_head": "a projection head after pooling (exported as a Dense module)",
    "encoder_adapters": "LoRA adapters in the encoder",
    "full": "a full fine-tune of every weight",
}
LOADERS = {
    "sentence-transformers": (
        "from sentence_transformers import SentenceTransformer\n\n"
        "model = SentenceTransformer('{path}')\nvectors = model.encode(['a sentence'])"
    ),
    "peft": (
        "from peft import PeftModel\nfrom transformers import AutoModel\n\n"
        "base = AutoModel.from_pretrained('{base}')\nmodel = PeftModel.from_pretrained(base, '{path}')"
    ),
    "onnx": (
        "import onnxruntime as ort\nfrom transformers import AutoTokenizer\n\n"
        "session = ort.InferenceSession('{path}/model.onnx')\n"
        "tokenizer = AutoTokenizer.from_pretrained('{path}')\n"
        "batch = tokenizer(['a sentence'], padding=True, return_tensors='np')\n"
        "(vectors,) = session.run(None, {{'input_ids': batch['input_ids'], "
        "'attention_mask': batch['attention_mask']}})"
    ),
}


@dataclass
class Provenance:
    """Everything the card says, gathered from the catalog."""

    model_id: str
    shape: str  # base | projection_head | encoder_adapters | full
    dimensions: int
    lineage: list[str]  # the model, its base, the base's base... down to a base model
    applies_to: str = "both"  # 'query': a query-side head
    job: dict = field(default_factory=dict)  # job_id, method, loss, columns, config
    source: dict = field(default_factory=dict)  # name, kind, url, format, columns
    metrics: dict = field(default_factory=dict)  # the job's base-vs-tuned validation metrics
    layout: str = ""  # what this folder holds, one paragraph


def card(p: Provenance, fmt: str, path: str) -> str:
    base = p.lineage[-1] if p.lineage else p.model_id
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: sentence-transformers"
        if fmt == "sentence-transformers"
        else f"library_name: {fmt}",
        "tags: [sentence-transformers, feature-extraction, sentence-similarity, jammi-sql]",
        "---",
        "",
        f"# {p.model_id}",
        "",
        f"Exported by jammi-sql on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC as `{fmt}`: "
        f"{SHAPES.get(p.shape, p.shape)}, {p.dimensions} dimensions.",
        "",
        "## Lineage",
        "",
        " <- ".join(f"`{m}`" for m in p.lineage)
        + (" (each model <- the base it was fine-tuned from)" if len(p.lineage) > 1 else ""),
    ]
    if p.source:
        s = p.source
        lines += [
            "",
            f"Trained on source `{s.get('name')}` ({s.get('kind')}, {s.get('format')}: "
            f"`{s.get('url')}`), columns {', '.join(p.job.get('columns') or [])}.",
        ]
    if p.layout:
        lines += ["", "## What this folder holds", "", p.layout]
    if p.job:
        lines += [
            "",
            "## Training",
            "",
            f"Job `{p.job.get('job_id')}`, method `{p.job.get('method')}`, loss "
            f"`{p.job.get('loss')}`. Config:",
            "",
            "```json",
            json.dumps(p.job.get("config") or {}, indent=2, sort_keys=True, default=str),
            "```",
        ]
    dims = (p.job.get("config") or {}).get("matryoshka_dims")
    if dims:
        lines += [
            "",
            f"Trained with Matryoshka widths {', '.join(map(str, dims))}: the first d values of "
            "an embedding are an embedding of their own; keep them with "
            f"`SentenceTransformer(path, truncate_dim={min(dims)})` (then renormalise), or jammi's "
            "`dims :=`.",
        ]
    if p.metrics:
        lines += ["", "## Metrics (validation split, base vs fine-tuned)", "", *_metrics(p.metrics)]
    lines += ["", "## Use", "", "```python", _loader(fmt, path, base), "```", ""]
    return "\n".join(lines)


def _loader(fmt: str, path: str, base: str) -> str:
    return LOADERS["onnx" if fmt.startswith("onnx") else fmt].format(path=path, base=base)


def _metrics(metrics: dict) -> list[str]:
    """The base, fine-tuned and delta figures as a table, and what selection kept."""
    sides = {
        k: metrics[k] for k in ("base", "fine_tuned", "delta") if isinstance(metrics.get(k), dict)
    }
    names = sorted({n for v in sides.values() for n in v})
    rows = []
    if sides and names:
        rows = ["| metric | " + " | ".join(sides) + " |", "|---|" + "---|" * len(sides)]
        rows += [
            f"| {n} | " + " | ".join(_fmt(v.get(n)) for v in sides.values()) + " |" for n in names
        ]
    kept = metrics.get("kept") if isinstance(metrics.get("kept"), dict) else {}
    facts = [
        f"selected by `{metrics.get('metric')}`" if metrics.get("metric") else "",
        f"best epoch {metrics.get('best_epoch')}" if metrics.get("best_epoch") is not None else "",
        f"improved: {metrics.get('improved')}" if "improved" in metrics else "",
        str(kept.get("why") or metrics.get("note") or ""),
    ]
    facts = [f for f in facts if f]
    return rows + ([""] + ["; ".join(facts) + "."] if facts else [])


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else ("" if x is None else str(x))
