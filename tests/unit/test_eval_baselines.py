"""Baselines learn what they should from a synthetic task where the query decides the winner."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.errors import InvalidInputError
from mmroute.eval import baselines as b


def _task(n: int = 300, seed: int = 0):
    """Two clusters of queries: model 0 wins on cluster A, model 1 on cluster B; model 2 always loses."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 2, n)
    centers = np.array([[1.0, 0.0, 0.2, 0.0], [0.0, 1.0, 0.0, 0.2]])
    X = (centers[cluster] + rng.normal(0, 0.15, (n, 4))).astype(np.float32)
    qi, ia, ib, y = [], [], [], []
    for i in range(n):
        winner = cluster[i]
        for a, bb in ((0, 1), (0, 2), (1, 2)):
            qi.append(i), ia.append(a), ib.append(bb)
            if a == winner:
                y.append(1.0)
            elif bb == winner:
                y.append(0.0)
            else:
                y.append(1.0 if a != 2 else 0.0)
    J = b.JudgmentArrays(np.array(qi), np.array(ia), np.array(ib), np.array(y), np.ones(len(qi)), 3)
    return X, J, cluster


@pytest.mark.parametrize("make", [lambda: b.KNNQuality(k=5), lambda: b.SWRanking(),
                                  lambda: b.MatrixFactorization(max_steps=300, lr=3e-3, seed=0)])
def test_contextual_baselines_learn_the_cluster_winner(make):
    X, J, cluster = _task()
    Xt, _, ct = _task(200, seed=1)
    P = make().fit(X, J).predict_quality(Xt)
    assert P.shape == (200, 3)
    acc = float((P[:, :2].argmax(axis=1) == ct).mean())
    assert acc > 0.9, acc
    assert (P[:, 2] < P[:, :2].max(axis=1)).all()


def test_global_and_random_ignore_the_query():
    X, J, cluster = _task()
    P = b.GlobalBT(max_epochs=50).fit(X, J).predict_quality(X[:10])
    assert np.allclose(P, P[0])
    assert P[0, 2] < P[0, 0] and P[0, 2] < P[0, 1]
    R = b.RandomQuality(3, seed=1).predict_quality(X[:50])
    assert R.shape == (50, 3) and 0 <= R.min() and R.max() <= 1
    assert np.array_equal(R, b.RandomQuality(3, seed=1).predict_quality(X[:50]))


def test_bt_newton_two_models_closed_form_and_ties_half():
    # 30 wins of 1 over 0, 10 of 0 over 1: MLE gap log(3)
    A = np.array([[[0.0, 10.0], [30.0, 0.0]]])
    th = b.bt_newton(A, ridge=1e-9)
    assert th[0, 1] - th[0, 0] == pytest.approx(np.log(3.0), rel=1e-5)
    # a tie table from JudgmentArrays: one tie gives half a win each
    J = b.JudgmentArrays([0], [0], [1], [0.5], [2.0], 2)
    T = J.pairwise_tables(1)
    assert T[0].tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_sw_ranking_weights_follow_routellm_formula():
    # one training query similar to the test query says model 1 wins; a dissimilar one says model 0.
    X = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    J = b.JudgmentArrays([0, 1], [0, 0], [1, 1], [0.0, 1.0], [1.0, 1.0], 2)
    P = b.SWRanking(ridge=1e-9).fit(X, J).predict_quality(np.array([[1.0, 0.0]], dtype=np.float32))
    # weights: sim 1 -> 10*10**1 = 100 (model 1 wins), sim 0 -> 10 (model 0 wins): p = 100/110
    assert P[0, 1] == pytest.approx(100 / 110, rel=1e-4)


def test_mf_drops_ties_and_needs_decisive_judgments():
    X = np.ones((2, 3), dtype=np.float32)
    J = b.JudgmentArrays([0, 1], [0, 0], [1, 1], [0.5, 0.5], [1.0, 1.0], 2)
    with pytest.raises(InvalidInputError):
        b.MatrixFactorization().fit(X, J)


