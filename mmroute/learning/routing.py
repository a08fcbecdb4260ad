"""Serving with exploration: a thin wrapper that routes through an exploration policy and logs
every decision (with its propensity) to the decision log beside the feedback store.

The :class:`~mmroute.router.Router` stays deterministic (offline evaluation and the existing
tests depend on that); exploration is switched on by wrapping it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..policy import RouteDecision, Scored, hard_filters
from ..preference.metrics import expected_quality_from_win
from .explore import Belief, ExplorationPolicy, exploring_decision, follow, greedy_policy

if TYPE_CHECKING:
    from ..data.decisions import DecisionLog
    from ..router import Router


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


class ExploringRouter:
    """Route with an exploration policy; every decision gets an id, a propensity and a log row."""

    def __init__(self, router: "Router", policy: ExplorationPolicy, *, log: "DecisionLog | None" = None,
                 seed: int | None = None):
        if not hasattr(router.model, "score_variance"):  # the beliefs are the Bradley-Terry posterior
            raise InvalidInputError(f"exploration needs a Bradley-Terry router (its posterior is the belief); this "
                                    f"router's {type(router.model).__name__} has none: train it with "
                                    "`mmroute train` without `--families`")
        self.router = router
        self.policy = policy
        self.log = log
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # the budget and the generator are shared state

    def route(self, query: Any, *, exclude: Sequence[str] = ()) -> RouteDecision:
        """Like :meth:`Router.route` (a Query, a string or chat messages), but exploring."""
        r = self.router
        unknown = [m for m in exclude if m not in r.pool]
        if unknown:
            raise InvalidInputError(f"cannot exclude unknown model(s): {', '.join(unknown)}")
        q, payload = r.prepare(query)  # features from the query, filters and cost from all that is sent
        x = r.pipeline.transform([q])
        filtered = hard_filters(r.pool, text_tokens=payload.text_tokens, n_images=payload.n_images, exclude=exclude)
        cost = r.expected_costs(payload)
        cap = getattr(self.policy, "cost_cap", None)
        if cap is not None:  # explain the cap in the decision, and keep it out of the fallbacks
            for name, c in zip(r.pool.names, cost):
                if c > cap:
                    why = f"expected cost ${c:.5f} > cap ${cap:g}"
                    filtered[name] = f"{filtered[name]}; {why}" if name in filtered else why
        mean, var, seen = belief_for(r, x)
        win = r.win_matrices(x)[0]
        s = Scored(models=r.pool.names, quality=expected_quality_from_win(win), cost=cost,
                   eligible=np.array([n not in filtered for n in r.pool.names]), win=win)
        with self._lock:
            follow(self.policy, r.policy)  # the greedy step is the served router's policy, margin included
            choice = self.policy.choose(s, Belief(mean[0], var[0], seen), self.rng)
            base = greedy_policy(self.policy)
        d = exploring_decision(s, choice, self.policy.name, self.policy.lam, filtered,
                               prompt_tokens=payload.text_tokens, n_images=payload.n_images, base=base)
        if self.log is not None:
            self.log.log(d, q, router_version=r.metadata.get("version_dir"))
        return d
