"""Which weights a job keeps, and what its metrics say about why.

- Whether validation can judge at all: too few rows, or a base model already at the ceiling,
  cannot tell a better model from the base. Then the final weights are kept (training is not
  thrown away) and the metrics say why no choice was made.
- Otherwise the best epoch of the best trial on validation, or the base if none beat it.

Pure bookkeeping over validation dicts: no torch here beyond what the caller hands over.
"""

from __future__ import annotations

import math

from .checkpoint import TrainState

MIN_JUDGE_ROWS = 30  # fewer validation rows than this cannot separate two good models
# A later trial replaces the winner only when it scores this much higher on validation (in
# Spearman or NDCG@10): trials are ordered from the most conservative setting, and smaller
# differences are noise (a validation split of 500 pairs moves Spearman by about 0.01).
TRIAL_MARGIN = 0.005
CEILING = 0.99  # a base scoring this (Spearman or NDCG@10) on validation leaves no room to show


def cannot_judge(n_val: int, base_val: dict | None, metric: str) -> str | None:
    """Why validation cannot tell models apart, or None when it can."""
    if base_val is None or n_val == 0:
        return "no validation rows (too few rows or validation_fraction 0)"
    if n_val < MIN_JUDGE_ROWS:
        return (
            f"the validation split has {n_val} rows, fewer than the {MIN_JUDGE_ROWS} needed to "
            "tell a better model from the base (give more rows or a larger validation_fraction)"
        )
    value = base_val.get(metric, float("nan"))
    if math.isfinite(value) and value >= CEILING:
        return (
            f"the base model already scores {metric} {value:.4f} on validation (>= {CEILING}), "
            "so no model can show a gain there"
        )
    return None


def json_number(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def close_trial(state: TrainState, settings: dict, score, judged: bool, weights) -> dict:
    """Record the trial that just ended; make it the winner if it beats the others.

    The caller then starts the next one with ``state.next_trial()``.

    ``weights()`` gives the trial's final weights (kept when validation cannot judge).
    """
    kept_weights = state.best_state if judged else weights()
    result = {
        "trial": state.trial + 1,
        **settings,
        "kept_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "val": {k: json_number(v) for k, v in (state.best_val or {}).items()},
    }
    state.trials.append(result)
    current = score(state.best_val) if state.best_val else -math.inf
    if state.winner is None or current > state.winner["score"] + TRIAL_MARGIN:
        state.winner = {
            "trial": state.trial,
            "epoch": state.best_epoch,
            "val": state.best_val,
            "weights": kept_weights,
            "history": state.history,
            "score": current,
        }
    return result


def summary(state: TrainState, metric: str, kind: str, reason: str | None) -> dict:
    """Base and kept validation figures side by side, the delta, and which weights were kept."""
    winner = state.winner or {}
    base, tuned = state.base_val, winner.get("val")
    out = {
        "metric": metric,
        "judged": reason is None,
        "kept": _kept(winner, len(state.trials), reason),
        "best_epoch": winner.get("epoch", 0),
        "epochs": [{k: json_number(v) for k, v in h.items()} for h in winner.get("history", [])],
        "trials": state.trials,
    }
    if base is None or tuned is None:
        out.update(base=None, fine_tuned=None, delta=None, improved=None, note=out["kept"]["why"])
        return out
    extra = ("pearson",) if kind == "scored_pairs" else ("mrr_at_10", "recall_at_10")
    pick = ("loss", metric, *extra)
    name = {"loss": "val_loss"}
    out["base"] = {name.get(k, k): json_number(base.get(k)) for k in pick}
    out["fine_tuned"] = {name.get(k, k): json_number(tuned.get(k)) for k in pick}
    out["delta"] = {
        name.get(k, k): json_number(tuned[k] - base[k]) if k in base and k in tuned else None
        for k in pick
    }
    out["improved"] = bool(reason is None and winner.get("epoch", 0) > 0)
    out["note"] = None if out["improved"] else out["kept"]["why"]
    return out


def _kept(winner: dict, n_trials: int, reason: str | None) -> dict:
    trial, epoch = winner.get("trial", 0) + 1, winner.get("epoch", 0)
    if reason is not None:
        why = f"validation cannot judge: {reason}; the final weights were kept"
    elif epoch == 0:
        why = (
            "no epoch beat the base model on validation, so the fine-tuned model equals its "
            "base; try more data, another learning_rate or more epochs"
        )
    else:
        of = f" of {n_trials} trials" if n_trials > 1 else ""
        why = f"the best validation score{of}: trial {trial}, epoch {epoch}"
    return {"trial": trial, "epoch": epoch, "why": why}
