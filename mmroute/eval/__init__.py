"""Evaluation harness: quality-vs-cost curves of a router against baselines, on the same queries.

``mmroute.curves`` (pure numpy: sweeps, monotone curves, auc / pgr_hull / cost_to_match_best,
RouteLLM's APGR and CPT), ``baselines`` (random, knn, mf, sw_ranking, global), ``harness`` (outcomes ->
arrays, cross-validation, router evaluation, the JSON report), ``plot`` (PNG, optional
matplotlib) and ``cli`` (``mmroute eval``). See docs/evaluation.md. The package exports what
evaluating a router takes; the baseline classes and metric helpers are in their modules.
"""

from .baselines import make_baselines
from .harness import EvalSet, cross_validate, evaluate_router, load_eval_set
from .report import EvalReport
from ..curves import Curve, summarize

__all__ = ["Curve", "EvalReport", "EvalSet", "cross_validate", "evaluate_router", "load_eval_set", "make_baselines",
           "summarize"]
