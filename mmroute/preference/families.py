"""Router families: different ways of turning query features into each model's expected quality.

The Bradley-Terry low-rank model is one estimator among several; which one routes best depends
on the data (how many queries, whether outcomes are pointwise, how informative the features
are), so :mod:`mmroute.preference.family_selection` lets held-out queries choose. Every family
has the same small interface: ``fit(data)``, ``expected_quality(X) -> (n, M)``, ``save(dir)`` and
``load(dir)`` (safetensors + JSON, nothing unpickled), plus ``models_`` (column order).

Families here:

* ``bt`` -- :class:`BradleyTerry` on the pairwise judgments (mean win probability).
* ``global`` -- the same model without query features: per-model ratings only.
* ``mean`` -- each model's mean pointwise score (at lambda = 0: the model most often right).
* ``ridge`` -- per-model ridge regression of the pointwise score on z-scored features, centred
  on the model's mean: the query terms shrink toward the global rating, more so for a model
  with little evidence (the ridge strength is per row, the data term grows with the rows).
* ``knn`` -- each model's mean score among the k nearest training queries (cosine), shrunk
  toward the model's mean by ``kappa`` pseudo-queries.

Pointwise scores come with the data (``RoutingData.scores``: correctness, a judge score, a win
share against an anchor) or are derived from the judgments (:func:`win_share_scores`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from ..checkpoint import atomic_write_bytes
from ..errors import CheckpointError, InvalidInputError
from .bradley_terry import BradleyTerry

FAMILY_FILE = "family.json"
FAMILY_TENSORS = "family.safetensors"
FAMILY_FORMAT = 1


@dataclass
class RoutingData:
    """Training data of one fit: unique query features, judgments over their rows, optional
    pointwise scores (``NaN`` = not observed)."""

    X: np.ndarray                    # (n, d) float32, one row per unique query
    qi: np.ndarray                   # (J,) row of each judgment's query
    ia: np.ndarray                   # (J,) model a (column index)
    ib: np.ndarray                   # (J,) model b
    y: np.ndarray                    # (J,) 1 a wins, 0 b wins, 0.5 tie
    w: np.ndarray                    # (J,) weight
    models: list[str]
    scores: np.ndarray | None = None  # (n, M) pointwise quality; None: derive from judgments

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float32)
        self.qi, self.ia, self.ib = (np.asarray(a, dtype=np.int64) for a in (self.qi, self.ia, self.ib))
        self.y, self.w = np.asarray(self.y, dtype=np.float64), np.asarray(self.w, dtype=np.float64)
        J, n, M = len(self.qi), len(self.X), len(self.models)
        if self.X.ndim != 2:
            raise InvalidInputError(f"RoutingData.X must be 2-D (queries x features), got shape {self.X.shape}")
        if not all(len(a) == J for a in (self.ia, self.ib, self.y, self.w)):
            raise InvalidInputError("RoutingData judgment arrays qi, ia, ib, y, w must have the same length")
        if J and (self.qi.min() < 0 or self.qi.max() >= n):
            raise InvalidInputError(f"RoutingData.qi has a row outside [0, {n})")
        if J and (min(self.ia.min(), self.ib.min()) < 0 or max(self.ia.max(), self.ib.max()) >= M):
            raise InvalidInputError(f"RoutingData model index outside [0, {M})")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64)
            if self.scores.shape != (n, M):
                raise InvalidInputError(f"RoutingData.scores must have shape {(n, M)}, got {self.scores.shape}")

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def pointwise(self) -> np.ndarray:
        """The pointwise scores: given ones, else each model's win share on each query."""
        return self.scores if self.scores is not None else win_share_scores(self)

    def subset(self, rows: np.ndarray) -> "RoutingData":
        """The queries ``rows`` (indices) and their judgments, renumbered."""
        rows = np.asarray(rows, dtype=np.int64)
        new = np.full(self.n, -1, dtype=np.int64)
        new[rows] = np.arange(len(rows))
        keep = new[self.qi] >= 0
        scores = None if self.scores is None else self.scores[rows]
        return RoutingData(self.X[rows], new[self.qi[keep]], self.ia[keep], self.ib[keep], self.y[keep],
                           self.w[keep], list(self.models), scores)