def test_mf_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    p = {"P": rng.standard_normal((3, 4)), "W": rng.standard_normal((4, 5)), "w2": rng.standard_normal(4)}
    F = rng.standard_normal((6, 5))
    win, lose, w = np.array([0, 1, 2, 0, 1, 2]), np.array([1, 2, 0, 2, 0, 1]), np.ones(6)

    def loss(pp):
        Ph = pp["P"] / np.linalg.norm(pp["P"], axis=1, keepdims=True)
        z = ((Ph[win] - Ph[lose]) * (F @ pp["W"].T)) @ pp["w2"]
        return float(np.mean(np.log1p(np.exp(-z))))

    g = b.MatrixFactorization._grads(p, F, win, lose, w)
    for k in p:
        idx = (0,) * p[k].ndim
        e = {kk: v.copy() for kk, v in p.items()}
        e[k][idx] += 1e-6
        num = (loss(e) - loss(p)) / 1e-6
        assert g[k][idx] == pytest.approx(num, rel=1e-3, abs=1e-6), k


def test_judgment_arrays_validate():
    with pytest.raises(InvalidInputError):
        b.JudgmentArrays([0], [0], [3], [1.0], [1.0], 2)
    with pytest.raises(InvalidInputError):
        b.JudgmentArrays([0, 1], [0], [1], [1.0], [1.0], 2)


def test_judgment_arrays_from_encoded_training_arrays():
    from mmroute.training import EncodedJudgments

    Xq = np.eye(2, dtype=np.float32)
    enc = EncodedJudgments(X=Xq[[0, 1, 1]], pairs=np.array([["a", "b"], ["b", "c"], ["c", "a"]], dtype=object),
                           y=np.array([1.0, 0.5, 0.0]), weight=np.array([1.0, 2.0, 1.0]),
                           query_index=np.array([0, 1, 1]), Xq=Xq)
    J = b.JudgmentArrays.from_encoded(enc, ["a", "b", "c"])
    assert J.n_models == 3 and J.qi.tolist() == [0, 1, 1]
    assert J.ia.tolist() == [0, 1, 2] and J.ib.tolist() == [1, 2, 0]
    assert J.y.tolist() == [1.0, 0.5, 0.0] and J.w.tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(InvalidInputError, match="'c' are not in models"):
        b.JudgmentArrays.from_encoded(enc, ["a", "b"])


def test_global_and_knn_baselines_are_the_router_families(tmp_path):
    """The report's ``global`` and ``knn`` are the router families fitted on the same data: identical
    predictions, and knn is the pooled vote (won / judged weight among the k raw-cosine neighbours)."""
    from mmroute.preference.families import GlobalFamily, KNNFamily, load_family

    X, J, _ = _task(120)
    rng = np.random.default_rng(3)
    J = b.JudgmentArrays(J.qi, J.ia, J.ib, np.where(rng.random(len(J)) < 0.2, 0.5, J.y), rng.uniform(0.5, 2, len(J)), 3)
    Xt, _, _ = _task(40, seed=2)
    data = J.routing_data(X)
    g = b.GlobalBT(seed=0, l2=0.05, max_epochs=50).fit(X, J).predict_quality(Xt)
    assert np.array_equal(g, GlobalFamily(bt_options={"seed": 0, "l2": 0.05, "max_epochs": 50}).fit(data).expected_quality(Xt))
    fam = KNNFamily(7, kappa=0.0, standardize=False, evidence_weighted=True).fit(data)
    k = b.KNNQuality(k=7).fit(X, J).predict_quality(Xt)
    assert np.array_equal(k, fam.expected_quality(Xt))
    assert np.array_equal(k, load_family(fam.save(tmp_path / "knn")).expected_quality(Xt))
    # reference vote, by hand
    T = J.pairwise_tables(len(X))
    wins, games = T.sum(axis=2), T.sum(axis=2) + T.sum(axis=1)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    nn = np.argsort(-(unit(Xt) @ unit(X).T), axis=1)[:, :7]
    assert np.allclose(k, wins[nn].sum(axis=1) / games[nn].sum(axis=1), atol=1e-6)
    # the router's default knn (z-scored, shrunk, per-query shares) is a different estimator
    assert not np.allclose(k, KNNFamily(7).fit(data).expected_quality(Xt), atol=1e-3)
