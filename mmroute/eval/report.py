"""An evaluation's report: every method's curve swept on the same queries and scored against the
same reference (per fold, then averaged), repeats combined with their spread; the JSON schema of
``mmroute eval --out``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .. import curves as mx

if TYPE_CHECKING:
    from .harness import EvalSet

BASELINE_ORDER = ("random", "oracle", "knn", "mf", "sw_ranking", "global")


# ------------------------------------------------------------------------------------------ schema
class ModelPoint(BaseModel):
    """A single model called on every query."""

    model_config = ConfigDict(extra="forbid")
    quality: float
    cost: float


class CurveData(BaseModel):
    """Raw sweep points (downsampled for the file); ``strong_pct`` only for two models."""

    model_config = ConfigDict(extra="forbid")
    cost: list[float]
    quality: list[float]
    strong_pct: list[float] | None = None


class EvalReport(BaseModel):
    """The JSON report (keys fixed by the evaluation-harness issue; ``config`` says how it was made)."""

    model_config = ConfigDict(extra="forbid")
    n_queries: int
    models: dict[str, ModelPoint]
    router: dict[str, float | None]
    baselines: dict[str, dict[str, float | None]]
    curves: dict[str, CurveData]
    spread: dict[str, dict[str, float | None]] | None = None  # sd over repeated CV (``repeats`` > 1)
    config: dict[str, Any] = {}

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.model_dump_json(indent=2), encoding="utf-8")


# -------------------------------------------------------------------------------------------- data


# ---------------------------------------------------------------------------------------- scoring
def _downsample(curve: mx.Curve, max_points: int = 400) -> CurveData:
    K = len(curve.cost)
    idx = np.unique(np.linspace(0, K - 1, min(K, max_points)).round().astype(int))
    # keep every Pareto point too, so the stored curve draws the same monotone line
    pc, _ = curve.pareto()
    on_front = np.nonzero(np.isin(curve.cost, pc))[0]
    idx = np.unique(np.concatenate([idx, on_front[:max_points]]))
    return CurveData(cost=curve.cost[idx].tolist(), quality=curve.quality[idx].tolist(),
                     strong_pct=None if curve.strong_pct is None else curve.strong_pct[idx].tolist())


def _mean_metrics(per_fold: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Average each metric over folds; null when any fold has it null (e.g. never matched the best)."""
    out: dict[str, float | None] = {}
    for key in per_fold[0]:
        vals = [m[key] for m in per_fold]
        known = [v for v in vals if v is not None]
        out[key] = None if len(known) < len(vals) else float(np.mean(known))
    return out


def build_report(data: EvalSet, router_pred: np.ndarray, baseline_preds: dict[str, np.ndarray],
                 Chat: np.ndarray, config: dict[str, Any], n_points: int = 256,
                 folds: np.ndarray | None = None, margin: bool = True) -> EvalReport:
    """Sweep every prediction on the same queries and score it against the same reference.

    With ``folds`` (cross-validation) each metric is computed per fold — that fold's single
    models, hull and oracle, that fold's model predicting — and averaged: pooling the scores of
    five differently fitted models under one threshold would rank queries partly by which fold
    they were in (a feature-free model would switch whole folds at once). The stored curves are
    the pooled ones, for the picture. ``margin`` (N models): every curve, the oracle's too, holds
    the default-model margin sweep's points besides the ``lam`` sweep's (``mmroute.curves``).
    """
    ref = mx.reference(data.Q, data.C, n_points=n_points, margin=margin)
    groups = [np.arange(data.n)] if folds is None else [np.nonzero(folds == f)[0] for f in np.unique(folds)]
    fold_refs = [ref] if folds is None else [mx.reference(data.Q[g], data.C[g], n_points=n_points, margin=margin)
                                             for g in groups]

    def score(P: np.ndarray | None) -> tuple[mx.Curve, dict[str, float | None]]:
        if P is None:  # the oracle
            mets = [mx.summarize(r.oracle, r) for r in fold_refs]
            return ref.oracle, _mean_metrics(mets)
        mets = [mx.evaluate_predictions(P[g], data.Q[g], data.C[g], r, Chat=Chat[g], n_points=n_points,
                                        margin=margin)[1]
                for g, r in zip(groups, fold_refs)]
        curve = mx.evaluate_predictions(P, data.Q, data.C, ref, Chat=Chat, n_points=n_points, margin=margin)[0]
        return curve, _mean_metrics(mets)

    curves: dict[str, CurveData] = {}
    r_curve, r_metrics = score(router_pred)
    curves["router"] = _downsample(r_curve)
    baselines: dict[str, dict[str, float | None]] = {}
    for name in BASELINE_ORDER:
        if name == "oracle":
            curve, met = score(None)
        elif name in baseline_preds:
            curve, met = score(baseline_preds[name])
        else:
            continue
        baselines[name] = met
        curves[name] = _downsample(curve)
    curves["hull"] = CurveData(cost=ref.hull_c.tolist(), quality=ref.hull_q.tolist())
    models = {m: ModelPoint(quality=float(ref.q_models[i]), cost=float(ref.c_models[i]))
              for i, m in enumerate(data.models)}
    config = {**config, "metrics": "mean over folds" if folds is not None else "all queries",
              "auc_hull": float(np.mean([r.auc_hull for r in fold_refs])),
              "auc_oracle": float(np.mean([r.auc_oracle for r in fold_refs])),
              "cost_range": [ref.lo, ref.hi], "best_model": data.models[ref.best],
              "strong_model": None if ref.strong is None else data.models[ref.strong],
              "sweep": "threshold" if ref.strong is not None else ("lambda+margin" if margin else "lambda"),
              "dropped": data.dropped, "costs_from_file": float(data.cost_from_file.mean())}
    return EvalReport(n_queries=data.n, models=models, router=r_metrics, baselines=baselines,
                      curves=curves, config=config)


def combine_repeats(reports: list[EvalReport]) -> EvalReport:
    """Metrics averaged over repeated CV runs, their standard deviation in ``spread``; the curves
    (for the picture) are the first repeat's."""
    first = reports[0]
    if len(reports) == 1:
        return first

    def merge(get: Callable[[EvalReport], dict[str, float | None]]) -> tuple[dict[str, float | None], dict[str, float | None]]:
        mean = _mean_metrics([get(r) for r in reports])
        sd: dict[str, float | None] = {}
        for key in mean:
            vals = [get(r)[key] for r in reports]
            known = [v for v in vals if v is not None]
            sd[key] = None if len(known) < len(vals) else float(np.std(known, ddof=1))
        return mean, sd

    router, spread_router = merge(lambda r: r.router)
    baselines: dict[str, dict[str, float | None]] = {}
    spread = {"router": spread_router}
    for name in first.baselines:
        baselines[name], spread[name] = merge(functools.partial(_baseline_metrics, name=name))
    config = {**first.config, "curves": "first repeat",
              **{k: float(np.mean([r.config[k] for r in reports])) for k in ("auc_hull", "auc_oracle")},
              "pgr_hull_per_repeat": {"router": [r.router["pgr_hull"] for r in reports],
                                      **{n: [r.baselines[n]["pgr_hull"] for r in reports] for n in first.baselines}}}
    return first.model_copy(update={"router": router, "baselines": baselines, "spread": spread, "config": config})


def _baseline_metrics(report: EvalReport, *, name: str) -> dict[str, float | None]:
    return report.baselines[name]
