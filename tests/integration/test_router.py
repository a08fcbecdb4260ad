"""The router end to end on the synthetic example set: train, route, persist, learn from feedback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmroute.data.example import example_dir
from mmroute.data.formats import Judgment, QueryRecord, read_judgments, read_outcomes
from mmroute.data.store import FeedbackStore
from mmroute.errors import CheckpointError, FeatureSpecMismatchError, NoEligibleModelError
from mmroute.policy import CostAwarePolicy, ThresholdPolicy
from mmroute.pool import ModelPool
from mmroute.router import LiveRouter, Router
from mmroute.data.formats import resolve_image_paths
from mmroute.retraining import retrain
from mmroute.training import train_router

EXAMPLE = example_dir()  # the packaged example set


@pytest.fixture(scope="module")
def data():
    res = read_judgments(EXAMPLE / "judgments.jsonl")
    outs = read_outcomes(EXAMPLE / "outcomes.jsonl")
    return resolve_image_paths(res.items, res.base_dir), resolve_image_paths(outs.items, outs.base_dir)


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool.load(EXAMPLE / "pool.yaml")


@pytest.fixture(scope="module")
def split(data):
    judgments, outcomes = data
    test_ids = {o.id for i, o in enumerate(outcomes) if i % 4 == 0}
    train = [j for j in judgments if j.id.split(":")[0] not in test_ids]
    test = [o for o in outcomes if o.id in test_ids]
    return train, test


@pytest.fixture(scope="module")
def router(split, pool) -> Router:
    train, _ = split
    return train_router(train, encoder="clip:tiny", pool=pool, seed=0, model_params={"rank": 8})


@pytest.fixture(scope="module")
def saved(router, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("router")
    router.save(root)
    return root


def test_image_queries_never_reach_text_only_models(router, split, pool):
    _, test = split
    image_qs = [o.query.to_query() for o in test if o.query.images]
    assert image_qs
    for d in router.route_many(image_qs):
        assert pool[d.model].supports_vision is True
        assert all(not c.eligible for c in d.candidates if pool[c.model].supports_vision is False)


def test_router_learns_which_model_is_better(router, split):
    """On held-out queries, the model the router picks (cost ignored) scores better than a random pick."""
    _, test = split
    qs = [o.query.to_query() for o in test]
    decisions = router.route_many(qs, policy=CostAwarePolicy(0.0))
    chosen, random_pick = [], []
    for o, d in zip(test, decisions):
        eligible = [c.model for c in d.candidates if c.eligible]
        chosen.append(o.scores[d.model])
        random_pick.append(np.mean([o.scores[m] for m in eligible]))
    assert np.mean(chosen) > np.mean(random_pick) + 0.05, (np.mean(chosen), np.mean(random_pick))


def test_cost_knob_moves_to_cheaper_models(router, split):
    _, test = split
    qs = [o.query.to_query() for o in test]
    cost0 = np.mean([d.chosen.expected_cost for d in router.route_many(qs, policy=CostAwarePolicy(0.0))])
    cost1 = np.mean([d.chosen.expected_cost for d in router.route_many(qs, policy=CostAwarePolicy(1e4))])
    assert cost1 < cost0


def test_calibrate_meets_target_cost(router, split):
    _, test = split
    qs = [o.query.to_query() for o in test]
    full = np.mean([d.chosen.expected_cost for d in router.route_many(qs, policy=CostAwarePolicy(0.0))])
    policy = router.calibrate(qs, target_cost=0.5 * full)
    try:
        got = np.mean([d.chosen.expected_cost for d in router.route_many(qs)])
        assert policy.lam > 0 and got <= 0.5 * full + 1e-12
    finally:
        router.policy = CostAwarePolicy(0.0)


def test_decision_is_explained(router):
    d = router.route({"text": "What colour is the shape?", "images": [str(next((EXAMPLE / "images").iterdir()))]})
    assert d.reason and "excluded 2" in d.reason and "no vision" in d.reason
    assert len(d.candidates) == 4 and d.candidates[0].model == d.model
    json.dumps(d.model_dump(mode="json"))
    t = router.route("What is 12 * 7?", policy=ThresholdPolicy("replay/large-vision", "replay/tiny-text", 0.0))
    assert t.model == "replay/large-vision" and "threshold" in t.reason


def test_no_eligible_model_is_an_error(router):
    img = str(next((EXAMPLE / "images").iterdir()))
    with pytest.raises(NoEligibleModelError, match="no vision"):
        router.route({"text": "colour?", "images": [img]}, exclude=["replay/small-vision", "replay/large-vision"])


def test_save_load_roundtrip_and_versions(router, saved):
    loaded = Router.load(saved)
    q = "What is 37 * 12?"
    assert loaded.route(q).model_dump() == router.route(q).model_dump()
    assert (saved / "CURRENT").read_text().strip() == "v0001"
    router.save(saved)
    assert (saved / "CURRENT").read_text().strip() == "v0002" and (saved / "versions" / "v0001").is_dir()
    (saved / "CURRENT").write_text("v0001\n")


def test_load_refuses_other_features(saved):
    with pytest.raises(FeatureSpecMismatchError, match="clip:tiny"):
        Router.load(saved, encoder="clip:tiny+st:minilm" if False else _other_encoder())


def _other_encoder():
    from mmroute.features import FeaturePipeline

    return FeaturePipeline.from_spec("clip:ViT-B-32:random")


@pytest.mark.parametrize("damage", ["truncate", "tamper", "newer", "manifest"])
def test_damaged_checkpoints_refused(saved, tmp_path, damage):
    root = tmp_path / "r"
    shutil.copytree(saved, root)
    vdir = root / "versions" / (root / "CURRENT").read_text().strip()
    st = next(vdir.rglob("*.safetensors"))
    if damage == "truncate":
        st.write_bytes(st.read_bytes()[:100])
    elif damage == "tamper":
        b = bytearray(st.read_bytes())
        b[-1] ^= 0xFF
        st.write_bytes(bytes(b))
    elif damage == "newer":
        m = json.loads((vdir / "router.json").read_text())
        m["format_version"] = 99
        (vdir / "router.json").write_text(json.dumps(m))
    else:
        (vdir / "router.json").write_text('{"format_version": 1,')
    with pytest.raises(CheckpointError):
        Router.load(root)


def test_live_router_picks_up_new_version(router, saved):
    live = LiveRouter(saved)
    first = live.router
    assert live.refresh() is False
    router.save(saved)
    assert live.refresh() is True and live.router is not first


def _judgment(q: str, a: str, b: str, w: str, i: int) -> Judgment:
    return Judgment(query=QueryRecord(text=q), model_a=a, model_b=b, winner=w, id=f"t{i}")


def test_record_and_retrain_gate(router, saved, tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    j = store.record("What is 9 * 9?", "replay/math-text", "replay/tiny-text", "model_a")
    assert store.count() == 1 and j.source == "api"
    root = tmp_path / "r"
    shutil.copytree(saved, root)
    before = (root / "CURRENT").read_text()
    # consistent, learnable feedback: math-text wins arithmetic; the retrained router is kept
    for i in range(60):
        store.add(_judgment(f"What is {i} * {i + 3}?", "replay/math-text", "replay/tiny-text", "model_a", i))
    rep = retrain(root, store, holdout_fraction=0.25, min_holdout=5)  # the gate's size rule: tests/integration/test_retrain.py
    assert rep.accepted, rep.reason
    assert (root / "CURRENT").read_text() != before and rep.new_log_loss <= rep.old_log_loss
    # nothing new since the watermark: nothing to do
    assert not retrain(root, store).accepted
    # contradictory feedback on the held-out slice: the candidate is refused, the served router stays
    current = (root / "CURRENT").read_text()
    store2 = FeedbackStore(tmp_path / "fb2.db")
    for i in range(200):
        w = "model_a" if i % 2 else "model_b"
        store2.add(_judgment(f"Name the capital #{i % 7}", "replay/tiny-text", "replay/large-vision", w, 1000 + i))
    rep2 = retrain(root, store2, holdout_fraction=0.5, tolerance=-1.0, min_holdout=5)
    assert not rep2.accepted and "log-loss" in rep2.reason
    assert (root / "CURRENT").read_text() == current


def test_the_router_owns_no_feedback(router):
    """Judgments are built and stored by the feedback store (FeedbackStore.record), not the router."""
    assert not hasattr(router, "store") and not hasattr(router, "record")


def test_a_registered_policy_is_saved_and_loaded_with_the_router(router, tmp_path, registered_policy):
    from mmroute.checkpoint import current_version_dir

    keep = router.policy
    try:
        router.policy = registered_policy()
        router.save(tmp_path / "r")
        manifest = json.loads((current_version_dir(tmp_path / "r") / "router.json").read_text())
        assert manifest["policy"] == {"name": "test-first-listed"}
        assert isinstance(Router.load(tmp_path / "r").policy, registered_policy)
    finally:
        router.policy = keep