def win_share_scores(data: RoutingData) -> np.ndarray:
    """(n, M): a model's weighted share of won judgments on each query (tie = half), NaN where it
    was not judged. Against a single anchor this is the anchor-score of the evaluation harness."""
    n, M = data.n, data.n_models
    won = np.zeros((n, M))
    games = np.zeros((n, M))
    np.add.at(won, (data.qi, data.ia), data.w * data.y)
    np.add.at(won, (data.qi, data.ib), data.w * (1.0 - data.y))
    np.add.at(games, (data.qi, data.ia), data.w)
    np.add.at(games, (data.qi, data.ib), data.w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, won / np.where(games > 0, games, 1.0), np.nan)


class Family(Protocol):
    """What a router family promises (see the module docstring)."""

    kind: ClassVar[str]
    models_: list[str]

    def fit(self, data: RoutingData) -> "Family": ...

    def expected_quality(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, directory: str | os.PathLike[str]) -> Path: ...

    def describe(self) -> dict[str, Any]: ...

    def clone(self) -> "Family": ...

    def scores(self, X: np.ndarray) -> np.ndarray: ...

    def add_models(self, names: Sequence[str]) -> "Family": ...


# ----------------------------------------------------------------------------- persistence helpers
def _write(directory: str | os.PathLike[str], kind: str, params: dict[str, Any], models: list[str],
           tensors: dict[str, np.ndarray]) -> Path:
    """Tensors first, JSON (with the tensors' sha256) last: an interrupted save fails ``load``."""
    from safetensors.numpy import save as st_save

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}) if tensors else b""
    atomic_write_bytes(out / FAMILY_TENSORS, blob)
    meta = {"kind": kind, "format_version": FAMILY_FORMAT, "params": params, "models": models,
            "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_bytes(out / FAMILY_FILE, json.dumps(meta, indent=2).encode())
    return out


def _read(directory: str | os.PathLike[str], kind: str) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    src = Path(directory)
    meta_path, tensors_path = src / FAMILY_FILE, src / FAMILY_TENSORS
    for path in (meta_path, tensors_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; not a saved router family directory")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise CheckpointError(f"{meta_path}: holds family {meta.get('kind') if isinstance(meta, dict) else meta!r}, "
                              f"expected {kind!r}")
    if int(meta.get("format_version", 0)) > FAMILY_FORMAT:
        raise CheckpointError(f"{meta_path}: family format {meta['format_version']} is newer than this mmroute "
                              f"reads ({FAMILY_FORMAT}); upgrade mmroute")
    blob = tensors_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"{tensors_path}: checksum mismatch (truncated or modified after saving)")
    try:
        tensors = st_load(blob) if blob else {}
    except SafetensorError as exc:
        raise CheckpointError(f"{tensors_path}: cannot be read: {exc}") from None
    return dict(meta.get("params", {})), [str(m) for m in meta.get("models", [])], tensors


