"""Capacity selection: held-out queries decide rank, ridge and which feature blocks to use."""

from __future__ import annotations

import numpy as np

from mmroute.preference import BradleyTerry, select_params


def simulate(n_queries: int, d_signal: int, d_noise: int, seed: int = 0, signal: bool = True):
    """Two models; model A wins when signal feature 0 > 0 (if ``signal``), plus pure-noise columns."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n_queries, d_signal))
    N = rng.standard_normal((n_queries, d_noise))
    Xq = np.hstack([S, N]).astype(np.float32)
    rows, pairs, y = [], [], []
    for q in range(n_queries):
        logit = 3.0 * np.sign(S[q, 0]) if signal else 0.3
        for _ in range(3):
            rows.append(q)
            pairs.append(["a", "b"])
            y.append(float(rng.random() < 1 / (1 + np.exp(-logit))))
    return Xq, np.array(rows), np.array(pairs, dtype=object), np.array(y)


def test_noise_block_is_switched_off_and_signal_kept():
    Xq, rows, pairs, y = simulate(300, d_signal=4, d_noise=60)
    sel = select_params(Xq[rows], pairs, y, groups=rows.tolist(), blocks=[(0, 4), (4, 64)])
    assert sel.params["ignore_columns"] == ((4, 64),), sel.params
    m = BradleyTerry(**sel.params).fit(Xq[rows], pairs, y)
    Xt, rt, pt, yt = simulate(200, 4, 60, seed=1)
    assert m.accuracy(Xt[rt], pt, yt) > 0.85


def test_without_signal_the_strongest_ridge_wins():
    Xq, rows, pairs, y = simulate(300, d_signal=4, d_noise=60, signal=False)
    sel = select_params(Xq[rows], pairs, y, groups=rows.tolist())
    assert sel.params["l2"] >= 0.1, sel.params  # query terms shrunk: a plain rating model
    assert len(sel.scores) >= 9 and sel.n_valid > 0


def test_too_few_queries_returns_the_first_grid_point_unscored():
    Xq, rows, pairs, y = simulate(10, 2, 2)
    sel = select_params(Xq[rows], pairs, y, groups=rows.tolist(), grid=[{"rank": 2, "l2": 0.5}])
    assert sel.params == {"rank": 2, "l2": 0.5} and sel.scores == []
