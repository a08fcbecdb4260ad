"""Starting with no judgments (issue 19, item 2): a router with priors only that routes, saves,
loads, explores, says what it rests on, and becomes an ordinary router at its first retrain."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _knife_edge import CHEAP, MATH, POOL, VISION, chat_query, knife_judgments, math_query

from mmroute.cli import main
from mmroute.coldstart import PRIORS_ONLY, prior_ratings
from mmroute.errors import InvalidInputError
from mmroute.learning import ExploringRouter, ThompsonPolicy
from mmroute.pool import ModelPool, ModelSpec
from mmroute.router import Router
from mmroute.retraining import retrain_router


@pytest.fixture(scope="module")
def priors() -> Router:
    return Router.from_pool(POOL, encoder="clip:tiny")


def test_prior_ratings_follow_price_weakly_and_unknown_prices_are_neutral():
    r = prior_ratings(POOL)
    assert r[CHEAP] < r[MATH] < r[VISION] and abs(sum(r.values())) < 1e-9
    assert r[VISION] - r[CHEAP] < 0.5  # weak: a 25x pricier model starts at P(win) < 0.62
    pool = ModelPool(models=(*POOL.models, ModelSpec(name="acme/unpriced")))
    assert prior_ratings(pool)["acme/unpriced"] == 0.0


def test_from_pool_routes_on_priors_and_says_so(priors: Router):
    assert priors.metadata["routing"] == PRIORS_ONLY and priors.metadata["n_judgments"] == 0
    assert priors.metadata["policy_choice"]["method"] == "prior"
    d = priors.route("What is 31 * 47?")
    assert "priors only (no judgments yet)" in d.reason and "exploration" in d.reason
    assert "mmroute serve --explore" in d.reason  # what a command-line user runs next
    # no feature dependence: every text query gets the same predicted qualities
    q = priors.predict_quality(["What is 31 * 47?", "Write a haiku about tea.", "Say hello"])
    assert np.allclose(q, q[0]) and 0.4 < q.min() and q.max() < 0.6
    assert d.model == VISION  # lambda 0: the prior's best, the priciest
    img = {"text": "what is this?", "images": [str(Path(__file__).resolve().parents[2] / "mmroute" / "example_data" /
                                                   "images" / "ex-0005.png")]}
    assert priors.route(img).model == VISION and set(priors.route(img).filtered) == {CHEAP, MATH}


def test_priors_router_saves_and_loads(priors: Router, tmp_path: Path):
    priors.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert back.metadata["routing"] == PRIORS_ONLY and back.metadata["prior"] == priors.metadata["prior"]
    for text in ("What is 31 * 47?", "Write a haiku about tea."):
        a, b = priors.route(text), back.route(text)
        assert a.model == b.model and a.reason == b.reason
        assert [c.quality for c in a.candidates] == pytest.approx([c.quality for c in b.candidates])


def test_thompson_explores_a_priors_router(priors: Router):
    ex = ExploringRouter(priors, ThompsonPolicy(lam=0.0), seed=0)
    ds = [ex.route(f"What is {i} * 7?") for i in range(60)]
    picks = Counter(d.model for d in ds)
    assert len(picks) == 3 and min(picks.values()) >= 5, picks  # wide posterior: every model gets traffic
    assert all(d.propensity < 0.9 for d in ds)


def test_retrain_from_priors_learns_and_chooses_lambda(priors: Router):
    rng = random.Random(7)
    maths, chats = [math_query(rng) for _ in range(30)], [chat_query(i + 50) for i in range(15)]
    assert {d.model for d in priors.route_many(maths + chats)} == {VISION}
    res = retrain_router(priors, knife_judgments(0) + knife_judgments(3))
    assert res.accepted, res.report.reason
    r = res.router
    assert Counter(d.model for d in r.route_many(chats)) == {CHEAP: 15}
    assert Counter(d.model for d in r.route_many(maths))[MATH] >= 20
    assert r.metadata["routing"] == "trained" and "priors only" not in r.route(maths[0]).reason
    choice = r.metadata["policy_choice"]
    assert choice["method"] == "quality-tolerance" and choice["rechosen_from"] == {"method": "prior", "lam": 0.0}
    assert r.policy.knob == choice["lam"] > 0
    q = r.predict_quality(maths + chats)
    assert q.min() > 0.0 and q.max() < 1.0 and not np.allclose(q, q[0])  # the query terms were fitted


def test_cli_train_with_only_a_pool_gives_a_priors_router(tmp_path: Path, capsys):
    pool_file = tmp_path / "pool.yaml"
    ModelPool(models=(*POOL.models, ModelSpec(name="acme/unpriced", supports_vision=False))).dump(pool_file)
    assert main(["train", "--pool", str(pool_file), "--encoder", "clip:tiny", "--out", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    assert "priors only" in cap.out and "exploration" in cap.out
    assert cap.err.count("error: prices unknown for 1 of 4 models ('acme/unpriced')") == 1
    r = Router.load(tmp_path / "r")
    assert r.metadata["routing"] == PRIORS_ONLY and r.pool.names == [CHEAP, MATH, VISION, "acme/unpriced"]
    # a judgments file with nothing usable is still an error, not a silent start from priors
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["train", "--pool", str(pool_file), "--judgments", str(empty), "--encoder", "clip:tiny",
                 "--out", str(tmp_path / "r2")]) != 0
    assert "no judgments to train on" in capsys.readouterr().err


def test_from_ratings_refuses_bad_input():
    from mmroute.preference import BradleyTerry

    with pytest.raises(InvalidInputError):
        BradleyTerry.from_ratings({}, 8)
    with pytest.raises(InvalidInputError):
        BradleyTerry.from_ratings({"a": float("nan")}, 8)
