"""Shared loaders for the benchmark scripts: the real data sets in ../shared/data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

DATA = Path(os.environ.get("JAMMI_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def stsb(split: str = "train", with_source: bool = False) -> list[tuple]:
    """(sentence1, sentence2, score 0..5) rows, led by the pair's source (e.g. 'headlines')
    with ``with_source``; the files need quoting off."""
    rows = []
    with open(DATA / "stsb" / f"sts-{split}.csv", newline="", encoding="utf-8") as f:
        for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows.append(((r[1],) if with_source else ()) + (r[5], r[6], float(r[4])))
    return rows


def scifact_corpus() -> list[dict]:
    with open(DATA / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def scifact_queries() -> dict[str, str]:
    with open(DATA / "scifact" / "queries.jsonl", encoding="utf-8") as f:
        return {q["_id"]: q["text"] for q in map(json.loads, f)}


def scifact_qrels() -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = {}
    with open(DATA / "scifact" / "qrels" / "train.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if float(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    return qrels


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def add_peer_lora(model) -> None:
    """The peer's adapters, as every benchmark compares them: peft LoRA on query/value, rank 8,
    alpha 16, dropout 0.05 (our encoder adapters' defaults), added to a SentenceTransformer."""
    from peft import LoraConfig, TaskType

    model.add_adapter(
        LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=["query", "value"],
        )
    )
