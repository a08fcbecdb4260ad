"""The router: features of a query -> predicted quality of every model -> a policy's choice.

It composes the pieces (feature pipeline, Bradley-Terry model, pool, policy) and owns their
persistence as one versioned checkpoint; it holds no learning logic of its own.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .checkpoint import (atomic_write_json, current_version_dir, new_version_dir, publish, read_json,
                         sha256_file, verify_checksums)
from .constraints import NO_CONSTRAINTS, Constraints, merge_filters
from .errors import CheckpointError, ConfigError, InvalidInputError, RoutingWarning
from .images import DEFAULT_POLICY, ImagePolicy
from .payload import Payload, to_request
from .policy import CostAwarePolicy, Policy, RouteDecision, Scored, decide, hard_filters, policy_from_json, policy_to_json
from .policy_calibration import calibrate_lambda
from .preference.metrics import expected_quality_from_win, win_probabilities
from .pool import ModelPool, ModelSpec
from .query import MessagesLike, Query, QueryLike

if TYPE_CHECKING:
    from .features import FeaturePipeline
    from .preference import BradleyTerry
    from .preference.families import Family

PRIORS_REASON = ("; routing on priors only (no judgments yet): serve with exploration "
                 "(`mmroute serve --explore thompson --retrain-every N`, or mmroute.learning.ExploringRouter) "
                 "and retrain on the feedback")
"""Said by every decision of a router trained on no judgments (:mod:`mmroute.coldstart`)."""

ROUTER_FORMAT = 1
DEFAULT_CACHE_ENTRIES = 10_000  # a served router remembers this many recent texts/images


def trained_name(spec: ModelSpec, trained: Sequence[str]) -> str | None:
    """The name a pool model was trained under: its own, else its first alias the model knows."""
    if spec.name in trained:
        return spec.name
    return next((a for a in spec.aliases if a in trained), None)


def check_pool_matches(pool: ModelPool, trained: Sequence[str], where: str) -> None:
    """Refuse a pool that shares no model with the trained ones (every rating would be 0.5); warn
    for each pool model that was not trained."""
    untrained = [spec.name for spec in pool.models if trained_name(spec, trained) is None]
    if len(untrained) == len(pool):
        raise ConfigError(f"no model of the pool ({', '.join(pool.names)}) was trained in the router at {where} "
                          f"(it knows {', '.join(trained)}): name them so, or list the trained names as "
                          "'aliases' in the pool file")
    for name in untrained:
        warnings.warn(f"pool model {name!r} was not trained in the router at {where}: it gets a neutral 0.5 "
                      "rating until retraining (list its training name under 'aliases'?)", RoutingWarning, stacklevel=3)


class Router:
    """Route queries among a pool's models with a trained preference model.

    Usually made by :func:`mmroute.train_router`, :meth:`load` or :meth:`from_pool`.

    Args:
        pipeline: turns queries into the features the preference model was trained on.
        model: the preference model (Bradley-Terry or another router family); pool models it never
            saw get a neutral rating until retraining.
        pool: the candidate models, with prices and limits.
        policy: how quality and cost become a choice (default: quality only, lambda 0).
        image_policy: how images are fetched and bounded before encoding.
        metadata: free JSON saved with the router (training report, version folder...).
    """

    def __init__(self, pipeline: "FeaturePipeline", model: "BradleyTerry | Family", pool: ModelPool,
                 policy: Policy | None = None, *, image_policy: ImagePolicy = DEFAULT_POLICY,
                 metadata: dict[str, Any] | None = None):
        self.pipeline = pipeline
        self.model = model
        self.pool = pool
        self.policy: Policy = policy or CostAwarePolicy(0.0)
        self.image_policy = image_policy
        self.metadata: dict[str, Any] = dict(metadata or {})
        trained = {spec.name: trained_name(spec, model.models_) for spec in pool.models}
        missing = [m for m, t in trained.items() if t is None]
        if missing:  # no judgments yet: neutral rating, no feature dependence, until retraining
            model.add_models(missing)
        self._cols = np.array([model.models_.index(trained[m] or m) for m in pool.names])

    # -- prediction -------------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        """The version folder this router was loaded from (``v0002``), as the server reports it; None if unsaved."""
        folder = self.metadata.get("version_dir")
        return Path(str(folder)).name if folder else None

    @property
    def models(self) -> list[str]:
        """The pool's model names, in column order of every (n, M) array this router returns."""
        return self.pool.names

    def features(self, queries: Sequence[Query], progress: bool = False) -> np.ndarray:
        """Encode queries with the router's feature pipeline.

        Args:
            queries: the queries to encode.
            progress: show a progress bar.

        Returns:
            (n, d) float32 features.
        """
        return self.pipeline.transform(list(queries), progress=progress)

    def pool_scores(self, X: np.ndarray) -> np.ndarray:
        """Bradley-Terry scores of the pool's models, temperature applied.

        Args:
            X: (n, d) query features (:meth:`features`).

        Returns:
            (n, M) scores, columns in :attr:`models` order.
        """
        s = self.model.scores(X)[:, self._cols]
        return s / float(getattr(self.model, "temperature_", 1.0) or 1.0)

    def win_matrices(self, X: np.ndarray) -> np.ndarray:
        """Pairwise win probabilities.

        Args:
            X: (n, d) query features.

        Returns:
            (n, M, M): entry ``[i, a, b]`` is P(model a beats model b on query i).
        """
        return win_probabilities(self.pool_scores(X))

    def quality_from_features(self, X: np.ndarray) -> np.ndarray:
        """Expected quality: mean probability of beating each other pool model (0.5 for a pool of
        one), or a pointwise family's own prediction.

        Args:
            X: (n, d) query features.

        Returns:
            (n, M) expected quality in [0, 1].
        """
        if getattr(self.model, "pointwise", False):  # a pointwise family predicts the quality itself
            return np.asarray(self.model.expected_quality(X), dtype=np.float64)[:, self._cols]
        return expected_quality_from_win(self.win_matrices(X))

    def predict_quality(self, queries: Sequence[Query], progress: bool = False) -> np.ndarray:
        """Encode then predict: :meth:`quality_from_features` of :meth:`features`.

        Args:
            queries: the queries.
            progress: show a progress bar while encoding.

        Returns:
            (n, M) expected quality.
        """
        return self.quality_from_features(self.features(queries, progress))

    def expected_costs(self, query: Query | Payload) -> np.ndarray:
        """Expected USD per pool model for sending ``query`` (prompt tokens, images, expected output).

        Args:
            query: a Query (sent as one user turn) or the whole Payload that will be sent.

        Returns:
            (M,) expected cost in USD, :attr:`models` order.
        """
        p = query if isinstance(query, Payload) else Payload.of_query(query)
        return np.array([m.payload_cost(p) for m in self.pool.models])

    def cost_and_eligibility(self, payloads: Sequence[Payload], exclude: Sequence[str] = ()
                             ) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
        """What every batch caller (calibration, training, evaluation) needs next to predicted quality.

        Args:
            payloads: what will be sent, one per query.
            exclude: models to treat as ineligible everywhere.

        Returns:
            Expected USD (n, M), eligibility (n, M) booleans, and per payload the removed models
            with the hard filter's reason.
        """
        cost = np.stack([self.expected_costs(p) for p in payloads]) if payloads else np.zeros((0, len(self.pool)))
        removed = [hard_filters(self.pool, text_tokens=p.text_tokens, n_images=p.n_images, exclude=exclude)
                   for p in payloads]
        eligible = np.array([[n not in r for n in self.pool.names] for r in removed], dtype=bool).reshape(len(payloads), -1)
        return cost, eligible, removed

    def prepare(self, value: QueryLike | MessagesLike, include_context: bool = False,
                payload: Payload | None = None) -> tuple[Query, Payload]:
        """Split what is routed into what the features see and what the filters see.

        Args:
            value: a Query, text, ``{"text", "images"}`` dict or a conversation.
            include_context: features from every turn, not only the last user turn.
            payload: use this payload instead of the one derived from ``value``.

        Returns:
            The query to encode and the payload to filter and cost (:func:`mmroute.payload.to_request`).
        """
        q, p = to_request(value, include_context=include_context, image_policy=self.image_policy)
        return q, payload or p

    # -- routing ----------------------------------------------------------------------------
    def route(self, query: QueryLike | MessagesLike, *, policy: Policy | None = None, exclude: Sequence[str] = (),
              constraints: Constraints | None = None, include_context: bool = False,
              payload: Payload | None = None) -> RouteDecision:
        """Choose a model for a Query, a string, a ``{"text", "images"}`` dict, or a conversation.

        Args:
            query: what to route. For a conversation (OpenAI dicts or LangChain messages) the
                features come from the last user turn (or every turn, with ``include_context``),
                while the vision, context-window and cost checks cover everything that will be
                sent: all turns, all images.
            policy: overrides the router's policy for this call.
            exclude: pool models not to use (shorthand for ``constraints.exclude``).
            constraints: per-request limits (cost cap, quality floor, required tags/vision).
            include_context: features from every turn, not only the last user turn.
            payload: overrides what is sent (e.g. with bound tools counted), for callers that know more.

        Returns:
            The decision, with every candidate's predicted quality, cost and filter reasons.
        """
        q, p = self.prepare(query, include_context, payload)
        x = self.pipeline.transform([q])
        return self._decide(q, x, policy or self.policy, _constraints(constraints, exclude), p)

    def route_features(self, query: Query, x: np.ndarray, *, policy: Policy | None = None,
                       exclude: Sequence[str] = (), constraints: Constraints | None = None,
                       payload: Payload | None = None) -> RouteDecision:
        """Route a query whose features were computed already (a server batches them across requests).

        Args:
            query: the query the features came from.
            x: its features, (d,) or (1, d).
            policy: overrides the router's policy for this call.
            exclude: pool models not to use.
            constraints: per-request limits.
            payload: what will be sent (default: the query alone); pass
                ``Payload.from_messages(messages)`` for a conversation so the filters see every turn.

        Returns:
            The routing decision.
        """
        return self._decide(query, np.asarray(x, dtype=np.float32).reshape(1, -1), policy or self.policy,
                            _constraints(constraints, exclude), payload)

    def route_many(self, queries: Sequence[QueryLike | MessagesLike], *, policy: Policy | None = None,
                   progress: bool = False, include_context: bool = False,
                   constraints: Constraints | None = None) -> list[RouteDecision]:
        """Route many queries, encoding them in one batch (faster than :meth:`route` in a loop).

        Args:
            queries: what to route, each as :meth:`route` accepts.
            policy: overrides the router's policy for these calls.
            progress: show a progress bar while encoding.
            include_context: features from every turn of a conversation.
            constraints: per-request limits applied to every query.

        Returns:
            One decision per query, in order.
        """
        pairs = [self.prepare(q, include_context, None) for q in queries]
        X = self.pipeline.transform([q for q, _ in pairs], progress=progress)
        c = _constraints(constraints, ())
        return [self._decide(q, X[i:i + 1], policy or self.policy, c, p) for i, (q, p) in enumerate(pairs)]

    def score(self, x: np.ndarray, payload: Payload, constraints: Constraints | None = None
              ) -> tuple[Scored, dict[str, str]]:
        """One query's candidates as a policy sees them, and why each removed model was removed:
        the pool's hard filters, then the caller's constraints. Every routing path (plain or
        exploring) scores here.

        Args:
            x: (1, d) features of the query.
            payload: what will be sent (for the filters and the cost).
            constraints: per-request limits (default: none).

        Returns:
            The scored candidates and ``{removed model: reason}``.
        """
        c = constraints or NO_CONSTRAINTS
        filtered = merge_filters(hard_filters(self.pool, text_tokens=payload.text_tokens, n_images=payload.n_images),
                                 c.static_filters(self.pool))
        win = self.win_matrices(x)[0]
        quality = (self.quality_from_features(x)[0] if getattr(self.model, "pointwise", False)
                   else expected_quality_from_win(win))
        cost = self.expected_costs(payload)
        if not c.empty:
            filtered = merge_filters(filtered, c.score_filters(self.pool.names, quality, cost))
        scored = Scored(models=self.pool.names, quality=quality, cost=cost,
                        eligible=np.array([n not in filtered for n in self.pool.names]), win=win)
        return scored, filtered

    def _decide(self, q: Query, x: np.ndarray, policy: Policy, constraints: Constraints,
                payload: Payload | None = None) -> RouteDecision:
        p = payload or Payload.of_query(q)
        scored, filtered = self.score(x, p, constraints)
        d = decide(scored, policy, filtered, prompt_tokens=p.text_tokens, n_images=p.n_images)
        if self.metadata.get("routing") == "priors-only":  # say so: these choices rest on no evidence
            d = d.model_copy(update={"reason": d.reason + PRIORS_REASON})
        return d

    def calibrate(self, queries: Sequence[QueryLike | MessagesLike], *, target_cost: float | None = None,
                  target_strong_share: float | None = None, progress: bool = False) -> CostAwarePolicy:
        """Choose lambda on sample queries so the average expected cost (USD/query), or the share of
        calls to the best-rated model, meets the target; sets and returns the policy.

        Args:
            queries: sample queries like the traffic to serve.
            target_cost: average expected USD per query to meet.
            target_strong_share: share of queries to send to the best-rated model instead.
            progress: show a progress bar while encoding.

        Returns:
            The new policy (also set on the router).

        Raises:
            InvalidInputError: no sample query.
            ConfigError: not exactly one target.
        """
        pairs = [self.prepare(q, False, None) for q in queries]
        if not pairs:
            raise InvalidInputError("calibration needs at least one sample query")
        quality = self.quality_from_features(self.features([q for q, _ in pairs], progress))
        cost, eligible, _ = self.cost_and_eligibility([p for _, p in pairs])
        lam = calibrate_lambda(quality, cost, eligible, target_cost=target_cost,
                               target_strong_share=target_strong_share)
        self.policy = CostAwarePolicy(lam)
        return self.policy

    @classmethod
    def from_pool(cls, pool: ModelPool, *, encoder: "str | FeaturePipeline", policy: Policy | None = None,
                  image_policy: ImagePolicy = DEFAULT_POLICY, seed: int = 0) -> "Router":
        """A router with prior ratings only, for a pool with no judgments yet: serve it with
        exploration and retrain it on the feedback (:func:`mmroute.coldstart.priors_model`).

        Args:
            pool: the candidate models.
            encoder: an encoder spec (``"clip:ViT-B-32"``) or a feature pipeline.
            policy: the routing policy (default lambda 0).
            image_policy: how images are fetched and bounded.
            seed: seed of the prior model's initialisation.

        Returns:
            A router whose choices rest on the pool's priors only (its reasons say so).
        """
        from .coldstart import priors_model
        from .features import EmbeddingCache, FeaturePipeline

        pipeline = (FeaturePipeline.from_spec(encoder, cache=EmbeddingCache(DEFAULT_CACHE_ENTRIES))
                    if isinstance(encoder, str) else encoder)
        model, meta = priors_model(pool, pipeline.spec.dim, policy=policy, seed=seed)
        return cls(pipeline, model, pool, policy or CostAwarePolicy(0.0), image_policy=image_policy, metadata=meta)

    # -- persistence ------------------------------------------------------------------------
    def save(self, root: str | os.PathLike[str]) -> Path:
        """Write a new version under ``root`` and make it current (atomically).

        Args:
            root: the router directory (versions ``v0001``, ``v0002``... live under it).

        Returns:
            The new version's folder.
        """
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
        """Load the current version; refuse it if its feature spec differs from ``encoder``'s.

        Args:
            root: the router directory given to :meth:`save`.
            encoder: encoder spec or pipeline to use (default: the saved one).
            pool: a pool to use instead of the saved one (must cover the trained models' names).
            policy: a policy to use instead of the saved one.
            image_policy: how images are fetched and bounded.

        Returns:
            The router.

        Raises:
            CheckpointError: missing, corrupt or newer-format files, or an incompatible encoder or pool.
        """
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
        if pool is not None:  # the model's names, not a list in the metadata: retraining adds models
            check_pool_matches(pool, list(model.models_), str(folder))
        return cls(pipeline, model, pool or saved_pool, policy or saved_policy, image_policy=image_policy,
                   metadata={**meta.get("metadata", {}), "version_dir": str(folder)})


def current_router(router: "Router | LiveRouter") -> Router:
    """The ``Router`` to use now: a ``LiveRouter`` hands out its latest version. The one way every
    adapter (graph nodes, chat model, server, proxy) unwraps a router."""
    return router.router if isinstance(router, LiveRouter) else router


def _constraints(constraints: Constraints | None, exclude: Sequence[str]) -> Constraints:
    if not exclude:
        return constraints or NO_CONSTRAINTS
    base = constraints or NO_CONSTRAINTS
    return base.model_copy(update={"exclude": tuple(dict.fromkeys([*base.exclude, *exclude]))})


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

    def route(self, query: QueryLike | MessagesLike, **kw: Any) -> RouteDecision:
        return self.router.route(query, **kw)
