"""One estimator path: what ``mmroute eval --cv`` scores on a fold is what ``mmroute train`` ships.

The evaluation harness's router (``BTQuality``), the ``bt`` router family and ``train_router`` all
fit through :func:`mmroute.preference.fitting.fit_bradley_terry`; on the same judgments they give
the same predictions, temperature calibration included.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.data import Judgment, QueryRecord
from mmroute.eval.baselines import BTQuality, JudgmentArrays
from mmroute.policy import CostAwarePolicy
from mmroute.pool import ModelPool
from mmroute.preference.families import BTFamily, RoutingData
from mmroute.training import encode_judgments, train_router

MODELS = ["acme/big", "acme/mid", "acme/small"]


@pytest.fixture(scope="module")
def judgments() -> list[Judgment]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(40):  # enough distinct queries (>= 20) for a calibration slice to be held out
        q = QueryRecord(text=("What is %d * %d?" % (i, i + 3)) if i % 2 else f"say hello to friend {i}")
        for a, b in [(0, 1), (1, 2), (0, 2)]:
            p = 0.85 if i % 2 else 0.35  # big wins math, loses chit-chat more often than not
            out.append(Judgment(query=q, model_a=MODELS[a], model_b=MODELS[b],
                                winner="model_a" if rng.random() < p else "model_b"))
    return out


def test_an_eval_fold_router_is_the_trained_router(judgments):
    pool = ModelPool.from_names(MODELS)
    params = {"max_epochs": 40}
    router = train_router(judgments, encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(0.0), model_params=params)
    assert router.metadata["calibration_judgments"] > 0, "the fixture should hold out a calibration slice"
    arrays = encode_judgments(judgments, router.pipeline)
    col = {m: i for i, m in enumerate(sorted(MODELS))}
    ja = JudgmentArrays(qi=arrays.query_index, ia=[col[a] for a, _ in arrays.pairs], ib=[col[b] for _, b in arrays.pairs],
                        y=arrays.y, w=arrays.weight, n_models=len(MODELS))
    fold = BTQuality(blocks=[(a, b) for _, a, b in router.pipeline.spec.blocks()], seed=0, **params).fit(arrays.Xq, ja)
    assert fold.model.temperature_ == pytest.approx(router.model.temperature_)  # calibrated, as train does
    assert fold.model.temperature_ != 1.0
    served = router.quality_from_features(arrays.Xq)[:, [router.pool.names.index(m) for m in sorted(MODELS)]]
    np.testing.assert_allclose(fold.predict_quality(arrays.Xq), served, atol=1e-6)


def test_the_bt_family_fits_the_same_model(judgments):
    pool = ModelPool.from_names(MODELS)
    params = {"max_epochs": 40, "rank": 2, "l2": 1e-2}
    router = train_router(judgments, encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(0.0), model_params=params)
    arrays = encode_judgments(judgments, router.pipeline)
    col = {m: i for i, m in enumerate(sorted(MODELS))}
    data = RoutingData(X=arrays.Xq, qi=arrays.query_index, ia=np.array([col[a] for a, _ in arrays.pairs]),
                       ib=np.array([col[b] for _, b in arrays.pairs]), y=arrays.y, w=arrays.weight,
                       models=sorted(MODELS))
    fam = BTFamily(seed=0, **params).fit(data)
    served = router.quality_from_features(arrays.Xq)[:, [router.pool.names.index(m) for m in sorted(MODELS)]]
    np.testing.assert_allclose(fam.expected_quality(arrays.Xq), served, atol=1e-6)
