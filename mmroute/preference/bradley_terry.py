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
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmroute.checkpoint import atomic_write_bytes
from mmroute.errors import CheckpointError, ConfigError, InvalidInputError, MMRouteError
from mmroute.preference.calibration import fit_temperature, pairwise_nll

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS_FILE = "model.safetensors"
META_FILE = "model.json"
_KIND = "mmroute.preference.BradleyTerry"
#: Rows processed at once where a full (n, d) temporary would be wasteful.
_CHUNK = 16384
#: Rademacher probes for the curvature of MLP-head weights (the linear head is exact).
_MLP_PROBES = 8


#: Group judgments by model pair when pairs average at least this many rows (else dense matmul).
_MIN_SEGMENT_ROWS = 32
#: partial_fit uses Gauss-Newton (Woodbury) up to this many new judgments, L-BFGS above.
_GN_MAX_ROWS = 64
#: fit() on more than _WARM_FACTOR * _WARM_ROWS judgments first fits a _WARM_ROWS subsample.
_WARM_ROWS = 20000
_WARM_FACTOR = 2


class _Segments:
    """Judgments sorted by (unordered) model pair, for the linear head's full-batch fit.

    Why: with a linear head the margin of a judgment on pair (a, b) is
    ``x~ . u_ab + b_a - b_b`` with ``u_ab = P^T (v_a - v_b)``. Computing one ``u`` per *pair* and a
    matrix-vector product per contiguous block of rows reads ``X`` once per evaluation (n*d
    flops, memory bound) instead of the n*d*r flops of ``X @ P.T`` - about 5-10x faster at
    512-d, which is what makes a 100k-judgment fit take seconds on two cores.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bounds: list[tuple[int, int]], counts: torch.Tensor):
        self.a, self.b, self.bounds, self.counts = a, b, bounds, counts

    @staticmethod
    def build(
        X: np.ndarray, ia: np.ndarray, ib: np.ndarray, y: np.ndarray, w: np.ndarray, M: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, _Segments]:
        """Orient every pair as (low index, high index) - flipping y - and sort rows by pair."""
        flip = ia > ib
        lo, hi = np.where(flip, ib, ia), np.where(flip, ia, ib)
        y = np.where(flip, 1.0 - y, y)
        key = lo * M + hi
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        ends = np.r_[starts[1:], len(key)]
        bounds = [(int(s), int(e)) for s, e in zip(starts, ends)]
        seg = _Segments(
            torch.from_numpy(key[starts] // M),
            torch.from_numpy(key[starts] % M),
            bounds,
            torch.from_numpy(ends - starts),
        )
        return np.ascontiguousarray(X[order]), lo[order], hi[order], y[order], w[order], seg

    def margins(
        self,
        X: torch.Tensor,
        b: torch.Tensor,
        V: torch.Tensor,
        P: torch.Tensor,
        mean: torch.Tensor,
        inv_scale: torch.Tensor,
    ) -> torch.Tensor:
        U = ((V[self.a] - V[self.b]) @ P) * inv_scale  # (K, d): standardisation folded in
        offset = b[self.a] - b[self.b] - U @ mean  # (K,)
        parts = [X[lo:hi] @ U[k] for k, (lo, hi) in enumerate(self.bounds)]
        return torch.cat(parts) + offset.repeat_interleave(self.counts)


class NotFittedError(MMRouteError, ValueError, AttributeError):
    """The estimator was used before ``fit`` (same bases as scikit-learn's, for ``except`` clauses)."""


class BradleyTerryConfig(BaseModel):
    """Validated hyper-parameters; the boundary between user input and the estimator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(16, ge=1, le=4096)
    head: Literal["linear", "mlp"] = "linear"
    hidden: int = Field(64, ge=1, le=65536)
    l2: float = Field(1e-3, ge=0.0, allow_inf_nan=False)
    l2_global: float = Field(1e-5, ge=0.0, allow_inf_nan=False)
    ties: Literal["half", "drop"] = "half"
    max_epochs: int = Field(100, ge=1)
    lr: float = Field(0.01, gt=0.0, allow_inf_nan=False)
    batch_size: int | None = Field(None, ge=1)
    tol: float = Field(1e-5, gt=0.0, allow_inf_nan=False)
    seed: int = 0
    verbose: bool = False
    prox: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    update_steps: int = Field(20, ge=1)
    standardize: bool = True
    ignore_columns: tuple[tuple[int, int], ...] = ()


class _Meta(BaseModel):
    """What ``model.json`` holds; checked on load before any tensor is trusted."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mmroute.preference.BradleyTerry"]
    format_version: int
    params: dict[str, Any]
    models: list[str]
    n_features_in: int
    temperature: float
    n_seen: dict[str, int]
    weight_seen: float
    tensors_file: str
    sha256: str




