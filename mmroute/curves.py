"""Quality-vs-cost curves of routers, as pure numpy over per-query matrices.

Below both the preference package (family selection scores candidates by them) and the
evaluation harness, so neither imports the other for them.

Everything here works on three arrays over the same ``n`` queries and ``M`` models:

* ``Q`` (n, M) — the *true* quality of each model's answer (1/0 correctness, a judged score in [0, 1]);
* ``C`` (n, M) — the *true* cost in USD of each model on each query;
* ``P`` (n, M) — what a router *predicts* (expected quality), and ``Chat`` (n, M) the cost the policy
  believes in when it decides (by default the per-model average cost: a policy cannot know the
  output length, hence the real cost, of an answer it has not asked for yet).

A router is turned into a curve by sweeping the policy knob: pick ``argmax_m P - lam * Chat``
for many ``lam`` (or, for two models, a threshold on the score gap, as RouteLLM does). The curve is
scored against the single models, the upper convex hull of their points (what randomly mixing fixed
models reaches) and the oracle (``P = Q``, ``Chat = C``). Kept separate from training so every number
in a report can be recomputed from arrays alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInputError
from .policy import CostAwarePolicy, argmax_utility
from .policy import default_model as _policy_default_model

_EPS = 1e-12


# --------------------------------------------------------------------------------------------- choice
def choose(P: np.ndarray, Chat: np.ndarray, lam: float) -> np.ndarray:
    """Per-query model index maximising ``P - lam * Chat``: :meth:`CostAwarePolicy.choose`, the
    served rule and its tie rule (ties go to the cheaper model). ``lam = inf`` picks the cheapest
    model (ties by predicted quality).
    """
    if np.isinf(lam):
        return argmax_utility(-np.asarray(Chat, dtype=np.float64), -np.asarray(P, dtype=np.float64))
    return CostAwarePolicy(float(lam)).choose(P, Chat)


def realised(Q: np.ndarray, C: np.ndarray, choice: np.ndarray) -> tuple[float, float]:
    """Average true quality and cost of a per-query choice."""
    idx = np.arange(Q.shape[0])
    return float(Q[idx, choice].mean()), float(C[idx, choice].mean())


# ---------------------------------------------------------------------------------------------- curves
@dataclass
class Curve:
    """Raw sweep points (one per knob value), in knob order; ``strong_pct`` only for two models."""

    cost: np.ndarray
    quality: np.ndarray
    knob: np.ndarray
    strong_pct: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def pareto(self) -> tuple[np.ndarray, np.ndarray]:
        return pareto_front(self.cost, self.quality)


def lambda_grid(P: np.ndarray, Chat: np.ndarray, n_points: int = 256, seed: int = 0,
                max_queries: int = 4000) -> np.ndarray:
    """Knob values where decisions actually change: quantiles of per-query pairwise break-even ``lam``.

    For query i and models a (dearer) and b, the choice between them flips at
    ``lam = (P_a - P_b) / (Chat_a - Chat_b)``; a grid on the quantiles of the positive flips puts the
    sweep's points where the curve moves instead of wasting them on a log-grid guess of the scale.
    Always contains 0 and +inf (the two ends: best predicted quality, cheapest).
    """
    P = np.asarray(P, dtype=np.float64)
    Chat = np.asarray(Chat, dtype=np.float64)
    n, M = P.shape
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(n, max_queries), replace=False) if n > max_queries else np.arange(n)
    flips = []
    for a in range(M):
        for b in range(M):
            if a == b:
                continue
            dc = Chat[rows, a] - Chat[rows, b]
            dp = P[rows, a] - P[rows, b]
            ok = (dc > 0) & (dp > 0)
            if ok.any():
                flips.append(dp[ok] / dc[ok])
    grid = [np.array([0.0, np.inf])]
    if flips:
        f = np.concatenate(flips)
        f = f[np.isfinite(f)]
        if f.size:
            qs = np.linspace(0.0, 1.0, max(n_points - 2, 2))
            grid.append(np.quantile(f, qs))
            grid.append(f.max() * np.array([1.0 + 1e-6, 2.0]))  # just past the last flip
    return np.unique(np.concatenate(grid))


def sweep(P: np.ndarray, Q: np.ndarray, C: np.ndarray, Chat: np.ndarray | None = None,
          lams: np.ndarray | None = None, n_points: int = 256) -> Curve:
    """The quality/cost points of the cost-aware argmax policy for each ``lam``."""
    P, Q, C = _check(P, Q, C)
    Chat = _default_chat(C) if Chat is None else np.asarray(Chat, dtype=np.float64)
    if Chat.shape != P.shape:
        raise InvalidInputError(f"cost estimate has shape {Chat.shape}, expected {P.shape}")
    lams = lambda_grid(P, Chat, n_points) if lams is None else np.asarray(lams, dtype=np.float64)
    qs, cs = np.empty(len(lams)), np.empty(len(lams))
    for k, lam in enumerate(lams):
        qs[k], cs[k] = realised(Q, C, choose(P, Chat, float(lam)))
    return Curve(cost=cs, quality=qs, knob=lams)


def threshold_sweep(P: np.ndarray, Q: np.ndarray, C: np.ndarray, strong: int,
                    Chat: np.ndarray | None = None) -> Curve:
    """Two models: route to ``strong`` iff its cost-adjusted predicted gain >= t, for every distinct t.

    The score is ``(P_s - P_w) / (Chat_s - Chat_w)`` — the break-even ``lam`` of each query — so the
    threshold is the same knob as ``lam`` but may go negative, which is what lets the curve reach
    100 % strong calls like RouteLLM's threshold sweep. Every distinct score is a threshold, so the
    curve is exact (n + 1 points at most), not a 10-bin approximation.
    """
    P, Q, C = _check(P, Q, C)
    if P.shape[1] != 2:
        raise InvalidInputError(f"threshold_sweep needs exactly two models, got {P.shape[1]}")
    Chat = _default_chat(C) if Chat is None else np.asarray(Chat, dtype=np.float64)
    weak = 1 - strong
    n = P.shape[0]
    gap = P[:, strong] - P[:, weak]
    dc = Chat[:, strong] - Chat[:, weak]
    score = gap / np.where(dc > _EPS, dc, _EPS)  # strong not dearer: any gain justifies it
    cost, quality, knob, ks = _switch_curve(Q, C, np.full(n, weak), np.full(n, strong), score, n)
    return Curve(cost=cost, quality=quality, knob=knob, strong_pct=100.0 * ks / n, meta={"strong": int(strong)})


def _switch_curve(Q: np.ndarray, C: np.ndarray, frm: np.ndarray, to: np.ndarray, score: np.ndarray,
                  last: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Queries move from model ``frm[i]`` to ``to[i]`` in decreasing ``score`` order, as a knob falls.

    Exact: one point per distinct score (a knob can only stop between distinct scores) plus the
    ``last``-th switch. Returns cost, quality, knob (``inf``, then the score of the last query
    switched) and the number of queries switched at each point.
    """
    n = len(score)
    idx = np.arange(n)
    order = np.argsort(-score, kind="stable")
    s_sorted = score[order]
    dq = (Q[idx, to] - Q[idx, frm])[order]
    dC = (C[idx, to] - C[idx, frm])[order]
    cum_q = np.concatenate([[0.0], np.cumsum(dq)]) / n + Q[idx, frm].mean()
    cum_c = np.concatenate([[0.0], np.cumsum(dC)]) / n + C[idx, frm].mean()
    ks = np.unique(np.concatenate([[0], np.nonzero(np.diff(s_sorted) != 0)[0] + 1, [last]]))
    knob = np.concatenate([[np.inf], s_sorted])[ks]
    return cum_c[ks], cum_q[ks], knob, ks


