"""BradleyTerry: probability identities, parameter recovery, weights/ties, incremental updates,
calibration, determinism and the on-disk format. Data are simulated from known parameters so
every expectation is derived, not hard-coded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmroute.errors import CheckpointError, ConfigError, InvalidInputError
from mmroute.preference import BradleyTerry, NotFittedError, fit_temperature

FAST = dict(max_epochs=60, rank=4)


def simulate(
    n: int,
    ratings: np.ndarray,
    d: int = 6,
    feature_effect: np.ndarray | None = None,
    seed: int = 0,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Judgments from a known model: s_m = ratings_m + x0 * feature_effect_m; y ~ Bernoulli."""
    rng = np.random.default_rng(seed)
    M = len(ratings)
    names = [f"m{i}" for i in range(M)]
    X = rng.standard_normal((n, d)).astype(np.float32)
    ia = rng.integers(0, M, n)
    ib = (ia + rng.integers(1, M, n)) % M
    eff = np.zeros(M) if feature_effect is None else feature_effect
    s = ratings[None, :] + X[:, :1] * eff[None, :]
    z = scale * (s[np.arange(n), ia] - s[np.arange(n), ib])
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    pairs = np.array(names, dtype=object)[np.stack([ia, ib], 1)]
    return X, pairs, y, names


@pytest.fixture(scope="module")
def fitted() -> tuple[BradleyTerry, np.ndarray]:
    ratings = np.array([1.0, 0.3, 0.0, -0.5, -1.0])
    X, pairs, y, _ = simulate(1500, ratings, feature_effect=np.array([0.8, -0.8, 0, 0.3, 0]))
    return BradleyTerry(**FAST).fit(X, pairs, y), X


# ---------------------------------------------------------------- probability identities
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x=st.lists(st.floats(-5, 5, allow_nan=False), min_size=6, max_size=6),
    i=st.integers(0, 4),
    j=st.integers(0, 4),
)
def test_probability_identities(fitted, x, i, j) -> None:
    model, _ = fitted
    xq = np.array([x], dtype=np.float32)
    a, b = model.models_[i], model.models_[j]
    W = model.win_matrix(xq[0])
    np.testing.assert_allclose(np.diag(W), 0.5, atol=1e-12)
    np.testing.assert_allclose(W + W.T, 1.0, atol=1e-9)
    if i != j:
        pab = model.predict_proba(xq, [(a, b)])[0]
        pba = model.predict_proba(xq, [(b, a)])[0]
        assert pab + pba == pytest.approx(1.0, abs=1e-9)
        assert pab == pytest.approx(W[i, j], abs=1e-6)
    eq = model.expected_quality(xq)
    assert eq.shape == (1, 5)
    assert ((eq >= 0) & (eq <= 1)).all()
    # expected quality is the mean off-diagonal row of the win matrix
    np.testing.assert_allclose(eq[0], (W.sum(1) - 0.5) / 4, atol=1e-6)


def test_scores_shape_and_order(fitted) -> None:
    model, X = fitted
    s = model.scores(X[:7])
    assert s.shape == (7, 5)
    assert model.models_ == [f"m{i}" for i in range(5)]
    assert model.n_features_in_ == 6
    assert sum(model.n_seen_.values()) == 2 * 1500


# ---------------------------------------------------------------- recovery
def test_recovers_ratings_and_feature_dependence() -> None:
    ratings = np.array([1.5, 0.8, 0.2, -0.4, -0.9, -1.2])
    effect = np.array([1.5, -1.5, 0, 0, 0, 0])  # m0 better when x0 > 0, m1 otherwise
    X, pairs, y, names = simulate(6000, ratings, feature_effect=effect, seed=1)
    model = BradleyTerry(rank=4, l2=1e-4).fit(X, pairs, y)
    # global ratings: queries average x0 = 0, so b should match the centred true ratings
    b = model._b.numpy()
    rank_corr = np.corrcoef(np.argsort(np.argsort(b)), np.argsort(np.argsort(ratings)))[0, 1]
    assert rank_corr > 0.9
    np.testing.assert_allclose(b - b.mean(), ratings - ratings.mean(), atol=0.3)
    # feature dependence flips the preference between m0 and m1
    hi = np.zeros((1, 6), np.float32)
    hi[0, 0] = 1.5
    lo = -hi
    assert model.predict_proba(hi, [("m0", "m1")])[0] > 0.8
    assert model.predict_proba(lo, [("m0", "m1")])[0] < 0.2
    # held-out accuracy close to the Bayes rate of the generating model
    Xt, pt, yt, _ = simulate(2000, ratings, feature_effect=effect, seed=2)
    s = ratings[None, :] + Xt[:, :1] * effect[None, :]
    idx = {n: i for i, n in enumerate(names)}
    zt = np.array([s[k, idx[a]] - s[k, idx[c]] for k, (a, c) in enumerate(pt)])
    bayes = np.mean((zt > 0) == (yt > 0.5))
    assert model.accuracy(Xt, pt, yt) > bayes - 0.03


