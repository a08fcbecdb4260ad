"""Router families and the family selection: fit / predict / save / load, and who gets chosen."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.errors import CheckpointError, InvalidInputError
from mmroute.preference.families import (
    BlendFamily,
    BTFamily,
    GlobalFamily,
    KNNFamily,
    MeanFamily,
    RidgeFamily,
    RoutingData,
    load_family,
    win_share_scores,
)
from mmroute.preference.family_selection import select_family


def synthetic(n: int = 300, d_noise: int = 20, signal: bool = True, seed: int = 0) -> tuple[RoutingData, np.ndarray]:
    """Three models with pointwise correctness: model 0 is right when feature 0 > 0 (if ``signal``),
    model 1 right 60 % of the time regardless, model 2 (cheap) right 30 %; the rest is noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1 + d_noise)).astype(np.float32)
    p0 = np.where(X[:, 0] > 0, 0.95, 0.05) if signal else np.full(n, 0.5)
    S = np.stack([rng.random(n) < p0, rng.random(n) < 0.6, rng.random(n) < 0.3], axis=1).astype(float)
    ia, ib = np.triu_indices(3, k=1)
    qi = np.repeat(np.arange(n), len(ia))
    A, B = np.tile(ia, n), np.tile(ib, n)
    sa, sb = S[qi, A], S[qi, B]
    y = np.where(sa > sb, 1.0, np.where(sa < sb, 0.0, 0.5))
    data = RoutingData(X, qi, A, B, y, np.ones(len(y)), ["m0", "m1", "m2"], S)
    cost = np.tile([1.0, 0.5, 0.1], (n, 1))
    return data, cost


FAMILIES = [lambda: BTFamily(rank=2, l2=0.01), lambda: GlobalFamily(), MeanFamily,
            lambda: RidgeFamily(0.1), lambda: KNNFamily(10, 5.0),
            lambda: BlendFamily([RidgeFamily(0.1), KNNFamily(10, 5.0)])]


@pytest.mark.parametrize("make", FAMILIES, ids=["bt", "global", "mean", "ridge", "knn", "blend"])
def test_fit_predict_save_load_round_trip(make, tmp_path):
    data, _ = synthetic(120)
    fam = make().fit(data)
    P = fam.expected_quality(data.X[:7])
    assert P.shape == (7, 3) and np.isfinite(P).all()
    fam.save(tmp_path / "f")
    back = load_family(tmp_path / "f")
    assert type(back) is type(fam) and back.models_ == ["m0", "m1", "m2"]
    np.testing.assert_allclose(back.expected_quality(data.X[:7]), P, rtol=1e-5, atol=1e-6)
    assert back.describe() == fam.describe()


def test_load_refuses_tampered_and_foreign_folders(tmp_path):
    data, _ = synthetic(60)
    RidgeFamily(1.0).fit(data).save(tmp_path / "r")
    blob = (tmp_path / "r" / "family.safetensors").read_bytes()
    (tmp_path / "r" / "family.safetensors").write_bytes(blob[:-3] + b"xyz")
    with pytest.raises(CheckpointError, match="checksum"):
        load_family(tmp_path / "r")
    with pytest.raises(CheckpointError, match="missing|cannot read"):
        load_family(tmp_path / "nothing")


def test_pointwise_heads_learn_the_signal_and_mean_picks_most_often_right():
    data, _ = synthetic(400)
    test, _ = synthetic(200, seed=1)
    ridge = RidgeFamily(0.03).fit(data).expected_quality(test.X)
    # model 0 is predicted better than model 1 exactly where it is right 95 % of the time
    agree = (ridge[:, 0] > ridge[:, 1]) == (test.X[:, 0] > 0)
    assert agree.mean() > 0.85
    few, _ = synthetic(400, d_noise=2)  # cosine neighbours need the signal to dominate the distance
    ftest, _ = synthetic(200, d_noise=2, seed=1)
    knn = KNNFamily(20, 5.0).fit(few).expected_quality(ftest.X)
    assert ((knn[:, 0] > knn[:, 1]) == (ftest.X[:, 0] > 0)).mean() > 0.85
    mean = MeanFamily().fit(data).expected_quality(test.X[:1])[0]
    np.testing.assert_allclose(mean, data.scores.mean(axis=0))  # at lambda = 0: the most accurate model


