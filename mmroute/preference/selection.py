"""Choosing how much per-query capacity the preference model gets, from the data itself.

How far query features should move a model's rating depends on how informative the features
are: with pretrained text embeddings a rank-4 projection helps, with random-weight CLIP
features the same projection only fits noise. So the rank and the ridge strength are picked by
held-out log-loss on queries the fit did not see (grouped by query, never by judgment). The
grid runs up to a ridge strong enough to reduce the model to its global ratings, so the
selected model is never worse on held-out queries than plain Bradley-Terry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmroute.errors import InvalidInputError
from mmroute.preference.bradley_terry import BradleyTerry

#: (rank, l2) pairs tried by default; the last rows shrink the query terms to almost nothing.
DEFAULT_GRID: tuple[dict[str, Any], ...] = tuple(
    {"rank": r, "l2": l2} for r in (4, 16) for l2 in (0.003, 0.01, 0.03, 0.1)) + ({"rank": 4, "l2": 3.0},)

MIN_GROUPS = 30  # below this a held-out slice is too small to choose anything


@dataclass
class Selection:
    params: dict[str, Any]
    scores: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    n_train: int = 0
    n_valid: int = 0

    def summary(self) -> str:
        best = min(s for _, s in self.scores) if self.scores else float("nan")
        return f"selected {self.params} (held-out log-loss {best:.4f} on {self.n_valid} judgments)"


def holdout_mask(keys: Sequence[Any], fraction: float, seed: int = 0) -> np.ndarray:
    """True for held-out items: a stable hash split, so a key stays on one side across runs
    and processes (no RNG state involved)."""
    if not 0 <= fraction < 1:
        raise InvalidInputError(f"held-out fraction must be in [0, 1), got {fraction}")
    out = np.empty(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        h = int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:8], "big")
        out[i] = h / 2**64 < fraction
    return out


def select_params(X: Any, pairs: Any, y: Any, sample_weight: Any = None, *, groups: Sequence[Any],
                  grid: Sequence[dict[str, Any]] = DEFAULT_GRID, base: dict[str, Any] | None = None,
                  valid_fraction: float = 0.25, seed: int = 0, models: Sequence[str] | None = None,
                  blocks: Sequence[tuple[int, int]] = ()) -> Selection:
    """The grid point with the lowest log-loss on a held-out slice of queries.

    ``groups`` names each judgment's query, so all judgments of a query fall on one side.
    ``blocks`` are column ranges (encoder blocks) that may be left out of the query terms: after
    the grid, each is dropped in turn from the best point and stays dropped if held-out loss
    improves (a random-weight encoder, or one that does not fit the task, is switched off).
    With fewer than ``MIN_GROUPS`` distinct queries, returns the first grid point unscored.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float64)
    if len(groups) != len(y):
        raise InvalidInputError(f"groups has {len(groups)} entries for {len(y)} judgments")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=object)
    base = dict(base or {})
    if len(set(groups)) < MIN_GROUPS:
        return Selection({**base, **grid[0]})
    valid = holdout_mask(groups, valid_fraction, seed)
    if valid.all() or not valid.any():
        return Selection({**base, **grid[0]})
    names = list(models) if models is not None else sorted({m for p in pairs for m in p})
    # Scored on the decisive held-out judgments: a routing decision is about who wins, and when
    # most judgments are ties (both right / both wrong) log-loss over all of them rewards a model
    # that predicts 50/50 everywhere. Ties still train the model.
    decisive = valid & (y != 0.5)
    if decisive.sum() < 10:
        decisive = valid
    scores = []
    for point in grid:
        params = {**base, **point}
        m = BradleyTerry(**params).fit(X[~valid], pairs[~valid], y[~valid], sample_weight=w[~valid], models=names)
        scores.append((params, float(m.log_loss(X[decisive], pairs[decisive], y[decisive], sample_weight=w[decisive]))))
    best, best_score = min(scores, key=lambda s: s[1])
    dropped: list[tuple[int, int]] = []
    for block in blocks if len(blocks) > 1 else ():
        params = {**best, "ignore_columns": tuple(dropped + [tuple(block)])}
        m = BradleyTerry(**params).fit(X[~valid], pairs[~valid], y[~valid], sample_weight=w[~valid], models=names)
        score = float(m.log_loss(X[decisive], pairs[decisive], y[decisive], sample_weight=w[decisive]))
        scores.append((params, score))
        if score < best_score - 1e-4 * abs(best_score):  # a real gain, not rounding noise
            best, best_score = params, score
            dropped.append((int(block[0]), int(block[1])))
    return Selection(best, scores, int((~valid).sum()), int(decisive.sum()))