def _standardizer(X: np.ndarray, ignore: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and inverse scale; constant and ignored columns get scale 0 (left out)."""
    mean = X.mean(axis=0).astype(np.float64)
    sd = X.std(axis=0).astype(np.float64)
    inv = np.where(sd > 1e-6, 1.0 / np.maximum(sd, 1e-12), 0.0)
    for a, b in ignore:
        inv[a:b] = 0.0
    return mean, inv


# ------------------------------------------------------------------------------------ BT families
class BTFamily:
    """Bradley-Terry on the pairwise judgments; ``params`` go to :class:`BradleyTerry` (``rank``,
    ``l2``, ``ignore_columns``...). Without ``rank``/``l2`` they are chosen by held-out log-loss
    (:func:`mmroute.preference.selection.select_params`) and kept in ``selected``."""

    kind: ClassVar[str] = "bt"

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), grid: Sequence[dict[str, Any]] | None = None,
                 **params: Any) -> None:
        self.params = {k: v for k, v in params.items() if v is not None}
        self.blocks = [(int(b[0]), int(b[1])) for b in blocks]
        self.grid = grid
        self.selected: dict[str, Any] | None = None
        self.models_: list[str] = []

    def _arrays(self, data: RoutingData) -> tuple[np.ndarray, np.ndarray]:
        arr = np.array(data.models, dtype=object)
        return data.X[data.qi], np.stack([arr[data.ia], arr[data.ib]], axis=1)

    def fit(self, data: RoutingData) -> "BTFamily":
        from .fitting import fit_bradley_terry

        if not len(data.qi):
            raise InvalidInputError("bt family: no judgments to fit")
        Xj, pairs = self._arrays(data)
        fit = fit_bradley_terry(Xj, pairs, data.y, data.w, groups=data.qi.tolist(), models=data.models,
                                params=self.params, grid=self.grid, blocks=self.blocks,
                                seed=int(self.params.get("seed", 0)))
        if fit.selection is not None:
            self.selected = fit.params
            self.params = dict(fit.params)  # a refit (e.g. inside the family selection) reuses the choice
        self.model = fit.model
        self.models_ = list(data.models)
        return self

    def expected_quality(self, X: np.ndarray) -> np.ndarray:
        return self.model.expected_quality(np.asarray(X, dtype=np.float32))

    pointwise: ClassVar[bool] = False

    @property
    def temperature_(self) -> float:
        return float(getattr(self.model, "temperature_", 1.0) or 1.0)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Bradley-Terry scores (what :class:`mmroute.router.Router` turns into win matrices)."""
        return self.model.scores(X)

    def add_models(self, names: Sequence[str]) -> "BTFamily":
        self.model.add_models(names)
        self.models_ = list(self.model.models_)
        return self

    def clone(self) -> "BTFamily":
        """An unfitted copy with the parameters chosen so far (a refit skips the selection)."""
        return BTFamily(blocks=self.blocks, grid=self.grid, **self.params)

    def describe(self) -> dict[str, Any]:
        keep = ("rank", "l2", "ignore_columns")
        return {"family": self.kind, **{k: v for k, v in self.params.items() if k in keep}}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        out = _write(directory, self.kind, {"params": _jsonable(self.params)}, self.models_, {})
        self.model.save(Path(out) / "bt")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "BTFamily":
        params, models, _ = _read(directory, cls.kind)
        fam = cls(**params.get("params", {}))
        fam.model = BradleyTerry.load(Path(directory) / "bt")
        fam.models_ = models
        return fam


class GlobalFamily(BTFamily):
    """Bradley-Terry on one constant feature: per-model ratings, the same for every query."""

    kind: ClassVar[str] = "global"

    def __init__(self, **params: Any) -> None:
        super().__init__(**{k: v for k, v in params.items() if k in ("seed", "l2_global")})
        self.params["rank"] = 1
        self.params.setdefault("l2", 1e-3)

    def fit(self, data: RoutingData) -> "GlobalFamily":
        if not len(data.qi):
            raise InvalidInputError("global family: no judgments to fit")
        # identical rows: aggregate (a, b, y) with summed weights so the fit is over a handful of rows
        key = np.stack([data.ia, data.ib, np.round(data.y * 1e6)], axis=1)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        w = np.bincount(inv.ravel(), weights=data.w, minlength=len(uniq))
        arr = np.array(data.models, dtype=object)
        pairs = np.stack([arr[uniq[:, 0].astype(int)], arr[uniq[:, 1].astype(int)]], axis=1)
        X1 = np.ones((len(uniq), 1), dtype=np.float32)
        self.model = BradleyTerry(**self.params).fit(X1, pairs, uniq[:, 2] / 1e6, sample_weight=w / w.mean(),
                                                     models=data.models)
        self.models_ = list(data.models)
        return self

    def expected_quality(self, X: np.ndarray) -> np.ndarray:
        q = self.model.expected_quality(np.ones((1, 1), dtype=np.float32))
        return np.repeat(q, len(X), axis=0)

    def scores(self, X: np.ndarray) -> np.ndarray:
        return np.repeat(self.model.scores(np.ones((1, 1), dtype=np.float32)), len(X), axis=0)

    def clone(self) -> "GlobalFamily":
        return GlobalFamily(**{k: v for k, v in self.params.items() if k in ("seed", "l2_global")})

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind}