def test_rarely_seen_model_falls_back_to_rating() -> None:
    ratings = np.array([0.5, 0.0, -0.5])
    X, pairs, y, _ = simulate(800, ratings, feature_effect=np.array([1.5, -1.5, 0.0]), seed=3)
    X2 = np.vstack([X, X[:1]])
    pairs2 = np.vstack([pairs, np.array([["m0", "rare"]], dtype=object)])
    y2 = np.r_[y, 0.0]
    # l2 is per judgment, so one judgment out of 801 is outweighed only by a prior of this size;
    # the common models (400+ judgments each) keep their query dependence at the same l2
    model = BradleyTerry(**{**FAST, "l2": 1e-2}).fit(X2, pairs2, y2)
    assert "rare" in model.models_ and model.n_seen_["rare"] == 1
    i = model.models_.index("rare")
    # its per-query term is shrunk: its score varies across queries far less than that of a
    # model whose quality really depends on the query
    spread = model.scores(X).std(axis=0)
    assert spread[i] < 0.1 * spread[model.models_.index("m0")]
    assert spread[model.models_.index("m0")] > 0.5
    assert np.isfinite(model.scores(X[:3])).all()


def test_unseen_model_from_models_argument_gets_mean_rating() -> None:
    X, pairs, y, names = simulate(500, np.array([1.0, 0.0, -1.0]), seed=4)
    model = BradleyTerry(**FAST).fit(X, pairs, y, models=names + ["never"])
    b = model._b.numpy()
    assert b[-1] == pytest.approx(b.mean(), abs=1e-3)


# ---------------------------------------------------------------- weights and ties
def test_weight_two_equals_duplicate() -> None:
    X, pairs, y, _ = simulate(300, np.array([0.7, 0.0, -0.7]), seed=5)
    dup = np.r_[np.arange(300), np.arange(50)]
    a = BradleyTerry(**FAST).fit(X[dup], pairs[dup], y[dup])
    w = np.ones(300)
    w[:50] = 2.0
    b = BradleyTerry(**FAST).fit(X, pairs, y, sample_weight=w)
    c = BradleyTerry(**FAST).fit(X, pairs, y)  # unweighted: must differ, or the test is vacuous
    pa, pb, pc = (m.predict_proba(X, pairs) for m in (a, b, c))
    assert np.abs(pa - pb).max() < 0.02
    assert np.abs(pa - pc).max() > 2 * np.abs(pa - pb).max()


