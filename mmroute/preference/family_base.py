"""What every router family shares: the training data of one fit (:class:`RoutingData`), the
family interface (:class:`Family`), pointwise scores derived from judgments, and the safetensors +
JSON files a family saves (nothing unpickled). The families are in :mod:`.families` (Bradley-Terry
based) and :mod:`.pointwise` (pointwise scores)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from ..checkpoint import atomic_write_bytes
from ..errors import CheckpointError, InvalidInputError

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


def judgment_tallies(data: RoutingData) -> tuple[np.ndarray, np.ndarray]:
    """(n, M) each: a model's won weight on each query (tie = half a win) and its judged weight."""
    n, M = data.n, data.n_models
    won = np.zeros((n, M))
    games = np.zeros((n, M))
    np.add.at(won, (data.qi, data.ia), data.w * data.y)
    np.add.at(won, (data.qi, data.ib), data.w * (1.0 - data.y))
    np.add.at(games, (data.qi, data.ia), data.w)
    np.add.at(games, (data.qi, data.ib), data.w)
    return won, games


def win_share_scores(data: RoutingData) -> np.ndarray:
    """(n, M): a model's weighted share of won judgments on each query (tie = half), NaN where it
    was not judged. Against a single anchor this is the anchor-score of the evaluation harness."""
    won, games = judgment_tallies(data)
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


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    if "ignore_columns" in out:
        out["ignore_columns"] = [list(b) for b in out["ignore_columns"]]
    return out
