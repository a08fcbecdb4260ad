"""The verify-and-escalate cascade's decisions, written once and free of any framework.

The LangGraph nodes (``mmroute.graph.nodes``), the routed chat model and the agent middleware
all escalate the same way: after a rejected answer the next models are the router's stronger
ones *for this query* that were not tried yet, within the escalation and cost caps; an accepted
escalation teaches the store "accepted beats each rejected"; a user's single rating becomes a
pairwise judgment against the router's reference model. Those rules live here, over
``RouteDecision``, ``mmroute.llm.Answer`` and ``Verdict``; the adapters only move state around.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .constraints import Constraints
from .errors import InvalidInputError
from .payload import to_request
from .policy import RouteDecision
from .router import LiveRouter, Router, current_router

if TYPE_CHECKING:
    from .learning.routing import ExploringRouter
    from .graph.state import AnswerState, VerdictState
    from .llm.call import Answer
    from .verify.base import Verdict

#: What the cascade does after a verdict (the first four end it).
StepStatus = Literal["accepted", "max_escalations", "all_rejected", "cost_cap", "escalating"]
Rating = Literal["good", "bad"]
RATINGS: tuple[Rating, ...] = ("good", "bad")
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")


@dataclass(frozen=True)
class CascadeStep:
    """The cascade's move after a verdict: stop (``status`` says why) or escalate to ``models``."""

    status: StepStatus
    models: tuple[str, ...] = ()

    @property
    def escalates(self) -> bool:
        return self.status == "escalating"


def route_call(router: "Router | LiveRouter | ExploringRouter", messages: Sequence[Any], *, tools: Sequence[Any] | None = None,
               system: Any = None, include_context: bool = False,
               constraints: Constraints | None = None) -> RouteDecision:
    """Route one model call: features from the latest user turn (all turns with
    ``include_context``), hard filters on everything sent (``system``: a prompt string or a system
    message of any dialect; every turn and image; the bound tools)."""
    from .learning.routing import ExploringRouter

    r = router.router if isinstance(router, ExploringRouter) else current_router(router)
    query, payload = to_request(list(messages), include_context=include_context, image_policy=r.image_policy,
                                tools=tools, system=system)
    chooser = router if isinstance(router, ExploringRouter) else r  # an exploring router draws, with its propensity
    return chooser.route(query, payload=payload, constraints=constraints)


def within_budget(decision: RouteDecision, models: Sequence[str], spent: float, cap: float | None) -> list[str]:
    """The models whose predicted cost for this query still fits under ``cap`` after ``spent``."""
    if cap is None:
        return list(models)
    cost = {c.model: c.expected_cost for c in decision.candidates}
    return [m for m in models if spent + cost.get(m, 0.0) <= cap + 1e-12]


def next_step(decision: RouteDecision, *, answered: str, accepted: bool, tried: Iterable[str], escalations: int,
              max_escalations: int, spent: float = 0.0, max_cost: float | None = None) -> CascadeStep:
    """After ``answered``'s answer got a verdict: accept it, or move on to the models not yet
    ``tried`` whose predicted cost fits ``max_cost``: the stronger ones first (the router's order
    for this query), and when none is stronger (the routed model was already the predicted best)
    the other eligible ones, best predicted first. ``all_rejected``: every eligible model was tried."""
    if accepted:
        return CascadeStep("accepted")
    if escalations >= max_escalations:
        return CascadeStep("max_escalations")
    done = set(tried)
    nxt = [m for m in decision.escalation_order(after=answered) if m not in done]
    if not nxt:  # a rejected answer is no answer, even from the predicted best: the others may do better
        rest = [c for c in decision.candidates if c.eligible and c.model not in done and c.model != answered]
        nxt = [c.model for c in sorted(rest, key=lambda c: (-c.quality, c.expected_cost))]
    if not nxt:
        return CascadeStep("all_rejected")
    affordable = within_budget(decision, nxt, spent, max_cost)
    if not affordable:
        return CascadeStep("cost_cap")
    return CascadeStep("escalating", tuple(affordable))


def verified(answer: Mapping[str, Any] | None) -> bool:
    """Whether the verifier accepted this answer (False for an answer it rejected or never saw)."""
    return bool(answer and (answer.get("verdict") or {}).get("accept"))


def best_answer(answers: Sequence[AnswerState]) -> AnswerState | None:
    """The accepted answer, else the most confident one (the later, stronger one on ties)."""
    if not answers:
        return None
    for a in reversed(answers):
        if a.get("verdict") and a["verdict"]["accept"]:
            return a
    return max(reversed(answers), key=lambda a: (a.get("verdict") or {}).get("confidence", 0.0))