def default_model(P: np.ndarray, Chat: np.ndarray) -> int:
    """The model a margin policy falls back to: :func:`mmroute.policy.default_model` over all queries."""
    return _policy_default_model(P, Chat)


def margin_sweep(P: np.ndarray, Q: np.ndarray, C: np.ndarray, Chat: np.ndarray | None = None) -> Curve:
    """The default-model margin knob at ``lam = 0``: leave the default model only for a gain > ``delta``.

    The policy is ``argmax_m P_m + delta * [m = default]``: ``delta = inf`` always calls the
    default model (the router then matches the best single model whenever it rates that model
    best), ``delta = 0`` is the plain argmax, the top end of :func:`sweep`. In between, a query
    leaves the default model only where the router predicts a clear gain elsewhere — the N-model
    counterpart of the two-model threshold reaching 100 % strong calls. Every distinct predicted
    gain is a knob value, so the curve is exact (n + 1 points at most); ``knob`` holds ``delta``.
    """
    P, Q, C = _check(P, Q, C)
    Chat = _default_chat(C) if Chat is None else np.asarray(Chat, dtype=np.float64)
    d = default_model(P, Chat)
    top = choose(P, Chat, 0.0)
    gap = P[np.arange(P.shape[0]), top] - P[:, d]          # >= 0; 0 where the default is the argmax
    # a gap of 0 never leaves the default
    cost, quality, knob, _ = _switch_curve(Q, C, np.full(len(gap), d), top, gap, int(np.count_nonzero(gap > 0)))
    return Curve(cost=cost, quality=quality, knob=knob, meta={"default": d, "knob": "margin"})


