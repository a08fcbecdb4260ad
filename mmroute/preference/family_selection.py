"""Choosing the router family (and its capacity) by the routing metric on held-out training queries.

Log-loss on pairwise judgments is not what a router is judged by: the reported figure is the
area under the quality-vs-cost curve. So every candidate family is fitted on part of the
training queries and its predictions on the rest are swept exactly as the evaluation sweeps
them (:mod:`mmroute.curves`); the candidate with the largest mean area over the inner
folds is refitted on all training queries. The feature-free ``global`` and ``mean`` families are
always candidates, so when held-out queries say the features do not help, the router is the
leaderboard. ``mmroute train`` and ``mmroute eval --cv`` call the same :func:`select_family`.
"""

from __future__ import annotations

import hashlib
from functools import partial
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .families import BlendFamily, BTFamily, Family, GlobalFamily, KNNFamily, MeanFamily, RidgeFamily, RoutingData

log = logging.getLogger(__name__)

MIN_SCORED_QUERIES = 40   # below this the inner folds cannot rank candidates: keep the first one
RIDGE_ALPHAS = (0.03, 0.3, 3.0)
KNN_PARAMS = ((20, 10.0), (50, 25.0))


@dataclass
class FamilySelection:
    """The chosen, fitted family and every candidate's held-out score (mean area over inner folds)."""

    family: Family
    scores: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    n_scored: int = 0

    @property
    def params(self) -> dict[str, Any]:
        return self.family.describe()

    def summary(self) -> str:
        best = max((s for _, s in self.scores), default=float("nan"))
        return f"selected {self.params} (held-out routing area {best:.4f} on {self.n_scored} queries)"


def default_candidates(*, blocks: Sequence[tuple[int, int]] = (), pointwise: bool = True, seed: int = 0,
                       bt_params: dict[str, Any] | None = None) -> list[Callable[[], Family]]:
    """The candidate families tried by default: ``global`` first (the fallback), then the
    Bradley-Terry model with its own capacity selection, and, with pointwise scores, the
    per-model mean, ridge heads (each with every encoder block, and with one block left out at
    a time) and kNN-smoothed scores."""
    bt = {"seed": seed, **(bt_params or {})}
    out: list[Callable[[], Family]] = [lambda: GlobalFamily(seed=seed), lambda: BTFamily(blocks=blocks, **bt)]
    if pointwise:
        out.append(MeanFamily)
        drops: list[list[tuple[int, int]]] = [[]]
        if len(blocks) > 1:
            drops += [[(int(b[0]), int(b[1]))] for b in blocks]
        for ign in drops:
            for a in RIDGE_ALPHAS:
                out.append(partial(RidgeFamily, a, ign))
        for k, kappa in KNN_PARAMS:
            out.append(partial(KNNFamily, k, kappa))
    return out


def inner_folds(keys: Sequence[Any], k: int, seed: int = 0) -> np.ndarray:
    """Fold of each query by a stable hash of its key (no RNG state: the same split every run)."""
    out = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        out[i] = int.from_bytes(hashlib.sha256(f"family:{seed}:{key}".encode()).digest()[:8], "big") % k
    return out


def routing_area(P: np.ndarray, Q: np.ndarray, C: np.ndarray, Chat: np.ndarray) -> float:
    """Area under the monotone quality-vs-cost curve of predictions ``P`` (the evaluation's ``auc``)."""
    from .. import curves as mx

    ref = mx.reference(Q, C)
    return float(mx.evaluate_predictions(P, Q, C, ref, Chat=Chat)[1]["auc"])


