"""The router: features of a query -> predicted quality of every model -> a policy's choice.

It composes the pieces (feature pipeline, Bradley-Terry model, pool, policy) and owns their
persistence as one versioned checkpoint; it holds no learning logic of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .checkpoint import (atomic_write_json, current_version_dir, new_version_dir, publish, read_json,
                         sha256_file, verify_checksums)
from .errors import CheckpointError, ConfigError, InvalidInputError
from .images import DEFAULT_POLICY, ImagePolicy
from .policy import (CostAwarePolicy, Policy, RouteDecision, Scored, ThresholdPolicy, calibrate_lambda, decide,
                     estimate_text_tokens, hard_filters)
from .pool import ModelPool
from .query import Query

if TYPE_CHECKING:
    from .data.formats import Judgment
    from .data.store import FeedbackStore
    from .features import FeaturePipeline
    from .preference import BradleyTerry
    from .preference.families import Family

ROUTER_FORMAT = 1
DEFAULT_CACHE_ENTRIES = 10_000  # a served router remembers this many recent texts/images


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def policy_to_json(policy: Policy) -> dict[str, Any]:
    if isinstance(policy, ThresholdPolicy):
        return {"name": "threshold", "strong": policy.strong, "weak": policy.weak, "threshold": policy.threshold}
    if isinstance(policy, CostAwarePolicy):
        return {"name": "cost-aware", "lam": policy.lam}
    raise ConfigError(f"cannot save policy of type {type(policy).__name__}")


def policy_from_json(d: dict[str, Any]) -> Policy:
    name = d.get("name")
    if name == "threshold":
        return ThresholdPolicy(strong=d["strong"], weak=d["weak"], threshold=float(d["threshold"]))
    if name == "cost-aware":
        return CostAwarePolicy(lam=float(d.get("lam", 0.0)))
    raise CheckpointError(f"unknown policy {name!r} in router checkpoint")


class Router:
    """Route queries among a pool's models with a trained preference model."""

    def __init__(self, pipeline: "FeaturePipeline", model: "BradleyTerry | Family", pool: ModelPool,
                 policy: Policy | None = None, *, image_policy: ImagePolicy = DEFAULT_POLICY,
                 metadata: dict[str, Any] | None = None, store: "FeedbackStore | None" = None):
        self.pipeline = pipeline
        self.model = model
        self.pool = pool
        self.policy: Policy = policy or CostAwarePolicy(0.0)
        self.image_policy = image_policy
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.store = store
        missing = [m for m in pool.names if m not in model.models_]
        if missing:  # no judgments yet: neutral rating, no feature dependence, until retraining
            model.add_models(missing)
        self._cols = np.array([model.models_.index(m) for m in pool.names])

    # -- prediction -------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return self.pool.names

    def features(self, queries: Sequence[Query], progress: bool = False) -> np.ndarray:
        return self.pipeline.transform(list(queries), progress=progress)

    def pool_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, M) Bradley-Terry scores of the pool's models, temperature applied."""
        s = self.model.scores(X)[:, self._cols]
        return s / float(getattr(self.model, "temperature_", 1.0) or 1.0)

    def win_matrices(self, X: np.ndarray) -> np.ndarray:
        s = self.pool_scores(X)
        return _sigmoid(s[:, :, None] - s[:, None, :])

    def quality_from_features(self, X: np.ndarray) -> np.ndarray:
        """Expected quality: mean probability of beating each other pool model (0.5 for a pool of one)."""
        if getattr(self.model, "pointwise", False):  # a pointwise family predicts the quality itself
            return np.asarray(self.model.expected_quality(X), dtype=np.float64)[:, self._cols]
        w = self.win_matrices(X)
        m = w.shape[1]
        if m == 1:
            return np.full((len(X), 1), 0.5)
        return (w.sum(axis=2) - 0.5) / (m - 1)

    def predict_quality(self, queries: Sequence[Query], progress: bool = False) -> np.ndarray:
        return self.quality_from_features(self.features(queries, progress))

    def expected_costs(self, query: Query) -> np.ndarray:
        tokens = estimate_text_tokens(query.text)
        return np.array([m.expected_cost(tokens, query.n_images) for m in self.pool.models])

    # -- routing ----------------------------------------------------------------------------
    def route(self, query: Any, *, policy: Policy | None = None, exclude: Sequence[str] = ()) -> RouteDecision:
        """Choose a model for one query (a Query, a string, or chat messages)."""
        q = Query.coerce(query, image_policy=self.image_policy)
        x = self.pipeline.transform([q])
        return self._decide(q, x, policy or self.policy, exclude)

    def route_many(self, queries: Sequence[Any], *, policy: Policy | None = None, progress: bool = False) -> list[RouteDecision]:
        qs = [Query.coerce(q, image_policy=self.image_policy) for q in queries]
        X = self.pipeline.transform(qs, progress=progress)
        return [self._decide(q, X[i:i + 1], policy or self.policy, ()) for i, q in enumerate(qs)]

    def _decide(self, q: Query, x: np.ndarray, policy: Policy, exclude: Sequence[str]) -> RouteDecision:
        unknown = [m for m in exclude if m not in self.pool]
        if unknown:
            raise InvalidInputError(f"cannot exclude unknown model(s): {', '.join(unknown)}")
        tokens = estimate_text_tokens(q.text)
        filtered = hard_filters(self.pool, text_tokens=tokens, n_images=q.n_images, exclude=exclude)
        win = self.win_matrices(x)[0]
        m = win.shape[0]
        quality = np.full(m, 0.5) if m == 1 else (win.sum(axis=1) - 0.5) / (m - 1)
        if getattr(self.model, "pointwise", False):
            quality = self.quality_from_features(x)[0]
        scored = Scored(models=self.pool.names, quality=quality, cost=self.expected_costs(q),
                        eligible=np.array([n not in filtered for n in self.pool.names]), win=win)
        return decide(scored, policy, filtered, prompt_tokens=tokens, n_images=q.n_images)

    def calibrate(self, queries: Sequence[Any], *, target_cost: float | None = None,
                  target_strong_share: float | None = None, progress: bool = False) -> CostAwarePolicy:
        """Choose lambda on sample queries so the average expected cost (USD/query), or the share of
        calls to the best-rated model, meets the target; sets and returns the policy."""
        qs = [Query.coerce(q, image_policy=self.image_policy) for q in queries]
        if not qs:
            raise InvalidInputError("calibration needs at least one sample query")
        quality = self.quality_from_features(self.features(qs, progress))
        cost = np.stack([self.expected_costs(q) for q in qs])
        names = self.pool.names
        removed = [hard_filters(self.pool, text_tokens=estimate_text_tokens(q.text), n_images=q.n_images) for q in qs]
        eligible = np.array([[n not in r for n in names] for r in removed])
        lam = calibrate_lambda(quality, cost, eligible, target_cost=target_cost,
                               target_strong_share=target_strong_share)
        self.policy = CostAwarePolicy(lam)
        return self.policy

    # -- feedback ---------------------------------------------------------------------------
    def record(self, query: Any, model_a: str, model_b: str, winner: str, *, store: "FeedbackStore | None" = None,
               weight: float = 1.0, source: str = "api", id: str | None = None) -> "Judgment":
        """Store one pairwise judgment for the next retraining (nothing is learned in place)."""
        from .data.formats import Judgment, QueryRecord

        target = store if store is not None else self.store
        if target is None:
            raise ConfigError("no feedback store: pass store= or set router.store")
        q = Query.coerce(query, image_policy=self.image_policy)
        j = Judgment(query=QueryRecord(text=q.text, images=[im.to_url() for im in q.images]),
                     model_a=model_a, model_b=model_b, winner=winner, weight=weight, source=source,
                     **({"id": id} if id else {}))
        target.add(j)
        return j

    # -- persistence ------------------------------------------------------------------------
    def save(self, root: str | os.PathLike[str]) -> Path:
        """Write a new version under ``root`` and make it current (atomically)."""
        root = Path(root)
        name, staging = new_version_dir(root)
        pref = staging / "preference"
        self.model.save(pref)
        files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(pref.rglob("*")) if p.is_file()}
        atomic_write_json(staging / "router.json", {
            "format_version": ROUTER_FORMAT,
            "mmroute_version": __version__,
            "encoder": self.pipeline.spec.encoder_spec,
            "feature_spec": self.pipeline.spec.model_dump(mode="json"),
            "pool": self.pool.model_dump(mode="json"),
            "policy": policy_to_json(self.policy),
            "metadata": self.metadata,
            "files": files,
        })
        return publish(root, name, staging)

    @classmethod
    def load(cls, root: str | os.PathLike[str], *, encoder: "str | FeaturePipeline | None" = None,
             pool: ModelPool | None = None, policy: Policy | None = None,
             image_policy: ImagePolicy = DEFAULT_POLICY) -> "Router":
        """Load the current version; refuse it if its feature spec differs from ``encoder``'s."""
        from .features import EmbeddingCache, FeaturePipeline, FeatureSpec
        from .preference.families import load_preference

        folder = current_version_dir(root)
        meta = read_json(folder / "router.json", "router manifest")
        fmt = meta.get("format_version")
        if not isinstance(fmt, int) or fmt > ROUTER_FORMAT:
            raise CheckpointError(f"router at {folder} has format version {fmt!r}; this mmroute ({__version__}) "
                                  f"reads up to {ROUTER_FORMAT} - upgrade mmroute")
        try:
            verify_checksums(folder, dict(meta["files"]))
            saved_spec = FeatureSpec.model_validate(meta["feature_spec"])
            saved_encoder = str(meta["encoder"])
            saved_pool = ModelPool.model_validate(meta["pool"])
            saved_policy = policy_from_json(dict(meta["policy"]))
        except KeyError as exc:
            raise CheckpointError(f"router manifest {folder / 'router.json'} lacks field {exc}") from None
        if isinstance(encoder, str) or encoder is None:
            pipeline = FeaturePipeline.from_spec(encoder or saved_encoder, cache=EmbeddingCache(DEFAULT_CACHE_ENTRIES))
        else:
            pipeline = encoder
        saved_spec.check_compatible(pipeline.spec)
        model = load_preference(folder / "preference")
        return cls(pipeline, model, pool or saved_pool, policy or saved_policy, image_policy=image_policy,
                   metadata={**meta.get("metadata", {}), "version_dir": str(folder)})


class LiveRouter:
    """A serving handle that picks up a newly published router version without a restart.

    Checking is one small file read per call; loading happens outside the lock and the swap is a
    single reference assignment, so concurrent callers see the old router or the new one.
    """

    def __init__(self, root: str | os.PathLike[str], **load_kwargs: Any):
        self.root = Path(root)
        self._kwargs = load_kwargs
        self._lock = threading.Lock()
        self._dir = current_version_dir(self.root)
        self._router = Router.load(self.root, **load_kwargs)

    @property
    def router(self) -> Router:
        self.refresh()
        return self._router

    def refresh(self) -> bool:
        try:
            folder = current_version_dir(self.root)
        except CheckpointError:
            return False
        if folder == self._dir:
            return False
        fresh = Router.load(self.root, encoder=self._router.pipeline, **{k: v for k, v in self._kwargs.items() if k != "encoder"})
        with self._lock:
            self._router, self._dir = fresh, folder
        return True

    def route(self, query: Any, **kw: Any) -> RouteDecision:
        return self.router.route(query, **kw)
