"""Predictions that feedback can move (issue 19, item 3): a few hundred consistent judgments do not
saturate the predicted qualities at 1 / 0, nothing overflows, the default lambda is not a knife
edge, and "bad" ratings that contradict the router change its choices after a retrain."""

from __future__ import annotations

import random
import warnings
from collections import Counter

import numpy as np
import pytest
from _knife_edge import CHEAP, MATH, POOL, knife_judgments, math_query

from mmroute.cascade import rating_judgment
from mmroute.data.store import FeedbackStore
from mmroute.preference.calibration import T_BOUNDS, fit_temperature, pairwise_nll
from mmroute.preference.metrics import sigmoid, win_probabilities
from mmroute.router import Router
from mmroute.retraining import retrain_router
from mmroute.training import encode_judgments, train_router


@pytest.fixture(scope="module")
def knife() -> Router:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "overflow encountered in exp" fails the fixture
        return train_router(knife_judgments(), encoder="clip:tiny", pool=POOL)


def _math(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [math_query(rng) for _ in range(n)]


def test_sigmoids_do_not_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert sigmoid(np.array([-1e4, 0.0, 1e4])).tolist() == [0.0, 0.5, 1.0]
        W = win_probabilities(np.array([0.0, 900.0, -900.0]))
    assert W[1, 2] == 1.0 and W[2, 1] == 0.0 and np.allclose(W + W.T, 1.0)


def test_temperature_on_separable_held_out_judgments_is_not_driven_to_its_bound():
    # every held-out judgment predicted right: the plain NLL is minimised at T -> 0 (the bound)
    margins = np.linspace(4.0, 30.0, 27)  # an over-confident fit: margins of a saturated model
    y, w = np.ones(27), np.ones(27)
    assert fit_temperature(margins, y, w, prior_ties=0.0) == pytest.approx(T_BOUNDS[0])
    t = fit_temperature(margins, y, w)
    assert t > 1.0  # softened, not sharpened
    assert sigmoid(margins / t).max() < 0.999
    # equal margins: exactly Laplace's rule of succession, (n + 1) / (n + 2)
    same = np.full(27, 12.0)
    assert sigmoid(12.0 / fit_temperature(same, y, w)) == pytest.approx(28 / 29, abs=1e-4)
    # and a judge's mistakes on new judgments cost far less than at the bound
    noisy = y.copy()
    noisy[::9] = 0.0
    assert pairwise_nll(margins, noisy, w, t) < 0.5 < pairwise_nll(margins, noisy, w, T_BOUNDS[0])


def test_knife_edge_predictions_stay_off_zero_and_one(knife: Router):
    assert knife.model.temperature_ > 1.0
    q = knife.predict_quality(_math(30))
    assert q.min() > 0.01 and q.max() < 0.99
    # held-out judgments from the same judge, 5 % of verdicts wrong: log-loss stays moderate
    test = encode_judgments(knife_judgments(seed=1, noise=0.05), knife.pipeline)
    assert knife.model.log_loss(test.X, test.pairs, test.y) < 1.0


def test_default_lambda_is_not_a_knife_edge(knife: Router):
    choice = knife.metadata["policy_choice"]
    assert choice["method"] == "quality-tolerance" and choice["flip_share"] <= 0.05
    assert knife.policy.knob <= choice["boundary"]
    for d in knife.route_many(_math(40)):
        u = sorted((c.utility for c in d.candidates if c.utility is not None), reverse=True)
        assert u[0] - u[1] > 0.01, d.reason  # the choice is not a rounding error away from another


def test_bad_ratings_that_contradict_the_router_change_its_choices(knife: Router, tmp_path):
    queries = _math(75)
    before = Counter(d.model for d in knife.route_many(queries))
    assert before[CHEAP] >= 10  # the tolerance lets the cheap model take some math queries
    store = FeedbackStore(tmp_path / "fb.db")
    rng, n = random.Random(11), 0
    while n < 40:  # 40 "bad" ratings on the cheap model's answers to math queries
        q = math_query(rng)
        d = knife.route(q)
        if d.model == CHEAP:
            pair = rating_judgment(d, CHEAP, "bad")
            assert pair is not None and pair[1] == MATH and pair[2] == "model_b"
            store.record(q, *pair, source="rating")
            n += 1
    result = retrain_router(knife, store, min_holdout=4)
    assert result.accepted, result.report.reason
    after = Counter(d.model for d in result.router.route_many(queries))
    assert after[CHEAP] <= before[CHEAP] // 4 and after[MATH] > before[MATH]
    choice = result.router.metadata["policy_choice"]
    assert choice["rechosen_from"]["lam"] == knife.policy.knob and choice["method"] == "quality-tolerance"
    # a given lambda is the caller's: a retrain keeps it
    given = Router(knife.pipeline, knife.model, knife.pool, knife.policy,
                   metadata={**knife.metadata, "policy_choice": {"method": "given"}})
    kept = retrain_router(given, store, min_holdout=4)
    assert kept.accepted and kept.router.policy == knife.policy
    # too few queries (8 < MIN_RECHOOSE_QUERIES) to choose lambda on: it is kept
    few = retrain_router(knife, knife_judgments(seed=5, n_math=5, n_chat=3), holdout_fraction=0.0, min_holdout=0)
    assert few.accepted and few.router.policy == knife.policy
    assert few.router.metadata["policy_choice"] == knife.metadata["policy_choice"]
