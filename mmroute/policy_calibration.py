"""Choosing the knob of a policy on sample queries: lambda for a cost target, a share of strong
calls, or the default rule (least cost within a quality tolerance of the best single model, kept
clear of a lambda where a whole query type switches), and RouteLLM's two-model threshold.

Every choice made while calibrating is :meth:`mmroute.policy.CostAwarePolicy.choose`, the rule
that serves, so a calibrated lambda means on the served router what it meant here.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError
from .policy import choose_batch


def calibrate_lambda(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None, *,
                     target_cost: float | None = None, target_strong_share: float | None = None,
                     strongest: int | None = None, iters: int = 60) -> float:
    """Pick lambda so that, on these sample queries, the average cost (or the strongest model's
    share of calls) meets the target. Average cost falls as lambda grows, so bisect in log space.
    """
    quality, cost = np.asarray(quality, float), np.asarray(cost, float)
    eligible = np.ones_like(quality, bool) if eligible is None else np.asarray(eligible, bool)
    if (target_cost is None) == (target_strong_share is None):
        raise ConfigError("give exactly one of target_cost or target_strong_share")
    if strongest is None:
        strongest = int(np.argmax(quality.mean(axis=0)))

    def stat(lam: float) -> float:
        pick = choose_batch(quality, cost, eligible, lam)
        if target_cost is not None:
            return float(cost[np.arange(len(pick)), pick].mean())
        return float((pick == strongest).mean())

    target = float(target_cost if target_cost is not None else target_strong_share)  # type: ignore[arg-type]
    if stat(0.0) <= target:
        return 0.0
    scale = float(np.median(np.abs(cost[cost > 0]))) if (cost > 0).any() else 1.0
    lo, hi = 0.0, 1.0 / max(scale, 1e-12)
    while stat(hi) > target and hi < 1e18:
        lo, hi = hi, hi * 10
    for _ in range(iters):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        if stat(mid) > target:
            lo = mid
        else:
            hi = mid
    # Bisection ends on the boundary where a choice flips; step 0.1 % past it so last-bit
    # differences in features (batched vs cached encodes) cannot flip it back.
    return hi * 1.001


def calibrate_strong_win_threshold(p_strong: np.ndarray, *, target_strong_share: float | None = None,
                                   cost_strong: np.ndarray | None = None, cost_weak: np.ndarray | None = None,
                                   target_cost: float | None = None) -> float:
    """``ThresholdPolicy``'s t on P(strong beats weak) hitting a share of strong calls, or an
    average cost: decided before any call (not the verifier's escalation threshold,
    :func:`mmroute.verify.calibrate_escalation_threshold`)."""
    p = np.sort(np.asarray(p_strong, float))[::-1]
    n = len(p)
    if n == 0:
        raise ConfigError("calibration needs at least one sample query")
    if target_strong_share is not None:
        if not 0 <= target_strong_share <= 1:
            raise ConfigError(f"target share must be in [0, 1], got {target_strong_share}")
        k = int(math.floor(target_strong_share * n + 1e-9))
        return 1.0 + 1e-9 if k == 0 else float(p[k - 1])
    if target_cost is None or cost_strong is None or cost_weak is None:
        raise ConfigError("give target_strong_share, or target_cost with cost_strong and cost_weak")
    ps = np.asarray(p_strong, float)
    for t in np.unique(np.concatenate([ps, [1.0 + 1e-9]])):
        avg = float(np.where(ps >= t, cost_strong, cost_weak).mean())
        if avg <= target_cost:
            return float(t)
    return 1.0 + 1e-9


DEFAULT_QUALITY_TOLERANCE = 0.02
"""How much mean predicted quality (a probability of beating the pool's other models) the default
policy may give up against always calling the best single model: 2 points, the size of the
rounding in a win-rate table, buys most of the savings on the example and RouterBench sets
(docs/evaluation.md, "The default policy")."""


STABLE_WINDOW = 0.10
"""Relative change of lambda the default choice must survive: about what message framing tokens do
to a short prompt's expected cost, or one small retrain to a predicted quality gap."""
MAX_FLIP_SHARE = 0.05
"""Share of the training queries allowed to switch model within that window: single queries near
their own switch point are unavoidable; a cluster of them (a query type) is what must not flip."""


class QualityCalibration(BaseModel):
    """How a train-time lambda was chosen, with its effect on the sample queries (kept in the router)."""

    model_config = ConfigDict(frozen=True)

    lam: float
    tolerance: float
    reference_model: int = Field(description="column of the best single model (callers store its name)")
    reference_quality: float = Field(description="mean predicted quality of always calling it (falling back "
                                     "to the best eligible model where it cannot take a query)")
    quality: float = Field(description="mean predicted quality of the routed choice at lam")
    cost: float = Field(description="mean expected USD per query of the routed choice at lam")
    quality_at_zero: float
    cost_at_zero: float
    n_queries: int
    boundary: float = Field(0.0, description="the largest lambda within tolerance (or, when every lambda is, the "
                            "last switch point): lam stays clear of it")
    window: float = Field(0.0, description="relative lambda change the choice was checked against")
    flip_share: float = Field(0.0, description="share of the queries whose choice a change of lam by the window "
                              "either way would switch")


def routed_stats(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray, lam: float) -> tuple[float, float]:
    """Mean predicted quality and mean expected cost of the cost-aware choice at ``lam``."""
    pick = choose_batch(quality, cost, eligible, lam)
    rows = np.arange(len(pick))
    return float(quality[rows, pick].mean()), float(cost[rows, pick].mean())


def calibrate_quality_tolerance(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None, *,
                                tolerance: float = DEFAULT_QUALITY_TOLERANCE, iters: int = 60,
                                window: float = STABLE_WINDOW, max_flip_share: float = MAX_FLIP_SHARE
                                ) -> QualityCalibration:
    """The least-cost lambda whose routed mean predicted quality on these queries stays within
    ``tolerance`` of the best single model's, kept clear of a lambda where many queries switch.

    Per query, the chosen model's cost and quality both fall as lambda grows, so the mean quality is
    monotone in lambda and bisection finds the boundary. The boundary itself is a knife edge: it
    is where the next query switches model, and queries of one kind (same length, same predicted
    qualities) all switch at nearly the same lambda, so a 0.1 % change of a cost or a quality -
    message framing tokens, one retrain - flipped a whole query type. So the lambda returned is
    :func:`stable_lambda` below the boundary: the largest one whose choices a change of ``window``
    (relative, either way) leaves alone for all but ``max_flip_share`` of the queries. Queries no
    model can take are left out.
    """
    quality, cost = np.asarray(quality, float), np.asarray(cost, float)
    eligible = np.ones_like(quality, bool) if eligible is None else np.asarray(eligible, bool)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"quality tolerance must be a finite number >= 0, got {tolerance}")
    keep = eligible.any(axis=1)
    if not keep.any():
        raise ConfigError("calibration needs at least one sample query some model can take")
    quality, cost, eligible = quality[keep], cost[keep], eligible[keep]
    rows = np.arange(len(quality))
    q0 = quality[rows, choose_batch(quality, cost, eligible, 0.0)]
    single = np.where(eligible, quality, q0[:, None]).mean(axis=0)
    ref = int(np.argmax(single))
    target = float(single[ref]) - tolerance
    quality_at_zero, cost_at_zero = routed_stats(quality, cost, eligible, 0.0)

    def result(boundary: float, upper: float | None = None) -> QualityCalibration:
        lam = stable_lambda(quality, cost, eligible, upper if upper is not None else boundary, window=window,
                            max_flip_share=max_flip_share) if boundary > 0 else 0.0
        q, c = routed_stats(quality, cost, eligible, lam)
        return QualityCalibration(lam=lam, tolerance=tolerance, reference_model=ref, reference_quality=float(single[ref]),
                                  quality=q, cost=c, quality_at_zero=quality_at_zero, cost_at_zero=cost_at_zero,
                                  n_queries=len(quality), boundary=boundary, window=window,
                                  flip_share=flip_share(quality, cost, eligible, lam, window))

    if not (cost > 0).any():  # nothing to save: quality alone decides
        return result(0.0)

    def ok(lam: float) -> bool:
        return routed_stats(quality, cost, eligible, lam)[0] >= target - 1e-12

    scale = float(np.median(cost[cost > 0]))
    lo, hi = 0.0, 1.0 / scale
    while ok(hi) and hi < 1e18:
        lo, hi = hi, hi * 10
    if ok(hi):  # even the cheapest eligible model everywhere is within tolerance: the least lambda giving it
        cheapest = choose_batch(quality, cost, eligible, hi)
        lo, hi = 0.0, hi
        for _ in range(iters):
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
            if np.array_equal(choose_batch(quality, cost, eligible, mid), cheapest):
                hi = mid
            else:
                lo = mid
        # every lambda past the last switch is within tolerance: start the search beyond its window
        return result(hi, upper=hi * (1 + window) ** 2)
    for _ in range(iters):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return result(lo)


