"""Off-policy evaluation: what a *candidate* router would have earned on decisions another policy
made, from the logged propensities alone.

For logged queries ``x_i``, chosen models ``a_i`` drawn with probability ``p_i`` and observed
rewards ``r_i`` (quality, or cost, or ``quality - lam * cost``), and a target policy ``pi(m | x_i)``:

* **IPS** ``mean(pi(a_i|x_i) / p_i * r_i)`` - unbiased whenever ``p_i > 0`` wherever ``pi > 0``;
* **SNIPS** ``sum(w_i r_i) / sum(w_i)`` with ``w_i = pi / p`` - slightly biased, much less variance;
* **DR** (doubly robust) ``mean(sum_m pi(m|x_i) rhat(x_i, m) + w_i (r_i - rhat(x_i, a_i)))`` -
  unbiased if either the propensities or the reward model are right, lowest variance when the
  reward model is good. :func:`fit_reward_model` gives a cross-fitted per-model ridge on features.

Uncertainty: IPS and DR are means of independent terms, so their standard error is the terms'
standard deviation over ``sqrt(n)`` (normal interval); SNIPS uses the delta method. With
``bootstrap=B`` every interval is a seeded percentile bootstrap instead. :func:`compare` estimates
the *difference* between two policies with paired terms, which is what a retrain gate needs: the
two policies' estimates share most of their noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError

Estimator = Literal["ips", "snips", "dr"]
ESTIMATORS: tuple[Estimator, ...] = ("ips", "snips", "dr")


class Estimate(BaseModel):
    """A policy value (or a difference of two) with its confidence interval."""

    model_config = ConfigDict(frozen=True)

    estimator: Estimator
    value: float
    se: float
    low: float
    high: float
    confidence: float
    n: int


@dataclass(frozen=True)
class LoggedBandit:
    """Logged decisions as arrays: chosen model index, its propensity, the observed reward."""

    actions: np.ndarray       # (n,) int, column of the chosen model
    propensities: np.ndarray  # (n,) in (0, 1]
    rewards: np.ndarray       # (n,)

    def __post_init__(self) -> None:
        n = len(self.actions)
        if n == 0:
            raise InvalidInputError("off-policy evaluation needs at least one logged decision")
        if len(self.propensities) != n or len(self.rewards) != n:
            raise InvalidInputError(f"actions ({n}), propensities ({len(self.propensities)}) and rewards "
                                    f"({len(self.rewards)}) must have the same length")
        p = np.asarray(self.propensities, float)
        if not (np.isfinite(p).all() and (p > 0).all() and (p <= 1 + 1e-12).all()):
            i = int(np.argmax(~np.isfinite(p) | (p <= 0) | (p > 1 + 1e-12)))
            raise InvalidInputError(f"propensity[{i}] = {p[i]!r} must be in (0, 1]: a logged choice had to be possible")
        if not np.isfinite(np.asarray(self.rewards, float)).all():
            raise InvalidInputError("rewards contain NaN or inf")

    def __len__(self) -> int:
        return len(self.actions)

    def with_rewards(self, rewards: np.ndarray) -> "LoggedBandit":
        return LoggedBandit(self.actions, self.propensities, np.asarray(rewards, float))


def _check_target(target: np.ndarray, n: int, what: str = "target") -> np.ndarray:
    t = np.asarray(target, float)
    if t.ndim != 2 or t.shape[0] != n:
        raise InvalidInputError(f"{what} probabilities must have shape (n={n}, M); got {t.shape}")
    if not np.allclose(t.sum(axis=1), 1.0, atol=1e-6) or (t < -1e-12).any():
        i = int(np.argmax(~np.isclose(t.sum(axis=1), 1.0, atol=1e-6) | (t < -1e-12).any(axis=1)))
        raise InvalidInputError(f"{what} probabilities of row {i} do not form a distribution (sum {t[i].sum():.6f})")
    return t


def _terms(estimator: Estimator, target: np.ndarray, log: LoggedBandit, rhat: np.ndarray | None) -> np.ndarray:
    """Per-decision terms whose mean is the estimate (for SNIPS: the influence-function terms
    plus the estimate, so their mean is the estimate and their spread gives the delta-method SE)."""
    n = len(log)
    idx = np.arange(n)
    a = np.asarray(log.actions, int)
    w = target[idx, a] / np.asarray(log.propensities, float)
    r = np.asarray(log.rewards, float)
    if estimator == "ips":
        return w * r
    if estimator == "snips":
        mw = w.mean()
        if mw <= 0:
            return np.zeros(n)
        v = float((w * r).sum() / w.sum())
        return v + w * (r - v) / mw
    if rhat is None:
        raise InvalidInputError("the doubly-robust estimate needs reward-model predictions (rhat)")
    rh = np.asarray(rhat, float)
    if rh.shape != target.shape:
        raise InvalidInputError(f"rhat has shape {rh.shape}, target probabilities {target.shape}")
    return (target * rh).sum(axis=1) + w * (r - rh[idx, a])


def _interval(terms: np.ndarray, estimator: Estimator, confidence: float, bootstrap: int, seed: int,
              boot_fn: Callable[[np.ndarray], float] | None = None) -> Estimate:
    n = len(terms)
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws = np.array([(boot_fn(rng.integers(0, n, n)) if boot_fn else terms[rng.integers(0, n, n)].mean())
                          for _ in range(bootstrap)])
        alpha = (1 - confidence) / 2
        low, high = (float(x) for x in np.quantile(draws, [alpha, 1 - alpha]))
        se = float(draws.std(ddof=1))
    else:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        low, high = value - z * se, value + z * se
    return Estimate(estimator=estimator, value=value, se=se, low=low, high=high, confidence=confidence, n=n)


def estimate(target: np.ndarray, log: LoggedBandit, estimator: Estimator = "dr", *, rhat: np.ndarray | None = None,
             confidence: float = 0.95, bootstrap: int = 0, seed: int = 0) -> Estimate:
    """The value of ``target`` ((n, M) probabilities per logged query) on the logged decisions."""
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    t = _check_target(target, len(log))
    terms = _terms(estimator, t, log, rhat)
    boot: Callable[[np.ndarray], float] | None = None
    if estimator == "snips" and bootstrap > 0:  # resample the ratio, not the linearised terms
        w = t[np.arange(len(log)), np.asarray(log.actions, int)] / np.asarray(log.propensities, float)
        r = np.asarray(log.rewards, float)

        def boot(idx: np.ndarray) -> float:
            s = w[idx].sum()
            return float((w[idx] * r[idx]).sum() / s) if s > 0 else 0.0
    return _interval(terms, estimator, confidence, bootstrap, seed, boot)


def evaluate(target: np.ndarray, log: LoggedBandit, *, rhat: np.ndarray | None = None, confidence: float = 0.95,
             bootstrap: int = 0, seed: int = 0) -> dict[str, Estimate]:
    """IPS, SNIPS and (with ``rhat``) DR estimates of one policy."""
    out: dict[str, Estimate] = {e: estimate(target, log, e, rhat=rhat, confidence=confidence, bootstrap=bootstrap, seed=seed)
           for e in ESTIMATORS if e != "dr" or rhat is not None}
    return out


def compare(new: np.ndarray, old: np.ndarray, log: LoggedBandit, estimator: Estimator = "dr", *,
            rhat: np.ndarray | None = None, confidence: float = 0.95, bootstrap: int = 0, seed: int = 0) -> Estimate:
    """``value(new) - value(old)`` on the same logged decisions, from paired per-decision terms."""
    tn, to = _check_target(new, len(log), "new"), _check_target(old, len(log), "old")
    if estimator == "snips":
        # difference of two ratio estimates: bootstrap it, or linearise each (delta method)
        terms = _terms("snips", tn, log, None) - _terms("snips", to, log, None)
    else:
        terms = _terms(estimator, tn, log, rhat) - _terms(estimator, to, log, rhat)
    return _interval(terms, estimator, confidence, bootstrap, seed)


def fit_reward_model(X: np.ndarray, log: LoggedBandit, n_models: int, *, l2: float = 1.0, folds: int = 2,
                     seed: int = 0) -> np.ndarray:
    """Cross-fitted reward predictions (n, M) for the doubly-robust estimate.

    Per model, a ridge regression of the logged reward on standardised features, fitted on the
    *other* folds' decisions (so a decision's own reward never enters its prediction, which would
    bias DR); a model with fewer than 5 logged decisions in the training folds gets their mean
    reward. Predictions are clipped to the observed reward range."""
    X = np.asarray(X, float)
    n = len(log)
    if X.shape[0] != n:
        raise InvalidInputError(f"X has {X.shape[0]} rows but the log has {n} decisions")
    mu, sd = X.mean(axis=0), X.std(axis=0)
    Z = (X - mu) / np.where(sd < 1e-9, 1.0, sd)
    Z = np.hstack([Z, np.ones((n, 1))])
    a = np.asarray(log.actions, int)
    r = np.asarray(log.rewards, float)
    fold = np.random.default_rng(seed).permutation(n) % max(1, folds) if folds > 1 else np.zeros(n, int)
    out = np.zeros((n, n_models))
    lo, hi = float(r.min()), float(r.max())
    for f in np.unique(fold):
        test = fold == f
        train = ~test if folds > 1 else np.ones(n, bool)
        fallback = float(r[train].mean()) if train.any() else float(r.mean())
        for m in range(n_models):
            sel = train & (a == m)
            if sel.sum() < 5:
                out[test, m] = float(r[sel].mean()) if sel.any() else fallback
                continue
            A = Z[sel]
            reg = l2 * np.eye(A.shape[1])
            reg[-1, -1] = 0.0
            coef = np.linalg.solve(A.T @ A + reg, A.T @ r[sel])
            out[test, m] = Z[test] @ coef
    return np.clip(out, lo, hi)


def onehot(choices: np.ndarray, n_models: int) -> np.ndarray:
    """A deterministic policy's probabilities from its chosen column per query."""
    c = np.asarray(choices, int)
    out = np.zeros((len(c), n_models))
    out[np.arange(len(c)), c] = 1.0
    return out
