"""Serving with exploration: a thin wrapper that routes through an exploration policy and logs
every decision (with its propensity) to the feedback store's decision log.

The :class:`~mmroute.router.Router` stays deterministic (offline evaluation and the existing
tests depend on that); exploration is switched on by wrapping it. The wrapper holds a ``Router``
or a ``LiveRouter`` and routes with whichever version is current, so a published retrain is
explored with at once while the policy's budget (shared state) carries over.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInputError
from ..policy import CostAwarePolicy, RouteDecision
from .explore import (Belief, EpsilonGreedyPolicy, ExplorationBudget, ExplorationPolicy, ThompsonPolicy,
                      exploring_decision, follow, greedy_policy)

if TYPE_CHECKING:
    from ..constraints import Constraints
    from ..query import MessagesLike, QueryLike
    from ..data.decisions import DecisionLog
    from ..payload import Payload
    from ..query import Query
    from ..router import LiveRouter, Router


def belief_for(router: "Router", X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (n, M) and their posterior variances (n, M) for the pool's models, temperature
    applied, and how many judgments each model was fitted on (M,)."""
    from ..preference import BradleyTerry

    model = router.model
    if not isinstance(model, BradleyTerry):  # ExploringRouter refuses such routers up front
        raise InvalidInputError(f"exploration needs a Bradley-Terry router (its posterior); got {type(model).__name__}")
    cols = np.array([model.models_.index(m) for m in router.pool.names])
    t = float(getattr(model, "temperature_", 1.0) or 1.0)
    mean = model.scores(X)[:, cols] / t
    var = model.score_variance(X)[:, cols] / (t * t)
    seen = np.array([model.n_seen_.get(m, 0) for m in router.pool.names])
    return mean, var, seen


def router_lam(router: "Router") -> float:
    """The router's own lambda (quality points per USD), 0 for a policy without one."""
    return float(router.policy.lam) if isinstance(router.policy, CostAwarePolicy) else 0.0


