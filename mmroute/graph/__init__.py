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
* ``RouterState`` / ``CascadeState``: the graphs' state schemas; ``decision_from_state`` reads the
  ``RouteDecision`` a router node wrote.

The node factories, state records and helpers stay importable from ``nodes`` / ``state``; the
served graph (``langgraph.json``) is ``served``.
"""

from __future__ import annotations

from .cascade import create_cascade_graph
from .chat_model import RoutedChatModel
from .middleware import RoutingMiddleware
from .nodes import create_router_node
from .state import CascadeState, RouterState, decision_from_state

__all__ = ["CascadeState", "RoutedChatModel", "RouterState", "RoutingMiddleware", "create_cascade_graph",
           "create_router_node", "decision_from_state"]