def flip_share(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray, lam: float, window: float) -> float:
    """Share of the queries whose cost-aware choice differs between ``lam / (1 + window)`` and
    ``lam * (1 + window)``: each query's choice moves monotonically along lambda, so these are
    exactly the queries with a switch point within the window."""
    if lam <= 0:
        return 0.0
    lo = choose_batch(quality, cost, eligible, lam / (1 + window))
    hi = choose_batch(quality, cost, eligible, lam * (1 + window))
    return float(np.mean(lo != hi))


def stable_lambda(quality: np.ndarray, cost: np.ndarray, eligible: np.ndarray, upper: float, *,
                  window: float = STABLE_WINDOW, max_flip_share: float = MAX_FLIP_SHARE,
                  decades: float = 3.0) -> float:
    """The largest lambda <= ``upper`` (on a grid of quarter-window steps down ``decades`` decades)
    whose :func:`flip_share` is at most ``max_flip_share``; where none is, the one with the least.

    Why not the midpoint between switch points: with thousands of queries every gap between
    switch points is tiny, though each holds one query; what matters is how many switch at once."""
    if not (window > 0 and 0 <= max_flip_share <= 1):
        raise ConfigError(f"need window > 0 and 0 <= max_flip_share <= 1; got {window}, {max_flip_share}")
    if upper <= 0:
        return 0.0
    step = (1 + window) ** 0.25
    k = int(math.ceil(decades * math.log(10) / math.log(step)))
    best, best_share = upper, math.inf
    for lam in upper * step ** -np.arange(k + 1):
        share = flip_share(quality, cost, eligible, float(lam), window)
        if share <= max_flip_share:
            return float(lam)
        if share < best_share:
            best, best_share = float(lam), share
    return best