def select_family(data: RoutingData, *, cost: np.ndarray, cost_belief: np.ndarray | None = None,
                  candidates: Sequence[Callable[[], Family]] | None = None, keys: Sequence[Any] | None = None,
                  k: int = 4, seed: int = 0, blocks: Sequence[tuple[int, int]] = (),
                  bt_params: dict[str, Any] | None = None, blend: int = 3, prefer: int | None = None,
                  prefer_se: float = 1.0) -> FamilySelection:
    """Fit every candidate on ``k - 1`` inner folds of the training queries, sweep its predictions
    on the held-out fold against the pointwise scores, and return the best (refitted on all).

    ``cost`` (n, M) is each training query's true cost, ``cost_belief`` what the policy would
    believe when routing it (default: the same). ``keys`` name the queries for the stable inner
    split (default: row numbers). Queries without a score for every model are not scored.
    ``blend`` > 1 also scores the mean of the ``blend`` best pointwise heads (stacking).
    ``prefer`` (a candidate index, off by default) keeps that candidate unless the best beats it
    by more than ``prefer_se`` standard errors of the paired inner-fold differences.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape != (data.n, data.n_models):
        raise InvalidInputError(f"select_family: cost must have shape {(data.n, data.n_models)}, got {cost.shape}")
    belief = cost if cost_belief is None else np.asarray(cost_belief, dtype=np.float64)
    if belief.shape != cost.shape:
        raise InvalidInputError(f"select_family: cost_belief must have shape {cost.shape}, got {belief.shape}")
    if k < 2:
        raise InvalidInputError(f"select_family: need k >= 2 inner folds, got {k}")
    cands = list(candidates) if candidates is not None else default_candidates(
        blocks=blocks, pointwise=True, seed=seed, bt_params=bt_params)
    if not cands:
        raise InvalidInputError("select_family: no candidate families")
    truth = data.pointwise()
    complete = ~np.isnan(truth).any(axis=1)
    fitted = [c().fit(data) for c in cands]  # the full fits choose each family's own inner parameters
    if complete.sum() < MIN_SCORED_QUERIES:
        return FamilySelection(fitted[0], [], int(complete.sum()))
    folds = inner_folds(list(keys) if keys is not None else list(range(data.n)), k, seed)
    per_fold = np.full((len(fitted), k), np.nan)
    preds: dict[tuple[int, int], np.ndarray] = {}
    slices: dict[int, np.ndarray] = {}
    for f in range(k):
        test = np.nonzero(folds == f)[0]
        train = np.nonzero(folds != f)[0]
        scored = test[complete[test]]
        if len(scored) < 5 or len(train) < 5:
            continue
        slices[f] = scored
        sub = data.subset(train)
        for i, fam in enumerate(fitted):
            try:
                P = fam.clone().fit(sub).expected_quality(data.X[scored])
            except InvalidInputError:  # e.g. no judgment left in this inner fold for a pairwise family
                continue
            preds[i, f] = P
            per_fold[i, f] = routing_area(P, truth[scored], cost[scored], belief[scored])
    ok = ~np.isnan(per_fold).any(axis=0)
    if not ok.any():
        return FamilySelection(fitted[0], [], int(complete.sum()))
    means = per_fold[:, ok].mean(axis=1)
    if blend > 1:  # stacking: the mean of the best pointwise heads, scored on the same inner folds
        point = [i for i in np.argsort(-means) if getattr(fitted[i], "pointwise", False)
                 and fitted[i].kind not in ("mean",)][:blend]
        if len(point) > 1:
            fb = [routing_area(np.mean([preds[i, f] for i in point], axis=0), truth[s], cost[s], belief[s])
                  for f, s in slices.items() if ok[f]]
            fitted.append(BlendFamily([fitted[i] for i in point]))
            means = np.append(means, float(np.mean(fb)))
    best = int(np.argmax(means))  # ties go to the earlier (simpler) candidate
    if prefer is not None and best != prefer and prefer < per_fold.shape[0]:
        # keep the preferred family unless the winner beats it by more than `prefer_se` standard
        # errors of the paired inner-fold differences
        d = per_fold[best, ok] - per_fold[prefer, ok] if best < per_fold.shape[0] else None
        if d is not None and len(d) > 1:
            se = float(np.std(d, ddof=1) / np.sqrt(len(d)))
            if d.mean() <= prefer_se * se:
                best = prefer
    scores = [(fam.describe(), float(s)) for fam, s in zip(fitted, means)]
    log.info("family selection: %s (area %.4f; global %.4f)", fitted[best].describe(), means[best], means[0])
    return FamilySelection(fitted[best], scores, int(complete.sum()))


def select_for_judgments(Xq: np.ndarray, query_index: np.ndarray, pairs: np.ndarray, y: np.ndarray,
                         weight: np.ndarray, models: Sequence[str], cost: np.ndarray, *, seed: int = 0,
                         blocks: Sequence[tuple[int, int]] = (), bt_params: dict[str, Any] | None = None,
                         k: int = 4) -> FamilySelection:
    """:func:`select_family` for ``mmroute train``: judgments by model name over unique queries
    ``Xq``; pointwise scores are each model's win share per query, ``cost`` (queries x models)
    the pool's expected cost of each query."""
    col = {m: i for i, m in enumerate(models)}
    pairs = np.asarray(pairs, dtype=object)
    unknown = sorted({str(m) for m in pairs.ravel() if m not in col})
    if unknown:
        raise InvalidInputError(f"judgments name model(s) outside the candidate list: {', '.join(unknown)}")
    ia = np.array([col[a] for a in pairs[:, 0]], dtype=np.int64)
    ib = np.array([col[b] for b in pairs[:, 1]], dtype=np.int64)
    data = RoutingData(Xq, query_index, ia, ib, y, weight, list(models))
    return select_family(data, cost=cost, keys=list(range(len(Xq))), k=k, seed=seed, blocks=blocks,
                         bt_params=bt_params)
