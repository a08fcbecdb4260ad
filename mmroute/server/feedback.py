"""``/v1/feedback``: a rating, a pairwise verdict or a reward on a served decision (found in memory
or in the shared store, so any replica answers) becomes a judgment and the decision's reward."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING


from .decisions import DecisionStore
from .errors import HTTPError
from .schemas import (FeedbackRequest, FeedbackResponse)

if TYPE_CHECKING:

    pass

from .service import RouterService

log = logging.getLogger("mmroute.server")

# -- feedback ---------------------------------------------------------------------------------------------

async def handle_feedback(service: RouterService, req: FeedbackRequest) -> FeedbackResponse:
    from ..data.formats import Judgment, QueryRecord
    from ..cascade import judgment_id, rating_judgment
    from .exploration import attach_reward

    rec = await service.lookup(req.decision_id)
    if rec is None:
        kept = ("nor in the feedback store (pruned, or made by a server on another store)"
                if isinstance(service.store, DecisionStore) else "(decisions live in memory only without --store)")
        raise HTTPError(404, f"decision {req.decision_id!r} is unknown or expired: not among the last "
                        f"{service.config.remember_decisions} decisions this server made {kept}",
                        code="decision_not_found", param="decision_id")
    if service.store is None:
        raise HTTPError(503, "no feedback store is configured (start the server with --store)", type="server_error",
                        code="no_feedback_store")
    names = {c.model for c in rec.decision.candidates}
    answered = rec.answered_by or rec.decision.model
    if req.winner is None:  # a rating, or a reward alone (stored as the rating it amounts to)
        rated = req.model or answered
        if rated not in names:
            raise HTTPError(400, f"model {rated!r} was not a candidate of decision {rec.id}", param="model")
        rating = req.rating or ("good" if float(req.reward or 0.0) >= 0.5 else "bad")
        pair = rating_judgment(rec.decision, rated, rating)
        if pair is None:
            service.metrics.feedback.labels("rating", "false").inc()
            return FeedbackResponse(decision_id=rec.id, judgment_id=None, stored=False,
                                    reward=await attach_reward(service, rec, req, None),
                                    note="no other eligible model to compare with; no judgment stored")
        a, b, winner = pair
        kind = "rating"
    else:
        a, b, winner = req.model_a or answered, str(req.model_b), str(req.winner)
        for field_name, m in (("model_a", a), ("model_b", b)):
            if m not in names:
                raise HTTPError(400, f"{field_name} {m!r} was not a candidate of decision {rec.id} "
                                f"(candidates: {', '.join(sorted(names))})", param=field_name)
        if a == b:
            raise HTTPError(400, "model_a and model_b must differ", param="model_b")
        kind = "pairwise"
    q = rec.query
    jid = judgment_id("feedback", rec.id, q.content_hash, a, b)
    judgment = Judgment(query=QueryRecord(text=q.text, images=[im.to_url() for im in q.images]), model_a=a, model_b=b,
                        winner=winner, weight=req.weight, source="user:http", id=jid)
    stored = bool(await asyncio.to_thread(service.store.add, judgment))
    service.metrics.feedback.labels(kind, str(stored).lower()).inc()
    return FeedbackResponse(decision_id=rec.id, judgment_id=jid, stored=stored, model_a=a, model_b=b,
                            winner=winner, reward=await attach_reward(service, rec, req, jid))