def test_ridge_shrinks_toward_the_global_mean_as_alpha_grows():
    data, _ = synthetic(200)
    spread = [np.ptp(RidgeFamily(a).fit(data).expected_quality(data.X)[:, 0]) for a in (0.01, 1.0, 100.0)]
    assert spread[0] > spread[1] > spread[2] and spread[2] < 0.05


def test_win_share_scores_from_judgments():
    data, _ = synthetic(50)
    ws = win_share_scores(data)
    S = data.scores
    # a model right where both others are wrong wins all its judgments on that query
    only0 = (S[:, 0] == 1) & (S[:, 1] == 0) & (S[:, 2] == 0)
    assert only0.any() and np.allclose(ws[only0, 0], 1.0)
    partial = RoutingData(data.X, data.qi[:3], data.ia[:3], data.ib[:3], data.y[:3], data.w[:3], data.models)
    assert np.isnan(win_share_scores(partial)[1:]).all()


def test_selection_picks_a_feature_free_family_when_features_are_noise():
    # pure-noise features and one model both cheapest and most often right: the leaderboard
    # (always that model) is optimal, so anything that follows the features can only lose
    data, cost = synthetic(400, d_noise=30, signal=False)
    cost = np.tile([1.0, 0.5, 0.1], (data.n, 1))[:, ::-1].copy()  # model 2 (right 30 %) dearest now
    cost[:, 1] = 0.05                                              # model 1 (right 60 %) cheapest
    sel = select_family(data, cost=cost, blocks=[(0, 1), (1, 31)])
    assert sel.params["family"] in ("global", "mean"), sel.params
    assert len(sel.scores) > 5 and sel.n_scored == 400


def test_on_noise_the_selection_is_not_worse_than_global_on_fresh_queries():
    from mmroute.preference.family_selection import routing_area

    data, cost = synthetic(400, d_noise=30, signal=False)
    sel = select_family(data, cost=cost, blocks=[(0, 1), (1, 31)])
    fresh, fcost = synthetic(400, d_noise=30, signal=False, seed=7)
    truth = fresh.scores
    chosen = routing_area(sel.family.expected_quality(fresh.X), truth, fcost, fcost)
    glob = routing_area(GlobalFamily().fit(data).expected_quality(fresh.X), truth, fcost, fcost)
    assert chosen >= glob - 0.005, (sel.params, chosen, glob)


def test_selection_uses_the_features_when_they_carry_signal():
    data, cost = synthetic(400, d_noise=30, signal=True)
    sel = select_family(data, cost=cost, blocks=[(0, 1), (1, 31)])
    assert sel.params["family"] not in ("global", "mean"), sel.scores
    by = {str(p): s for p, s in sel.scores}
    assert max(by.values()) > by[str({"family": "global"})]


def test_selection_rejects_bad_shapes():
    data, cost = synthetic(60)
    with pytest.raises(InvalidInputError, match="cost must have shape"):
        select_family(data, cost=cost[:10])
    with pytest.raises(InvalidInputError, match="scores must have shape"):
        RoutingData(data.X, data.qi, data.ia, data.ib, data.y, data.w, data.models, data.scores[:5])


def test_blend_is_the_mean_of_its_members():
    data, _ = synthetic(120)
    r, k = RidgeFamily(0.1).fit(data), KNNFamily(10, 5.0).fit(data)
    b = BlendFamily([r, k])
    np.testing.assert_allclose(b.expected_quality(data.X), (r.expected_quality(data.X) + k.expected_quality(data.X)) / 2)
    with pytest.raises(InvalidInputError, match="pointwise"):
        BlendFamily([GlobalFamily().fit(data)])


def test_prefer_keeps_the_preferred_family_unless_clearly_beaten():
    data, cost = synthetic(300, d_noise=30, signal=True)
    plain = select_family(data, cost=cost)
    assert plain.params["family"] != "global"
    # a margin no gain can clear keeps the preferred candidate (index 0 = global) ...
    assert select_family(data, cost=cost, prefer=0, prefer_se=1e9).params == {"family": "global"}
    # ... and a zero margin keeps the winner, which beats global on every inner fold here
    assert select_family(data, cost=cost, prefer=0, prefer_se=0.0).params == plain.params