class ExploringRouter:
    """Route with an exploration policy; every decision gets an id, a propensity and (with ``log``) a row.

    ``router``: a ``Router`` or a ``LiveRouter`` (each decision uses its current version).
    The greedy step is the current router's own policy (lambda, margin, default model), so
    exploration departs from exactly what would be served and a retrain that moves lambda moves
    exploration too; ``follow_router_lam=False`` keeps ``policy.lam`` (simulations, experiments)."""

    def __init__(self, router: "Router | LiveRouter", policy: ExplorationPolicy, *, log: "DecisionLog | None" = None,
                 seed: int | None = None, follow_router_lam: bool = True):
        self.source = router
        self.policy = policy
        self.log = log
        self.follow_router_lam = follow_router_lam
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # the budget and the generator are shared state
        self._check(self.router)

    @property
    def router(self) -> "Router":
        """The router version decisions use now."""
        from ..router import LiveRouter

        return self.source.router if isinstance(self.source, LiveRouter) else self.source

    @property
    def pool(self) -> Any:
        return self.router.pool

    @property
    def image_policy(self) -> Any:
        return self.router.image_policy

    @staticmethod
    def _check(router: "Router") -> None:
        if not hasattr(router.model, "score_variance"):  # the beliefs are the Bradley-Terry posterior
            raise InvalidInputError(f"exploration needs a Bradley-Terry router (its posterior is the belief); this "
                                    f"router's {type(router.model).__name__} has none: train it with "
                                    "`mmroute train` without `--families`")

    def route(self, query: "QueryLike | MessagesLike", *, exclude: Sequence[str] = (), include_context: bool = False,
              payload: "Payload | None" = None, constraints: "Constraints | None" = None) -> RouteDecision:
        """Like :meth:`Router.route` (a Query, a string or chat messages), but exploring."""
        r = self.router
        q, p = r.prepare(query, include_context, payload)  # features from the query, filters and cost from all sent
        d = self.route_features(q, r.pipeline.transform([q]), exclude=exclude, payload=p, router=r,
                                constraints=constraints)
        if self.log is not None:
            self.log.log(d, q, router_version=r.metadata.get("version_dir"))
        return d

    def route_features(self, q: "Query", x: np.ndarray, *, exclude: Sequence[str] = (),
                       payload: "Payload | None" = None, router: "Router | None" = None,
                       lam: float | None = None, decision_id: str | None = None,
                       constraints: "Constraints | None" = None) -> RouteDecision:
        """Explore for a query whose features were computed already (a server batches them);
        ``router``: the version to use (default: the current one); ``lam``: this decision's lambda
        (default: the router's, see ``follow_router_lam``). Nothing is logged."""
        from ..payload import Payload
        from ..router import _constraints

        r = router if router is not None else self.router
        self._check(r)
        p = payload or Payload.of_query(q)
        x = np.asarray(x, dtype=np.float32).reshape(1, -1)
        s, filtered = r.score(x, p, _constraints(constraints, exclude))  # the hard filters and the caller's limits
        policy = self.policy
        if dataclasses.is_dataclass(policy) and (self.follow_router_lam or lam is not None):
            policy = dataclasses.replace(policy)  # a per-decision copy sharing the budget object
            if self.follow_router_lam:
                follow(policy, r.policy)  # greedy step = the served policy, margin and default included
            if lam is not None:
                policy.lam = float(lam)
        cap = getattr(policy, "cost_cap", None)
        if cap is not None:  # explain the cap in the decision, and keep it out of the fallbacks
            for name, c in zip(r.pool.names, s.cost):
                if c > cap:
                    why = f"expected cost ${c:.5f} > cap ${cap:g}"
                    filtered[name] = f"{filtered[name]}; {why}" if name in filtered else why
            s = dataclasses.replace(s, eligible=np.array([n not in filtered for n in r.pool.names]))
        mean, var, seen = belief_for(r, x)
        with self._lock:
            choice = policy.choose(s, Belief(mean[0], var[0], seen), self.rng)
        return exploring_decision(s, choice, policy.name, policy.lam, filtered, prompt_tokens=p.text_tokens,
                                  n_images=p.n_images, decision_id=decision_id, base=greedy_policy(policy))


class ExploreSettings(BaseModel):
    """How a served router explores (``mmroute serve --explore``, ``RoutedChatModel(explore=...)``,
    the LiteLLM proxy strategy): the policy and its :class:`ExplorationBudget`.

    ``share`` bounds the share of decisions that leave the greedy choice (and is epsilon for
    ``epsilon``); ``usd`` caps what exploration may spend beyond the greedy choice's expected
    cost; ``new_model_share`` caps the probability a newly joined model gets on one query."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["thompson", "epsilon"] = "thompson"
    share: float = Field(0.1, ge=0, le=1, description="most decisions off the greedy choice")
    usd: float | None = Field(None, ge=0, allow_inf_nan=False, description="USD exploration may spend beyond greedy")
    new_model_share: float = Field(1.0, ge=0, le=1, description="most probability a new model gets on one query")
    seed: int | None = None

    def policy(self) -> ExplorationPolicy:
        budget = ExplorationBudget(max_share=self.share, max_usd=self.usd, new_model_share=self.new_model_share)
        if self.strategy == "epsilon":
            return EpsilonGreedyPolicy(epsilon=self.share, budget=budget)
        return ThompsonPolicy(budget=budget)

    def wrap(self, router: "Router | LiveRouter", *, log: "DecisionLog | None" = None) -> ExploringRouter:
        """An exploring router over ``router`` (a ``LiveRouter``: its current version each time)."""
        return ExploringRouter(router, self.policy(), log=log, seed=self.seed, follow_router_lam=True)


__all__ = ["ExploreSettings", "ExploringRouter", "belief_for", "router_lam"]
