"""Which weights a job keeps, and what its metrics say about why.

- Whether validation can judge at all: too few rows, or a base model already at the ceiling,
  cannot tell a better model from the base. Then the final weights are kept (training is not
  thrown away) and the metrics say why no choice was made.
- Otherwise, of the best trial, the latest epoch that scores within one standard error of
  its best epoch on validation (``keeps_later``). The base model is kept
  instead only when validation shows the training clearly hurt: the base scores higher by more
  than two standard errors of the validation score. A small validation split is noisy (58
  queries move NDCG@10 by about 0.05), and on such splits "keep the base unless an epoch wins"
  threw away fine-tunes that helped on held-out data (benchmarks/quality.py, SciFact folds).

Pure bookkeeping over validation dicts: no torch here beyond what the caller hands over.
"""

from __future__ import annotations

import math

from .checkpoint import TrainState

MIN_JUDGE_ROWS = 30  # fewer validation rows than this cannot separate two good models
# A later trial replaces the winner only when it scores this much higher on validation
# (``trial_margin``): trials are ordered from the most conservative setting, and smaller
# differences are noise. On Spearman the margin is one standard error of the winner's score,
# if larger: on STSb a head with little weight decay beat decay 30 by 0.0075 on its 575
# validation pairs (one standard error: 0.013), then lost 0.016 on STS-B dev, where decay 30
# gained. Not on NDCG@10, whose standard error on a few dozen queries (0.044 on SciFact's 74)
# is mostly spread between queries that two heads share: there a lead of 0.007 for a higher
# learning rate held out as +0.009 (SciFact's 162 queries).
TRIAL_MARGIN = 0.005
CEILING = 0.99  # a base scoring this (Spearman or NDCG@10) on validation leaves no room to show


def cannot_judge(
    n_val: int, base_val: dict | None, metric: str, why_empty: str | None = None
) -> str | None:
    """Why validation cannot tell models apart, or None when it can; ``why_empty`` says why
    the split held out no rows (:func:`~jammi_sql.training.dataset.why_no_validation`)."""
    if base_val is None or n_val == 0:
        return "no validation rows" + (f": {why_empty}" if why_empty else "")
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


def noise(metric: str, value: float, n: int) -> float:
    """One standard error of a validation score of ``n`` rows, from the score alone.

    Spearman: the Fisher approximation (1 - r^2) / sqrt(n - 3). NDCG@10 (a mean of per-query
    values in [0, 1]): at most sqrt(v (1 - v) / n), the Bernoulli bound.
    """
    if n < 4 or not math.isfinite(value):
        return math.inf
    if metric == "spearman":
        return (1 - value * value) / math.sqrt(n - 3)
    return math.sqrt(max(value * (1 - value), 0.0) / n)


def keeps_later(score: float, earlier: list[float], margin: float) -> bool:
    """Whether an epoch replaces the one kept so far: it scores within ``margin`` (one standard
    error) of the best earlier epoch, or there is none. Later epochs of a decaying schedule
    are the trained ones; a small validation split ranks epochs mostly by noise, and on
    SciFact folds the epoch it preferred was often not the better one held out."""
    if not math.isfinite(score):
        return False
    return not earlier or score >= max(earlier) - margin


def base_margin(state: TrainState, metric: str, n_val: int) -> tuple[float, float, float]:
    """(base score, kept score, margin): the base wins when base > kept + margin."""
    base = (state.base_val or {}).get(metric, math.nan)
    kept = ((state.winner or {}).get("val") or {}).get(metric, math.nan)
    return base, kept, 2 * noise(metric, base, n_val)


def settle(state: TrainState, metric: str, n_val: int, judged: bool) -> None:
    """Keep the base model instead of the winner when validation shows training clearly hurt."""
    if not judged or state.winner is None or state.winner["epoch"] == 0:
        return
    base, kept, margin = base_margin(state, metric, n_val)
    if math.isfinite(base) and math.isfinite(kept) and base > kept + margin:
        state.winner.update(epoch=0, val=state.base_val, weights=None, history=[])


def json_number(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def trial_margin(state: TrainState, metric: str, n_val: int, watch_loss: bool) -> float:
    """How much higher than the winner so far a later trial must score on validation:
    ``TRIAL_MARGIN``, or on Spearman one standard error of the winner's score if larger."""
    value = ((state.winner or {}).get("val") or {}).get(metric, math.nan)
    if watch_loss or metric != "spearman" or not math.isfinite(value):
        return TRIAL_MARGIN
    return max(TRIAL_MARGIN, noise(metric, value, n_val))


def close_trial(
    state: TrainState, settings: dict, score, judged: bool, weights, margin: float = TRIAL_MARGIN
) -> dict:
    """Record the trial that just ended; make it the winner if it beats the others by ``margin``.

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
    if state.winner is None or current > state.winner["score"] + margin:
        state.winner = {
            "trial": state.trial,
            "epoch": state.best_epoch,
            "val": state.best_val,
            "weights": kept_weights,
            "history": state.history,
            "score": current,
        }
    return result


def summary(state: TrainState, metric: str, kind: str, reason: str | None, n_val: int) -> dict:
    """Base and kept validation figures side by side, the delta, and which weights were kept."""
    winner = state.winner or {}
    base, tuned = state.base_val, winner.get("val")
    out = {
        "metric": metric,
        "judged": reason is None,
        "kept": _kept(winner, len(state.trials), reason, base_margin(state, metric, n_val)),
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
    # The noise of the kept score, so a gain can be judged: one standard error of a validation
    # score of n_val rows (Fisher's for Spearman; the Bernoulli bound for NDCG@10).
    se = noise(metric, tuned.get(metric, math.nan), n_val)
    gain = tuned.get(metric, math.nan) - base.get(metric, math.nan)
    out["standard_error"] = {
        metric: json_number(se),
        "rows": n_val,
        "how": "Fisher: (1 - r^2) / sqrt(n - 3)"
        if metric == "spearman"
        else "at most sqrt(v (1 - v) / n) (a mean of per-query values in [0, 1])",
        "gain_in_standard_errors": json_number(gain / se) if se > 0 else None,
        "within_noise": bool(abs(gain) <= se) if math.isfinite(gain * se) else None,
    }
    gained = tuned.get(metric, math.nan) > base.get(metric, math.nan)  # False on NaN
    out["improved"] = bool(reason is None and winner.get("epoch", 0) > 0 and gained)
    out["note"] = None if out["improved"] else out["kept"]["why"]
    return out


def _kept(winner: dict, n_trials: int, reason: str | None, scores: tuple) -> dict:
    trial, epoch = winner.get("trial", 0) + 1, winner.get("epoch", 0)
    base, kept, margin = scores
    if reason is not None:
        why = f"validation cannot judge: {reason}; the final weights were kept"
    elif epoch == 0:
        why = (
            f"no epoch beat the base model on validation: the base scored {base:.4f}, more than "
            f"two standard errors ({margin:.4f}) above every epoch, so the fine-tuned model "
            "equals its base; try more data, another learning_rate or more epochs"
        )
    else:
        of = (
            f" of {n_trials} trials (a later one must beat the winner by {TRIAL_MARGIN}, "
            "or on Spearman by one standard error of the winner's score if larger)"
            if n_trials > 1
            else ""
        )
        why = f"the best validation score{of}: trial {trial}, epoch {epoch}"
        if kept < base:
            why += (
                f" ({kept:.4f}, below the base's {base:.4f} by less than two standard errors "
                f"({margin:.4f}) of the validation score: not a clear loss, so the training "
                "was kept)"
            )
    return {"trial": trial, "epoch": epoch, "why": why}
