"""Metrics on hand-computable cases: each assertion has a number worked out by hand or a bound."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.errors import InvalidInputError
from mmroute import curves as m


def _two_model_data(n: int = 1000, seed: int = 0):
    """Weak (cheap, 60 % right) vs strong (dear, 80 % right), independent errors."""
    rng = np.random.default_rng(seed)
    Q = np.stack([rng.random(n) < 0.6, rng.random(n) < 0.8], axis=1).astype(float)
    C = np.tile([1.0, 10.0], (n, 1))
    return Q, C


def test_choose_ties_go_to_cheaper_and_inf_picks_cheapest():
    P = np.array([[0.5, 0.5], [0.2, 0.9]])
    Chat = np.array([[2.0, 1.0], [1.0, 3.0]])
    assert m.choose(P, Chat, 0.0).tolist() == [1, 1]
    assert m.choose(P, Chat, np.inf).tolist() == [1, 0]
    # lam where query 1 flips: 0.7 / 2 = 0.35
    assert m.choose(P, Chat, 0.34).tolist() == [1, 1]
    assert m.choose(P, Chat, 0.36).tolist() == [1, 0]


def test_pareto_and_hull():
    c = np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    q = np.array([0.5, 0.6, 0.9, 0.8, 0.55])
    pc, pq = m.pareto_front(c, q)
    assert pc.tolist() == [1.0, 2.0, 3.0] and pq.tolist() == [0.5, 0.6, 0.9]
    hc, hq = m.upper_hull(c, q)
    # (2, 0.6) lies below the chord from (1, .5) to (3, .9) (0.7 there): not on the hull
    assert hc.tolist() == [1.0, 3.0] and hq.tolist() == [0.5, 0.9]


def test_area_of_a_line_and_of_a_step():
    pc, pq = np.array([0.0, 10.0]), np.array([0.0, 1.0])
    assert m.area(pc, pq, 0.0, 10.0) == pytest.approx(0.5)
    assert m.area(pc, pq, 5.0, 10.0) == pytest.approx(0.75)
    # flat after the dearest point
    assert m.area(np.array([0.0, 2.0]), np.array([0.0, 1.0]), 0.0, 4.0) == pytest.approx((1.0 + 2.0) / 4)
    # nothing reachable below the first point: the step counts as 0 there
    assert m.area(np.array([5.0]), np.array([1.0]), 0.0, 10.0) == pytest.approx(0.5)


def test_cost_to_reach_interpolates():
    pc, pq = np.array([1.0, 3.0]), np.array([0.5, 0.9])
    assert m.cost_to_reach(pc, pq, 0.7) == pytest.approx(2.0)
    assert m.cost_to_reach(pc, pq, 0.4) == pytest.approx(1.0)
    assert m.cost_to_reach(pc, pq, 0.95) is None


def test_oracle_pgr_is_one_and_hull_mixing_is_zero():
    Q, C = _two_model_data()
    ref = m.reference(Q, C)
    _, s_or = m.evaluate_predictions(Q, Q, C, ref, Chat=C)
    assert s_or["pgr_hull"] == pytest.approx(1.0)
    # a router with no information: same score for every query -> the straight mixing line
    P = np.tile([0.3, 0.7], (Q.shape[0], 1))
    _, s_const = m.evaluate_predictions(P, Q, C, ref)
    assert s_const["pgr_hull"] == pytest.approx(0.0, abs=1e-9)
    assert s_const["apgr"] == pytest.approx(0.5, abs=1e-9)
    assert s_const["cpt50"] == pytest.approx(50.0, abs=1e-6)
    assert s_const["cpt80"] == pytest.approx(80.0, abs=1e-6)
    assert s_const["cost_to_match_best"] == pytest.approx(1.0)


def test_random_router_apgr_near_half_and_oracle_well_above():
    Q, C = _two_model_data(4000, seed=1)
    ref = m.reference(Q, C)
    P = np.random.default_rng(3).random(Q.shape)
    _, s = m.evaluate_predictions(P, Q, C, ref)
    assert s["apgr"] == pytest.approx(0.5, abs=0.05)
    assert abs(s["pgr_hull"]) < 0.05
    _, s_or = m.evaluate_predictions(Q, Q, C, ref, Chat=C)
    assert s_or["apgr"] > 0.8
    # oracle max quality: right whenever either model is right
    assert s_or["max_quality"] == pytest.approx(float(Q.max(axis=1).mean()))
    assert s_or["cost_to_match_best"] < 1.0


def test_hand_computed_two_model_curve():
    # 4 queries: strong right on 0,1; weak right on 1,2. weak .5 @ 1, strong .5 @ 3.
    Q = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=float)
    C = np.tile([1.0, 3.0], (4, 1))
    ref = m.reference(Q, C)
    assert ref.strong == 0 or ref.strong == 1
    # router ranks query 0 first (the only one where strong helps), then the rest
    P = np.array([[0.0, 1.0], [0.5, 0.5], [0.6, 0.4], [0.5, 0.45]])
    curve = m.threshold_sweep(P, Q, C, strong=1)
    # switching order by gap: q0 (+1), q1 (0), q3 (-.05), q2 (-.2): qualities .5,.75,.75,.75,.5
    assert curve.quality.tolist() == pytest.approx([0.5, 0.75, 0.75, 0.75, 0.5])
    assert curve.strong_pct.tolist() == pytest.approx([0, 25, 50, 75, 100])


def test_multi_model_sweep_single_model_and_oracle():
    rng = np.random.default_rng(0)
    n = 500
    Q = (rng.random((n, 3)) < [0.4, 0.6, 0.8]).astype(float)
    C = np.tile([1.0, 2.0, 5.0], (n, 1))
    ref = m.reference(Q, C)
    assert ref.lo == 1.0 and ref.hi == 5.0 and ref.best == 2
    # a router that always says "model 1 is best by far" stays at that single point
    P = np.tile([0.0, 1.0, 0.0], (n, 1))
    curve = m.sweep(P, Q, C)
    pc, pq = curve.pareto()
    assert pq.max() == pytest.approx(Q[:, 1].mean())
    s = m.summarize(curve, ref)
    assert s["cost_to_match_best"] is None
    assert "apgr" not in s
    # oracle: 1 by definition; informative noisy router in between
    _, s_or = m.evaluate_predictions(Q, Q, C, ref, Chat=C)
    assert s_or["pgr_hull"] == pytest.approx(1.0)
    noisy = Q + rng.normal(0, 0.6, Q.shape)
    _, s_noisy = m.evaluate_predictions(noisy, Q, C, ref)
    assert 0.05 < s_noisy["pgr_hull"] < 1.0


def test_per_query_costs_count_as_true_costs():
    Q = np.array([[1.0, 1.0], [0.0, 1.0]])
    C = np.array([[1.0, 2.0], [1.0, 100.0]])
    ref = m.reference(Q, C)
    assert ref.c_models.tolist() == [1.0, 51.0]
    curve = m.threshold_sweep(Q, Q, C, strong=1, Chat=C)
    pc, pq = curve.pareto()
    assert pc.tolist() == [1.0, 50.5] and pq.tolist() == [0.5, 1.0]


def test_bad_shapes_and_nan_raise():
    with pytest.raises(InvalidInputError):
        m.sweep(np.zeros((3, 2)), np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(InvalidInputError):
        m.sweep(np.full((2, 2), np.nan), np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(InvalidInputError):
        m.threshold_sweep(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)), strong=0)


def test_routellm_metrics_rank_by_gain_not_gain_per_dollar():
    # a feature-free router under per-query prompt prices: the cost curve prefers cheap prompts,
    # but RouteLLM's strong-share metrics rank by predicted gain alone -> exactly random mixing.
    Q, _ = _two_model_data(2000, seed=4)
    rng = np.random.default_rng(5)
    tokens = rng.integers(10, 1000, Q.shape[0])
    C = np.stack([tokens * 1e-7, tokens * 1e-5], axis=1)
    ref = m.reference(Q, C)
    P = np.tile([0.3, 0.7], (Q.shape[0], 1))
    curve, s = m.evaluate_predictions(P, Q, C, ref, Chat=C)
    assert s["apgr"] == pytest.approx(0.5, abs=1e-9)
    assert len(np.unique(curve.cost)) > 2  # the cost curve did use the per-query prices
    _, s_or = m.evaluate_predictions(Q, Q, C, ref, Chat=C)
    assert s_or["pgr_hull"] == pytest.approx(1.0)


def test_margin_sweep_hand_case_runs_from_default_to_argmax():
    # 3 models, default = model 2 (best mean prediction); the argmax leaves it on queries 0 and 1
    P = np.array([[0.9, 0.2, 0.5], [0.1, 0.7, 0.6], [0.1, 0.2, 0.8], [0.3, 0.1, 0.9]])
    Q = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    C = np.tile([1.0, 2.0, 4.0], (4, 1))
    assert m.default_model(P, C) == 2
    curve = m.margin_sweep(P, Q, C)
    # delta = inf: always model 2 (quality .75, cost 4); then query 0 leaves (gap .4): quality 1, cost 3.25;
    # then query 1 (gap .1): quality .75, cost 2.75; queries 2-3 (gap 0) never leave
    assert curve.quality.tolist() == pytest.approx([0.75, 1.0, 0.75])
    assert curve.cost.tolist() == pytest.approx([4.0, 3.25, 2.75])
    assert curve.knob.tolist() == pytest.approx([np.inf, 0.4, 0.1])
    # its last point is the lambda sweep's first (lambda = 0, plain argmax)
    lam0 = m.sweep(P, Q, C, lams=np.array([0.0]))
    assert (lam0.quality[0], lam0.cost[0]) == pytest.approx((curve.quality[-1], curve.cost[-1]))


def test_margin_lets_an_overconfident_router_match_the_best_model():
    # a router right about model 2 on average but wrongly sure that model 1 wins a quarter of the queries:
    # its lambda sweep never reaches model 2's quality; the margin sweep does, and more cheaply
    rng = np.random.default_rng(1)
    n = 800
    Q = (rng.random((n, 3)) < [0.3, 0.5, 0.9]).astype(float)
    C = np.tile([1.0, 2.0, 5.0], (n, 1))
    P = np.tile([0.3, 0.5, 0.9], (n, 1)) + rng.normal(0, 0.02, (n, 3))
    wrong = rng.random(n) < 0.25
    P[wrong, 1] = 0.95
    P[Q[:, 2] == 0, 0] = 0.99        # ... and surer still, rightly, where model 2 fails and model 0 is cheap
    ref = m.reference(Q, C)
    _, plain = m.evaluate_predictions(P, Q, C, ref, margin=False)
    _, both = m.evaluate_predictions(P, Q, C, ref)
    assert plain["cost_to_match_best"] is None
    assert both["cost_to_match_best"] is not None and both["cost_to_match_best"] < 1.0
    assert both["auc"] >= plain["auc"] - 1e-12