def test_all_ties_keep_ratings_equal() -> None:
    X, pairs, _, _ = simulate(400, np.zeros(4), seed=6)
    model = BradleyTerry(**FAST).fit(X, pairs, np.full(400, 0.5))
    np.testing.assert_allclose(model._b.numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(model.predict_proba(X, pairs), 0.5, atol=0.02)


def test_ties_drop_ignores_ties() -> None:
    X, pairs, y, _ = simulate(400, np.array([1.0, 0.0, -1.0]), seed=7)
    y_t = y.copy()
    y_t[:100] = 0.5
    dropped = BradleyTerry(ties="drop", **FAST).fit(X, pairs, y_t)
    subset = BradleyTerry(**FAST).fit(X[100:], pairs[100:], y[100:])
    np.testing.assert_allclose(dropped.predict_proba(X, pairs), subset.predict_proba(X, pairs), atol=1e-5)


# ---------------------------------------------------------------- incremental
def test_partial_fit_moves_toward_new_data_without_forgetting() -> None:
    ratings = np.array([1.0, 0.5, 0.0, -0.5, -1.0])
    X_old, p_old, y_old, _ = simulate(3000, ratings, seed=8)
    # new data: only m3 vs m4 judgments, where m4 now wins most of the time
    rng = np.random.default_rng(9)
    n_new = 300
    X_new = rng.standard_normal((n_new, 6)).astype(np.float32)
    p_new = np.array([["m3", "m4"]] * n_new, dtype=object)
    y_new = (rng.random(n_new) < 0.2).astype(float)

    base = BradleyTerry(**FAST).fit(X_old, p_old, y_old)
    before = base.predict_proba(X_new[:1], [("m3", "m4")])[0]
    upd = BradleyTerry(**FAST).fit(X_old, p_old, y_old).partial_fit(X_new, p_new, y_new)
    after = upd.predict_proba(X_new[:1], [("m3", "m4")])[0]
    assert after < before - 0.1  # moved toward the new evidence (m4 better)
    # keeps old knowledge: an update-only model cannot rank m0..m2 at all
    new_only = BradleyTerry(**FAST).fit(X_new, p_new, y_new, models=[f"m{i}" for i in range(5)])
    keep = ~((p_old == "m3") | (p_old == "m4")).any(axis=1)
    acc_upd = upd.accuracy(X_old[keep], p_old[keep], y_old[keep])
    acc_new = new_only.accuracy(X_old[keep], p_old[keep], y_old[keep])
    acc_base = base.accuracy(X_old[keep], p_old[keep], y_old[keep])
    assert acc_upd > acc_base - 0.02
    assert acc_upd > acc_new + 0.1
    assert upd.n_seen_["m3"] == base.n_seen_["m3"] + n_new


def test_partial_fit_single_judgments_match_direction() -> None:
    X, pairs, y, _ = simulate(1000, np.array([0.5, 0.0, -0.5]), seed=10)
    model = BradleyTerry(**FAST).fit(X, pairs, y)
    b0 = model._b.numpy().copy()
    for _ in range(20):
        model.update(X[:1], [("m2", "m0")], [1.0])  # the worst model keeps winning
    b1 = model._b.numpy()
    assert b1[2] - b1[0] > b0[2] - b0[0]
    assert np.isfinite(model.scores(X)).all()


def test_partial_fit_new_model_leaves_others_nearly_unchanged() -> None:
    ratings = np.array([1.0, 0.3, -0.3, -1.0])
    X, pairs, y, names = simulate(2000, ratings, seed=11)
    model = BradleyTerry(**FAST).fit(X, pairs, y)
    b_before = model._b.numpy().copy()
    rng = np.random.default_rng(12)
    Xn = rng.standard_normal((40, 6)).astype(np.float32)
    pn = np.array([["new", names[k % 4]] for k in range(40)], dtype=object)
    yn = np.ones(40)  # the new model wins everything
    model.partial_fit(Xn, pn, yn)
    assert model.models_[-1] == "new" and model.n_seen_["new"] == 40
    b_after = model._b.numpy()
    assert np.abs(b_after[:4] - b_before).max() < 0.15
    assert b_after[4] > b_after[:4].max()  # and it learnt the newcomer is strong


def test_add_models_then_predict() -> None:
    X, pairs, y, _ = simulate(300, np.array([0.5, -0.5]), seed=13)
    model = BradleyTerry(**FAST).fit(X, pairs, y)
    model.add_models(["z"]).add_models(["z"])
    assert model.models_.count("z") == 1
    eq = model.expected_quality(X[:2])
    assert eq.shape == (2, 3)


# ---------------------------------------------------------------- calibration
def test_calibration_softens_overconfident_scores() -> None:
    ratings = np.array([1.0, 0.4, -0.2, -1.2])
    # labels generated at a quarter of the score scale: a model fit on them then multiplied up
    # is over-confident; calibration must find T > 1 and lower held-out NLL
    X, pairs, y, _ = simulate(3000, ratings, seed=14, scale=1.0)
    model = BradleyTerry(**FAST).fit(X, pairs, y)
    model._b *= 4.0
    model._V *= 4.0
    Xh, ph, yh, _ = simulate(2000, ratings, seed=15)
    before = model.log_loss(Xh, ph, yh)
    T = model.calibrate(Xh, ph, yh)
    after = model.log_loss(Xh, ph, yh)
    assert T > 2.0
    assert after < before - 0.01
    assert model.temperature_ == T


def test_fit_temperature_recovers_known_scale() -> None:
    rng = np.random.default_rng(16)
    z = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z / 2.5))).astype(float)
    assert fit_temperature(z, y, np.ones_like(z)) == pytest.approx(2.5, rel=0.1)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda X, p, y: (X[:, :, None], p, y), "2-D"),
        (lambda X, p, y: (np.where(np.arange(6) == 2, np.nan, X), p, y), "NaN"),
        (lambda X, p, y: (X, p, np.r_[y[:-1], 2.0]), "outside [0, 1]"),
        (lambda X, p, y: (X, np.vstack([p[:-1], [["m0", "m0"]]]), y), "itself"),
        (lambda X, p, y: (X[:-1], p, y), "rows"),
        (lambda X, p, y: (X, p[:, :1], y), "shape (n, 2)"),
    ],
)
def test_invalid_inputs_are_named(mutate, message) -> None:
    X, pairs, y, _ = simulate(20, np.array([0.0, 1.0]), seed=17)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        BradleyTerry(**FAST).fit(*mutate(X, pairs, y))