def with_margin(curve: Curve, margin: Curve) -> Curve:
    """One curve holding the ``lam`` sweep's points and the margin sweep's (``meta['margin_from']``)."""
    return Curve(cost=np.concatenate([curve.cost, margin.cost]),
                 quality=np.concatenate([curve.quality, margin.quality]),
                 knob=np.concatenate([curve.knob, margin.knob]),
                 meta={**curve.meta, "margin_from": int(len(curve.cost)), "default": margin.meta["default"]})


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotone curve: points by cost, each kept only if it beats every cheaper point's quality."""
    cost = np.asarray(cost, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    order = np.lexsort((-quality, cost))
    c, q = cost[order], quality[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(q)[:-1]])
    keep = q > best_before + _EPS
    return c[keep], q[keep]


def upper_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left concave hull of points: what mixing the underlying policies at random reaches."""
    c, q = pareto_front(cost, quality)
    hull: list[tuple[float, float]] = []
    for x, y in zip(c, q):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point if it lies on or below the chord from hull[-2] to the new point
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1) + _EPS:
                hull.pop()
            else:
                break
        hull.append((float(x), float(y)))
    arr = np.array(hull, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def curve_at(pc: np.ndarray, pq: np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """Value of a monotone piecewise-linear curve (Pareto points ``pc, pq``) at costs ``x``.

    Between two points the curve is linear (mix the two policies); past the dearest point it stays
    flat (spending more buys nothing); below the cheapest point nothing is reachable: 0.
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.interp(x, pc, pq, left=0.0, right=pq[-1])
    return np.where(x < pc[0] - _EPS * max(1.0, abs(pc[0])), 0.0, v)


def area(pc: np.ndarray, pq: np.ndarray, lo: float, hi: float) -> float:
    """Mean height of the monotone curve over [lo, hi] (exact for piecewise-linear curves)."""
    if hi <= lo:
        return float(curve_at(pc, pq, lo))
    inner = pc[(pc > lo) & (pc < hi)]
    xs = np.concatenate([[lo], inner, [hi]])
    ys = curve_at(pc, pq, xs)
    # a step at pc[0] (0 below, value above) would be lost by trapezoids: add its foot (pc[0], 0)
    if lo < pc[0] < hi:
        xs = np.concatenate([xs, [pc[0]]])
        ys = np.concatenate([ys, [0.0]])
        order = np.lexsort((ys, xs))
        xs, ys = xs[order], ys[order]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / (hi - lo))


