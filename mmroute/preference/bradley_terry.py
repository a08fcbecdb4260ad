"""Contextual Bradley-Terry preference model: which model wins for *this* query.

Each model ``m`` gets a score ``s_m(q) = b_m + h(f(q)) . v_m``:

* ``b_m`` is a global rating (what the model is worth on an average query);
* ``h`` maps the query features ``f(q)`` to a rank-``r`` embedding shared by all models: a linear
  projection ``P f`` (``head="linear"``, the matrix factorisation of RouteLLM) or a one-hidden-layer
  MLP (``head="mlp"``);
* ``v_m`` says in which directions of that embedding model ``m`` is better than its average.

``P(a beats b | q) = sigmoid((s_a - s_b) / T)``, with a temperature ``T`` that stays 1 until
:meth:`BradleyTerry.calibrate` fits it on held-out judgments.

Why these choices:

* **Ties count as half a win for each side** (``ties="half"``): a judgment with ``y = 0.5`` costs
  ``-0.5 log p - 0.5 log(1 - p)``, which is minimised at ``p = 0.5``; so a tie pulls two models'
  scores together instead of being thrown away. Upstream, both ``"tie"`` and ``"tie (bothbad)"``
  become ``y = 0.5``. ``ties="drop"`` ignores judgments with ``y == 0.5`` instead.
* **Regularisation shrinks the per-query terms** (``l2`` on ``h``'s weights and every ``v_m``) toward
  zero, so a model with few judgments falls back to its global rating ``b_m``: its ``v_m`` earns
  little likelihood and pays the same penalty. ``b`` is only identified up to a common constant;
  a tiny ``l2_global`` ridge fixes that constant (the optimum has ``mean(b) = 0``) and ``fit``
  centres ``b`` exactly afterwards.
* **Sample weights multiply each judgment's loss**, so weight 2 is the same as duplicating it.
  The data term is the weighted *mean* loss, so ``l2`` is per judgment, independent of ``n``.
* **partial_fit does not forget**: the old judgments' likelihood is replaced by its diagonal
  Laplace (Gauss-Newton) approximation around the previous solution - an EWC-style anchor
  ``0.5 * prox * sum_j F_j (theta_j - theta_old_j)^2`` where ``F_j`` sums, over every judgment
  seen so far, ``w p (1 - p) (dz/dtheta_j)^2``. ``F`` therefore grows with the number of
  judgments a parameter was fitted on: a model seen 10 000 times barely moves on one new
  judgment, a model never seen before is free (its anchor strength is 0), and the shared
  projection moves in proportion to the new data's share of the total.
* Everything is float32 torch on CPU inside, numpy at the API, safetensors + JSON on disk
  (nothing is ever pickled).

Where things live: hyper-parameters in :mod:`~mmroute.preference.config` (validated) and
:mod:`~mmroute.preference.hyperparams` (the scikit-learn protocol, a base class), input checks in
:mod:`~mmroute.preference.validation`, tensors and the pair-segment fast path in
:mod:`~mmroute.preference.pairs`, the objective in :mod:`~mmroute.preference.loss`, optimisers in
:mod:`~mmroute.preference.solvers`, the anchor in :mod:`~mmroute.preference.laplace`, expected
quality and accuracy in :mod:`~mmroute.preference.metrics`, the checkpoint in
:mod:`~mmroute.preference.io` (format, save and load). This module only wires them into the estimator.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from mmroute.errors import ConfigError, InvalidInputError, MMRouteError
from mmroute.preference import io
from mmroute.preference.calibration import fit_temperature, pairwise_nll
from mmroute.preference.config import BradleyTerryConfig
from mmroute.preference.hyperparams import BradleyTerryParams
from mmroute.preference.laplace import accumulate_curvature, anchored_update
from mmroute.preference.loss import l2_of, rating_precision
from mmroute.preference.metrics import expected_quality_from_scores, pairwise_accuracy, sigmoid, win_probabilities
from mmroute.preference.pairs import Judgments, Params, margins
from mmroute.preference.solvers import minimise
from mmroute.preference.validation import check_features, check_labels, check_pairs, check_weights

__all__ = ["BradleyTerry", "BradleyTerryConfig", "NotFittedError"]

logger = logging.getLogger(__name__)

#: fit() on more than _WARM_FACTOR * _WARM_ROWS judgments first fits a _WARM_ROWS subsample.
_WARM_ROWS = 20000
_WARM_FACTOR = 2


class NotFittedError(MMRouteError, ValueError, AttributeError):
    """The estimator was used before ``fit`` (same bases as scikit-learn's, for ``except`` clauses)."""


class BradleyTerry(BradleyTerryParams):
    """Contextual Bradley-Terry estimator (scikit-learn style; see the module docstring; its
    hyper-parameters are documented on :class:`~mmroute.preference.hyperparams.BradleyTerryParams`)."""


    # ------------------------------------------------------------------ validation
    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError("this BradleyTerry is not fitted yet; call fit(X, pairs, y) first")

    def _validate_X(self, X: ArrayLike, *, n: int | None = None) -> np.ndarray:
        return check_features(X, n=n, n_features=self.n_features_in_ if self._fitted else None)

    def _validate_judgments(
        self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p = check_pairs(pairs)
        n = p.shape[0]
        if n == 0:
            raise InvalidInputError("no judgments given (pairs is empty)")
        return self._validate_X(X, n=n), p, check_labels(y, n), check_weights(sample_weight, n)

    def _indices(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = self._index
        try:
            ia = np.fromiter((index[a] for a in pairs[:, 0]), dtype=np.int64, count=len(pairs))
            ib = np.fromiter((index[b] for b in pairs[:, 1]), dtype=np.int64, count=len(pairs))
        except KeyError as exc:
            raise InvalidInputError(
                f"unknown model {exc.args[0]!r}; known models: {self.models_} "
                "(add it with add_models or partial_fit)"
            ) from None
        return ia, ib

    def _usable(
        self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Validated judgments with ties dropped if asked; at least one must carry weight."""
        Xa, p, ya, w = self._validate_judgments(X, pairs, y, sample_weight)
        if self.ties == "drop":
            keep = ya != 0.5
            Xa, p, ya, w = Xa[keep], p[keep], ya[keep], w[keep]
        if len(ya) == 0 or w.sum() <= 0:
            raise InvalidInputError(
                "no usable judgments: every one is a dropped tie or has weight 0"
            )
        return Xa, p, ya, w

    # ------------------------------------------------------------------ parameters
    def _params(self) -> Params:
        """The fitted tensors as one view (shared, not copied) for the solvers and the anchor."""
        return Params(self._b, self._V, self._head, self._mean, self._inv_scale)

    def _init_params(self, d: int, M: int, gen: torch.Generator) -> None:
        cfg = self._cfg
        self._b = torch.zeros(M)
        self._V = torch.zeros(M, cfg.rank)
        # Non-zero head, zero V: V's gradient is non-zero from the start, and rarely-seen models
        # begin exactly at "global rating only".
        if cfg.head == "linear":
            self._head = {"P": torch.randn(cfg.rank, d, generator=gen) / math.sqrt(d)}
        else:
            self._head = {
                "W1": torch.randn(cfg.hidden, d, generator=gen) / math.sqrt(d),
                "c1": torch.zeros(cfg.hidden),
                "W2": torch.randn(cfg.rank, cfg.hidden, generator=gen) / math.sqrt(cfg.hidden),
            }

    def _standardisation(self, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1 / std) of the features; ``ignore_columns`` get scale 0 (out of the query terms)."""
        d = X.shape[1]
        if self._cfg.standardize:
            std, mean = torch.std_mean(torch.from_numpy(X), dim=0, correction=0)
            std = torch.where(std < 1e-6, torch.ones_like(std), std)
        else:
            mean, std = torch.zeros(d), torch.ones(d)
        inv = 1.0 / std
        for a, b in self._cfg.ignore_columns:
            if not 0 <= a < b <= d:
                raise InvalidInputError(f"ignore_columns range [{a}, {b}) is outside the {d} feature columns")
            inv[a:b] = 0.0
        return mean.contiguous(), inv.contiguous()

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: ArrayLike,
        pairs: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        models: Sequence[str] | None = None,
    ) -> BradleyTerry:
        """Fit from scratch on judgments.

        X: (n, d) query features, one row per judgment. pairs: (n, 2) model names ``(a, b)``.
        y: 1.0 if ``a`` won, 0.0 if ``b`` won, 0.5 for a tie (fractions in [0, 1] are soft labels).
        sample_weight: (n,) non-negative multipliers of each judgment's loss.
        models: the full model list (fixes the order of ``models_`` and may include models with no
            judgment yet, which get the mean rating); default: sorted names found in ``pairs``.

        Full-batch L-BFGS (deterministic for a seed on CPU); above 40k judgments it first fits a
        seeded 20k subsample and then polishes on all data, which roughly halves the time.
        """
        self._fitted = False
        self._cfg = self._config()
        X, pairs, y, w = self._usable(X, pairs, y, sample_weight)
        if models is None:
            names = sorted(set(pairs[:, 0]) | set(pairs[:, 1]))
        else:
            names = [str(m) for m in models]
            if len(set(names)) != len(names):
                raise InvalidInputError(f"models contains duplicates: {names}")
        self.models_ = list(names)
        self._index = {m: i for i, m in enumerate(self.models_)}
        data = Judgments(X, *self._indices(pairs), y, w)
        n, d = X.shape
        M = len(self.models_)

        t0 = time.perf_counter()
        self._mean, self._inv_scale = self._standardisation(X)
        gen = torch.Generator().manual_seed(int(self._cfg.seed))
        self._init_params(d, M, gen)
        self.n_features_in_ = d
        self.temperature_ = 1.0

        params = self._params()
        for t in params.named().values():
            t.requires_grad_(True)
        level = logging.INFO if self.verbose else logging.DEBUG
        n_iter = 0
        if self._cfg.batch_size is None and n > _WARM_FACTOR * _WARM_ROWS:
            # Warm start on a seeded subsample: same per-judgment objective, 1/_WARM_FACTOR+ of the
            # cost per iteration, so the full-data L-BFGS only has to polish (~3x less time).
            sub = np.sort(torch.randperm(n, generator=gen)[:_WARM_ROWS].numpy())
            n_iter += minimise(params, data.subset(sub), self._cfg, gen, level)[0]
        steps, data = minimise(params, data, self._cfg, gen, level)
        n_iter += steps
        for t in params.named().values():
            t.requires_grad_(False)
        with torch.no_grad():
            self._b -= self._b.mean()  # exact shift invariance: centre the ratings

        counts = np.bincount(np.concatenate([data.ia, data.ib]), minlength=M)
        self.n_seen_ = {m: int(c) for m, c in zip(self.models_, counts)}
        self.weight_seen_ = data.weight
        self._precision = {k: torch.zeros_like(v) for k, v in params.named().items()}
        accumulate_curvature(self._precision, params, data, gen)
        self._fitted = True
        logger.log(level, f"fit: {n} judgments, {M} models, d={d}, {n_iter} iterations, "
                          f"{time.perf_counter() - t0:.2f}s")
        return self

    @classmethod
    def from_ratings(cls, ratings: dict[str, float], n_features: int, *, strength: float = 1.0,
                     **params: Any) -> BradleyTerry:
        """A fitted model from prior ratings alone: no judgments yet, ``v = 0`` (no feature
        dependence), each rating anchored with curvature ``strength`` (in judgments' units: one
        judgment at even odds adds 1/4), so :meth:`partial_fit` treats the prior like old data and
        :meth:`score_variance` is wide. ``weight_seen_`` is 0 until the first judgments, which
        also set the feature standardisation (there were no features to take it from)."""
        model = cls(**params)
        model._cfg = model._config()
        names = [str(m) for m in ratings]
        if not names or len(set(names)) != len(names) or not all(names):
            raise InvalidInputError(f"ratings need distinct, non-empty model names; got {names}")
        vals = [float(ratings[m]) for m in names]
        if not all(math.isfinite(v) for v in vals) or not (strength > 0 and math.isfinite(strength)):
            raise InvalidInputError(f"ratings and strength must be finite (strength > 0); got {vals}, {strength}")
        if n_features < 1:
            raise InvalidInputError(f"n_features must be >= 1, got {n_features}")
        model.models_ = names
        model._index = {m: i for i, m in enumerate(names)}
        model._mean, model._inv_scale = torch.zeros(n_features), torch.ones(n_features)
        model._init_params(n_features, len(names), torch.Generator().manual_seed(int(model._cfg.seed)))
        model._b = torch.tensor(vals, dtype=torch.float32)
        model._precision = {k: torch.zeros_like(v) for k, v in model._params().named().items()}
        model._precision["b"] = torch.full((len(names),), float(strength))
        model.n_features_in_ = n_features
        model.temperature_ = 1.0
        model.n_seen_ = {m: 0 for m in names}
        model.weight_seen_ = 0.0
        model._fitted = True
        return model

    # ------------------------------------------------------------------ incremental
    def add_models(self, names: Iterable[str]) -> BradleyTerry:
        """Add models with no judgments yet: rating = mean rating, ``v = 0`` (so, until judged, they
        are predicted to tie an average model), anchor strength 0. Known names are ignored."""
        self._check_fitted()
        new: list[str] = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"model names must be non-empty strings; got {name!r}")
            if name not in self._index and name not in new:
                new.append(name)
        if not new:
            return self
        k = len(new)
        self._b = torch.cat([self._b, self._b.mean().expand(k)]) if len(self._b) else torch.zeros(k)
        self._V = torch.cat([self._V, torch.zeros(k, self._V.shape[1])])
        for key in ("b", "V"):
            t = self._precision[key]
            self._precision[key] = torch.cat([t, torch.zeros((k, *t.shape[1:]))])
        for name in new:
            self._index[name] = len(self.models_)
            self.models_.append(name)
            self.n_seen_[name] = 0
        return self

    def partial_fit(self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> BradleyTerry:
        """Warm-start update on new judgments without forgetting the old ones.

        Minimises ``sum_new w * loss + 0.5 * prox * sum_j F_j (theta_j - theta_old_j)^2 + ridge``
        where ``F`` is the accumulated diagonal curvature of every judgment seen so far (see the
        module docstring): the anchor is the Laplace approximation of the old data's likelihood,
        so its strength is proportional to how many judgments each parameter was fitted on.
        Models new to this batch are added first (``add_models``). Runs ``update_steps`` L-BFGS
        iterations in variables rescaled by the anchor's curvature, which makes the problem well
        conditioned whether the old fit saw 10 or 10^6 judgments. ``temperature_`` is kept (it
        may need :meth:`calibrate` again after large updates). On an unfitted model: ``fit``.
        """
        if not self._fitted:
            return self.fit(X, pairs, y, sample_weight)
        cfg = self._config()
        for key in ("rank", "head", "hidden", "standardize", "ignore_columns"):
            if getattr(cfg, key) != getattr(self._cfg, key):
                raise ConfigError(
                    f"{key} changed from {getattr(self._cfg, key)!r} to {getattr(cfg, key)!r} since "
                    "fit; partial_fit cannot change the model's shape - call fit instead"
                )
        self._cfg = cfg
        X, pairs, y, w = self._usable(X, pairs, y, sample_weight)
        self.add_models(list(pairs[:, 0]) + list(pairs[:, 1]))
        steps = cfg
        if self.weight_seen_ == 0:  # priors only (from_ratings): the first features standardise, a full solve
            self._mean, self._inv_scale = self._standardisation(X)
            steps = cfg.model_copy(update={"update_steps": max(cfg.update_steps, cfg.max_epochs)})
        data = Judgments(X, *self._indices(pairs), y, w)
        new = anchored_update(self._params(), self._precision, data, steps, self.weight_seen_)
        self._b, self._V = new["b"], new["V"]
        self._head = {k[5:]: v for k, v in new.items() if k.startswith("head.")}
        self.weight_seen_ = self.weight_seen_ + data.weight
        for a, b in pairs:
            self.n_seen_[a] += 1
            self.n_seen_[b] += 1
        gen = torch.Generator().manual_seed(int(cfg.seed) + int(sum(self.n_seen_.values())))
        accumulate_curvature(self._precision, self._params(), data, gen)
        return self

    update = partial_fit

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def scores(self, X: ArrayLike) -> np.ndarray:
        """Raw scores ``s_m(q)``, shape (n, M), columns in ``models_`` order.

        Only differences matter: ``P(a beats b) = sigmoid((s_a - s_b) / temperature_)``."""
        self._check_fitted()
        Xa = self._validate_X(X)
        H = self._params().embed(torch.from_numpy(Xa))
        return (self._b + H @ self._V.T).numpy().astype(np.float64)

    def _pair_margins(self, X: ArrayLike, pairs: ArrayLike) -> np.ndarray:
        self._check_fitted()
        p = check_pairs(pairs)
        Xa = self._validate_X(X, n=p.shape[0])
        ia, ib = self._indices(p)
        with torch.no_grad():
            H = self._params().embed(torch.from_numpy(Xa))
            z = margins(H, self._b, self._V, torch.from_numpy(ia), torch.from_numpy(ib))
        return z.numpy().astype(np.float64)

    def predict_proba(self, X: ArrayLike, pairs: ArrayLike) -> np.ndarray:
        """``P(a beats b | q)`` for each row: shape (n,), temperature applied."""
        z = self._pair_margins(X, pairs) / self.temperature_
        return sigmoid(z)

    def win_matrix(self, x: ArrayLike) -> np.ndarray:
        """(M, M) matrix of ``P(row model beats column model)`` for one query; diagonal 0.5,
        ``W + W.T == 1``."""
        arr = np.asarray(x, dtype=np.float32) if not isinstance(x, np.ndarray) else x
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] != 1:
            raise InvalidInputError(f"win_matrix takes one query: shape (d,) or (1, d); got {arr.shape}")
        return win_probabilities(self.scores(arr)[0] / self.temperature_)

    def expected_quality(self, X: ArrayLike) -> np.ndarray:
        """(n, M): each model's mean win probability against the *other* models for each query,
        in [0, 1] (0.5 when only one model is known). A cost-aware policy trades this off
        against price."""
        return expected_quality_from_scores(self.scores(X) / self.temperature_)

    @torch.no_grad()
    def score_variance(self, X: ArrayLike) -> np.ndarray:
        """Posterior variance of each raw score ``s_m(q)``, shape (n, M), before temperature.

        The posterior is the diagonal Laplace approximation ``partial_fit`` anchors to (accumulated
        curvature ``prox * F`` plus the ridge ``2 W l2``), over each model's own terms ``b_m`` and
        ``v_m`` with the shared head held at its estimate: ``var = 1/k_b + sum_k h_k(q)^2 / k_V``.
        Why: Thompson sampling (``mmroute.learning``) needs how unsure each score is *for this
        query*; a model never judged gets only the ridge's (wide) prior."""
        self._check_fitted()
        H = self._params().embed(torch.from_numpy(self._validate_X(X)))
        W, prox = float(self.weight_seen_), self._cfg.prox
        kb = prox * self._precision["b"] + 2.0 * W * l2_of("b", self._cfg) + rating_precision(self._cfg) + 1e-4
        kV = prox * self._precision["V"] + 2.0 * W * l2_of("V", self._cfg) + 1e-4
        return ((1.0 / kb)[None, :] + (H * H) @ (1.0 / kV).T).numpy().astype(np.float64)

    # ------------------------------------------------------------------ evaluation / calibration
    def _eval_inputs(
        self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._check_fitted()
        p = check_pairs(pairs)
        n = p.shape[0]
        if n == 0:
            raise InvalidInputError("no judgments given (pairs is empty)")
        yy = check_labels(y, n)
        w = check_weights(sample_weight, n)
        z = self._pair_margins(X, p)
        if self.ties == "drop":
            keep = yy != 0.5
            z, yy, w = z[keep], yy[keep], w[keep]
        if w.sum() <= 0:
            raise InvalidInputError("no usable judgments: all weights are 0 or all are dropped ties")
        return z, yy, w

    def log_loss(self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Weighted mean negative log-likelihood (nats) with the current temperature; ties count
        as half wins (or are skipped with ``ties="drop"``)."""
        z, yy, w = self._eval_inputs(X, pairs, y, sample_weight)
        return pairwise_nll(z, yy, w, self.temperature_)

    def accuracy(self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Weighted share of decided judgments (``y != 0.5``) whose winner is predicted
        (``P(a beats b) > 0.5`` iff ``y > 0.5``). Ties are excluded: no prediction is right on them."""
        self._check_fitted()
        p = check_pairs(pairs)
        yy = check_labels(y, p.shape[0])
        w = check_weights(sample_weight, p.shape[0])
        acc = pairwise_accuracy(self._pair_margins(X, p), yy, w)
        if acc is None:
            raise InvalidInputError("accuracy needs at least one judgment that is not a tie")
        return acc

    def calibrate(self, X: ArrayLike, pairs: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Fit and store ``temperature_`` on *held-out* judgments by minimising their NLL
        (bounded 1-D golden-section search over ``log T``). ``T > 1`` softens over-confident
        scores, ``T < 1`` sharpens timid ones. Returns the temperature."""
        z, yy, w = self._eval_inputs(X, pairs, y, sample_weight)
        self.temperature_ = fit_temperature(z, yy, w)
        return self.temperature_

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` (all tensors) and ``model.json`` (hyper-parameters, model
        names, temperature, format version, sha256 of the tensor file) into ``directory``
        (format and code: :mod:`mmroute.preference.io`)."""
        return io.save_model(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> BradleyTerry:
        """Load a model written by :meth:`save`; raises CheckpointError naming the problem for a
        missing, truncated, tampered, inconsistent or newer-format checkpoint."""
        return io.load_model(cls, directory)
