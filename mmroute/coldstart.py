"""Starting without judgments: a router whose ratings are priors from what the pool file says.

Day one with one's own models there are no judgments yet, but routing has to start somewhere so
that served traffic (with exploration) and feedback can produce them. The router built here is an
ordinary Bradley-Terry router - it saves, loads, explores and retrains like any other - whose
ratings are a weak prior and whose query terms are zero (no feature dependence until judged).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .policy import Policy
from .policy_calibration import DEFAULT_QUALITY_TOLERANCE
from .pool import ModelPool

if TYPE_CHECKING:
    from .preference import BradleyTerry

PRICE_SLOPE = 0.1
"""Prior rating per e-fold of price (log-odds): a model ten times pricier starts 0.23 ahead, a
win probability of 0.56. Why so little: price and quality go together across public leaderboards,
but weakly and with many exceptions (a cheap specialist beats a pricey generalist on its domain),
so the prior only breaks the tie, and its sign is the one that errs on the side of quality."""
PRIOR_STRENGTH = 0.5
"""Curvature of each prior rating, in judgments (one judgment at even odds adds 1/4 to each of its
two models): worth two judgments, so the first few judgments of a model outweigh its prior."""
PRIOR_PARAMS: dict[str, Any] = {"rank": 4, "l2": 0.03}
"""Capacity of the query terms the first retrain fits: a point of the training grid
(:data:`mmroute.preference.DEFAULT_GRID`) suited to the few hundred judgments a first retrain has."""
TYPICAL_PROMPT_TOKENS = 100  # the query size the prices are compared at (plus each model's typical answer)
PRIORS_ONLY = "priors-only"  # router.metadata["routing"] of such a router until its first retrain


def prior_ratings(pool: ModelPool, *, slope: float = PRICE_SLOPE) -> dict[str, float]:
    """Each pool model's prior rating: ``slope`` x (log of its expected cost on a typical query -
    the mean over the priced models); 0 for a model whose prices are unknown (neutral).

    Known capabilities do not move the rating: vision support and context windows act as hard
    filters at routing time (an image query only reaches vision models), which says nothing about
    how good a model is at what it can take."""
    costs = {m.name: m.expected_cost(TYPICAL_PROMPT_TOKENS, 0) for m in pool.models if m.prices_known}
    logs = {n: math.log(c) for n, c in costs.items() if c > 0}
    centre = sum(logs.values()) / len(logs) if logs else 0.0
    return {m.name: slope * (logs[m.name] - centre) if m.name in logs else 0.0 for m in pool.models}


def priors_model(pool: ModelPool, dim: int, *, policy: Policy | None = None, seed: int = 0,
                 strength: float = PRIOR_STRENGTH) -> tuple["BradleyTerry", dict[str, Any]]:
    """The preference model with prior ratings only (see :func:`prior_ratings`) for features of
    width ``dim``, and the router metadata that says so; :meth:`mmroute.Router.from_pool` (and
    ``mmroute train --pool`` without judgments) wraps them in a router.

    Its posterior is wide (the prior is worth ``strength`` judgments per model, the query terms
    nothing), so Thompson exploration spreads over the pool; its decisions say it routes on priors
    only. The policy defaults to lambda = 0 (the prior's best model, i.e. the priciest): no quality
    has been measured to trade against cost. The first retrain on judgments
    (:func:`mmroute.retraining.retrain_router`) fits the query terms, standardises the features on
    those judgments, and chooses lambda by the default rule."""
    from .preference import BradleyTerry

    if not (strength > 0 and math.isfinite(strength)):
        raise ConfigError(f"prior strength must be a finite number > 0, got {strength}")
    ratings = prior_ratings(pool)
    model = BradleyTerry.from_ratings(ratings, dim, strength=strength, seed=seed, **PRIOR_PARAMS)
    unpriced = [m.name for m in pool.models if not m.prices_known]
    notes = [f"{n}: prices unknown, neutral prior rating 0 (and counted as $0); set them in the pool file"
             for n in unpriced]
    best = max(ratings, key=lambda n: ratings[n])
    meta: dict[str, Any] = {
        "routing": PRIORS_ONLY, "n_judgments": 0, "n_queries": 0, "seed": seed, "notes": notes,
        "prior": {"ratings": ratings, "basis": f"{PRICE_SLOPE:g} x log expected cost (centred; unknown price: 0)",
                  "strength": strength},
        "policy_choice": {"method": "prior", "policy": "cost-aware",
                          "lam": float(getattr(policy, "knob", 0.0)) if policy is not None else 0.0,
                          "tolerance": DEFAULT_QUALITY_TOLERANCE, "default_model": best},
        "default_model": best,
    }
    return model, meta