def cost_to_reach(pc: np.ndarray, pq: np.ndarray, target: float) -> float | None:
    """Lowest cost at which the monotone curve reaches ``target`` quality; None if it never does."""
    hit = np.nonzero(pq >= target - 1e-9)[0]
    if hit.size == 0:
        return None
    k = int(hit[0])
    if k == 0:
        return float(pc[0])
    c0, q0, c1, q1 = pc[k - 1], pq[k - 1], pc[k], pq[k]
    return float(c0 + (target - q0) / (q1 - q0) * (c1 - c0))


# --------------------------------------------------------------------------------------------- RouteLLM
def routellm_metrics(strong_pct: np.ndarray, quality: np.ndarray, q_weak: float,
                     q_strong: float) -> dict[str, float | None]:
    """APGR and CPT(50 %), CPT(80 %) as RouteLLM's ``evals/evaluate.py`` computes them.

    APGR: trapezoid area under quality vs share of strong calls (sorted by share), minus the weak
    model's area over the same span, over the strong-minus-weak area — on the raw points, as there.
    CPT(x): share of strong calls (in %) where the curve first reaches ``weak + x (strong - weak)``.
    RouteLLM uses ``np.interp`` on the raw points, which assumes the curve rises; here it is read off
    the running maximum, which is the same where the curve rises and well defined where it does not.
    """
    pct = np.asarray(strong_pct, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    order = np.lexsort((q, pct))
    pct, q = pct[order], q[order]
    x = pct / 100.0
    span = x[-1] - x[0]
    gap = q_strong - q_weak
    out: dict[str, float | None] = {"apgr": None, "cpt50": None, "cpt80": None}
    if span <= 0 or abs(gap) < _EPS:
        return out
    auc = float(np.sum((x[1:] - x[:-1]) * (q[1:] + q[:-1]) / 2.0))
    out["apgr"] = (auc - q_weak * span) / (gap * span)
    pc, pq = pareto_front(pct, q)
    for name, frac in (("cpt50", 0.5), ("cpt80", 0.8)):
        out[name] = cost_to_reach(pc, pq, q_weak + frac * gap)
    return out


# ---------------------------------------------------------------------------------------------- summary
def model_points(Q: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average quality and cost of always calling each model."""
    Q = np.asarray(Q, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    return Q.mean(axis=0), C.mean(axis=0)


@dataclass
class Reference:
    """What every curve of one evaluation is scored against (computed once per query set)."""

    q_models: np.ndarray
    c_models: np.ndarray
    lo: float              # cheapest single model's average cost
    hi: float              # best single model's average cost
    best: int              # index of the best single model
    hull_c: np.ndarray
    hull_q: np.ndarray
    auc_hull: float
    auc_oracle: float
    oracle: Curve
    strong: int | None = None
    oracle_share: Curve | None = None   # two models: oracle ranked by gain alone (RouteLLM's optimal)


def reference(Q: np.ndarray, C: np.ndarray, n_points: int = 256, margin: bool = True) -> Reference:
    """Single-model points, their hull and the oracle curve for one query set.

    ``margin`` (N models): the oracle's curve also holds the margin sweep's points, as every
    router's does in :func:`evaluate_predictions`, so both are read from the same policy family.
    """
    P, Q, C = _check(Q, Q, C)
    qm, cm = model_points(Q, C)
    best = int(np.lexsort((cm, -qm))[0])          # best quality, cheaper one on ties
    cheapest = int(np.lexsort((-qm, cm))[0])
    lo, hi = float(cm[cheapest]), float(cm[best])
    hull_c, hull_q = upper_hull(cm, qm)
    strong = best if Q.shape[1] == 2 else None
    if strong is not None:
        oracle = threshold_sweep(Q, Q, C, strong, Chat=C)
    else:
        oracle = sweep(Q, Q, C, Chat=C, n_points=n_points)
        if margin:
            oracle = with_margin(oracle, margin_sweep(Q, Q, C, Chat=C))
    oc, oq = oracle.pareto()
    share = threshold_sweep(Q, Q, C, strong, Chat=np.ones_like(C)) if strong is not None else None
    return Reference(q_models=qm, c_models=cm, lo=lo, hi=hi, best=best, hull_c=hull_c, hull_q=hull_q,
                     auc_hull=area(hull_c, hull_q, lo, hi), auc_oracle=area(oc, oq, lo, hi),
                     oracle=oracle, strong=strong, oracle_share=share)


def summarize(curve: Curve, ref: Reference, share: Curve | None = None) -> dict[str, float | None]:
    """All metrics of one curve: auc, pgr_hull, cost_to_match_best, max_quality (+ RouteLLM's for 2).

    ``share`` (two models) is the sweep RouteLLM's metrics are read from: queries ranked by the
    predicted gain alone, as RouteLLM thresholds the strong model's win rate. The cost curve ranks
    by gain per extra dollar instead, which differs when the cost estimate varies by query.
    """
    pc, pq = curve.pareto()
    auc = area(pc, pq, ref.lo, ref.hi)
    denom = ref.auc_oracle - ref.auc_hull
    c_match = cost_to_reach(pc, pq, float(ref.q_models[ref.best]))
    out: dict[str, float | None] = {
        "auc": auc,
        "pgr_hull": (auc - ref.auc_hull) / denom if abs(denom) > _EPS else None,
        "cost_to_match_best": (c_match / ref.hi if c_match is not None and ref.hi > 0 else None),
        "max_quality": float(np.max(curve.quality)),
    }
    if ref.strong is not None:
        if share is None:
            share = ref.oracle_share if curve is ref.oracle and ref.oracle_share is not None else curve
        if share.strong_pct is None:
            raise InvalidInputError("a two-model curve needs strong_pct (use threshold_sweep)")
        weak = 1 - ref.strong
        out.update(routellm_metrics(share.strong_pct, share.quality, float(ref.q_models[weak]),
                                    float(ref.q_models[ref.strong])))
    return out


def evaluate_predictions(P: np.ndarray, Q: np.ndarray, C: np.ndarray, ref: Reference,
                         Chat: np.ndarray | None = None, n_points: int = 256,
                         margin: bool = True) -> tuple[Curve, dict]:
    """Sweep a router's predictions and score the curve.

    Two models: the threshold sweep. N models: the ``lam`` sweep plus, with ``margin``, the
    default-model margin sweep (:func:`margin_sweep`), i.e. the two knobs of
    :class:`mmroute.policy.CostAwarePolicy`; ``margin=False`` is the ``lam`` sweep alone.
    """
    if ref.strong is not None:
        curve = threshold_sweep(P, Q, C, ref.strong, Chat=Chat)
        share = threshold_sweep(P, Q, C, ref.strong, Chat=np.ones_like(np.asarray(C, dtype=np.float64)))
        return curve, summarize(curve, ref, share)
    curve = sweep(P, Q, C, Chat=Chat, n_points=n_points)
    if margin:
        curve = with_margin(curve, margin_sweep(P, Q, C, Chat=Chat))
    return curve, summarize(curve, ref)


# --------------------------------------------------------------------------------------------- helpers
def _default_chat(C: np.ndarray) -> np.ndarray:
    return np.broadcast_to(C.mean(axis=0, keepdims=True), C.shape)


def _check(P, Q, C) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    P = np.asarray(P, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if P.ndim != 2 or P.shape != Q.shape or Q.shape != C.shape:
        raise InvalidInputError(f"predictions {P.shape}, qualities {Q.shape} and costs {C.shape} must be the same (n, M)")
    if P.shape[0] == 0 or P.shape[1] == 0:
        raise InvalidInputError("no queries or no models to evaluate")
    for name, a in (("predictions", P), ("qualities", Q), ("costs", C)):
        if not np.isfinite(a).all():
            raise InvalidInputError(f"{name} contain NaN or infinite values")
    return P, Q, C
