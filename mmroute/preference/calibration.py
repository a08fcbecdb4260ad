"""Temperature scaling for pairwise win probabilities.

Kept separate from the estimator because it only needs score differences: it is plain 1-D
maximum likelihood, and keeping it dependency-free (no scipy) means the router can
recalibrate anywhere the estimator runs.
"""

from __future__ import annotations

import math

import numpy as np

#: Temperatures outside this range mean the scores are useless (T -> inf) or the data are
#: separable (T -> 0); clamping keeps the probabilities finite either way.
T_BOUNDS: tuple[float, float] = (0.02, 50.0)
#: Weight of the pseudo-ties :func:`fit_temperature` adds (one pseudo-win and one pseudo-loss).
PRIOR_TIES = 2.0


def pairwise_nll(margins: np.ndarray, y: np.ndarray, w: np.ndarray, temperature: float) -> float:
    """Weighted mean negative log-likelihood of ``y`` under ``sigmoid(margins / temperature)``.

    ``y`` may be fractional: a tie (0.5) costs ``-0.5 log p - 0.5 log(1 - p)`` ("half wins").
    Computed with log-sigmoid identities so that large margins do not overflow.
    """
    z = np.asarray(margins, dtype=np.float64) / float(temperature)
    # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z)
    loss = y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    return float(np.sum(w * loss) / np.sum(w))


def fit_temperature(
    margins: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    bounds: tuple[float, float] = T_BOUNDS,
    tol: float = 1e-6,
    prior_ties: float = PRIOR_TIES,
) -> float:
    """Temperature minimising held-out NLL plus a weak prior, by golden-section search on ``log T``.

    The prior is ``prior_ties`` pseudo-judgments, ties, spread over the held-out margins (each
    margin gets its weight's share). Why: when every held-out judgment is predicted right (a few
    dozen judgments from a consistent judge often are) the plain NLL falls all the way to
    ``T -> 0`` - the calibration *sharpened* scores that were already saturated, and predictions
    came out as exactly 1.000 / 0.000, which no later feedback could move. With the pseudo-ties,
    ``n`` right held-out judgments give ``P ~ 1 - 1/(n + 2)`` (Laplace's rule of succession) and
    large held-out sets are barely affected. The objective stays convex in ``1/T``, hence
    unimodal in ``log T``, so a bracketing search finds the optimum inside ``bounds`` without
    gradients or scipy.
    """
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    margins = np.asarray(margins, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)

    total = float(np.sum(w))
    share = w / total if total > 0 else w
    half = np.full_like(y, 0.5)

    def f(log_t: float) -> float:
        t = math.exp(log_t)
        return (total * pairwise_nll(margins, y, w, t) + prior_ties * pairwise_nll(margins, half, share, t)) / (
            total + prior_ties)

    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    best = (a + b) / 2.0
    # The optimum may sit on a bound (e.g. separable data); compare against the ends explicitly.
    candidates = [(f(best), best), (f(lo), lo), (f(hi), hi)]
    return float(math.exp(min(candidates)[1]))
