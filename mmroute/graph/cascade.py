"""The verify-and-escalate cascade as one compiled LangGraph graph.

    parse -> plan -> generate -> verify --accept / cap--> finalize [-> feedback] -> END
                        ^           |
                        +-escalate--+

The graph's state is :class:`~mmroute.graph.state.CascadeState`; it takes and returns
``messages`` like any chat graph, so it drops into a user's graph as a subgraph node.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from ..router import current_router
from ..data.store import FeedbackStore
from ..errors import ConfigError
from ..llm.breaker import CircuitBreaker
from ..pool import ModelPool
from ..verify.base import Verifier
from .nodes import (RouterLike, after_verify, create_feedback_node, create_finalize_node, create_generate_node,
                    create_parse_node, create_plan_node, create_verify_node)
from .state import CascadeState


def _after_plan(state: dict[str, Any]) -> str:
    return "finalize" if state.get("status") == "over_budget" else "generate"


def create_cascade_graph(router: RouterLike, *, verifier: Verifier, pool: ModelPool | None = None,
                         max_escalations: int = 2, max_cost_per_query: float | None = None, feedback: bool = False,
                         checkpointer: Checkpointer = None, feedback_store: FeedbackStore | None = None,
                         record_escalations: bool = True, llm_kwargs: dict[str, Any] | None = None,
                         name: str = "mmroute_cascade") -> CompiledStateGraph:
    """Build and compile the cascade.

    ``router``: a ``Router`` or ``LiveRouter``; ``pool`` defaults to the router's pool (it carries
    prices and LiteLLM params). Judgments (escalations, user feedback) go to ``feedback_store``;
    ``feedback=True`` adds an ``interrupt()`` asking the user, which needs a checkpointer (pass one,
    or compile the parent graph with one when used as a subgraph).

    Args:
        router: a ``Router`` or ``LiveRouter`` (a live one picks up retrained versions).
        verifier: judges each answer; a rejected one escalates.
        pool: the models to call (default: the router's pool).
        max_escalations: escalations per query at most.
        max_cost_per_query: USD cap on one query's calls; no escalation past it.
        feedback: ask the user with ``interrupt()`` after the answer.
        checkpointer: LangGraph checkpointer (needed for ``feedback``).
        feedback_store: where escalation and user judgments go.
        record_escalations: store "the stronger model won" when an escalation is accepted.
        llm_kwargs: extra kwargs for ``mmroute.llm.complete``.
        name: the compiled graph's name.

    Returns:
        The compiled graph (input: ``{"messages": [...]}``).

    Raises:
        ConfigError: no verifier.
    """
    if verifier is None:
        raise ConfigError("the cascade needs a verifier (e.g. mmroute.verify.HeuristicVerifier())")
    pool = pool if pool is not None else current_router(router).pool
    builder = StateGraph(CascadeState)
    # langgraph's add_node overloads want a node typed on a TypedDict; our node factories take the
    # state as a plain dict (they serve RouterState and CascadeState alike), which works at runtime
    builder.add_node("parse", create_parse_node(router))  # type: ignore[call-overload]
    builder.add_node("plan",  # type: ignore[call-overload]
                     create_plan_node(router, max_cost_per_query=max_cost_per_query))
    # one breaker for the graph: a dead provider is skipped after a few failures, not retried per request
    llm_kwargs = {"breaker": CircuitBreaker(), **(llm_kwargs or {})}
    builder.add_node("generate", create_generate_node(pool, **llm_kwargs))
    builder.add_node("verify", create_verify_node(  # type: ignore[call-overload]
        verifier, router, max_escalations=max_escalations, max_cost_per_query=max_cost_per_query))
    builder.add_node("finalize", create_finalize_node(router, store=feedback_store, record_escalations=record_escalations))
    builder.add_edge(START, "parse")
    builder.add_edge("parse", "plan")
    builder.add_conditional_edges("plan", _after_plan, ["generate", "finalize"])
    builder.add_edge("generate", "verify")
    builder.add_conditional_edges("verify", after_verify, ["generate", "finalize"])
    if feedback:
        builder.add_node("feedback", create_feedback_node(router, store=feedback_store))
        builder.add_edge("finalize", "feedback")
        builder.add_edge("feedback", END)
    else:
        builder.add_edge("finalize", END)
    return builder.compile(checkpointer=checkpointer, name=name)


__all__ = ["create_cascade_graph"]
