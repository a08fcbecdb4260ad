"""LangGraph pieces: a router node, cascade nodes, the cascade graph, a routed chat model.

    from mmroute.graph import create_router_node, create_cascade_graph, RoutedChatModel

* ``create_router_node(router, goto=...)``: route the latest user turn; optionally
  ``Command(goto=...)`` to a node per model or tier.
* ``create_cascade_graph(router, verifier=..., ...)``: parse -> plan -> generate -> verify ->
  accept or escalate (to the next stronger model *for this query*), with caps on escalations and
  cost, provider fallback, automatic escalation judgments and optional interrupt() feedback.
* ``RoutedChatModel``: a LangChain chat model that routes every call (``bind_tools`` included),
  for ``create_react_agent`` and anything else that takes a chat model.
* ``RoutingMiddleware``: the same choice as LangChain agent middleware (needs ``langchain``).
"""

from __future__ import annotations

from ..cascade import best_answer, judgment_id, parse_feedback
from .cascade import create_cascade_graph
from .chat_model import RoutedChatModel, to_tool_calls
from .middleware import MIDDLEWARE_AVAILABLE, RoutingMiddleware
from .nodes import (after_verify, create_feedback_node, create_finalize_node, create_generate_node, create_parse_node,
                    create_plan_node, create_router_node, create_verify_node, feedback_request, latest_query,
                    resolve_goto)
from .state import (AnswerState, AttemptState, CascadeState, QueryState, RouterState, Status, VerdictState,
                    decision_from_state, decision_to_state)

__all__ = [
    "MIDDLEWARE_AVAILABLE", "AnswerState", "AttemptState", "CascadeState", "QueryState", "RoutedChatModel", "RouterState",
    "RoutingMiddleware", "Status", "VerdictState", "after_verify", "best_answer", "create_cascade_graph",
    "create_feedback_node", "create_finalize_node", "create_generate_node", "create_parse_node", "create_plan_node",
    "create_router_node", "create_verify_node", "decision_from_state", "decision_to_state", "feedback_request",
    "judgment_id", "latest_query", "parse_feedback", "resolve_goto", "to_tool_calls",
]
