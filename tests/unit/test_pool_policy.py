"""Pool files, hard filters, the two policies and their calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmroute.errors import ConfigError, DataFormatError, NoEligibleModelError
from mmroute.policy import CostAwarePolicy, Scored, ThresholdPolicy, choose_batch, decide, hard_filters
from mmroute.policy_calibration import calibrate_lambda, calibrate_strong_win_threshold
from mmroute.pool import ModelPool, ModelSpec

POOL = {"models": [
    {"name": "x/text-cheap", "supports_vision": False, "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7, "context_window": 4000},
    {"name": "x/vision-mid", "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
     "context_window": 100000},
    {"name": "x/vision-big", "supports_vision": True, "input_cost_per_token": 1e-5, "output_cost_per_token": 3e-5,
     "context_window": 200000},
]}


@pytest.fixture
def pool(tmp_path) -> ModelPool:
    p = tmp_path / "pool.json"
    p.write_text(json.dumps(POOL))
    return ModelPool.load(p)


def test_pool_yaml_and_litellm_defaults(tmp_path):
    p = tmp_path / "pool.yaml"
    p.write_text("models:\n  - gpt-4o-mini\n  - name: my/own\n    supports_vision: false\n"
                 "    input_cost_per_token: 0.000001\n    output_cost_per_token: 0.000002\n")
    pool = ModelPool.load(p)
    mini = pool["gpt-4o-mini"]
    assert mini.supports_vision is True and mini.input_cost_per_token and mini.context_window
    assert pool["my/own"].supports_vision is False


@pytest.mark.parametrize("content,needle", [
    ('{"models": [{"name": "unknown/model-xyz"}]}', "unknown to LiteLLM"),
    ('{"models": []}', "at least 1"),
    ('{"models": [{"name": "a/b", "colour": "red", "input_cost_per_token": 0, "output_cost_per_token": 0}]}', "colour"),
    ('{"models": [{"name": "a/b", "input_cost_per_token": -1, "output_cost_per_token": 0}]}', "greater than or equal"),
    ('{"models": ["gpt-4o", "gpt-4o"]}', "duplicate"),
    ("{not json", "not valid JSON"),
])
def test_bad_pool_files(tmp_path, content, needle):
    p = tmp_path / "pool.json"
    p.write_text(content)
    with pytest.raises((ConfigError, DataFormatError), match=needle):
        ModelPool.load(p)


def test_missing_pool_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read pool file"):
        ModelPool.load(tmp_path / "nope.yaml")


def test_expected_cost_counts_images_and_output():
    m = ModelSpec(name="a", input_cost_per_token=1e-6, output_cost_per_token=1e-5, typical_output_tokens=100, tokens_per_image=500)
    assert m.expected_cost(1000, 0) == pytest.approx(1000e-6 + 100e-5)
    assert m.expected_cost(1000, 2) == pytest.approx(2000e-6 + 100e-5)


def test_hard_filters(pool):
    assert hard_filters(pool, text_tokens=10, n_images=1) == {"x/text-cheap": "no vision"}
    f = hard_filters(pool, text_tokens=150_000, n_images=0)
    assert set(f) == {"x/text-cheap", "x/vision-mid"} and "context" in f["x/vision-mid"]
    assert hard_filters(pool, text_tokens=10, n_images=0, exclude=["x/vision-big"]) == {"x/vision-big": "excluded by caller"}


def _scored(q, c, elig=None, win=None):
    names = ["a", "b", "c"]
    return Scored(names, np.array(q, float), np.array(c, float), np.array(elig or [True] * 3), win)


def test_cost_aware_tradeoff():
    s = _scored([0.5, 0.6, 0.9], [0.001, 0.002, 0.02])
    assert decide(s, CostAwarePolicy(0), {}, prompt_tokens=1, n_images=0).model == "c"
    d = decide(s, CostAwarePolicy(50), {}, prompt_tokens=1, n_images=0)
    assert d.model == "b" and "c is predicted better" in d.reason
    assert d.fallbacks == ["a", "c"] and d.ordered == ["b", "a", "c"]
    assert d.escalation_order() == ["c"]
    assert d.escalation_order(after="a") == ["b", "c"]


def test_filtered_models_are_never_chosen_and_explained():
    s = _scored([0.5, 0.6, 0.9], [0.0, 0.0, 0.0], elig=[True, True, False])
    d = decide(s, CostAwarePolicy(0), {"c": "no vision"}, prompt_tokens=1, n_images=1)
    assert d.model == "b" and "c (no vision)" in d.reason
    assert [c.model for c in d.candidates][-1] == "c" and d.candidates[-1].filtered_by == ("no vision",)
    with pytest.raises(NoEligibleModelError, match="a: no vision"):
        decide(_scored([1, 1, 1], [0, 0, 0], elig=[False] * 3), CostAwarePolicy(0), {"a": "no vision"}, prompt_tokens=1, n_images=1)


def test_threshold_policy():
    win = np.full((3, 3), 0.5)
    win[2, 0], win[0, 2] = 0.7, 0.3
    s = _scored([0.4, 0.5, 0.6], [0, 0, 0], win=win)
    assert decide(s, ThresholdPolicy("c", "a", 0.6), {}, prompt_tokens=1, n_images=0).model == "c"
    assert decide(s, ThresholdPolicy("c", "a", 0.8), {}, prompt_tokens=1, n_images=0).model == "a"
    with pytest.raises(ConfigError):
        ThresholdPolicy("a", "a")
    with pytest.raises(ConfigError):
        CostAwarePolicy(-1)


def test_calibrate_lambda_hits_target_cost():
    rng = np.random.default_rng(0)
    q = rng.uniform(size=(500, 3)) + np.array([0, 0.2, 0.4])
    c = np.tile([0.001, 0.004, 0.02], (500, 1))
    lam = calibrate_lambda(q, c, target_cost=0.006)
    pick = choose_batch(q, c, np.ones_like(q, bool), lam)
    avg = c[np.arange(500), pick].mean()
    assert avg <= 0.006 + 1e-12
    # a slightly smaller lambda would overshoot: the target is met tightly, not trivially
    pick2 = choose_batch(q, c, np.ones_like(q, bool), lam * 0.9)
    assert c[np.arange(500), pick2].mean() > avg
    lam_s = calibrate_lambda(q, c, target_strong_share=0.3)
    share = (choose_batch(q, c, np.ones_like(q, bool), lam_s) == 2).mean()
    assert share <= 0.3 and share > 0.2


def test_calibrate_threshold():
    p = np.linspace(0, 1, 101)
    t = calibrate_strong_win_threshold(p, target_strong_share=0.25)
    assert (p >= t).mean() == pytest.approx(0.25, abs=0.011)
    t2 = calibrate_strong_win_threshold(p, target_cost=0.5, cost_strong=np.ones(101), cost_weak=np.zeros(101))
    assert (p >= t2).mean() <= 0.5


# ------------------------------------------------------------------ policies serialise themselves
def test_saved_policy_format_is_unchanged_and_old_entries_load():
    from mmroute.policy import policy_from_json, policy_to_json

    # the dicts routers saved before policies serialised themselves (router.json "policy")
    old_cost, old_threshold = {"name": "cost-aware", "lam": 2.5}, {"name": "threshold", "strong": "s", "weak": "w",
                                                                   "threshold": 0.7}
    assert policy_to_json(CostAwarePolicy(2.5)) == old_cost
    assert policy_to_json(ThresholdPolicy("s", "w", 0.7)) == old_threshold
    assert policy_from_json(old_cost) == CostAwarePolicy(2.5)
    assert policy_from_json(old_threshold) == ThresholdPolicy("s", "w", 0.7)
    assert policy_from_json({"name": "cost-aware"}) == CostAwarePolicy(0.0)  # lam was optional


def test_a_new_policy_class_registers_itself(registered_policy):
    from dataclasses import dataclass

    from mmroute.errors import CheckpointError
    from mmroute.policy import POLICIES, policy_from_json, policy_to_json

    assert isinstance(policy_from_json(policy_to_json(registered_policy())), registered_policy)
    del POLICIES["test-first-listed"]
    with pytest.raises(CheckpointError, match="unknown policy 'test-first-listed'"):
        policy_from_json({"name": "test-first-listed"})

    @dataclass
    class Unregistered(registered_policy):  # type: ignore[misc, valid-type]
        name: str = "unregistered"

    with pytest.raises(ConfigError, match="register_policy"):
        policy_to_json(Unregistered())


def test_margin_keeps_queries_on_the_default_model_unless_the_gain_is_larger():
    from mmroute.policy import policy_from_json, policy_to_json

    s = _scored([0.80, 0.86, 0.85], [0.0, 0.0, 0.0])
    assert decide(s, CostAwarePolicy(0), {}, prompt_tokens=1, n_images=0).model == "b"
    kept = decide(s, CostAwarePolicy(0, margin=0.02, default="c"), {}, prompt_tokens=1, n_images=0)
    assert kept.model == "c" and "kept on the default model c (margin 0.02)" in kept.reason
    assert decide(s, CostAwarePolicy(0, margin=0.005, default="c"), {}, prompt_tokens=1, n_images=0).model == "b"
    # a filtered default gets nothing: the best eligible model wins
    off = _scored([0.80, 0.86, 0.99], [0.0, 0.0, 0.0], elig=[True, True, False])
    assert decide(off, CostAwarePolicy(0, margin=1.0, default="c"), {"c": "no vision"}, prompt_tokens=1,
                  n_images=1).model == "b"
    p = CostAwarePolicy(3.0, margin=0.1, default="c")
    assert policy_from_json(policy_to_json(p)) == p
    with pytest.raises(ConfigError, match="default model"):
        CostAwarePolicy(0, margin=0.1)
    with pytest.raises(ConfigError, match="margin"):
        CostAwarePolicy(0, margin=-1.0, default="c")
