"""Evaluation harness: quality-vs-cost curves of a router against baselines, on the same queries.

``metrics`` (pure numpy: sweeps, monotone curves, auc / pgr_hull / cost_to_match_best, RouteLLM's
APGR and CPT), ``baselines`` (random, knn, mf, sw_ranking, global), ``harness`` (outcomes ->
arrays, cross-validation, router evaluation, the JSON report), ``plot`` (PNG, optional
matplotlib) and ``cli`` (``mmroute eval``). See docs/evaluation.md.
"""

from .baselines import (BTQuality, GlobalBT, JudgmentArrays, KNNQuality, MatrixFactorization, RandomQuality,
                        SWRanking, make_baselines)
from .harness import (EvalReport, EvalSet, cross_validate, evaluate_router, load_eval_set, outcome_judgments,
                      outcomes_from_anchor)
from .metrics import Curve, evaluate_predictions, reference, summarize, sweep, threshold_sweep

__all__ = [
    "BTQuality", "Curve", "EvalReport", "EvalSet", "GlobalBT", "JudgmentArrays", "KNNQuality", "MatrixFactorization",
    "RandomQuality", "SWRanking", "cross_validate", "evaluate_predictions", "evaluate_router", "load_eval_set",
    "make_baselines", "outcome_judgments", "outcomes_from_anchor", "reference", "summarize", "sweep",
    "threshold_sweep",
]