def test_prediction_errors(fitted) -> None:
    model, X = fitted
    with pytest.raises(InvalidInputError, match="fitted on 6"):
        model.scores(np.zeros((2, 5), np.float32))
    with pytest.raises(InvalidInputError, match="unknown model 'nope'"):
        model.predict_proba(X[:1], [("m0", "nope")])
    with pytest.raises(NotFittedError):
        BradleyTerry().scores(X)
    with pytest.raises(ConfigError, match="rank"):
        BradleyTerry(rank=0)
    with pytest.raises(ConfigError, match="no parameter"):
        BradleyTerry().set_params(bogus=1)


def test_get_set_params_roundtrip() -> None:
    m = BradleyTerry(rank=3, l2=0.1)
    params = m.get_params()
    assert params["rank"] == 3 and params["l2"] == 0.1
    clone = BradleyTerry(**params)
    assert clone.get_params() == params
    m.set_params(rank=5)
    assert m.rank == 5
    with pytest.raises(ConfigError):
        m.set_params(head="tree")
    assert m.head == "linear"  # a rejected set_params changes nothing


# ---------------------------------------------------------------- determinism and persistence
@pytest.mark.parametrize("kwargs", [dict(), dict(head="mlp", hidden=8), dict(batch_size=64)])
def test_same_seed_same_parameters(kwargs) -> None:
    X, pairs, y, _ = simulate(400, np.array([0.5, 0.0, -0.5]), seed=18)
    a = BradleyTerry(rank=4, max_epochs=30, seed=3, **kwargs).fit(X, pairs, y)
    b = BradleyTerry(rank=4, max_epochs=30, seed=3, **kwargs).fit(X, pairs, y)
    c = BradleyTerry(rank=4, max_epochs=30, seed=4, **kwargs).fit(X, pairs, y)
    for k, v in a._params().named().items():
        assert np.array_equal(v.numpy(), b._params().named()[k].numpy()), k
    head = "head.P" if "head.P" in a._params().named() else "head.W1"
    assert not np.array_equal(a._params().named()[head].numpy(), c._params().named()[head].numpy())


