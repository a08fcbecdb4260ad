"""Input checks at the estimator's boundary: every bad array is named with what is wrong and where."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from mmroute.errors import InvalidInputError


def check_features(X: ArrayLike, *, n: int | None = None, n_features: int | None = None, what: str = "X") -> np.ndarray:
    """(n, d) finite float32 features, C-contiguous; ``n_features`` is the fitted width, if any."""
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a numeric array of shape (n, d): {exc}") from None
    if arr.ndim != 2:
        raise InvalidInputError(f"{what} must be 2-D (n, d); got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InvalidInputError(f"{what} has 0 feature columns")
    if n is not None and arr.shape[0] != n:
        raise InvalidInputError(f"{what} has {arr.shape[0]} rows but pairs/y have {n}")
    if n_features is not None and arr.shape[1] != n_features:
        raise InvalidInputError(
            f"{what} has {arr.shape[1]} features but this model was fitted on "
            f"{n_features}; use the same feature pipeline as at training"
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidInputError(
            f"{what} contains NaN or inf (first at row {bad[0]}, column {bad[1]})"
        )
    return np.ascontiguousarray(arr)


def check_pairs(pairs: ArrayLike) -> np.ndarray:
    """(n, 2) object array of non-empty model names, no model against itself."""
    arr = np.asarray(pairs, dtype=object)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidInputError(f"pairs must have shape (n, 2) of model names; got shape {arr.shape}")
    flat = arr.ravel()
    bad = [i for i, v in enumerate(flat) if type(v) is not str or not v] if not all(
        type(v) is str for v in flat
    ) or (flat == "").any() else []
    if bad:
        i = bad[0] // 2
        raise InvalidInputError(
            f"pairs[{i}] = ({arr[i, 0]!r}, {arr[i, 1]!r}): both entries must be non-empty "
            "model-name strings"
        )
    same = np.flatnonzero(arr[:, 0] == arr[:, 1])
    if len(same):
        raise InvalidInputError(f"pairs[{same[0]}] compares model {arr[same[0], 0]!r} with itself")
    return arr


def _vector(values: ArrayLike, n: int, what: str, meaning: str, matches: str) -> np.ndarray:
    """(n,) float64 array, or InvalidInputError naming ``what`` and what it means."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be numeric{meaning}: {exc}") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInputError(f"{what} must have shape ({n},){matches}; got {arr.shape}")
    return arr


def check_labels(y: ArrayLike, n: int) -> np.ndarray:
    """(n,) labels in [0, 1]: 1 = a wins, 0 = b wins, 0.5 = tie (fractions are soft labels)."""
    arr = _vector(y, n, "y", " (1 = a wins, 0 = b wins, 0.5 = tie)", " to match pairs")
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
        i = int(np.argmax(~np.isfinite(arr) | (arr < 0) | (arr > 1)))
        raise InvalidInputError(
            f"y[{i}] = {arr[i]!r} is outside [0, 1] (1 = a wins, 0 = b wins, 0.5 = tie)"
        )
    return arr


def check_weights(sample_weight: ArrayLike | None, n: int) -> np.ndarray:
    """(n,) finite non-negative weights; all ones when none are given."""
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    arr = _vector(sample_weight, n, "sample_weight", "", "")
    if not np.isfinite(arr).all() or (arr < 0).any():
        i = int(np.argmax(~np.isfinite(arr) | (arr < 0)))
        raise InvalidInputError(f"sample_weight[{i}] = {arr[i]!r} must be finite and >= 0")
    return arr
