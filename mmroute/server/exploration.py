"""Exploration in serving: what the server needs beyond :class:`~mmroute.learning.routing.ExploringRouter`.

The server routes through the exploring wrapper (over whichever router version is current),
logs every decision with its propensity in the feedback store's decision log, and turns feedback
on a decision into the *reward* of the model it chose, the number off-policy evaluation and the
retrain gate read. The reward belongs to the chosen model only: feedback on another model (a
pairwise comparison, a rating of a fallback's answer) is a judgment, not this decision's reward.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import MMRouteError
from .decisions import DecisionRecord, DecisionStore
from .schemas import FeedbackRequest

if TYPE_CHECKING:
    from .service import RouterService

log = logging.getLogger("mmroute.server")


def reward_of(req: FeedbackRequest, rec: DecisionRecord) -> float | None:
    """The reward this feedback gives the decision's chosen model, or None when it rates no answer of it.

    An explicit ``reward`` counts as given; a rating ("good" 1, "bad" 0) counts when it is about
    the chosen model and that model answered (not a fallback after a provider fault)."""
    chosen = rec.decision.model
    answered = rec.answered_by or chosen
    if answered != chosen:
        return None
    if req.reward is not None:
        return float(req.reward)
    if req.rating is not None and (req.model or answered) == chosen:
        return 1.0 if req.rating == "good" else 0.0
    return None


async def attach_reward(service: "RouterService", rec: DecisionRecord, req: FeedbackRequest,
                        judgment_id: str | None) -> float | None:
    """Write the reward (and the answer's cost) to the store's decision row, from whichever
    replica got the feedback; returns the reward attached, None when there was none to attach.
    A failed write is logged and counted: the judgment is already stored."""
    reward = reward_of(req, rec)
    if reward is None or not isinstance(service.store, DecisionStore):
        return None
    decisions = service.store.decisions
    try:
        await asyncio.to_thread(decisions.record_outcome, rec.id, reward, cost=rec.cost_usd, judgment_id=judgment_id)
    except MMRouteError as exc:
        service.metrics.errors.labels("decision_store").inc()
        log.error("could not attach the reward to decision %s: %s", rec.id, exc)
        return None
    return reward


__all__ = ["attach_reward", "reward_of"]