def test_segmented_and_dense_paths_agree() -> None:
    # many rows per pair triggers the pair-grouped fast path; a huge threshold forces dense
    import mmroute.preference.solvers as solvers

    X, pairs, y, _ = simulate(2000, np.array([0.5, 0.0, -0.5]), feature_effect=np.array([1, -1, 0]), seed=19)
    fast = BradleyTerry(rank=4, max_epochs=40).fit(X, pairs, y)
    old = solvers.MIN_SEGMENT_ROWS
    solvers.MIN_SEGMENT_ROWS = 10**9
    try:
        dense = BradleyTerry(rank=4, max_epochs=40).fit(X, pairs, y)
    finally:
        solvers.MIN_SEGMENT_ROWS = old
    np.testing.assert_allclose(fast.predict_proba(X, pairs), dense.predict_proba(X, pairs), atol=2e-3)
    np.testing.assert_allclose(fast._precision["head.P"].numpy(), dense._precision["head.P"].numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_save_load_roundtrip(tmp_path, head) -> None:
    X, pairs, y, _ = simulate(300, np.array([0.5, 0.0, -0.5]), seed=20)
    model = BradleyTerry(rank=3, head=head, hidden=8, max_epochs=20).fit(X, pairs, y)
    model.calibrate(X, pairs, y)
    model.save(tmp_path / "bt")
    assert sorted(p.name for p in (tmp_path / "bt").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "bt" / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["models"] == model.models_
    from safetensors import safe_open  # a real safetensors file, not a pickle

    with safe_open(str(tmp_path / "bt" / "model.safetensors"), framework="pt") as fh:
        assert "param.b" in fh.keys()
    loaded = BradleyTerry.load(tmp_path / "bt")
    np.testing.assert_array_equal(loaded.predict_proba(X, pairs), model.predict_proba(X, pairs))
    assert loaded.temperature_ == model.temperature_ and loaded.n_seen_ == model.n_seen_
    assert loaded.get_params() == model.get_params()
    # the loaded model keeps learning exactly like the original
    model.partial_fit(X[:2], pairs[:2], y[:2])
    loaded.partial_fit(X[:2], pairs[:2], y[:2])
    np.testing.assert_allclose(loaded.scores(X), model.scores(X), atol=1e-6)


def test_load_rejects_bad_checkpoints(tmp_path) -> None:
    X, pairs, y, _ = simulate(200, np.array([0.5, -0.5]), seed=21)
    model = BradleyTerry(rank=2, max_epochs=10).fit(X, pairs, y)
    d = model.save(tmp_path / "bt")
    tensors = (d / "model.safetensors").read_bytes()
    meta = (d / "model.json").read_text()

    (d / "model.safetensors").write_bytes(tensors[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        BradleyTerry.load(d)
    tampered = bytearray(tensors)
    tampered[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="sha256"):
        BradleyTerry.load(d)
    (d / "model.safetensors").write_bytes(tensors)
    (d / "model.json").write_text(meta.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(CheckpointError, match="newer"):
        BradleyTerry.load(d)
    (d / "model.json").write_text(meta[: len(meta) // 2])
    with pytest.raises(CheckpointError, match="JSON"):
        BradleyTerry.load(d)
    (d / "model.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        BradleyTerry.load(d)
    (d / "model.json").write_text(meta)
    assert BradleyTerry.load(d).models_ == model.models_  # restored files load again


# ---------------------------------------------------------------- one owner for expected quality
def test_expected_quality_from_win_is_the_mean_win_rate_against_the_others() -> None:
    from mmroute.preference import expected_quality_from_win, win_probabilities

    rng = np.random.default_rng(30)
    s = rng.standard_normal((7, 4))
    P = win_probabilities(s)
    loop = np.array([[np.mean([P[n, i, j] for j in range(4) if j != i]) for i in range(4)] for n in range(7)])
    np.testing.assert_allclose(expected_quality_from_win(P), loop, atol=1e-12)
    np.testing.assert_allclose(expected_quality_from_win(P[0]), loop[0], atol=1e-12)  # one (M, M) matrix
    assert expected_quality_from_win(np.full((3, 1, 1), 0.5)).tolist() == [[0.5]] * 3  # nobody to beat


def test_estimator_expected_quality_is_its_win_matrices_averaged(fitted) -> None:
    from mmroute.preference import expected_quality_from_win

    model, X = fitted
    per_query = np.stack([expected_quality_from_win(model.win_matrix(x)) for x in X[:5]])
    np.testing.assert_allclose(model.expected_quality(X[:5]), per_query, atol=1e-12)


# ---------------------------------------------------------------- checkpoints from before the split
def test_checkpoint_written_before_the_split_loads_and_predicts_the_same() -> None:
    # tests/data/bradley_terry_v1 was saved, with the outputs it predicted, by the single-module
    # bradley_terry.py (tests/data/bradley_terry_v1/make_fixture.py run at commit c99b304)
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "bradley_terry_v1"
    exp = json.loads((folder / "expected.json").read_text())
    model = BradleyTerry.load(folder)
    Xq = np.array(exp["X"], dtype=np.float32)
    np.testing.assert_allclose(model.expected_quality(Xq), exp["expected_quality"], atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(Xq, exp["pairs"]), exp["predict_proba"], atol=1e-6)
    pf = exp["partial_fit"]  # the anchor (precision tensors) came through too: same update, new model m3 added
    model.partial_fit(np.array(pf["X"], dtype=np.float32), [tuple(p) for p in pf["pairs"]], pf["y"])
    np.testing.assert_allclose(model.expected_quality(Xq), pf["expected_quality"], atol=1e-5)


def test_hyper_parameters_have_one_home() -> None:
    # every BradleyTerryConfig field is an __init__ argument with the config's default, and back
    import inspect

    from mmroute.preference import BradleyTerryConfig

    sig = inspect.signature(BradleyTerry).parameters
    fields = BradleyTerryConfig.model_fields
    assert list(sig) == list(fields)
    assert {k: p.default for k, p in sig.items()} == {k: f.default for k, f in fields.items()}
