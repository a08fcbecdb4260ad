"""What a preference model's outputs mean: win probabilities, expected quality, accuracy.

One owner for "expected quality = mean probability of beating each other model", so the
estimator, the router and the evaluation baselines cannot drift apart.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow for any finite ``z`` (``exp`` only of ``-|z|``)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def win_probabilities(scores: np.ndarray) -> np.ndarray:
    """``P(row beats column) = sigmoid(s_row - s_col)`` for (..., M) scores -> (..., M, M)."""
    diff = scores[..., :, None] - scores[..., None, :]
    return sigmoid(diff)


def expected_quality_from_win(P: np.ndarray) -> np.ndarray:
    """(..., M, M) win matrices -> (..., M): each model's mean win probability against the *other*
    models (the diagonal's 0.5 is removed); 0.5 for a single model, which has no one to beat."""
    M = P.shape[-1]
    if M == 1:
        return np.full(P.shape[:-1], 0.5)
    return (P.sum(axis=-1) - 0.5) / (M - 1)


def expected_quality_from_scores(scores: np.ndarray) -> np.ndarray:
    """(n, M) scores on the log-odds scale -> (n, M) expected quality (see
    :func:`expected_quality_from_win`)."""
    return expected_quality_from_win(win_probabilities(scores))


def pairwise_accuracy(margins: np.ndarray, y: np.ndarray, w: np.ndarray) -> float | None:
    """Weighted share of decided judgments (``y != 0.5``, weight > 0) whose winner has the positive
    margin; ``None`` when every judgment is a tie (no prediction can be right on one)."""
    keep = (y != 0.5) & (w > 0)
    if not keep.any():
        return None
    correct = (margins[keep] > 0) == (y[keep] > 0.5)
    return float(np.sum(w[keep] * correct) / np.sum(w[keep]))