class BradleyTerry:
    """Contextual Bradley-Terry estimator (scikit-learn style; see the module docstring).

    Parameters
    ----------
    rank: size ``r`` of the shared query embedding ``h(f)``.
    head: ``"linear"`` (``h = P f``) or ``"mlp"`` (``h = W2 gelu(W1 f + c1)``).
    hidden: hidden units of the MLP head (ignored for ``"linear"``).
    l2: ridge on the per-query terms (head weights and every ``v_m``), per judgment.
    l2_global: tiny ridge on the global ratings ``b``; fixes their free common constant.
    ties: ``"half"`` (a tie is half a win for each side) or ``"drop"`` (ignore ``y == 0.5``).
    max_epochs: L-BFGS iterations (full batch) or Adam epochs (``batch_size`` set) in ``fit``.
    lr: Adam step size (only with ``batch_size``; full-batch L-BFGS uses a line search).
    batch_size: ``None`` for deterministic full-batch L-BFGS, an int for mini-batch Adam.
    tol: stop when the largest gradient entry, or the loss change of one iteration (both in
        per-judgment units), falls below it.
    seed: seeds the initialisation and mini-batch order; fits are bit-identical for a seed.
    verbose: log progress at INFO level instead of DEBUG.
    prox: multiplier on the anchor (Laplace) penalty of ``partial_fit``; 0 forgets everything.
    update_steps: L-BFGS iterations per ``partial_fit`` (kept small for low latency).
    standardize: z-score features with the statistics of the first ``fit`` (so ``l2`` means the
        same for CLIP features whose coordinates are ~0.04 as for raw statistics).
    ignore_columns: ``[start, stop)`` column ranges kept out of the query terms (an encoder block
        that held-out queries showed to be noise, e.g. a random-weight CLIP); the ratings and the
        other columns are unaffected.
    """

    def __init__(
        self,
        rank: int = 16,
        head: Literal["linear", "mlp"] = "linear",
        hidden: int = 64,
        l2: float = 1e-3,
        l2_global: float = 1e-5,
        ties: Literal["half", "drop"] = "half",
        max_epochs: int = 100,
        lr: float = 0.01,
        batch_size: int | None = None,
        tol: float = 1e-5,
        seed: int = 0,
        verbose: bool = False,
        prox: float = 1.0,
        update_steps: int = 20,
        standardize: bool = True,
        ignore_columns: tuple[tuple[int, int], ...] | list[list[int]] = (),
    ) -> None:
        self.rank = rank
        self.head = head
        self.hidden = hidden
        self.l2 = l2
        self.l2_global = l2_global
        self.ties = ties
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.tol = tol
        self.seed = seed
        self.verbose = verbose
        self.prox = prox
        self.update_steps = update_steps
        self.standardize = standardize
        self.ignore_columns = tuple((int(a), int(b)) for a, b in ignore_columns)
        self._config()  # fail early on a bad hyper-parameter
        self._fitted = False

    # ------------------------------------------------------------------ sklearn protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as a dict (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BradleyTerry:
        """Set hyper-parameters; raises ConfigError naming an unknown or invalid one."""
        valid = set(self._param_names())
        for key in params:
            if key not in valid:
                raise ConfigError(f"BradleyTerry has no parameter {key!r}; valid: {sorted(valid)}")
        old = self.get_params()
        for key, value in params.items():
            setattr(self, key, value)
        try:
            self._config()
        except ConfigError:
            for key, value in old.items():
                setattr(self, key, value)
            raise
        return self

    def _config(self) -> BradleyTerryConfig:
        try:
            return BradleyTerryConfig(**{name: getattr(self, name) for name in self._param_names()})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid BradleyTerry hyper-parameter: {problems}") from None

    def __repr__(self) -> str:
        defaults = BradleyTerryConfig().model_dump()
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        return "BradleyTerry(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    # ------------------------------------------------------------------ validation
    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError("this BradleyTerry is not fitted yet; call fit(X, pairs, y) first")

    def _validate_X(self, X: Any, *, n: int | None = None, what: str = "X") -> np.ndarray:
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
        if self._fitted and arr.shape[1] != self.n_features_in_:
            raise InvalidInputError(
                f"{what} has {arr.shape[1]} features but this model was fitted on "
                f"{self.n_features_in_}; use the same feature pipeline as at training"
            )
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise InvalidInputError(
                f"{what} contains NaN or inf (first at row {bad[0]}, column {bad[1]})"
            )
        return np.ascontiguousarray(arr)

    @staticmethod
    def _validate_pairs(pairs: Any) -> np.ndarray:
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

    def _validate_y(self, y: Any, n: int) -> np.ndarray:
        try:
            arr = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"y must be numeric (1 = a wins, 0 = b wins, 0.5 = tie): {exc}") from None
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InvalidInputError(f"y must have shape ({n},) to match pairs; got {arr.shape}")
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
            i = int(np.argmax(~np.isfinite(arr) | (arr < 0) | (arr > 1)))
            raise InvalidInputError(
                f"y[{i}] = {arr[i]!r} is outside [0, 1] (1 = a wins, 0 = b wins, 0.5 = tie)"
            )
        return arr

    @staticmethod
    def _validate_weight(sample_weight: Any, n: int) -> np.ndarray:
        if sample_weight is None:
            return np.ones(n, dtype=np.float64)
        try:
            arr = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"sample_weight must be numeric: {exc}") from None
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InvalidInputError(f"sample_weight must have shape ({n},); got {arr.shape}")
        if not np.isfinite(arr).all() or (arr < 0).any():
            i = int(np.argmax(~np.isfinite(arr) | (arr < 0)))
            raise InvalidInputError(f"sample_weight[{i}] = {arr[i]!r} must be finite and >= 0")
        return arr

    def _validate_judgments(
        self, X: Any, pairs: Any, y: Any, sample_weight: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p = self._validate_pairs(pairs)
        n = p.shape[0]
        if n == 0:
            raise InvalidInputError("no judgments given (pairs is empty)")
        yy = self._validate_y(y, n)
        w = self._validate_weight(sample_weight, n)
        XX = self._validate_X(X, n=n)
        return XX, p, yy, w

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

    def _drop_ties(
        self, X: np.ndarray, pairs: np.ndarray, y: np.ndarray, w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.ties == "drop":
            keep = y != 0.5
            X, pairs, y, w = X[keep], pairs[keep], y[keep], w[keep]
        if len(y) == 0 or w.sum() <= 0:
            raise InvalidInputError(
                "no usable judgments: every one is a dropped tie or has weight 0"
            )
        return X, pairs, y, w

    # ------------------------------------------------------------------ parameters
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

    def _param_dict(self) -> dict[str, torch.Tensor]:
        return {"b": self._b, "V": self._V, **{f"head.{k}": v for k, v in self._head.items()}}

    def _l2_of(self, name: str) -> float:
        if name == "b":
            return self._cfg.l2_global
        if name == "head.c1":
            return 0.0  # a bias does not make the score depend on the query more or less
        return self._cfg.l2

    def _embed(self, X: torch.Tensor, head: dict[str, torch.Tensor]) -> torch.Tensor:
        """``h`` of the (un-standardised) features; standardisation is folded into the first layer
        so that no standardised (n, d) copy of ``X`` is ever made."""
        W = head["P"] if "P" in head else head["W1"]
        Ws = W * self._inv_scale  # (k, d)
        out = X @ Ws.T - (Ws @ self._mean)
        if "P" in head:
            return out
        return F.gelu(out + head["c1"]) @ head["W2"].T

    @staticmethod
    def _margins(
        H: torch.Tensor, b: torch.Tensor, V: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor
    ) -> torch.Tensor:
        return b[ia] - b[ib] + (H * (V[ia] - V[ib])).sum(dim=1)

    def _penalty(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for name, t in params.items():
            lam = self._l2_of(name)
            if lam:
                total = total + lam * (t * t).sum()
        return total

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        pairs: Any,
        y: Any,
        sample_weight: Any = None,
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
        X, pairs, y, w = self._validate_judgments(X, pairs, y, sample_weight)
        X, pairs, y, w = self._drop_ties(X, pairs, y, w)
        if models is None:
            names = sorted(set(pairs[:, 0]) | set(pairs[:, 1]))
        else:
            names = [str(m) for m in models]
            if len(set(names)) != len(names):
                raise InvalidInputError(f"models contains duplicates: {names}")
        self.models_ = list(names)
        self._index = {m: i for i, m in enumerate(self.models_)}
        ia, ib = self._indices(pairs)
        n, d = X.shape
        M = len(self.models_)

        t0 = time.perf_counter()
        if self._cfg.standardize:
            std, mean = torch.std_mean(torch.from_numpy(X), dim=0, correction=0)
            std = torch.where(std < 1e-6, torch.ones_like(std), std)
        else:
            mean, std = torch.zeros(d), torch.ones(d)
        inv = 1.0 / std
        for a, b in self._cfg.ignore_columns:  # feature blocks held out of the query terms (scale 0)
            if not 0 <= a < b <= d:
                raise InvalidInputError(f"ignore_columns range [{a}, {b}) is outside the {d} feature columns")
            inv[a:b] = 0.0
        self._mean = mean.contiguous()
        self._inv_scale = inv.contiguous()
        gen = torch.Generator().manual_seed(int(self._cfg.seed))
        self._init_params(d, M, gen)
        self.n_features_in_ = d
        self.temperature_ = 1.0

        W = float(w.sum())
        params = self._param_dict()
        for t in params.values():
            t.requires_grad_(True)
        n_iter = 0
        if self._cfg.batch_size is None and n > _WARM_FACTOR * _WARM_ROWS:
            # Warm start on a seeded subsample: same per-judgment objective, 1/_WARM_FACTOR+ of the
            # cost per iteration, so the full-data L-BFGS only has to polish (~3x less time).
            sub = np.sort(torch.randperm(n, generator=gen)[:_WARM_ROWS].numpy())
            n_iter += self._optimise(X[sub], ia[sub], ib[sub], y[sub], w[sub], gen)
        n_iter += self._optimise(X, ia, ib, y, w, gen)
        seg = self._last_segments
        X, ia, ib, y, w = self._last_data
        Xt = torch.from_numpy(X)
        wt = torch.from_numpy(w.astype(np.float32))
        iat, ibt = torch.from_numpy(ia), torch.from_numpy(ib)
        self._last_segments = self._last_data = None
        for t in params.values():
            t.requires_grad_(False)
        with torch.no_grad():
            self._b -= self._b.mean()  # exact shift invariance: centre the ratings

        self.n_seen_ = {m: 0 for m in self.models_}
        counts = np.bincount(np.concatenate([ia, ib]), minlength=M)
        for m, c in zip(self.models_, counts):
            self.n_seen_[m] = int(c)
        self.weight_seen_ = W
        self._precision = {k: torch.zeros_like(v) for k, v in self._param_dict().items()}
        self._accumulate_curvature(Xt, iat, ibt, wt, gen, seg)
        self._fitted = True
        self._log(f"fit: {n} judgments, {M} models, d={d}, {n_iter} iterations, "
                  f"{time.perf_counter() - t0:.2f}s")
        return self

    def _optimise(
        self,
        X: np.ndarray,
        ia: np.ndarray,
        ib: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        gen: torch.Generator,
    ) -> int:
        """Minimise the fit objective on these judgments from the current parameters; returns
        iterations. Leaves the (possibly pair-sorted) data in ``_last_data`` for the curvature."""
        n, M = len(y), len(self.models_)
        n_pairs = len(np.unique(np.minimum(ia, ib) * M + np.maximum(ia, ib)))
        # The pair-grouped path issues one small GEMV per pair; with several OpenMP threads on a
        # busy CPU each one pays a thread barrier, which measured 5-10x slower than one big matmul.
        segmented = (
            self._cfg.head == "linear"
            and self._cfg.batch_size is None
            and torch.get_num_threads() == 1
            and n >= _MIN_SEGMENT_ROWS * n_pairs
        )
        seg: _Segments | None = None
        if segmented:
            X, ia, ib, y, w, seg = _Segments.build(X, ia, ib, y, w, M)
        Xt = torch.from_numpy(X)
        yt = torch.from_numpy(y.astype(np.float32))
        wt = torch.from_numpy(w.astype(np.float32))
        iat, ibt = torch.from_numpy(ia), torch.from_numpy(ib)
        params = self._param_dict()
        W = float(w.sum())

        def objective(idx: torch.Tensor | None = None) -> torch.Tensor:
            if idx is None:
                Xb, yb, wb, ab, bb, Wb = Xt, yt, wt, iat, ibt, W
            else:
                Xb, yb, wb, ab, bb = Xt[idx], yt[idx], wt[idx], iat[idx], ibt[idx]
                Wb = float(wb.sum()) or 1.0
            if seg is not None:
                z = seg.margins(Xt, self._b, self._V, self._head["P"], self._mean, self._inv_scale)
            else:
                H = self._embed(Xb, self._head)
                z = self._margins(H, self._b, self._V, ab, bb)
            data = F.binary_cross_entropy_with_logits(z, yb, weight=wb, reduction="sum") / Wb
            return data + self._penalty(params)

        if self._cfg.batch_size is None:
            n_iter = self._run_lbfgs(list(params.values()), objective, self._cfg.max_epochs, self._cfg.tol)
        else:
            n_iter = self._run_adam(list(params.values()), objective, n, gen)
        self._last_segments = seg
        self._last_data = (X, ia, ib, y, w)
        self._log(f"  optimise: {n} judgments, {n_iter} iterations, loss {float(objective().detach()):.6f}")
        return n_iter

    def _log(self, msg: str) -> None:
        logger.log(logging.INFO if self.verbose else logging.DEBUG, msg)

    @staticmethod
    def _run_lbfgs(params: list[torch.Tensor], objective: Any, max_iter: int, tol: float) -> int:
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=max_iter,
            max_eval=int(max_iter * 1.25) + 1,
            tolerance_grad=tol,
            # per-judgment loss units: a change below tol (1e-5 nats) per iteration is not worth
            # another pass over 100k x 512 features (held-out loss measured unchanged)
            tolerance_change=tol,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=False)
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        return int(opt.state[opt._params[0]].get("n_iter", 0))

    def _run_adam(self, params: list[torch.Tensor], objective: Any, n: int, gen: torch.Generator) -> int:
        cfg = self._cfg
        opt = torch.optim.Adam(params, lr=cfg.lr)
        bs = int(cfg.batch_size or n)
        prev = math.inf
        epoch = 0
        for epoch in range(1, cfg.max_epochs + 1):
            perm = torch.randperm(n, generator=gen)
            total, batches = 0.0, 0
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                opt.zero_grad()
                loss = objective(idx)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                batches += 1
            mean_loss = total / batches
            if abs(prev - mean_loss) < cfg.tol * max(1.0, abs(prev)):
                break
            prev = mean_loss
        return epoch

    @torch.no_grad()
    def _accumulate_curvature(
        self,
        Xt: torch.Tensor,
        iat: torch.Tensor,
        ibt: torch.Tensor,
        wt: torch.Tensor,
        gen: torch.Generator,
        seg: _Segments | None = None,
    ) -> None:
        """Add these judgments' diagonal Gauss-Newton curvature (at the current parameters) to the
        anchor precision used by ``partial_fit``. Exact for ``b``, ``V`` and a linear head; the MLP
        head's diagonal is estimated with Rademacher probes (unbiased, seeded)."""
        prec = self._precision
        if seg is not None:
            z = seg.margins(Xt, self._b, self._V, self._head["P"], self._mean, self._inv_scale)
            H = torch.cat([self._embed(Xt[s : s + _CHUNK], self._head) for s in range(0, len(Xt), _CHUNK)])
        else:
            H = self._embed(Xt, self._head)
            z = self._margins(H, self._b, self._V, iat, ibt)
        p = torch.sigmoid(z)
        c = wt * p * (1 - p)  # (n,)
        prec["b"].index_add_(0, iat, c)
        prec["b"].index_add_(0, ibt, c)
        ch = c[:, None] * H * H
        prec["V"].index_add_(0, iat, ch)
        prec["V"].index_add_(0, ibt, ch)
        dV = self._V[iat] - self._V[ibt]  # (n, r)
        if "P" in self._head:
            # z = ... + dv . (P x~), so dz/dP = dv (x) x~ and the diagonal is sum c dv^2 (x) x~^2.
            if seg is not None:
                # rows of one pair share dv: sum_k dv_k^2 (x) (sum_{i in k} c_i x~_i^2), one pass over X
                for k, (lo, hi) in enumerate(seg.bounds):
                    xs = (Xt[lo:hi] - self._mean) * self._inv_scale
                    dv = self._V[seg.a[k]] - self._V[seg.b[k]]
                    prec["head.P"] += torch.outer(dv * dv, (xs * xs).T @ c[lo:hi])
                return
            coef = c[:, None] * dV * dV
            for s in range(0, Xt.shape[0], _CHUNK):
                xs = (Xt[s : s + _CHUNK] - self._mean) * self._inv_scale
                prec["head.P"] += coef[s : s + _CHUNK].T @ (xs * xs)
            return
        head = {k: v.detach().clone().requires_grad_(True) for k, v in self._head.items()}
        sqrt_c = c.sqrt()
        with torch.enable_grad():
            for _ in range(_MLP_PROBES):
                eps = torch.randint(0, 2, c.shape, generator=gen).float() * 2 - 1
                Hp = self._embed(Xt, head)
                zp = (Hp * dV).sum(dim=1)
                grads = torch.autograd.grad((sqrt_c * eps * zp).sum(), list(head.values()))
                for k, g in zip(head, grads):
                    prec[f"head.{k}"] += g * g / _MLP_PROBES

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

    def partial_fit(self, X: Any, pairs: Any, y: Any, sample_weight: Any = None) -> BradleyTerry:
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
        X, pairs, y, w = self._validate_judgments(X, pairs, y, sample_weight)
        X, pairs, y, w = self._drop_ties(X, pairs, y, w)
        self.add_models(list(pairs[:, 0]) + list(pairs[:, 1]))
        ia, ib = self._indices(pairs)
        Xt = torch.from_numpy(X)
        yt = torch.from_numpy(y.astype(np.float32))
        wt = torch.from_numpy(w.astype(np.float32))
        iat, ibt = torch.from_numpy(ia), torch.from_numpy(ib)
        W_new = float(w.sum())
        W_old = self.weight_seen_
        W_tot = W_old + W_new
        prox = self._cfg.prox

        # Total objective = [old data + old ridge] + [new data + new ridge]. The first bracket is
        # stationary at theta_old, so its Laplace approximation is 0.5 * A (theta - theta_old)^2 with
        # A = prox * F + 2 * W_old * l2; adding the new ridge W_new * l2 * theta^2 gives one diagonal
        # quadratic 0.5 * kappa * (theta - m)^2 (+ const).
        anchors = self._param_dict()
        names = list(anchors)
        shapes = [anchors[k].shape for k in names]
        sizes = [anchors[k].numel() for k in names]
        theta_old = torch.cat([anchors[k].reshape(-1) for k in names])
        A = torch.cat(
            [(prox * self._precision[k] + 2.0 * W_old * self._l2_of(k)).reshape(-1) for k in names]
        )
        lam_new = torch.cat([torch.full((n,), 2.0 * W_new * self._l2_of(k)) for k, n in zip(names, sizes)])
        kappa = A + lam_new + 1e-4  # the floor keeps coordinates nothing constrains (l2 = 0) finite
        m = A * theta_old / kappa

        def unflat(theta: torch.Tensor) -> dict[str, torch.Tensor]:
            return {k: t.view(sh) for k, t, sh in zip(names, torch.split(theta, sizes), shapes)}

        def margins(theta: torch.Tensor) -> torch.Tensor:
            t = unflat(theta)
            head = {k[5:]: v for k, v in t.items() if k.startswith("head.")}
            return self._margins(self._embed(Xt, head), t["b"], t["V"], iat, ibt)

        def total(theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            data = F.binary_cross_entropy_with_logits(z, yt, weight=wt, reduction="sum")
            return data + 0.5 * (kappa * (theta - m) ** 2).sum()

        if len(yt) <= _GN_MAX_ROWS:
            theta = self._gauss_newton(theta_old.clone(), margins, total, yt, wt, kappa, m)
        else:
            scale = kappa.rsqrt()  # L-BFGS in variables whitened by the quadratic: well conditioned
            u = torch.zeros_like(theta_old, requires_grad=True)

            def objective() -> torch.Tensor:
                th = theta_old + u * scale
                return total(th, margins(th)) / W_new

            self._run_lbfgs([u], objective, self._cfg.update_steps, self._cfg.tol)
            theta = (theta_old + u.detach() * scale)
        new = unflat(theta.detach())
        self._b, self._V = new["b"].clone(), new["V"].clone()
        self._head = {k[5:]: v.clone() for k, v in new.items() if k.startswith("head.")}
        self.weight_seen_ = W_tot
        for a, b in pairs:
            self.n_seen_[a] += 1
            self.n_seen_[b] += 1
        gen = torch.Generator().manual_seed(int(self._cfg.seed) + int(sum(self.n_seen_.values())))
        self._accumulate_curvature(Xt, iat, ibt, wt, gen)
        return self

    update = partial_fit

    def _gauss_newton(
        self,
        theta: torch.Tensor,
        margins: Any,
        total: Any,
        yt: torch.Tensor,
        wt: torch.Tensor,
        kappa: torch.Tensor,
        m: torch.Tensor,
    ) -> torch.Tensor:
        """Damped Gauss-Newton for a few new judgments: the Hessian is diag(kappa) + J^T C J with J
        only n x p, so Woodbury solves each step with an n x n system - a handful of tiny autograd
        passes instead of dozens of L-BFGS evaluations (why one update takes milliseconds)."""
        n = len(yt)
        kinv = 1.0 / kappa
        with torch.no_grad():
            f_cur = total(theta, margins(theta))
        for _ in range(self._cfg.update_steps):
            th = theta.detach().requires_grad_(True)
            z = margins(th)
            rows = [torch.autograd.grad(z[i], th, retain_graph=i < n - 1)[0] for i in range(n)]
            J = torch.stack(rows)  # (n, p)
            with torch.no_grad():
                p = torch.sigmoid(z)
                r = wt * (p - yt)
                c = (wt * p * (1 - p)).clamp_min(1e-12).sqrt()  # C^(1/2)
                g = J.T @ r + kappa * (theta - m)
                kg = kinv * g
                Jc = c[:, None] * J  # C^(1/2) J
                S = torch.eye(n) + (Jc * kinv) @ Jc.T
                corr = kinv * (Jc.T @ torch.linalg.solve(S, Jc @ kg))
                step = -(kg - corr)
                t = 1.0
                while t > 1e-3:
                    cand = theta + t * step
                    f_new = total(cand, margins(cand))
                    if f_new <= f_cur:
                        break
                    t *= 0.5
                else:
                    break
                theta, f_prev, f_cur = cand, f_cur, f_new
                if float(f_prev - f_cur) <= self._cfg.tol * max(1.0, abs(float(f_cur))):
                    break
        return theta

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def scores(self, X: Any) -> np.ndarray:
        """Raw scores ``s_m(q)``, shape (n, M), columns in ``models_`` order.

        Only differences matter: ``P(a beats b) = sigmoid((s_a - s_b) / temperature_)``."""
        self._check_fitted()
        Xa = self._validate_X(X)
        H = self._embed(torch.from_numpy(Xa), self._head)
        return (self._b + H @ self._V.T).numpy().astype(np.float64)

    def _pair_margins(self, X: Any, pairs: Any) -> np.ndarray:
        self._check_fitted()
        p = self._validate_pairs(pairs)
        Xa = self._validate_X(X, n=p.shape[0])
        ia, ib = self._indices(p)
        with torch.no_grad():
            H = self._embed(torch.from_numpy(Xa), self._head)
            z = self._margins(H, self._b, self._V, torch.from_numpy(ia), torch.from_numpy(ib))
        return z.numpy().astype(np.float64)

    def predict_proba(self, X: Any, pairs: Any) -> np.ndarray:
        """``P(a beats b | q)`` for each row: shape (n,), temperature applied."""
        z = self._pair_margins(X, pairs) / self.temperature_
        return 1.0 / (1.0 + np.exp(-z))

    def win_matrix(self, x: Any) -> np.ndarray:
        """(M, M) matrix of ``P(row model beats column model)`` for one query; diagonal 0.5,
        ``W + W.T == 1``."""
        arr = np.asarray(x, dtype=np.float32) if not isinstance(x, np.ndarray) else x
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] != 1:
            raise InvalidInputError(f"win_matrix takes one query: shape (d,) or (1, d); got {arr.shape}")
        s = self.scores(arr)[0] / self.temperature_
        diff = s[:, None] - s[None, :]
        return 1.0 / (1.0 + np.exp(-diff))

    def expected_quality(self, X: Any) -> np.ndarray:
        """(n, M): each model's mean win probability against the *other* models for each query,
        in [0, 1] (0.5 when only one model is known). A cost-aware policy trades this off
        against price."""
        s = self.scores(X) / self.temperature_
        M = s.shape[1]
        if M == 1:
            return np.full_like(s, 0.5)
        diff = s[:, :, None] - s[:, None, :]
        P = 1.0 / (1.0 + np.exp(-diff))
        return (P.sum(axis=2) - 0.5) / (M - 1)

    @torch.no_grad()
    def score_variance(self, X: Any) -> np.ndarray:
        """Posterior variance of each raw score ``s_m(q)``, shape (n, M), before temperature.

        The posterior is the diagonal Laplace approximation ``partial_fit`` anchors to (accumulated
        curvature ``prox * F`` plus the ridge ``2 W l2``), over each model's own terms ``b_m`` and
        ``v_m`` with the shared head held at its estimate: ``var = 1/k_b + sum_k h_k(q)^2 / k_V``.
        Why: Thompson sampling (``mmroute.learning``) needs how unsure each score is *for this
        query*; a model never judged gets only the ridge's (wide) prior."""
        self._check_fitted()
        H = self._embed(torch.from_numpy(self._validate_X(X)), self._head)
        W, prox = float(self.weight_seen_), self._cfg.prox
        kb = prox * self._precision["b"] + 2.0 * W * self._l2_of("b") + 1e-4
        kV = prox * self._precision["V"] + 2.0 * W * self._l2_of("V") + 1e-4
        return ((1.0 / kb)[None, :] + (H * H) @ (1.0 / kV).T).numpy().astype(np.float64)

    # ------------------------------------------------------------------ evaluation / calibration
    def _eval_inputs(
        self, X: Any, pairs: Any, y: Any, sample_weight: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._check_fitted()
        p = self._validate_pairs(pairs)
        n = p.shape[0]
        if n == 0:
            raise InvalidInputError("no judgments given (pairs is empty)")
        yy = self._validate_y(y, n)
        w = self._validate_weight(sample_weight, n)
        z = self._pair_margins(X, p)
        if self.ties == "drop":
            keep = yy != 0.5
            z, yy, w = z[keep], yy[keep], w[keep]
        if w.sum() <= 0:
            raise InvalidInputError("no usable judgments: all weights are 0 or all are dropped ties")
        return z, yy, w

    def log_loss(self, X: Any, pairs: Any, y: Any, sample_weight: Any = None) -> float:
        """Weighted mean negative log-likelihood (nats) with the current temperature; ties count
        as half wins (or are skipped with ``ties="drop"``)."""
        z, yy, w = self._eval_inputs(X, pairs, y, sample_weight)
        return pairwise_nll(z, yy, w, self.temperature_)

    def accuracy(self, X: Any, pairs: Any, y: Any, sample_weight: Any = None) -> float:
        """Weighted share of decided judgments (``y != 0.5``) whose winner is predicted
        (``P(a beats b) > 0.5`` iff ``y > 0.5``). Ties are excluded: no prediction is right on them."""
        self._check_fitted()
        p = self._validate_pairs(pairs)
        yy = self._validate_y(y, p.shape[0])
        w = self._validate_weight(sample_weight, p.shape[0])
        z = self._pair_margins(X, p)
        keep = (yy != 0.5) & (w > 0)
        if not keep.any():
            raise InvalidInputError("accuracy needs at least one judgment that is not a tie")
        correct = (z[keep] > 0) == (yy[keep] > 0.5)
        return float(np.sum(w[keep] * correct) / np.sum(w[keep]))

    def calibrate(self, X: Any, pairs: Any, y: Any, sample_weight: Any = None) -> float:
        """Fit and store ``temperature_`` on *held-out* judgments by minimising their NLL
        (bounded 1-D golden-section search over ``log T``). ``T > 1`` softens over-confident
        scores, ``T < 1`` sharpens timid ones. Returns the temperature."""
        z, yy, w = self._eval_inputs(X, pairs, y, sample_weight)
        self.temperature_ = fit_temperature(z, yy, w)
        return self.temperature_

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` (all tensors) and ``model.json`` (hyper-parameters, model
        names, temperature, format version, sha256 of the tensor file) into ``directory``.

        The JSON is written last, so an interrupted save leaves a checksum mismatch that ``load``
        reports instead of a silently inconsistent model."""
        from safetensors.torch import save as st_save

        self._check_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {
            "mean": self._mean,
            "inv_scale": self._inv_scale,
            **{f"param.{k}": v for k, v in self._param_dict().items()},
            **{f"precision.{k}": v for k, v in self._precision.items()},
        }
        blob = st_save({k: v.detach().contiguous() for k, v in tensors.items()})
        atomic_write_bytes(out / TENSORS_FILE, blob)
        meta = _Meta(
            kind=_KIND,
            format_version=FORMAT_VERSION,
            params=self._cfg.model_dump(),
            models=list(self.models_),
            n_features_in=int(self.n_features_in_),
            temperature=float(self.temperature_),
            n_seen=dict(self.n_seen_),
            weight_seen=float(self.weight_seen_),
            tensors_file=TENSORS_FILE,
            sha256=hashlib.sha256(blob).hexdigest(),
        )
        atomic_write_bytes(out / META_FILE, meta.model_dump_json(indent=2).encode())
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> BradleyTerry:
        """Load a model written by :meth:`save`; raises CheckpointError naming the problem for a
        missing, truncated, tampered, inconsistent or newer-format checkpoint."""
        from safetensors.torch import load as st_load

        src = Path(directory)
        meta_path, tensors_path = src / META_FILE, src / TENSORS_FILE
        for path in (meta_path, tensors_path):
            if not path.is_file():
                raise CheckpointError(f"{path}: missing; not a saved BradleyTerry directory")
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{meta_path}: not valid JSON (truncated or corrupted?): {exc}") from None
        if isinstance(raw, dict) and isinstance(raw.get("format_version"), int):
            if raw["format_version"] > FORMAT_VERSION:
                raise CheckpointError(
                    f"{meta_path}: format_version {raw['format_version']} is newer than this mmroute "
                    f"supports ({FORMAT_VERSION}); upgrade mmroute to load it"
                )
        try:
            meta = _Meta.model_validate(raw)
        except ValidationError as exc:
            raise CheckpointError(f"{meta_path}: unexpected content: {exc.errors()[0]['msg']} "
                                  f"at {exc.errors()[0]['loc']}") from None
        blob = tensors_path.read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        if digest != meta.sha256:
            raise CheckpointError(
                f"{tensors_path}: sha256 {digest[:12]}... does not match {meta.sha256[:12]}... "
                f"recorded in {META_FILE}; the file is truncated, tampered with, or from another save"
            )
        try:
            tensors = st_load(blob)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{tensors_path}: unreadable safetensors file: {exc}") from None
        try:
            model = cls(**meta.params)
        except ConfigError as exc:
            raise CheckpointError(f"{meta_path}: invalid hyper-parameters: {exc}") from None
        model._cfg = model._config()
        try:
            model._restore(meta, tensors)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{tensors_path}: inconsistent with {META_FILE}: {exc}") from None
        return model

    def _restore(self, meta: _Meta, tensors: dict[str, torch.Tensor]) -> None:
        M, d, cfg = len(meta.models), meta.n_features_in, self._cfg
        head_shapes = (
            {"P": (cfg.rank, d)}
            if cfg.head == "linear"
            else {"W1": (cfg.hidden, d), "c1": (cfg.hidden,), "W2": (cfg.rank, cfg.hidden)}
        )
        expected = {"b": (M,), "V": (M, cfg.rank), **{f"head.{k}": s for k, s in head_shapes.items()}}
        want = {"mean": (d,), "inv_scale": (d,)}
        for k, s in expected.items():
            want[f"param.{k}"] = s
            want[f"precision.{k}"] = s
        if set(tensors) != set(want):
            raise ValueError(f"tensor names {sorted(tensors)} != expected {sorted(want)}")
        for k, s in want.items():
            if tuple(tensors[k].shape) != s or tensors[k].dtype != torch.float32:
                raise ValueError(f"tensor {k!r} has shape {tuple(tensors[k].shape)} "
                                 f"{tensors[k].dtype}, expected {s} float32")
        if len(set(meta.models)) != M or set(meta.n_seen) != set(meta.models):
            raise ValueError("models / n_seen lists disagree or contain duplicates")
        self._mean, self._inv_scale = tensors["mean"], tensors["inv_scale"]
        self._b, self._V = tensors["param.b"], tensors["param.V"]
        self._head = {k: tensors[f"param.head.{k}"] for k in head_shapes}
        self._precision = {k: tensors[f"precision.{k}"] for k in expected}
        self.models_ = list(meta.models)
        self._index = {m: i for i, m in enumerate(self.models_)}
        self.n_features_in_ = d
        self.temperature_ = meta.temperature
        self.n_seen_ = dict(meta.n_seen)
        self.weight_seen_ = meta.weight_seen
        self._fitted = True