# ----------------------------------------------------------------------------- pointwise families
class _Pointwise:
    """What the pointwise families share for serving: their expected quality *is* the quality
    (the router uses it directly), ``scores`` are its logits (for win matrices and escalation
    order), and a pool model the family never saw gets a neutral 0.5."""

    pointwise: ClassVar[bool] = True
    temperature_: float = 1.0
    models_: list[str]
    mu_: np.ndarray

    def scores(self, X: np.ndarray) -> np.ndarray:
        q = np.clip(self.expected_quality(X), 1e-4, 1 - 1e-4)  # type: ignore[attr-defined]
        return np.log(q) - np.log1p(-q)

    def add_models(self, names: Sequence[str]) -> Self:
        new = [n for n in names if n not in self.models_]
        if new:
            self._extend(len(new))
            self.models_ = self.models_ + new
        return self

    def _extend(self, k: int) -> None:
        self.mu_ = np.concatenate([self.mu_, np.full(k, 0.5)])


class MeanFamily(_Pointwise):
    """Each model's mean pointwise score, the same for every query (the pointwise leaderboard)."""

    kind: ClassVar[str] = "mean"

    def __init__(self) -> None:
        self.models_: list[str] = []

    def fit(self, data: RoutingData) -> "MeanFamily":
        S = data.pointwise()
        mu = _nanmean0(S)
        self.mu_ = mu
        self.models_ = list(data.models)
        return self

    def expected_quality(self, X: np.ndarray) -> np.ndarray:
        return np.repeat(self.mu_[None, :], len(X), axis=0)

    def clone(self) -> "MeanFamily":
        return MeanFamily()

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return _write(directory, self.kind, {}, self.models_, {"mu": self.mu_})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "MeanFamily":
        _, models, t = _read(directory, cls.kind)
        fam = cls()
        fam.mu_, fam.models_ = t["mu"].astype(np.float64), models
        return fam


