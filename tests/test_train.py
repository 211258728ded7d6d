"""The training loop on the tiny model: it learns, resumes exactly, stops, and fails clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jammi_sql.artifacts import layout as artifacts
from jammi_sql.config import FineTuneConfig
from jammi_sql.errors import TrainingError
from jammi_sql.inference.loader import load_fine_tuned
from jammi_sql.training import selection, train
from jammi_sql.training.checkpoint import TrainState
from jammi_sql.training.dataset import make_training_set
from jammi_sql.training.selection import TRIAL_MARGIN
from jammi_sql.training.train import Cancelled, run_training

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
# Enough distinct pairs (built from the tiny vocabulary) that validation can judge: 120 rows,
# 60 held out with validation_fraction 0.5.
_W = ["cat", "dog", "car", "bike", "train", "plane", "piano", "guitar", "cell", "gene", "solar"]
MANY = [
    (
        f"the {_W[i % 11]} {_W[(i * 3) % 11]} {i}",
        f"a {_W[i % 11]} and {_W[(i * 5) % 11]}",
        float(i % 6),
    )
    for i in range(120)
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


def assert_same_weights(a: dict, b: dict, exact: bool = False, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if exact else torch.allclose(a[k], b[k], atol=atol), k


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
        loraplus_lr_ratio=1.0,  # at this rate (5x the default) B at 8x overshoots
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
        return {**out, "spearman": out["spearman"] - len(calls)}  # the base is always best

    monkeypatch.setattr(train, "validate", worse_each_epoch)
    result = fit(
        tmp_path,
        tiny_model,
        MANY,
        epochs=5,
        early_stopping_patience=2,
        trials=1,
        validation_fraction=0.5,
    )
    # epoch 1 is the best trained one; 2 and 3 are worse (patience 2), and the base beats it
    # by far more than the validation's noise
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 0
    assert result.metrics["judged"] is True and result.metrics["improved"] is False
    assert "no epoch beat the base" in result.metrics["note"]
    assert "two standard errors" in result.metrics["note"]
    assert torch.count_nonzero(weights(result)["weight"]) == 0  # exactly the base model


def test_an_epoch_below_the_base_by_less_than_the_noise_keeps_the_training(
    tmp_path, tiny_model, monkeypatch
):
    real = train.validate
    calls = []

    def slightly_worse(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)  # the base, then each epoch: a hair below the base, epoch 2 the best
        return {**out, "spearman": 0.5 - 0.001 * (len(calls) > 1) * (1 + (len(calls) != 3))}

    monkeypatch.setattr(train, "validate", slightly_worse)
    result = fit(tmp_path, tiny_model, MANY, epochs=3, trials=1, validation_fraction=0.5)
    m = result.metrics
    # epoch 3 is a hair below epoch 2, within the noise: the later, more trained one is kept
    assert m["judged"] is True and result.best_epoch == 3 == m["kept"]["epoch"]
    assert m["improved"] is False and "not a clear loss, so the training was kept" in m["note"]
    assert m["standard_error"]["within_noise"] is True  # a loss of 0.002 on a noisy split
    assert torch.count_nonzero(weights(result)["weight"]) > 0  # the trained weights


def scripted_validation(monkeypatch, scores: list[float]):
    """Validation reports these Spearman values: the base's, then each epoch's."""
    real = train.validate
    calls = []

    def scripted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        return {**out, "spearman": scores[len(calls) - 1]}

    monkeypatch.setattr(train, "validate", scripted)


@pytest.mark.parametrize(
    "scores, kept",
    [
        ([0.30, 0.60, 0.59, 0.58], 3),  # each later epoch within a standard error: the last
        ([0.30, 0.60, 0.59, 0.40], 2),  # the last clearly worse: the later one within noise
        ([0.30, 0.90, 0.50, 0.45], 1),  # later epochs far below the best: the best
        ([0.30, 0.50, 0.70, 0.69], 3),  # a new best, then one within noise of it
    ],
)
def test_a_later_epoch_is_kept_unless_validation_clearly_prefers_an_earlier_one(
    tmp_path, tiny_model, monkeypatch, scores, kept
):
    scripted_validation(monkeypatch, scores)
    result = fit(
        tmp_path,
        tiny_model,
        MANY,
        epochs=3,
        trials=1,
        validation_fraction=0.5,
        early_stopping_patience=0,
    )
    assert result.best_epoch == kept == result.metrics["kept"]["epoch"]
    assert result.metrics["fine_tuned"]["spearman"] == scores[kept]
    se = result.metrics["standard_error"]  # Fisher's, beside the kept score
    n = se["rows"]
    assert se["spearman"] == pytest.approx((1 - scores[kept] ** 2) / (n - 3) ** 0.5)
    assert se["gain_in_standard_errors"] == pytest.approx((scores[kept] - 0.30) / se["spearman"])
    assert se["within_noise"] is False


def test_a_validation_split_too_small_to_judge_keeps_the_final_weights_and_says_why(
    tmp_path, tiny_model
):
    result = fit(tmp_path, tiny_model, SCORED, epochs=3)  # 12 rows: 1 held out
    m = result.metrics
    assert m["judged"] is False and m["kept"]["epoch"] == 3 == result.best_epoch
    assert "fewer than the 30 needed" in m["kept"]["why"] and "final weights" in m["note"]
    assert len(m["trials"]) == 1  # nothing to choose between, so no trials either
    assert torch.count_nonzero(weights(result)["weight"]) > 0  # the training was kept


def test_a_head_tries_several_settings_and_keeps_the_best_on_validation(tmp_path, tiny_model):
    seen = []
    result = fit(
        tmp_path,
        tiny_model,
        MANY,
        epochs=2,
        trials=3,
        validation_fraction=0.5,
        learning_rate=None,
        progress=lambda p: seen.extend(p.trial_logs),
    )
    m = result.metrics
    assert m["judged"] is True and [t["trial"] for t in m["trials"]] == [1, 2, 3]
    scores, winner = [t["val"]["spearman"] for t in m["trials"]], 0
    for i, score in enumerate(scores):  # a later trial must win beyond validation's noise
        noise = selection.noise("spearman", scores[winner], m["n_validation"])
        winner = i if score > scores[winner] + max(TRIAL_MARGIN, noise) else winner
    assert m["kept"]["trial"] == 1 + winner
    assert {t for t, *_ in seen} == {1, 2, 3}
    assert {n for *_, n, _ in seen} >= {"learning_rate", "weight_decay", "val_spearman"}
    assert len({(t["learning_rate"], t["weight_decay"]) for t in m["trials"]}) == 3


def test_a_later_trial_must_beat_the_winner_by_one_standard_error_of_validation():
    state = TrainState()

    def trial(spearman: float) -> None:
        state.best_val, state.best_epoch = {"spearman": spearman, "loss": 1.0}, 1
        margin = selection.trial_margin(state, "spearman", 500, watch_loss=False)
        selection.close_trial(state, {}, lambda v: v["spearman"], True, dict, margin)
        state.next_trial()

    trial(0.80)  # one standard error at 500 pairs: (1 - 0.8^2) / sqrt(497) = 0.016
    assert selection.trial_margin(state, "spearman", 500, watch_loss=False) == pytest.approx(
        0.36 / math.sqrt(497)
    )
    trial(0.81)  # better, but inside the noise: the conservative first trial stays
    assert state.winner["trial"] == 0
    trial(0.82)  # beyond it
    assert state.winner["trial"] == 2 and state.winner["score"] == 0.82
    assert selection.trial_margin(state, "spearman", 10**9, watch_loss=False) == TRIAL_MARGIN
    assert selection.trial_margin(state, "val_loss", 500, watch_loss=True) == TRIAL_MARGIN
    state.winner["val"]["ndcg_at_10"] = 0.8  # retrieval: the fixed margin
    assert selection.trial_margin(state, "ndcg_at_10", 70, watch_loss=False) == TRIAL_MARGIN


def test_a_resumed_head_with_trials_ends_where_an_uninterrupted_one_does(tmp_path, tiny_model):
    cfg = dict(epochs=2, trials=3, validation_fraction=0.5, lora_dropout=0.1, learning_rate=None)
    straight = fit(tmp_path, tiny_model, MANY, name="straight", **cfg)
    polls = iter(range(10**6))
    with pytest.raises(Cancelled):  # stopped inside the second trial
        fit(tmp_path, tiny_model, MANY, name="resumed", stop=lambda: next(polls) >= 6, **cfg)
    resumed = run_training(
        tiny_model,
        make_training_set("scored_pairs", MANY),
        FineTuneConfig(warmup_steps=0, **cfg),
        "lora",
        work_dir=tmp_path / "resumed-work",
        output_dir=tmp_path / "resumed-model",
        on_progress=lambda p: None,
        should_stop=lambda: False,
        device=CPU,
        resume=True,
    )
    assert resumed.metrics["kept"] == straight.metrics["kept"]
    assert_same_weights(weights(straight), weights(resumed))


@pytest.mark.parametrize("shape", ["head", "adapters"])
def test_a_small_set_trains_the_chosen_setting_again_on_every_row(tmp_path, tiny_model, shape):
    cfg = dict(epochs=2, batch_size=8, trials=1, validation_fraction=0.5, shape=shape)
    chosen = fit(tmp_path, tiny_model, MANY, name="chosen", refit=False, **cfg)
    seen = []
    refit = fit(tmp_path, tiny_model, MANY, name="refit", progress=seen.append, **cfg)
    m, epochs = refit.metrics, chosen.best_epoch
    assert "refit" not in chosen.metrics and m["kept"]["epoch"] == epochs > 0
    assert m["refit"] == {"trial": 1, "epochs": epochs, "rows": 120}
    assert "trained again on all 120 rows (the validation rows too)" in m["kept"]["why"]
    assert m["fine_tuned"] == chosen.metrics["fine_tuned"]  # validation of the run that chose
    # the plan: the steps of the run that chose, then at most its 2 epochs over all 120 rows
    # again; progress ends at 1 whatever the refit left out
    first = math.ceil(m["n_train"] / 8) * 2
    assert (seen[-1].step, seen[-1].total_steps) == (first + 15 * 2,) * 2
    assert {p.total_steps for p in seen} == {first + 30}
    assert not all(
        torch.equal(a, b)
        for a, b in zip(weights(chosen).values(), weights(refit).values(), strict=True)
    )

    def in_the_refit() -> bool:
        return bool(progress) and progress[-1].step >= first + 4

    progress = []
    with pytest.raises(Cancelled):
        fit(
            tmp_path,
            tiny_model,
            MANY,
            name="resumed",
            progress=progress.append,
            stop=in_the_refit,
            **cfg,
        )
    saved = torch.load(tmp_path / "resumed-work" / train.CHECKPOINT_FILE, weights_only=True)
    assert saved["run"]["refit"] == m["refit"] and saved["run"]["step"] > 0  # inside the refit
    method, extra = SHAPES[shape]
    config = FineTuneConfig(
        warmup_steps=0,
        learning_rate=1e-2,
        **extra,
        **{k: v for k, v in cfg.items() if k != "shape"},
    )
    resumed = run_training(
        tiny_model,
        make_training_set("scored_pairs", MANY),
        config,
        method,
        work_dir=tmp_path / "resumed-work",
        output_dir=tmp_path / "resumed-model",
        on_progress=lambda p: None,
        should_stop=lambda: False,
        device=CPU,
        resume=True,
    )
    assert resumed.metrics["refit"] == m["refit"]
    assert_same_weights(weights(refit), weights(resumed))


def test_split_is_deterministic_and_keeps_an_anchor_on_one_side():
    from jammi_sql.training.dataset import split

    rows = [(f"anchor {i // 2}", f"doc {i}") for i in range(40)]
    ts = make_training_set("pairs", rows)
    train1, val1 = split(ts, 0.2, seed=3)
    train2, val2 = split(ts, 0.2, seed=3)
    assert val1.rows == val2.rows and len(val1) == 8 and len(train1) == 32
    assert not {r[0] for r in train1.rows} & {r[0] for r in val1.rows}
    assert split(ts, 0.2, seed=4)[1].rows != val1.rows
    assert np.isfinite(make_training_set("scored_pairs", [("a", "b", "2.5")]).scores()).all()


def test_the_split_never_puts_a_text_a_text_b_anchor_or_positive_on_both_sides():
    from jammi_sql.training.dataset import split

    # positives shared between anchors, and texts that recur as text_b of other rows
    rows = [(f"q{i}", f"doc {i // 3}", f"neg {(i * 7) % 50}") for i in range(300)]
    for kind, width in (("pairs", 2), ("triplets", 3)):
        ts = make_training_set(kind, [r[:width] for r in rows])
        train, val = split(ts, 0.2, seed=0)
        seen = {t for row in train.rows for t in row[:2]}
        assert len(val) > 0 and not seen & {t for row in val.rows for t in row[:2]}
        assert len(train) + len(val) == len(ts)


def test_when_every_answer_has_many_questions_whole_answers_are_held_out():
    from jammi_sql.training.dataset import split, text_groups

    # 200 questions about 10 answers: each answer's 20 questions form one group, larger than
    # half the 20 validation rows wanted, so drawing groups at random held out none
    rows = [(f"question {i}", f"answer {i % 10}") for i in range(200)]
    ts = make_training_set("pairs", rows)
    assert len(text_groups(ts)) == 10
    train, val = split(ts, 0.1, seed=0)
    assert len(val) == 20 and len(train) == 180
    assert len({r[1] for r in val.rows}) == 1  # one whole answer
    assert not {t for r in train.rows for t in r} & {t for r in val.rows for t in r}
    assert split(ts, 0.1, seed=0)[1].rows == val.rows


def test_a_run_without_validation_rows_says_that_shared_texts_caused_it(tmp_path, tiny_model):
    from jammi_sql.training.dataset import why_no_validation

    rows = [(f"the cat plays {i}", "a dog runs") for i in range(24)]  # one answer for all
    result = fit(tmp_path, tiny_model, rows, kind="pairs", epochs=1, refit=False)
    why = result.metrics["kept"]["why"]
    assert why.startswith("validation cannot judge: no validation rows: rows that share a text")
    assert "join all 24 rows into one group" in why and "too few rows" not in why
    ts = make_training_set("pairs", rows)
    assert why_no_validation(ts, 0.0) == "validation_fraction is 0"
    assert "make no validation row" in why_no_validation(ts, 0.01)


@pytest.mark.parametrize("ratio", [1.0, 8.0])
def test_loraplus_moves_the_b_matrices_ratio_times_as_fast(tmp_path, tiny_model, ratio):
    # One AdamW step moves each weight by the learning rate (the first step is sign(gradient)),
    # so B (zero at the start) ends at learning_rate x ratio in magnitude.
    rate = 1e-3
    kept = fit(
        tmp_path,
        tiny_model,
        SCORED,
        shape="adapters",
        learning_rate=rate,
        loraplus_lr_ratio=ratio,
        epochs=1,
        batch_size=len(SCORED),
        lr_schedule="constant",
        weight_decay=0.0,
        lora_dropout=0.0,
        validation_fraction=0.0,
    )
    b = [w for k, w in weights(kept).items() if "lora_B" in k]
    assert b and [float(w.abs().max()) for w in b] == pytest.approx(
        [rate * ratio] * len(b), rel=1e-3
    )


def test_keys_left_null_take_the_defaults_of_the_shape():
    from jammi_sql.config import SHAPE_DEFAULTS, adapter_type_for, resolve

    head, adapters = FineTuneConfig(), FineTuneConfig(target_modules=["query"])
    assert adapter_type_for("lora", head) == "projection_head"
    assert adapter_type_for("lora", adapters) == "encoder_adapters"
    assert adapter_type_for("full", head) == "full"
    for shape, config in (
        ("projection_head", head),
        ("encoder_adapters", adapters),
        ("full", head),
    ):
        resolved = resolve(config, shape, 32)
        for key, value in SHAPE_DEFAULTS[shape].items():
            assert getattr(resolved, key) == (32 if value == "dim" else value), (shape, key)
    assert resolve(FineTuneConfig(learning_rate=1e-3, epochs=7), "full", 32).learning_rate == 1e-3


def test_settings_a_shape_cannot_take_are_errors():
    from jammi_sql.config import resolve
    from jammi_sql.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="lora_rank = 33 is above the model's dimension"):
        resolve(FineTuneConfig(lora_rank=33), "projection_head", 32)
    with pytest.raises(InvalidArgumentError, match="trials = 2 is only for a projection head"):
        resolve(FineTuneConfig(trials=2, target_modules=["query"]), "encoder_adapters", 32)
    with pytest.raises(InvalidArgumentError, match="trials = 0 is invalid"):
        FineTuneConfig(trials=0)
    with pytest.raises(InvalidArgumentError, match="loraplus_lr_ratio = 4 sets how fast"):
        resolve(FineTuneConfig(loraplus_lr_ratio=4), "full", 32)
    with pytest.raises(InvalidArgumentError, match="loraplus_lr_ratio = 0 is invalid"):
        FineTuneConfig(loraplus_lr_ratio=0)


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


def test_matryoshka_dims_make_the_first_dimensions_work_on_their_own(tmp_path, tiny_model):
    from jammi_sql.inference.loader import load_fine_tuned
    from jammi_sql.training.losses import MultipleNegativesRankingLoss

    pairs = [
        (f"{_W[i % 11]} {_W[(i * 7) % 11]}", f"the {_W[i % 11]} and a {_W[(i * 3) % 11]}")
        for i in range(40)
    ]
    cfg = dict(kind="pairs", epochs=6, trials=1, validation_fraction=0.0, batch_size=8)
    losses = {}
    for dims in ([], [4]):
        cfg.update(learning_rate=1e-2, weight_decay=0.0, matryoshka_dims=dims)
        result = fit(tmp_path, tiny_model, pairs, name=f"m{len(dims)}", **cfg)
        encoder = load_fine_tuned(result.output_dir, tiny_model, CPU)
        a = torch.tensor(encoder.encode([p[0] for p in pairs], query=True))
        b = torch.tensor(encoder.encode([p[1] for p in pairs]))
        losses[len(dims)] = [
            float(MultipleNegativesRankingLoss()(a[:, :d], b[:, :d])) for d in (4, 32)
        ]
    assert losses[1][0] < 0.85 * losses[0][0], losses  # the first 4 dimensions learned
    assert losses[1][1] < 1.25 * losses[0][1], losses  # at little cost to the full width
