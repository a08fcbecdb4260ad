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

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import CheckpointError, InvalidInputError
from .bradley_terry import BradleyTerry
from .family_base import (FAMILY_FILE, FAMILY_TENSORS, Family, RoutingData, _jsonable, _read,
                          _write, win_share_scores)
from .pointwise import BlendFamily, KNNFamily, MeanFamily, RidgeFamily


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

    def __init__(self, bt_options: Mapping[str, Any] | None = None, **params: Any) -> None:
        """``params``: only ``seed`` and ``l2_global`` are kept (nothing to select). ``bt_options``
        go to :class:`BradleyTerry` as given (``l2``, ``max_epochs``...; ``None`` values dropped):
        the eval harness's ``global`` baseline passes its ``--l2`` this way. ``rank`` is always 1."""
        super().__init__(**{k: v for k, v in params.items() if k in ("seed", "l2_global")})
        self.params.update({k: v for k, v in (bt_options or {}).items() if v is not None})
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
        return GlobalFamily(bt_options=self.params)

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind}


# ----------------------------------------------------------------------------- pointwise families


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


__all__ = ["FAMILIES", "FAMILY_FILE", "FAMILY_TENSORS", "BTFamily", "BlendFamily", "Family", "GlobalFamily", "KNNFamily",
           "MeanFamily", "RidgeFamily", "RoutingData", "load_family", "load_preference", "win_share_scores"]
