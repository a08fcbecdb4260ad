"""Pointwise router families: each model's expected quality regressed on the query (mean,
ridge, k nearest neighbours, a blend), from pointwise scores that come with the data or are derived
from the judgments (:func:`~mmroute.preference.family_base.win_share_scores`)."""

from __future__ import annotations

import json

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from ..errors import CheckpointError, InvalidInputError

from .family_base import FAMILY_FILE, Family, RoutingData, _read, _standardizer, _write, judgment_tallies


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
    features), shrunk toward its global mean by ``kappa`` pseudo-queries.

    Two switches give the eval harness's ``knn`` baseline (the vote of RouteLLM-style kNN routers)
    from the same code: ``standardize=False`` measures cosine on the raw features, and
    ``evidence_weighted=True`` pools the neighbours' judgments (a model's won weight over its judged
    weight among them) instead of averaging per-query shares, so a query judged ten times counts ten
    times. A model with no evidence among the neighbours and ``kappa = 0`` gets a neutral 0.5."""

    kind: ClassVar[str] = "knn"

    def __init__(self, k: int = 20, kappa: float = 10.0, ignore_columns: Sequence[tuple[int, int]] = (),
                 chunk: int = 2048, standardize: bool = True, evidence_weighted: bool = False) -> None:
        if int(k) < 1 or kappa < 0:
            raise InvalidInputError(f"knn family: need k >= 1 and kappa >= 0, got k={k}, kappa={kappa}")
        self.k, self.kappa, self.chunk = int(k), float(kappa), int(chunk)
        self.ignore_columns = [(int(b[0]), int(b[1])) for b in ignore_columns]
        self.standardize, self.evidence_weighted = bool(standardize), bool(evidence_weighted)
        self.models_: list[str] = []

    def _unit(self, X: np.ndarray) -> np.ndarray:
        Z = ((np.asarray(X, dtype=np.float64) - self.mean_) * self.inv_).astype(np.float32)
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)

    def fit(self, data: RoutingData) -> "KNNFamily":
        if not data.n:
            raise InvalidInputError("knn family: no training query")
        S = data.pointwise()
        if self.standardize:
            self.mean_, self.inv_ = _standardizer(data.X, self.ignore_columns)
        else:
            self.mean_, self.inv_ = np.zeros(data.X.shape[1]), np.ones(data.X.shape[1])
            for a, b in self.ignore_columns:
                self.inv_[a:b] = 0.0
        self.mu_ = _nanmean0(S)
        self.U_ = self._unit(data.X)
        if self.evidence_weighted:
            if data.scores is not None:
                raise InvalidInputError("knn family: evidence_weighted pools judgments; it takes no pointwise scores")
            won, games = judgment_tallies(data)
            self.S_, self.seen_ = won, games  # float64: the pooled ratio of many small weights
        else:
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
            den = self.seen_[nn].sum(axis=1) + self.kappa
            out[s:s + self.chunk] = np.where(den > 0, (tot + self.kappa * self.mu_) / (den + 1e-12), 0.5)
        return out

    def _extend(self, k: int) -> None:
        super()._extend(k)
        pad = np.zeros((len(self.S_), k), dtype=np.float32)
        self.S_, self.seen_ = np.concatenate([self.S_, pad], axis=1), np.concatenate([self.seen_, pad], axis=1)

    def clone(self) -> "KNNFamily":
        return KNNFamily(self.k, self.kappa, self.ignore_columns, self.chunk, self.standardize, self.evidence_weighted)

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind, "k": self.k, "kappa": self.kappa,
                "ignore_columns": [list(b) for b in self.ignore_columns], **self._switches()}

    def _switches(self) -> dict[str, bool]:
        """The non-default switches (absent from files written before they existed)."""
        return {k: v for k, v in (("standardize", self.standardize), ("evidence_weighted", self.evidence_weighted))
                if v != (k == "standardize")}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return _write(directory, self.kind, {"k": self.k, "kappa": self.kappa,
                                             "ignore_columns": [list(b) for b in self.ignore_columns],
                                             **self._switches()},
                      self.models_, {"mean": self.mean_, "inv": self.inv_, "mu": self.mu_, "U": self.U_,
                                     "S": self.S_, "seen": self.seen_})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "KNNFamily":
        p, models, t = _read(directory, cls.kind)
        fam = cls(k=int(p["k"]), kappa=float(p["kappa"]), ignore_columns=[(int(a), int(b)) for a, b in p.get("ignore_columns", [])],
                  standardize=bool(p.get("standardize", True)), evidence_weighted=bool(p.get("evidence_weighted", False)))
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
        fam = cls([_load_member(Path(directory) / f"member{i}") for i in range(int(p["n_members"]))])
        fam.models_ = models
        return fam


def _load_member(directory: Path) -> Family:
    """A blend member: one of the pointwise families above (a blend holds nothing else)."""
    path = directory / FAMILY_FILE
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot read the blend member: {exc}") from None
    cls = {c.kind: c for c in (MeanFamily, RidgeFamily, KNNFamily, BlendFamily)}.get(kind)
    if cls is None:
        raise CheckpointError(f"{path}: a blend member must be a pointwise family, got {kind!r}")
    return cls.load(directory)
