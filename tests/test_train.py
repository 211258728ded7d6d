"""The training loop on the tiny model: it learns, resumes exactly, stops, and fails clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jammi_sql import artifacts, train
from jammi_sql.config import FineTuneConfig
from jammi_sql.data import make_training_set
from jammi_sql.encoders import load_fine_tuned
from jammi_sql.errors import TrainingError
from jammi_sql.train import Cancelled, run_training

CPU = torch.device("cpu")
SCORED = [
    ("the cat plays", "a cat plays", 5.0),
    ("the dog eats food", "a man walks", 0.5),
    ("quantum computing", "quantum physics", 4.0),
    ("solar energy", "a battery", 2.0),
    ("the train", "a plane", 1.5),
    ("a child plays piano", "the child plays guitar", 3.5),
    ("cancer protein", "gene cell", 2.5),
    ("search engine", "database query", 3.0),
    ("the woman runs", "a woman walks", 4.5),
    ("a model", "fine tune embedding", 1.0),
    ("vector search", "similar vector", 3.0),
    ("the bike", "a car", 2.0),
]
PAIRS = [
    ("cat", "the cat plays"),
    ("dog", "the dog eats food"),
    ("quantum", "quantum computing"),
    ("solar", "solar energy battery"),
    ("train", "the train and a plane"),
    ("piano", "a child plays piano"),
    ("cancer", "cancer cell protein"),
    ("search", "search engine database"),
]
SHAPES = {
    "head": ("lora", {}),
    "adapters": ("lora", {"target_modules": ["query", "value"]}),
    "full": ("full", {}),
}


def fit(
    tmp_path,
    model,
    rows,
    kind="scored_pairs",
    shape="head",
    name="run",
    progress=None,
    stop=None,
    **cfg,
):
    method, extra = SHAPES[shape]
    config = FineTuneConfig(**{"warmup_steps": 0, "learning_rate": 1e-2, **extra, **cfg})
    return run_training(
        model,
        make_training_set(kind, rows),
        config,
        method,
        work_dir=tmp_path / f"{name}-work",
        output_dir=tmp_path / f"{name}-model",
        on_progress=progress or (lambda p: None),
        should_stop=stop or (lambda: False),
        device=CPU,
    )


def weights(result) -> dict[str, torch.Tensor]:
    if result.adapter_type == "full":
        from safetensors.torch import load_file

        return load_file(str(result.output_dir / "model.safetensors"))
    return artifacts.load(result.output_dir).tensors


def assert_same_weights(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if exact else torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.parametrize("shape", ["head", "adapters"])
def test_eight_pairs_overfit_within_a_few_dozen_steps(tmp_path, tiny_model, shape):
    seen = []
    fit(
        tmp_path,
        tiny_model,
        PAIRS,
        kind="pairs",
        shape=shape,
        epochs=30,
        batch_size=8,
        lora_dropout=0.0,
        learning_rate=5e-3,
        validation_fraction=0.0,
        lr_schedule="constant",
        target_modules=["all-linear"] if shape == "adapters" else [],
        progress=lambda p: seen.extend(v for s, n, v in p.logs if (s, n) == ("train", "loss")),
    )
    assert min(seen[-5:]) < 0.3 * seen[0], seen  # the encoder's own dropout keeps it noisy


@pytest.mark.parametrize("shape", ["head", "adapters", "full"])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, tiny_model, shape):
    cfg = dict(epochs=3, batch_size=4, lora_dropout=0.1, validation_fraction=0.25, shape=shape)
    straight = fit(tmp_path, tiny_model, SCORED, name="straight", **cfg)
    polls = iter(range(10**6))

    def stop_after_five() -> bool:
        return next(polls) >= 5

    with pytest.raises(Cancelled):
        fit(tmp_path, tiny_model, SCORED, name="resumed", stop=stop_after_five, **cfg)
    assert (tmp_path / "resumed-work" / train.CHECKPOINT_FILE).exists()  # kept on cancel
    method, extra = SHAPES[shape]
    config = FineTuneConfig(
        warmup_steps=0,
        learning_rate=1e-2,
        **extra,
        **{k: v for k, v in cfg.items() if k != "shape"},
    )
    resumed = run_training(
        tiny_model,
        make_training_set("scored_pairs", SCORED),
        config,
        method,
        work_dir=tmp_path / "resumed-work",
        output_dir=tmp_path / "resumed-model",
        on_progress=lambda p: None,
        should_stop=lambda: False,
        resume=True,
        device=CPU,
    )
    assert_same_weights(weights(straight), weights(resumed))
    assert resumed.metrics["best_epoch"] == straight.metrics["best_epoch"]
    assert resumed.metrics["fine_tuned"] == pytest.approx(
        straight.metrics["fine_tuned"], nan_ok=True
    )


def test_same_seed_same_weights(tmp_path, tiny_model):
    cfg = dict(epochs=2, batch_size=4, shape="adapters", lora_dropout=0.1)
    a = fit(tmp_path, tiny_model, SCORED, name="a", **cfg)
    b = fit(tmp_path, tiny_model, SCORED, name="b", **cfg)
    assert_same_weights(weights(a), weights(b), exact=True)
    c = fit(tmp_path, tiny_model, SCORED, name="c", seed=7, **cfg)
    assert any(
        not torch.equal(x, y) for x, y in zip(weights(a).values(), weights(c).values(), strict=True)
    )


def test_should_stop_cancels_promptly(tmp_path, tiny_model):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        fit(tmp_path, tiny_model, SCORED, shape="adapters", stop=stop, epochs=50)
    assert len(calls) == 3
    assert not (tmp_path / "run-model").exists()


def test_a_nan_loss_fails_with_a_clear_error(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(
        train.L, "compute", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True)
    )
    with pytest.raises(TrainingError) as err:
        fit(tmp_path, tiny_model, SCORED, batch_size=2, learning_rate=0.5)
    message = str(err.value)
    assert message.startswith("jammi: training diverged at step ")
    assert "learning_rate (now 0.5)" in message and "max_grad_norm" in message


def test_no_epoch_better_than_the_base_keeps_the_base(tmp_path, tiny_model, monkeypatch):
    real = train.validate
    calls = []

    def worse_each_epoch(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        return {**out, "loss": out["loss"] + len(calls)}  # the base is always best

    monkeypatch.setattr(train, "validate", worse_each_epoch)
    result = fit(tmp_path, tiny_model, SCORED, epochs=5, early_stopping_patience=2)
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 0
    assert (
        result.metrics["improved"] is False and "no epoch beat the base" in result.metrics["note"]
    )
    assert torch.count_nonzero(weights(result)["lora_B.weight"]) == 0  # exactly the base model


def test_metrics_hold_base_and_fine_tuned_side_by_side(tmp_path, tiny_model):
    progress = []
    result = fit(
        tmp_path,
        tiny_model,
        PAIRS * 3,
        kind="pairs",
        epochs=2,
        validation_fraction=0.3,
        early_stopping_metric="val_metric",
        progress=progress.append,
    )
    m = result.metrics
    assert m["metric"] == "ndcg_at_10" and m["loss"] == "multiple_negatives_ranking"
    for side in ("base", "fine_tuned", "delta"):
        assert set(m[side]) >= {"val_loss", "ndcg_at_10"}
    assert m["adapter_type"] == "projection_head" and m["dimensions"] == 32
    assert math.isclose(
        m["delta"]["ndcg_at_10"], m["fine_tuned"]["ndcg_at_10"] - m["base"]["ndcg_at_10"]
    )
    import json

    json.dumps(m, allow_nan=False)
    assert progress[-1].step == progress[-1].total_steps
    names = {(s, n) for p in progress for s, n, _ in p.logs}
    assert {
        ("train", "loss"),
        ("train", "learning_rate"),
        ("val", "loss"),
        ("val", "ndcg_at_10"),
    } <= names


def test_losses_that_do_not_fit_the_columns_are_refused(tmp_path, tiny_model):
    from jammi_sql.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="needs columns \\[text_a, text_b, score\\]"):
        fit(tmp_path, tiny_model, PAIRS, kind="pairs", embedding_loss="cosent")


def test_split_is_deterministic_and_keeps_an_anchor_on_one_side():
    from jammi_sql.data import split

    rows = [(f"anchor {i // 2}", f"doc {i}") for i in range(40)]
    ts = make_training_set("pairs", rows)
    train1, val1 = split(ts, 0.2, seed=3)
    train2, val2 = split(ts, 0.2, seed=3)
    assert val1.rows == val2.rows and len(val1) == 8 and len(train1) == 32
    assert not {r[0] for r in train1.rows} & {r[0] for r in val1.rows}
    assert split(ts, 0.2, seed=4)[1].rows != val1.rows
    assert np.isfinite(make_training_set("scored_pairs", [("a", "b", "2.5")]).scores()).all()


def test_each_method_has_its_own_default_learning_rate():
    from jammi_sql.train import DEFAULT_LEARNING_RATE, adapter_type_for, learning_rate_for

    head = FineTuneConfig()
    adapters = FineTuneConfig(target_modules=["query"])
    assert head.learning_rate is None and head.early_stopping_metric == "val_metric"
    assert adapter_type_for("lora", head) == "projection_head"
    assert adapter_type_for("lora", adapters) == "encoder_adapters"
    assert learning_rate_for("full", head) == DEFAULT_LEARNING_RATE["full"] == 2e-5
    assert learning_rate_for("encoder_adapters", adapters) == 2e-4
    assert learning_rate_for("projection_head", head, "cosent") == 2e-4
    assert learning_rate_for("projection_head", head, "multiple_negatives_ranking") == 2e-3
    assert learning_rate_for("full", FineTuneConfig(learning_rate=1e-3)) == 1e-3


@pytest.mark.slow
def test_a_head_on_the_bundled_model_trains_and_reloads(tmp_path, bundled_model_folder):
    import csv
    from pathlib import Path

    stsb = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "sts-train.csv"
    if not stsb.exists():
        pytest.skip("STS-B is not on this machine")
    with open(stsb, newline="", encoding="utf-8") as f:
        rows = [
            (r[5], r[6], float(r[4])) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    result = run_training(
        bundled_model_folder,
        make_training_set("scored_pairs", rows[:400]),
        FineTuneConfig(epochs=2),
        "lora",
        work_dir=tmp_path / "work",
        output_dir=tmp_path / "model",
        on_progress=lambda p: None,
        should_stop=lambda: False,
        device=CPU,
    )
    m = result.metrics
    assert m["adapter_type"] == "projection_head" and m["dimensions"] == 384
    assert 0.5 < m["base"]["spearman"] and m["fine_tuned"]["spearman"] >= m["base"]["spearman"]
    encoder = load_fine_tuned(result.output_dir, bundled_model_folder, CPU)
    vectors = encoder.encode(["A man is playing a guitar.", "A man plays the guitar."])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