def _nanmean0(S: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; 0.5 for a column with no value at all."""
    seen = ~np.isnan(S)
    cnt = seen.sum(axis=0)
    tot = np.where(seen, S, 0.0).sum(axis=0)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.5)


class RidgeFamily(_Pointwise):
    """Per-model ridge regression of the pointwise score on z-scored features, centred on the
    model's mean score. ``alpha`` is the ridge per training row of that model, so a model judged
    on few queries keeps close to its global mean and one with many may move further."""

    kind: ClassVar[str] = "ridge"

    def __init__(self, alpha: float = 1.0, ignore_columns: Sequence[tuple[int, int]] = ()) -> None:
        if not alpha > 0:
            raise InvalidInputError(f"ridge family: alpha must be positive, got {alpha}")
        self.alpha = float(alpha)
        self.ignore_columns = [(int(b[0]), int(b[1])) for b in ignore_columns]
        self.models_: list[str] = []

    def fit(self, data: RoutingData) -> "RidgeFamily":
        S = data.pointwise()
        X = data.X.astype(np.float64)
        self.mean_, self.inv_ = _standardizer(data.X, self.ignore_columns)
        used = self.inv_ > 0
        Z = (X[:, used] - self.mean_[used]) * self.inv_[used]
        self.mu_ = _nanmean0(S)
        M, d = S.shape[1], int(used.sum())
        W = np.zeros((M, d))
        seen = ~np.isnan(S)
        # models observed on the same rows share one eigendecomposition of Z^T Z
        by_mask: dict[bytes, list[int]] = {}
        for m in range(M):
            by_mask.setdefault(np.packbits(seen[:, m]).tobytes(), []).append(m)
        for cols in by_mask.values():
            rows = seen[:, cols[0]]
            nr = int(rows.sum())
            if nr < 2 or d == 0:
                continue
            Zr = Z[rows]
            evals, evecs = np.linalg.eigh(Zr.T @ Zr)
            T = S[rows][:, cols] - self.mu_[cols][None, :]
            proj = evecs.T @ (Zr.T @ T)
            W[cols] = (evecs @ (proj / (np.maximum(evals, 0.0) + self.alpha * nr)[:, None])).T
        self.W_ = W
        self.models_ = list(data.models)
        return self

    def expected_quality(self, X: np.ndarray) -> np.ndarray:
        used = self.inv_ > 0
        Z = (np.asarray(X, dtype=np.float64)[:, used] - self.mean_[used]) * self.inv_[used]
        return self.mu_[None, :] + Z @ self.W_.T

    def _extend(self, k: int) -> None:
        super()._extend(k)
        self.W_ = np.concatenate([self.W_, np.zeros((k, self.W_.shape[1]))])

    def clone(self) -> "RidgeFamily":
        return RidgeFamily(self.alpha, self.ignore_columns)

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind, "alpha": self.alpha, "ignore_columns": [list(b) for b in self.ignore_columns]}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return _write(directory, self.kind, {"alpha": self.alpha, "ignore_columns": [list(b) for b in self.ignore_columns]},
                      self.models_, {"mean": self.mean_, "inv": self.inv_, "mu": self.mu_, "W": self.W_})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "RidgeFamily":
        p, models, t = _read(directory, cls.kind)
        fam = cls(alpha=float(p["alpha"]), ignore_columns=[(int(a), int(b)) for a, b in p.get("ignore_columns", [])])
        fam.mean_, fam.inv_, fam.mu_, fam.W_ = (t[k].astype(np.float64) for k in ("mean", "inv", "mu", "W"))
        fam.models_ = models
        return fam


class KNNFamily(_Pointwise):
    """Each model's mean score among the ``k`` nearest training queries (cosine on z-scored
    features), shrunk toward its global mean by ``kappa`` pseudo-queries."""

    kind: ClassVar[str] = "knn"

    def __init__(self, k: int = 20, kappa: float = 10.0, ignore_columns: Sequence[tuple[int, int]] = (),
                 chunk: int = 2048) -> None:
        if int(k) < 1 or kappa < 0:
            raise InvalidInputError(f"knn family: need k >= 1 and kappa >= 0, got k={k}, kappa={kappa}")
        self.k, self.kappa, self.chunk = int(k), float(kappa), int(chunk)
        self.ignore_columns = [(int(b[0]), int(b[1])) for b in ignore_columns]
        self.models_: list[str] = []

    def _unit(self, X: np.ndarray) -> np.ndarray:
        Z = ((np.asarray(X, dtype=np.float64) - self.mean_) * self.inv_).astype(np.float32)
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def fit(self, data: RoutingData) -> "KNNFamily":
        S = data.pointwise()
        self.mean_, self.inv_ = _standardizer(data.X, self.ignore_columns)
        self.mu_ = _nanmean0(S)
        self.U_ = self._unit(data.X)
        self.S_ = np.nan_to_num(S, nan=0.0).astype(np.float32)
        self.seen_ = (~np.isnan(S)).astype(np.float32)
        self.models_ = list(data.models)
        return self

    def expected_quality(self, X: np.ndarray) -> np.ndarray:
        U = self._unit(X)
        k = min(self.k, len(self.U_))
        out = np.empty((len(U), len(self.mu_)))
        for s in range(0, len(U), self.chunk):
            sim = U[s:s + self.chunk] @ self.U_.T
            nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            tot = self.S_[nn].sum(axis=1)
            cnt = self.seen_[nn].sum(axis=1)
            out[s:s + self.chunk] = (tot + self.kappa * self.mu_) / (cnt + self.kappa + 1e-12)
        return out

    def _extend(self, k: int) -> None:
        super()._extend(k)
        pad = np.zeros((len(self.S_), k), dtype=np.float32)
        self.S_, self.seen_ = np.concatenate([self.S_, pad], axis=1), np.concatenate([self.seen_, pad], axis=1)

    def clone(self) -> "KNNFamily":
        return KNNFamily(self.k, self.kappa, self.ignore_columns, self.chunk)

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind, "k": self.k, "kappa": self.kappa,
                "ignore_columns": [list(b) for b in self.ignore_columns]}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return _write(directory, self.kind, {"k": self.k, "kappa": self.kappa,
                                             "ignore_columns": [list(b) for b in self.ignore_columns]},
                      self.models_, {"mean": self.mean_, "inv": self.inv_, "mu": self.mu_, "U": self.U_,
                                     "S": self.S_, "seen": self.seen_})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "KNNFamily":
        p, models, t = _read(directory, cls.kind)
        fam = cls(k=int(p["k"]), kappa=float(p["kappa"]), ignore_columns=[(int(a), int(b)) for a, b in p.get("ignore_columns", [])])
        fam.mean_, fam.inv_, fam.mu_ = (t[k].astype(np.float64) for k in ("mean", "inv", "mu"))
        fam.U_, fam.S_, fam.seen_ = t["U"], t["S"], t["seen"]
        fam.models_ = models
        return fam


class BlendFamily(_Pointwise):
    """The mean of several fitted pointwise families' expected quality (stacking with equal
    weights: on a few hundred queries averaging the best heads is steadier than picking one)."""

    kind: ClassVar[str] = "blend"

    def __init__(self, members: Sequence[Family]) -> None:
        if not members or not all(getattr(m, "pointwise", False) for m in members):
            raise InvalidInputError("blend family: needs one or more pointwise families")
        self.members = list(members)
        self.models_ = list(self.members[0].models_)
        self.mu_ = np.zeros(len(self.models_))

    def fit(self, data: RoutingData) -> "BlendFamily":
        self.members = [m.fit(data) for m in self.members]
        self.models_ = list(data.models)
        return self

    def expected_quality(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.expected_quality(X) for m in self.members], axis=0)

    def add_models(self, names: Sequence[str]) -> "BlendFamily":
        for m in self.members:
            m.add_models(names)
        self.models_ = list(self.members[0].models_)
        return self

    def clone(self) -> "BlendFamily":
        return BlendFamily([m.clone() for m in self.members])

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind, "members": [m.describe() for m in self.members]}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        out = _write(directory, self.kind, {"n_members": len(self.members)}, self.models_, {})
        for i, m in enumerate(self.members):
            m.save(Path(out) / f"member{i}")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "BlendFamily":
        p, models, _ = _read(directory, cls.kind)
        fam = cls([load_family(Path(directory) / f"member{i}") for i in range(int(p["n_members"]))])
        fam.models_ = models
        return fam


FAMILIES: dict[str, Any] = {c.kind: c for c in (BTFamily, GlobalFamily, MeanFamily, RidgeFamily, KNNFamily,
                                                 BlendFamily)}


def load_family(directory: str | os.PathLike[str]) -> Family:
    """Load any saved family (its ``family.json`` names the kind)."""
    path = Path(directory) / FAMILY_FILE
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot read the router family: {exc}") from None
    cls = FAMILIES.get(kind)
    if cls is None:
        raise CheckpointError(f"{path}: unknown router family {kind!r} (known: {', '.join(FAMILIES)})")
    return cls.load(directory)


def load_preference(directory: str | os.PathLike[str]) -> "Family | BradleyTerry":
    """A router's saved preference model: a family (``family.json``) or a plain :class:`BradleyTerry`."""
    if (Path(directory) / FAMILY_FILE).is_file():
        return load_family(directory)
    return BradleyTerry.load(directory)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    if "ignore_columns" in out:
        out["ignore_columns"] = [list(b) for b in out["ignore_columns"]]
    return out