def escalation_judgments(final: Mapping[str, Any], answers: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(winner, loser)`` model pairs an accepted escalation teaches: the accepted answer beats
    every rejected answer of another model. Nothing when ``final`` was not accepted.

    Answers are records with ``model`` and ``verdict`` (``AnswerState`` or the chat model's
    per-call history)."""
    if not (final.get("verdict") or {}).get("accept"):
        return []
    out = []
    for rejected in answers:
        verdict = rejected.get("verdict")
        if rejected is final or rejected["model"] == final["model"] or not verdict or verdict["accept"]:
            continue
        out.append((str(final["model"]), str(rejected["model"])))
    return out


def rating_judgment(decision: RouteDecision, model: str, rating: Rating) -> tuple[str, str, str] | None:
    """A single rating as a pairwise judgment ``(model_a, model_b, winner)`` against the router's
    reference for this query.

    The reference is the next stronger model (escalation order), else the best weaker one.
    "good" from the cheaper side means it was enough (tie); "bad" means the stronger would have
    won. For the strongest model: "good" beats the runner-up, "bad" is a both-bad tie.
    """
    stronger = decision.escalation_order(after=model) if model in {c.model for c in decision.candidates} else []
    if stronger:
        ref = stronger[0]
        return (model, ref, "tie") if rating == "good" else (model, ref, "model_b")
    others = sorted((c for c in decision.candidates if c.eligible and c.model != model), key=lambda c: -c.quality)
    if not others:
        return None
    ref = others[0].model
    return (model, ref, "model_a") if rating == "good" else (model, ref, "tie (bothbad)")


def parse_feedback(value: Any) -> dict[str, str] | None:
    """Validate a user's feedback: ``{"winner": ...}``, ``{"rating": ...}``, or ``None`` to skip."""
    if value is None or (isinstance(value, Mapping) and value.get("skip")):
        return None
    if isinstance(value, str):
        value = {"rating": value} if value in RATINGS else {"winner": value}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"feedback must be a dict like {{'winner': 'model_a'}} or {{'rating': 'good'}}, got {value!r}")
    if "winner" in value:
        if value["winner"] not in WINNERS:
            raise InvalidInputError(f"feedback winner must be one of {', '.join(WINNERS)}, got {value['winner']!r}")
        return {"winner": str(value["winner"])}
    if "rating" in value:
        if value["rating"] not in RATINGS:
            raise InvalidInputError(f"feedback rating must be 'good' or 'bad', got {value['rating']!r}")
        return {"rating": str(value["rating"])}
    raise InvalidInputError(f"feedback needs 'winner' or 'rating', got keys {sorted(value)}")


def judgment_id(kind: str, thread: str, query_hash: str, model_a: str, model_b: str, turn: int = 0) -> str:
    """Deterministic id, so a node that re-runs (interrupt/resume, retries) stores nothing twice.

    Thread and turn are part of it: the same question asked again later is new evidence.
    """
    key = json.dumps([kind, thread, turn, query_hash, model_a, model_b], separators=(",", ":"))
    return f"{kind}:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def user_turn(messages: Sequence[Any]) -> int:
    """How many user turns the conversation has: names the current turn, stably across re-runs."""
    return sum(1 for m in messages or () if getattr(m, "type", None) == "human"
               or (isinstance(m, Mapping) and m.get("role") == "user"))


def verdict_state(verdict: Verdict) -> VerdictState:
    """A verifier's ``Verdict`` as the checkpointable record the cascade keeps."""
    return {"confidence": float(verdict.confidence), "accept": bool(verdict.accept), "reason": str(verdict.reason),
            "cost_usd": float(getattr(verdict, "cost_usd", 0.0) or 0.0)}


def answer_state(answer: Answer, step: int) -> AnswerState:
    """An ``mmroute.llm.Answer`` as a checkpointable dict (without its raw response or attempts)."""
    return {
        "model": str(answer.model),
        "text": str(getattr(answer, "text", "") or ""),
        "cost_usd": float(getattr(answer, "cost_usd", 0.0) or 0.0),
        "latency_s": float(getattr(answer, "latency_s", 0.0) or 0.0),
        "finish_reason": getattr(answer, "finish_reason", None),
        "tool_calls": [dict(tc) if isinstance(tc, Mapping) else _jsonable(tc) for tc in getattr(answer, "tool_calls", None) or []],
        "step": step,
        "verdict": None,
    }


def answer_from_state(rec: AnswerState) -> Answer:
    """The ``Answer`` a checkpointed record stands for, for verifiers (which read its attributes)."""
    from .llm.call import Answer  # lazily: mmroute.llm imports LiteLLM

    return Answer(text=rec["text"], model=rec["model"], finish_reason=rec.get("finish_reason"),
                  cost_usd=rec.get("cost_usd", 0.0), latency_s=rec.get("latency_s", 0.0),
                  tool_calls=list(rec.get("tool_calls") or []))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return json.loads(json.dumps(obj, default=str))


__all__ = ["RATINGS", "WINNERS", "CascadeStep", "Rating", "StepStatus", "answer_from_state", "answer_state",
           "best_answer", "current_router", "escalation_judgments", "judgment_id", "next_step", "parse_feedback",
           "rating_judgment", "route_call", "user_turn", "verdict_state", "verified", "within_budget"]
