"""Typed LangGraph state for routing and the verify-and-escalate cascade.

Everything in the state is JSON-able (plain dicts, lists, numbers, LangChain messages) so any
checkpointer can persist it and ``langgraph dev`` can show it; a ``RouteDecision`` is stored as
its ``model_dump(mode="json")`` and rebuilt with :func:`decision_from_state`.

Per-query lists (``answers``, ``attempts``) append through reducers, so a node returns only
what it adds. A new query on the same thread must start them empty: the parse node writes
``Overwrite([])`` (LangGraph's way to bypass a reducer once) instead of inventing a sentinel.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

from ..errors import InvalidInputError
from ..policy import RouteDecision
from ..query import Query

Status = Literal[
    "routed",          # a model is chosen, nothing generated yet
    "escalating",      # the last answer was rejected and another model is next (a stronger one first)
    "accepted",        # the verifier accepted the final answer
    "max_escalations", # rejected, but the escalation cap is reached: best answer kept
    "cost_cap",        # rejected, but the next model would break the cost cap: best answer kept
    "all_rejected",    # every eligible model answered and was rejected: the most confident answer is kept, unverified
    "provider_error",  # every candidate of a step failed; attempts are in the state
    "over_budget",     # not even the first call fits the cost cap: nothing was generated
]


class AttemptState(TypedDict):
    """One provider call, successful or not (fallbacks and retries included): an
    ``mmroute.llm.Attempt`` as kept in the state."""

    model: str
    ok: bool
    error: NotRequired[str | None]
    error_type: NotRequired[str | None]  # mmroute.llm's classification: rate_limit, timeout, ...
    cost_usd: NotRequired[float]
    latency_s: NotRequired[float]
    step: NotRequired[int]


class VerdictState(TypedDict):
    """A ``mmroute.verify.Verdict`` as kept in the state (``mmroute.cascade.verdict_state``)."""

    confidence: float
    accept: bool
    reason: str
    cost_usd: float


class AnswerState(TypedDict):
    """One model's answer to the query, with what it cost and what the verifier said: an
    ``mmroute.llm.Answer`` made checkpointable (``mmroute.cascade.answer_state`` /
    ``answer_from_state``; attempts are kept apart, in ``attempts``)."""

    model: str
    text: str
    cost_usd: float
    latency_s: float
    finish_reason: str | None
    tool_calls: list[dict[str, Any]]
    step: int                      # 0: first answer, k: k-th escalation
    verdict: VerdictState | None  # filled in by the verify node


class QueryState(TypedDict):
    """What routing and auditing need to know of the ``mmroute.query.Query``, without its image
    bytes (those stay in ``messages``)."""

    hash: str
    text: str
    n_images: int


def query_state(query: Query) -> QueryState:
    """The state's record of a ``Query``: its fingerprint and modality, not its bytes."""
    return {"hash": query.content_hash, "text": query.text, "n_images": query.n_images}


def _merge_answers(left: list[AnswerState] | None, right: list[AnswerState] | None) -> list[AnswerState]:
    """Append new answers; an update for an answer already present (same step) replaces it.

    The verify node attaches a verdict by sending the answer again with ``verdict`` set, so the
    answer list stays the single record of each answer rather than splitting it over two keys.
    """
    out = list(left or [])
    for new in right or []:
        for i, old in enumerate(out):
            if old["step"] == new["step"] and old["model"] == new["model"]:
                out[i] = new
                break
        else:
            out.append(new)
    return out


class RouterState(TypedDict):
    """The smallest state a router node works with: chat messages in, a route out."""

    messages: Annotated[list[AnyMessage], add_messages]
    route: NotRequired[dict[str, Any] | None]


class CascadeState(TypedDict):
    """State of the cascade graph (also its input/output schema when used as a subgraph)."""

    messages: Annotated[list[AnyMessage], add_messages]
    query: NotRequired[QueryState]
    route: NotRequired[dict[str, Any] | None]
    candidates: NotRequired[list[str]]  # models the next generate call may use, in order
    answers: NotRequired[Annotated[list[AnswerState], _merge_answers]]
    attempts: NotRequired[Annotated[list[AttemptState], operator.add]]
    escalations: NotRequired[int]
    total_cost_usd: NotRequired[float]  # generation + verification, this query only
    status: NotRequired[Status]
    final: NotRequired[AnswerState | None]
    error: NotRequired[str | None]
    feedback: NotRequired[dict[str, Any] | None]


def decision_to_state(decision: RouteDecision) -> dict[str, Any]:
    return decision.model_dump(mode="json")


def decision_from_state(state: Any) -> RouteDecision:
    """The ``RouteDecision`` a router node stored (``state["route"]``)."""
    raw = state.get("route") if isinstance(state, dict) else state
    if not raw:
        raise InvalidInputError("the state has no route yet; run the router node first")
    return RouteDecision.model_validate(raw)


__all__ = ["AnswerState", "AttemptState", "CascadeState", "QueryState", "RouterState", "Status", "VerdictState",
           "decision_from_state", "decision_to_state", "query_state"]
