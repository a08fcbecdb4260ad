"""Training a router from judgments, and retraining it from the feedback store safely.

Retraining is gated: the candidate is scored against the router in service on a held-out
slice of the new judgments and replaces it only if it is not worse; old versions stay on disk.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInputError
from .preference.selection import holdout_mask
from .images import DEFAULT_POLICY, ImagePolicy
from .pool import ModelPool
from .query import Query
from .router import Router

if TYPE_CHECKING:
    from .data.formats import Judgment
    from .data.store import FeedbackStore
    from .features import EmbeddingCache, FeaturePipeline
    from .preference import BradleyTerry


@dataclass
class EncodedJudgments:
    """Judgments as the preference model wants them (features gathered per judgment, model names);
    queries encoded once each. The evaluation harness uses index-only :class:`mmroute.eval.JudgmentArrays`."""

    X: np.ndarray            # (n, d) features per judgment (rows of Xq gathered)
    pairs: np.ndarray        # (n, 2) model names
    y: np.ndarray            # (n,) 1 / 0 / 0.5
    weight: np.ndarray       # (n,)
    query_index: np.ndarray  # (n,) row of the unique query
    Xq: np.ndarray           # (u, d) features of unique queries
    ids: list[str] = field(default_factory=list)

    def subset(self, mask: np.ndarray) -> "EncodedJudgments":
        return EncodedJudgments(self.X[mask], self.pairs[mask], self.y[mask], self.weight[mask],
                                self.query_index[mask], self.Xq, [i for i, k in zip(self.ids, mask) if k])

    def __len__(self) -> int:
        return len(self.y)


def encode_judgments(judgments: Sequence["Judgment"], pipeline: "FeaturePipeline", *,
                     base_dir: str | Path | None = None, image_policy: ImagePolicy = DEFAULT_POLICY,
                     progress: bool = False) -> EncodedJudgments:
    """Build training arrays; each distinct query (text + images) is encoded once."""
    if not judgments:
        raise InvalidInputError("no judgments to train on")
    keys: dict[str, int] = {}
    queries: list[Query] = []
    qidx = np.empty(len(judgments), dtype=np.int64)
    for i, j in enumerate(judgments):
        q = j.query.to_query(base_dir=base_dir, image_policy=image_policy)
        k = keys.get(q.content_hash)
        if k is None:
            k = keys[q.content_hash] = len(queries)
            queries.append(q)
        qidx[i] = k
    Xq = pipeline.transform(queries, progress=progress)
    pairs = np.array([[j.model_a, j.model_b] for j in judgments], dtype=object)
    y = np.array([j.y for j in judgments], dtype=np.float64)
    w = np.array([float(j.weight) for j in judgments], dtype=np.float64)
    return EncodedJudgments(Xq[qidx], pairs, y, w, qidx, Xq, [str(j.id) for j in judgments])


def resolve_image_paths(items: Sequence[Any], base_dir: str | Path | None) -> list[Any]:
    """Make relative image paths absolute against the file they came from, so records from
    several files can be mixed."""
    if base_dir is None:
        return list(items)
    base = Path(base_dir)
    out = []
    for it in items:
        imgs = it.query.images
        if any(not (s.startswith(("data:", "http://", "https://")) or Path(s).is_absolute()) for s in imgs):
            new = [s if s.startswith(("data:", "http://", "https://")) or Path(s).is_absolute() else str(base / s)
                   for s in imgs]
            it = it.model_copy(update={"query": it.query.model_copy(update={"images": new})})
        out.append(it)
    return out


def train_router(judgments: Sequence["Judgment"], *, encoder: "str | FeaturePipeline", pool: ModelPool | None = None,
                 base_dir: str | Path | None = None, calibration_fraction: float = 0.15, seed: int = 0,
                 model_params: dict[str, Any] | None = None, policy=None, progress: bool = False,
                 families: bool = False, cache: "EmbeddingCache | None" = None) -> Router:
    """Fit the preference model on judgments (held-out queries calibrate its temperature).

    ``families=True`` chooses the router family as ``mmroute eval --cv`` does
    (:func:`train_family_router`); ``cache`` keeps the embeddings (e.g. one with a directory)."""
    from .features import EmbeddingCache, FeaturePipeline
    from .preference import DEFAULT_GRID, BradleyTerry, select_params
    from .router import DEFAULT_CACHE_ENTRIES

    cache = cache if cache is not None else EmbeddingCache(DEFAULT_CACHE_ENTRIES)  # an empty cache is falsy
    pipeline = FeaturePipeline.from_spec(encoder, cache=cache) if isinstance(encoder, str) else encoder
    arrays = encode_judgments(judgments, pipeline, base_dir=base_dir, progress=progress)
    names = sorted({m for pair in arrays.pairs for m in pair})
    if pool is None:
        pool = ModelPool.from_names(names)
    if families and not {"rank", "l2"} & {k for k, v in (model_params or {}).items() if v is not None}:
        return train_family_router(judgments, arrays, pipeline, pool, names, seed=seed, model_params=model_params,
                                   policy=policy)
    qkeys = [str(k) for k in arrays.query_index]
    cal = holdout_mask(qkeys, calibration_fraction, seed) if len(set(qkeys)) >= 20 else np.zeros(len(arrays), bool)
    train = arrays.subset(~cal)
    params = {"seed": seed, **{k: v for k, v in (model_params or {}).items() if v is not None}}
    selection = None
    if "rank" not in params or "l2" not in params:  # let held-out queries decide the query capacity
        fixed = {k: v for k, v in params.items()}
        grid = [{k: v for k, v in g.items() if k not in fixed} for g in DEFAULT_GRID]
        selection = select_params(train.X, train.pairs, train.y, train.weight, groups=train.query_index.tolist(),
                                  base=fixed, grid=grid, models=names, seed=seed,
                                  blocks=[(a, b) for _, a, b in pipeline.spec.blocks()])
        params = selection.params
    model = BradleyTerry(**params)
    model.fit(train.X, train.pairs, train.y, sample_weight=train.weight, models=names)
    if cal.any():
        held = arrays.subset(cal)
        model.calibrate(held.X, held.pairs, held.y, sample_weight=held.weight)
    meta = {"n_judgments": len(arrays), "n_queries": int(arrays.Xq.shape[0]), "seed": seed,
            "calibration_judgments": int(cal.sum()), "model_params": {k: v for k, v in params.items()},
            "selection": None if selection is None else [[p, s] for p, s in selection.scores]}
    return Router(pipeline, model, pool, policy, metadata=meta)


def train_family_router(judgments: Sequence["Judgment"], arrays: EncodedJudgments, pipeline: "FeaturePipeline",
                        pool: ModelPool, names: list[str], *, seed: int = 0,
                        model_params: dict[str, Any] | None = None, policy=None) -> Router:
    """The router family chosen by the same code as ``mmroute eval --cv``
    (:func:`mmroute.preference.family_selection.select_for_judgments`), on all judgments; the
    inner folds' cost axis is the pool's expected cost of each query (prices unknown: 0)."""
    from .policy import estimate_text_tokens
    from .preference.family_selection import select_for_judgments

    first: dict[int, "Judgment"] = {}
    for j, qi in zip(judgments, arrays.query_index):
        first.setdefault(int(qi), j)
    cost = np.zeros((arrays.Xq.shape[0], len(names)))
    for qi, j in first.items():
        tokens = estimate_text_tokens(j.query.text)
        for c, m in enumerate(names):
            spec = pool[m] if m in pool else None
            if spec is not None and spec.prices_known:
                cost[qi, c] = spec.expected_cost(tokens, len(j.query.images))
    bt = {k: v for k, v in (model_params or {}).items() if v is not None}
    sel = select_for_judgments(arrays.Xq, arrays.query_index, arrays.pairs, arrays.y, arrays.weight, names, cost,
                               seed=seed, blocks=[(a, b) for _, a, b in pipeline.spec.blocks()], bt_params=bt)
    meta = {"n_judgments": len(arrays), "n_queries": int(arrays.Xq.shape[0]), "seed": seed,
            "calibration_judgments": 0, "model_params": sel.params,
            "family_selection": [[p, s] for p, s in sel.scores]}
    from .preference.families import BTFamily

    model = sel.family
    if type(model) is BTFamily:  # the plain Bradley-Terry model: `mmroute retrain` can warm-start it
        return Router(pipeline, model.model, pool, policy, metadata=meta)
    return Router(pipeline, model, pool, policy, metadata=meta)


@dataclass
class RetrainReport:
    accepted: bool
    reason: str
    n_new: int
    n_train: int
    n_holdout: int
    old_log_loss: float | None
    new_log_loss: float | None
    version_dir: str | None = None
    store_watermark: int | None = None

    def summary(self) -> str:
        verdict = "replaced" if self.accepted else "kept the old router"
        return f"{verdict}: {self.reason}"


def retrain(router_dir: str | Path, store: "FeedbackStore", *, out: str | Path | None = None,
            holdout_fraction: float = 0.2, tolerance: float = 0.0, seed: int = 0, min_new: int = 1,
            progress: bool = False) -> RetrainReport:
    """Warm-start the served router on judgments added to the store since it was trained.

    The candidate is compared with the served router on a held-out slice of those new judgments
    (log-loss); it is published to ``out`` (default: the same directory) only if it is not worse.
    """
    router = Router.load(router_dir)
    since = int(router.metadata.get("store_watermark", 0) or 0)
    rows = list(store.iter_with_seq(since))
    if len(rows) < min_new:
        return RetrainReport(False, f"only {len(rows)} new judgment(s) in the store since row {since} (need {min_new})",
                             len(rows), 0, 0, None, None)
    if not hasattr(router.model, "partial_fit"):
        return RetrainReport(False, f"the router's {type(router.model).__name__} cannot be warm-started on new "
                             "judgments; train a new router with `mmroute train` on all judgments",
                             len(rows), 0, 0, None, None)
    judgments = [j for _, j in rows]
    watermark = max(r for r, _ in rows)
    arrays = encode_judgments(judgments, router.pipeline, progress=progress)
    held = holdout_mask(arrays.ids, holdout_fraction, seed)
    if holdout_fraction > 0 and not held.any():
        held[-1] = True  # always evaluate on something
    train, test = arrays.subset(~held), arrays.subset(held)
    candidate: BradleyTerry = copy.deepcopy(router.model)
    if len(train):
        candidate.partial_fit(train.X, train.pairs, train.y, sample_weight=train.weight)
    old_ll = new_ll = None
    if len(test):
        old_ll = float(router.model.log_loss(test.X, test.pairs, test.y, sample_weight=test.weight))
        new_ll = float(candidate.log_loss(test.X, test.pairs, test.y, sample_weight=test.weight))
        if not (new_ll <= old_ll + tolerance) or not math.isfinite(new_ll):
            return RetrainReport(False, f"held-out log-loss would rise from {old_ll:.4f} to {new_ll:.4f} "
                                 f"on {len(test)} judgment(s)", len(rows), len(train), len(test), old_ll, new_ll)
    fresh = Router(router.pipeline, candidate, router.pool, router.policy,
                   metadata={**{k: v for k, v in router.metadata.items() if k != "version_dir"},
                             "store_watermark": watermark, "retrained_from": router.metadata.get("version_dir"),
                             "n_retrain_judgments": len(rows)})
    folder = fresh.save(out or router_dir)
    why = (f"held-out log-loss {old_ll:.4f} -> {new_ll:.4f} on {len(test)} judgment(s)" if old_ll is not None
           else "no held-out slice requested")
    return RetrainReport(True, why, len(rows), len(train), len(test), old_ll, new_ll, str(folder), watermark)
