"""The learning loop: exploration propensities, budgets, the decision log, off-policy evaluation,
the off-policy retrain gate and the online replay simulator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mmroute.data.decisions import DecisionLog, has_decisions
from mmroute.data.example import example_dir
from mmroute.data.formats import Judgment, QueryRecord
from mmroute.data.store import FeedbackStore
from mmroute.errors import ConfigError, InvalidInputError
from mmroute.learning import (Belief, BetaBandit, EpsilonGreedyPolicy, ExplorationBudget, ExploringRouter,
                              GreedyPolicy, ThompsonPolicy)
from mmroute.learning import ope
from mmroute.learning.gate import ope_gate
from mmroute.learning.simulate import SimConfig, simulate
from mmroute.policy import Scored
from mmroute.pool import ModelPool
from mmroute.preference import BradleyTerry
from mmroute.router import Router

EXAMPLE = example_dir()
IMAGE = EXAMPLE / "images" / "ex-0000.png"


def _scored(quality, cost=None, eligible=None) -> Scored:
    q = np.asarray(quality, float)
    M = len(q)
    return Scored(models=[f"m{i}" for i in range(M)], quality=q,
                  cost=np.zeros(M) if cost is None else np.asarray(cost, float),
                  eligible=np.ones(M, bool) if eligible is None else np.asarray(eligible, bool))


def _belief(mean, sd, seen=None) -> Belief:
    mean = np.asarray(mean, float)
    return Belief(mean, np.full(len(mean), sd, float) ** 2,
                  np.full(len(mean), 1000) if seen is None else np.asarray(seen))


# ------------------------------------------------------------------------------- propensities
def test_epsilon_greedy_propensities_are_exact_and_match_frequencies():
    s = _scored([0.2, 0.9, 0.5, 0.4], eligible=[True, True, True, False])
    pol = EpsilonGreedyPolicy(epsilon=0.3)
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(6000):
        c = pol.choose(s, None, rng)
        counts[c.index] += 1
        assert c.probabilities.sum() == pytest.approx(1.0)
        assert c.propensity == c.probabilities[c.index]
    expected = np.array([0.1, 0.7 + 0.1, 0.1, 0.0])
    np.testing.assert_allclose(c.probabilities, expected, atol=1e-12)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.02)


def test_thompson_respects_filters_and_cost_cap_and_propensity_is_the_choice_distribution():
    # m0 best but filtered out (hard filter), m3 second-best but over the cost cap
    s = _scored([0.9, 0.5, 0.45, 0.8, 0.3], cost=[0.001, 0.001, 0.002, 0.05, 0.001],
                eligible=[False, True, True, True, True])
    b = _belief([2.0, 0.0, -0.1, 1.5, -0.5], sd=0.5)
    pol = ThompsonPolicy(cost_cap=0.01)
    rng = np.random.default_rng(1)
    counts, mean_p = np.zeros(5), np.zeros(5)
    n = 3000
    for _ in range(n):
        c = pol.choose(s, b, rng)
        assert c.probabilities[[0, 3]].sum() == 0.0
        assert c.index not in (0, 3)
        assert c.probabilities.sum() == pytest.approx(1.0)
        counts[c.index] += 1
        mean_p += c.probabilities / n
    assert counts[1] > counts[2] > 0  # explores the close alternative
    np.testing.assert_allclose(counts / n, mean_p, atol=0.025)


def test_thompson_needs_a_posterior_and_names_the_problem():
    with pytest.raises(ConfigError, match="posterior"):
        ThompsonPolicy().choose(_scored([0.5, 0.6]), None, np.random.default_rng(0))


def test_exploration_budget_share_and_usd_hold():
    s = _scored([0.9, 0.5, 0.4], cost=[0.001, 0.01, 0.02])
    share = EpsilonGreedyPolicy(epsilon=1.0, budget=ExplorationBudget(max_share=0.05))
    usd = EpsilonGreedyPolicy(epsilon=1.0, budget=ExplorationBudget(max_usd=0.1))
    rng = np.random.default_rng(2)
    for t in range(1, 2001):
        share.choose(s, None, rng)
        usd.choose(s, None, rng)
        assert share.budget.explored <= 0.05 * t + 1
        assert usd.budget.usd_spent <= 0.1 + 1e-12
    assert share.budget.explored >= 0.04 * 2000  # the budget is used, not just never spent
    assert usd.budget.usd_spent > 0.08
    c = usd.choose(s, None, rng)  # exhausted: only the greedy choice remains
    assert c.index == 0 and c.propensity == 1.0


def test_new_model_gets_capped_optimistic_share():
    # m2 just joined: no judgments, neutral mean score (below the favourite)
    s = _scored([0.7, 0.4, 0.5])
    b = _belief([1.0, -1.0, 0.0], sd=0.05, seen=[500, 500, 0])
    pol = ThompsonPolicy(budget=ExplorationBudget(new_model_share=0.25))
    c = pol.choose(s, b, np.random.default_rng(3))
    assert 0.1 < c.probabilities[2] <= 0.25 + 1e-12
    greedy = GreedyPolicy().choose(s, b, np.random.default_rng(3))
    assert greedy.probabilities[2] == 0.0


def test_at_a_cold_start_no_model_counts_as_new():
    # every model has a handful of judgments: no optimistic prior, so a clear favourite is kept
    s = _scored([0.8, 0.3, 0.3])
    b = _belief([2.0, -1.0, -1.0], sd=0.05, seen=[6, 5, 6])
    c = ThompsonPolicy().choose(s, b, np.random.default_rng(0))
    assert c.probabilities[0] == 1.0


def test_beta_bandit_learns_context_free_means():
    bb = BetaBandit()
    for _ in range(50):
        bb.update("m0", 0.0)
        bb.update("m1", 1.0)
    c = bb.choose(_scored([0.5, 0.5]), None, np.random.default_rng(0))
    assert c.index == 1 and c.probabilities[1] > 0.99
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        bb.update("m0", 1.5)


# ------------------------------------------------------------------------- posterior variance
def test_score_variance_is_wide_for_an_unjudged_model_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    pairs = np.array([["a", "b"]] * 200, dtype=object)
    y = (X[:, 0] > 0).astype(float)
    bt = BradleyTerry(rank=2, l2=1e-2).fit(X, pairs, y)
    bt.add_models(["new"])
    v = bt.score_variance(X[:10])
    assert v.shape == (10, 3) and (v > 0).all()
    # an unjudged rating has the prior's variance (sd 2 logits, twice ThompsonPolicy's prior_sd cap)
    assert (v[:, 2] > 3 * v[:, 0]).all() and (v[:, 2] > 3.5).all()
    bt.partial_fit(X, pairs, y)
    assert (bt.score_variance(X[:10])[:, 0] < v[:, 0]).all()
    flat = BradleyTerry(rank=2, l2=1e-2, rating_prior_sd=0.0).fit(X, pairs, y).add_models(["new"])
    w = flat.score_variance(X[:10])
    assert (w[:, 2] > 10 * w[:, 0]).all()  # without the prior only the ridge's floor bounds it


# ------------------------------------------------------------------------- routing + decision log
@pytest.fixture(scope="module")
def tiny_router() -> Router:
    from mmroute.features import FeaturePipeline

    pool = ModelPool.load(EXAMPLE / "pool.yaml")
    pipe = FeaturePipeline.from_spec("clip:tiny")
    texts = [f"question number {i} about {'maths' if i % 2 else 'colours'}" for i in range(40)]
    X = pipe.transform([QueryRecord(text=t).to_query() for t in texts])
    names = pool.names
    pairs = np.array([[names[i % 4], names[(i + 1) % 4]] for i in range(40)], dtype=object)
    y = np.array([float(i % 3 == 0) for i in range(40)])
    bt = BradleyTerry(rank=2, l2=1e-2).fit(X, pairs, y, models=names)
    return Router(pipe, bt, pool)


def test_exploring_router_logs_propensities_in_the_store_file(tiny_router, tmp_path):
    db = tmp_path / "feedback.db"
    store = FeedbackStore(db)
    log = store.decisions
    er = ExploringRouter(tiny_router, ThompsonPolicy(), log=log, seed=0)
    img = er.route({"text": "What colour is the shape?", "images": [str(IMAGE)]})
    txt = er.route("What is 9 * 7?")
    for d in (img, txt):
        assert d.decision_id and sum(d.probabilities.values()) == pytest.approx(1.0)
        assert d.propensity == pytest.approx(d.probabilities[d.model])
    # hard filters hold under exploration: an image never reaches a text-only model
    assert set(img.probabilities) <= {"replay/small-vision", "replay/large-vision"}
    capped = ExploringRouter(tiny_router, ThompsonPolicy(cost_cap=1e-3), seed=0).route("What is 9 * 7?")
    assert "replay/large-vision" not in capped.probabilities and "cap" in capped.filtered["replay/large-vision"]
    assert "replay/large-vision" not in capped.fallbacks
    row = log.get(img.decision_id)
    assert row.model == img.model and row.propensity == pytest.approx(img.propensity)
    assert row.probabilities == pytest.approx(img.probabilities)
    assert row.query is not None and row.query.images[0].startswith("data:image/png;base64,")
    assert row.query.to_query().images[0].sha256  # re-encodable without the original file
    j = Judgment(query=QueryRecord(text="What is 9 * 7?"), model_a=txt.model, model_b="replay/large-vision",
                 winner="model_a", id=f"{txt.decision_id}:j")
    store.add(j)
    log.record_outcome(txt.decision_id, 1.0, cost=0.0001, judgment_id=j.id)
    rewarded = list(log.iter(rewarded_only=True))
    assert [r.id for r in rewarded] == [txt.decision_id] and rewarded[0].judgment_id == j.id
    assert len(log) == 2 and len(list(store.iter())) == 1  # both tables in one file
    assert has_decisions(db)
    with pytest.raises(InvalidInputError, match="no logged decision"):
        log.record_outcome("nope", 0.5)


def test_decision_log_rejects_inconsistent_propensities(tiny_router, tmp_path):
    log = FeedbackStore(tmp_path / "d.db").decisions
    d = tiny_router.route("What is 9 * 7?")
    with pytest.raises(InvalidInputError, match="decision_id"):
        log.log(d)
    bad = d.model_copy(update={"decision_id": "x", "propensity": 0.5})
    with pytest.raises(InvalidInputError, match="propensity 0.5"):
        log.log(bad)
    bad = d.model_copy(update={"decision_id": "y", "probabilities": {d.model: 0.5}, "propensity": 0.5})
    with pytest.raises(InvalidInputError, match="sum to 0.5"):
        log.log(bad)
    ok = d.model_copy(update={"decision_id": "z"})
    assert log.log(ok) == "z" and log.log(ok) == "z" and len(log) == 1  # idempotent


# --------------------------------------------------------------------------- off-policy evaluation
def _synthetic_log(rng: np.random.Generator, n: int, M: int = 3):
    """Contexts x, true mean reward mu(x, m); a logging policy that is softmax in x (known)."""
    x = rng.normal(size=(n, 2))
    mu = 1 / (1 + np.exp(-np.stack([x[:, 0], -x[:, 0], 0.3 + 0.5 * x[:, 1]], axis=1)))
    logits = np.stack([0.5 * x[:, 1], np.zeros(n), -0.5 * x[:, 0]], axis=1)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    a = np.array([rng.choice(M, p=pi) for pi in p])
    r = rng.binomial(1, mu[np.arange(n), a]).astype(float)
    return x, mu, ope.LoggedBandit(a, p[np.arange(n), a], r)


def test_off_policy_estimates_are_unbiased_on_a_known_case():
    # target: model 0 where x0 > 0, else model 2; its true value is known from mu
    est = {"ips": [], "snips": [], "dr": []}
    truth, covered = [], 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        x, mu, log = _synthetic_log(rng, 400)
        target = ope.onehot(np.where(x[:, 0] > 0, 0, 2), 3)
        truth.append(float((target * mu).sum(axis=1).mean()))
        rhat = ope.fit_reward_model(x, log, 3, seed=seed)
        res = ope.evaluate(target, log, rhat=rhat)
        for k in est:
            est[k].append(res[k].value)
        covered += res["dr"].low <= truth[-1] <= res["dr"].high
    t = float(np.mean(truth))
    for k, v in est.items():
        se = np.std(v, ddof=1) / np.sqrt(len(v))
        assert abs(np.mean(v) - t) < max(4 * se, 0.004), (k, np.mean(v), t)
    assert covered / 150 >= 0.85  # the 95 % interval covers about as often as it says


def test_compare_of_identical_policies_is_exactly_zero_and_bootstrap_works():
    x, mu, log = _synthetic_log(np.random.default_rng(0), 300)
    pol = ope.onehot(np.zeros(300, int), 3)
    d = ope.compare(pol, pol, log, "ips")
    assert d.value == 0.0 and d.low == 0.0 and d.high == 0.0
    better = ope.onehot(np.where(x[:, 0] > 0, 0, 1), 3)
    worse = ope.onehot(np.where(x[:, 0] > 0, 1, 0), 3)
    diff = ope.compare(better, worse, log, "snips", bootstrap=200, seed=1)
    assert diff.low > 0 and diff.confidence == 0.95
    with pytest.raises(InvalidInputError, match="propensity"):
        ope.LoggedBandit(np.array([0]), np.array([0.0]), np.array([1.0]))
    with pytest.raises(InvalidInputError, match="distribution"):
        ope.estimate(np.full((300, 3), 0.5), log)


def _log_uniform(router: Router, log: DecisionLog, rewards: dict[str, float], n: int, seed: int = 0) -> None:
    er = ExploringRouter(router, EpsilonGreedyPolicy(epsilon=1.0), log=log, seed=seed)
    for i in range(n):
        d = er.route(f"logged question {i} about {'maths' if i % 2 else 'colours'}")
        log.record_outcome(d.decision_id, rewards.get(d.model, 0.0))


def _biased_router(router: Router, favourite: str) -> Router:
    import copy

    bt = copy.deepcopy(router.model)
    bt._b = bt._b.clone()
    bt._b[bt.models_.index(favourite)] += 5.0
    return Router(router.pipeline, bt, router.pool)


def test_ope_gate_accepts_a_better_router_and_rejects_a_worse_one(tiny_router, tmp_path):
    log = FeedbackStore(tmp_path / "d.db").decisions
    _log_uniform(tiny_router, log, {"replay/math-text": 1.0, "replay/tiny-text": 0.2}, n=80)
    good, bad = _biased_router(tiny_router, "replay/math-text"), _biased_router(tiny_router, "replay/tiny-text")
    up = ope_gate(bad, good, log)
    down = ope_gate(good, bad, log)
    assert up.accepted and up.utility_diff.low > 0, up.reason
    assert not down.accepted and down.utility_diff.high < 0, down.reason
    assert "failed" in down.reason and "95%" in down.reason
    assert ope_gate(good, good, log).accepted  # the same choices: difference exactly 0
    few = ope_gate(good, bad, log, min_decisions=1000)
    assert few.accepted and "abstained" in few.reason


def test_retrain_is_rejected_by_the_off_policy_gate_even_when_log_loss_improves(tiny_router, tmp_path):
    from mmroute.retraining import retrain

    root = tmp_path / "router"
    served = _biased_router(tiny_router, "replay/math-text")
    served.save(root)
    db = tmp_path / "feedback.db"
    store = FeedbackStore(db)
    # new judgments all say tiny-text beats math-text: the candidate learns to prefer tiny-text ...
    # (on queries like the logged ones, so what it learns reaches them whatever the random features)
    store.add_many([Judgment(query=QueryRecord(text=f"new question {i} about {'maths' if i % 2 else 'colours'}"),
                             model_a="replay/tiny-text", model_b="replay/math-text", winner="model_a", id=f"n{i}")
                    for i in range(60)])
    # ... but logged outcomes say math-text's answers were the good ones
    log = store.decisions
    _log_uniform(served, log, {"replay/math-text": 1.0}, n=80)
    report = retrain(root, store, seed=0, min_holdout=5)  # finds the decision log in the store's own file
    assert report.new_log_loss < report.old_log_loss  # the held-out log-loss gate alone would accept
    assert not report.accepted and report.ope is not None and not report.ope.accepted
    assert "off-policy" in report.reason
    off = retrain(root, store, seed=0, min_holdout=5, ope_confidence=None)
    assert off.accepted and off.ope is None


# ---------------------------------------------------------------------------------- the simulator
def test_simulate_end_to_end_on_the_example_set(tmp_path):
    from mmroute.cli import main

    out, png = tmp_path / "sim.json", tmp_path / "sim.png"
    rc = main(["simulate", "--outcomes", str(EXAMPLE / "outcomes.jsonl"), "--encoder", "clip:tiny", "--warm", "40",
               "--retrain-every", "20", "--report-every", "20", "--join", "replay/large-vision@40",
               "--json", str(out), "--plot", str(png), "--quiet"])
    assert rc == 0 and png.stat().st_size > 1000
    rep = json.loads(out.read_text())
    assert set(rep["policies"]) == {"greedy", "epsilon", "thompson", "beta-bandit"}
    assert rep["n_steps"] == 217 - 40 and "replay/large-vision" not in rep["start_pool"]
    for name, run in rep["policies"].items():
        for key in ("steps", "mean_quality", "cum_cost", "cum_regret", "explore_share", "final", "joins"):
            assert key in run, (name, key)
        assert run["steps"][-1] == rep["n_steps"] and len(run["cum_regret"]) == len(run["steps"])
        assert np.all(np.diff(run["cum_regret"]) >= -1e-9)  # regret vs the oracle never goes negative
        assert {"regret", "mean_quality", "total_cost"} <= set(run["final"])
    th = rep["policies"]["thompson"]["joins"][0]
    assert th["model"] == "replay/large-vision" and th["step"] == 40
    assert th["share_after_join"] > 0.1  # the joining model gets traffic under exploration
    assert rep["policies"]["greedy"]["final"]["explore_share"] == 0.0


def test_simulate_joining_model_gets_traffic_where_it_wins():
    # synthetic: model 2 joins at step 100 and is best on half the queries (x0 > 0)
    rng = np.random.default_rng(0)
    n = 700
    X = rng.normal(size=(n, 4)).astype(np.float32)
    Q = np.stack([np.full(n, 0.6), np.full(n, 0.4), np.where(X[:, 0] > 0, 0.95, 0.1)], axis=1)
    Q = rng.binomial(1, Q).astype(float)
    cfg = SimConfig(policies=["greedy", "thompson"], warm=100, retrain_every=25, joins={"c": 100}, rank=2, l2=1e-2)
    rep = simulate(X, Q, np.full(Q.shape, 1e-4), ["a", "b", "c"], cfg)
    th, gr = rep.policies["thompson"].joins[0], rep.policies["greedy"].joins[0]
    assert th.share_after_join > 0.25 and th.reached_after is not None
    assert gr.share_after_join < th.share_after_join
    assert rep.policies["thompson"].final["regret"] < rep.policies["greedy"].final["regret"]


def test_simulate_rejects_bad_configuration():
    X, Q = np.zeros((50, 2), np.float32), np.full((50, 2), 0.5)
    with pytest.raises(ConfigError, match="not in the outcomes"):
        simulate(X, Q, Q, ["a", "b"], SimConfig(warm=10, joins={"zz": 5}))
    with pytest.raises(ConfigError, match="past the end"):
        simulate(X, Q, Q, ["a", "b"], SimConfig(warm=10, joins={"b": 45}))
    with pytest.raises(InvalidInputError, match="\\[0, 1\\]"):
        simulate(X, Q * 3, Q, ["a", "b"], SimConfig(warm=10))
    from mmroute.learning.simulate import parse_join

    with pytest.raises(ConfigError, match="MODEL@STEP"):
        parse_join("gpt-4")
    assert math.isfinite(parse_join("a@b@3")[1]) and parse_join("a@b@3") == ("a@b", 3)


def test_simulate_start_models_and_pairwise_feedback():
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n, 3)).astype(np.float32)
    Q = rng.binomial(1, [0.3, 0.6, 0.8, 0.5], size=(n, 4)).astype(float)
    C = np.tile([1e-4, 2e-4, 1e-2, 1e-4], (n, 1))
    cfg = SimConfig(policies=["epsilon", "thompson", "beta-bandit"], warm=60, start_models=3, feedback="pairwise",
                    epsilon=0.5, retrain_every=30)
    rep = simulate(X, Q, C, ["a", "b", "c", "d"], cfg)
    assert rep.start_pool == ["a", "b", "c"] and rep.n_steps == 240
    for run in rep.policies.values():
        assert run.final["regret"] >= 0 and run.steps[-1] == 240
    # epsilon = 0.5 over the 3 start models: a non-greedy model on 0.5 * 2/3 of the queries
    assert rep.policies["epsilon"].final["explore_share"] == pytest.approx(1 / 3, abs=0.08)


def test_exploring_router_filters_on_the_whole_conversation(tiny_router):
    """An image earlier in the conversation keeps a text-only model out, exploring or not (issue #9)."""
    router = tiny_router
    img = next((EXAMPLE / "images").glob("*.png"))
    convo = [{"role": "user", "content": [{"type": "text", "text": "What shape is this?"},
                                          {"type": "image_url", "image_url": {"url": str(img)}}]},
             {"role": "assistant", "content": "A circle."}, {"role": "user", "content": "Tell me a joke about it"}]
    text_only = {m.name for m in router.pool.models if m.supports_vision is not True}
    assert text_only
    er = ExploringRouter(router, EpsilonGreedyPolicy(epsilon=1.0), seed=0)
    for _ in range(20):
        d = er.route(convo)
        assert d.model not in text_only and d.n_images == 1 and set(d.filtered) >= text_only


def test_exploration_distributions_stay_probabilities_under_rounding_and_nan():
    """A served decision's propensity must validate (0 < p <= 1) and the draw must never fail:
    a rounding residue or a non-finite posterior draw once answered a /v1/route with a 500."""
    from mmroute.learning.explore import Choice, _normalised
    from mmroute.policy import RouteDecision

    assert Choice(0, np.array([1.0000000000000002, 0.0]), 0).propensity == 1.0
    p = _normalised(np.array([0.1] * 10 + [np.nan]), greedy=0)
    assert np.isclose(p.sum(), 1.0) and (p >= 0).all() and (p <= 1).all() and p[-1] == 0.0
    assert _normalised(np.array([np.nan, np.nan]), greedy=1).tolist() == [0.0, 1.0]
    d = RouteDecision(model="a", reason="r", policy="p", knob=0.0, candidates=(), prompt_tokens=1, n_images=0,
                      propensity=Choice(0, np.array([1.0000000000000002, 0.0]), 0).propensity)
    assert d.propensity == 1.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        raw = rng.random(7) * rng.choice([1e-17, 1.0, 1e17], 7)
        q = _normalised(raw, greedy=3)
        assert int(rng.choice(7, p=q)) in range(7)
