"""Covariate-shift weights: make training queries count as much as they resemble the target traffic.

Public preference data rarely looks like a user's own queries (open-ended instructions vs maths
word problems). With the user's queries at hand — unlabeled, no judgment needed — a domain
classifier tells training queries that resemble them from those that do not, and its odds are the
classic importance weight ``p_target(x) / p_train(x)`` (Shimodaira 2000; Bickel et al. 2007).
Weighting every training judgment by its query's weight moves the fit toward the target's
kinds of query. The classifier is a ridge logistic regression on the leading principal
components of the standardised features, fitted by Newton's method: small, deterministic, numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from ..errors import ConfigError, DataFormatError, InvalidInputError
from ..preference.metrics import sigmoid
from ..query import Query


@dataclass(frozen=True)
class ShiftWeights:
    """Per-training-query weights (mean 1) and how far apart the two query sets are."""

    weights: np.ndarray      # (n_train,) importance weight of each training query, mean 1
    auc: float               # domain classifier's in-sample AUC: 0.5 = indistinguishable, 1 = disjoint
    effective_share: float   # (sum w)^2 / (n sum w^2): the share of training queries the weights keep


def _auc(score_pos: np.ndarray, score_neg: np.ndarray) -> float:
    s = np.concatenate([score_pos, score_neg])
    ranks = np.empty(len(s))
    order = np.argsort(s, kind="stable")
    ranks[order] = np.arange(1, len(s) + 1)
    # mid-ranks for ties
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    n1, n0 = len(score_pos), len(score_neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def shift_weights(X_train: np.ndarray, X_target: np.ndarray, *, components: int = 32, l2: float = 1.0,
                  clip: float = 20.0, iters: int = 25) -> ShiftWeights:
    """Importance weights of ``X_train``'s rows toward the distribution of ``X_target``'s rows.

    ``components`` principal components of the pooled, standardised features feed the classifier
    (enough to tell kinds of query apart, few enough that it cannot memorise them); ``l2`` is its
    ridge; weights are clipped to ``[1/clip, clip]`` times their median before the mean is set to 1,
    so a few far-off queries cannot take all the weight.
    """
    Xs = np.asarray(X_train, dtype=np.float64)
    Xt = np.asarray(X_target, dtype=np.float64)
    if Xs.ndim != 2 or Xt.ndim != 2 or Xs.shape[1] != Xt.shape[1]:
        raise InvalidInputError(f"training features {Xs.shape} and target features {Xt.shape} must be 2-D "
                                "with the same width")
    if len(Xs) < 2 or len(Xt) < 2:
        raise InvalidInputError(f"shift weights need at least 2 training and 2 target queries, got "
                                f"{len(Xs)} and {len(Xt)}")
    if components < 1 or not l2 > 0 or not clip >= 1:
        raise ConfigError(f"shift_weights: components >= 1, l2 > 0 and clip >= 1 required "
                          f"(got {components}, {l2}, {clip})")
    pooled = np.vstack([Xs, Xt])
    mu, sd = pooled.mean(axis=0), pooled.std(axis=0)
    Z = (pooled - mu) / np.where(sd > 1e-12, sd, 1.0)
    k = int(min(components, Z.shape[1], Z.shape[0] - 1))
    _, _, vt = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
    F = Z @ vt[:k].T
    F = F / np.where(F.std(axis=0) > 1e-12, F.std(axis=0), 1.0)
    F = np.hstack([F, np.ones((len(F), 1))])
    y = np.concatenate([np.zeros(len(Xs)), np.ones(len(Xt))])
    # balance the classes, so the odds measure resemblance, not the two sets' sizes
    cw = np.where(y == 1, len(y) / (2.0 * len(Xt)), len(y) / (2.0 * len(Xs)))
    reg = np.full(F.shape[1], l2)
    reg[-1] = 0.0
    beta = np.zeros(F.shape[1])
    for _ in range(iters):
        z = F @ beta
        p = sigmoid(z)
        g = F.T @ (cw * (p - y)) + reg * beta
        H = (F * (cw * p * (1 - p))[:, None]).T @ F + np.diag(reg + 1e-9)
        step = np.linalg.solve(H, g)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    logit = F @ beta
    w = np.exp(np.minimum(logit[: len(Xs)], 700.0))  # clipped below anyway; no overflow
    med = float(np.median(w))
    w = np.clip(w, med / clip, med * clip)
    w = w / w.mean()
    return ShiftWeights(weights=w, auc=_auc(logit[len(Xs):], logit[: len(Xs)]),
                        effective_share=float(w.sum() ** 2 / (len(w) * np.sum(w ** 2))))


def read_target_queries(path: str | Path, *, strict: bool = False) -> list[Query]:
    """The queries of a traffic sample: a judgments or outcomes JSONL (their queries, outcomes
    unused) or one query per line (``{"text": ..., "images": [...]}``), deduplicated by content.
    Relative image paths are relative to the file's folder."""
    from .formats import QueryRecord, read_judgments, read_outcomes
    from .sources import detect_kind

    path = Path(path)
    try:
        kind: str = detect_kind(path)
    except DataFormatError:
        kind = "queries"
    records: list[QueryRecord]
    if kind == "judgments":
        records = [j.query for j in read_judgments(path, strict=strict).items]
    elif kind == "outcomes":
        records = [o.query for o in read_outcomes(path, strict=strict).items]
    else:
        records = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(QueryRecord.model_validate_json(line))
                except ValidationError as exc:
                    raise DataFormatError(f"{path}:{lineno}: not a query, judgment or outcome record "
                                          f"({exc.errors()[0]['msg']})") from None
    seen: dict[str, Query] = {}
    for r in records:
        q = r.to_query(base_dir=path.parent)
        seen.setdefault(q.content_hash, q)
    if not seen:
        raise InvalidInputError(f"{path}: no queries to adapt to")
    return list(seen.values())
