"""mmroute: route each text+image LLM query to the model that answers it best for the money.

The names below are the main job - train a router on judgments, route, record feedback,
retrain, and drop it into LangGraph::

    from mmroute import ModelPool, Router, read_judgments, train_router

Everything else lives in its subpackage (``mmroute.verify``, ``mmroute.llm``, ``mmroute.eval``,
``mmroute.features``, ...), test doubles in ``mmroute.testing`` and offline set-up in
``mmroute.offline``. The names are loaded on first use (PEP 562), so ``import mmroute`` imports
neither torch nor litellm nor langgraph, and changes no environment variable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .data.example import example_dir
    from .data.formats import Judgment, read_judgments
    from .data.store import FeedbackStore
    from .graph import RoutedChatModel, create_cascade_graph, create_router_node
    from .policy import CostAwarePolicy, RouteDecision
    from .pool import ModelPool, ModelSpec
    from .query import Query
    from .router import Router
    from .retraining import retrain
    from .training import train_router

#: public name -> the module that owns it
_EXPORTS: dict[str, str] = {
    # train, route, retrain
    "Router": "mmroute.router",
    "train_router": "mmroute.training",
    "retrain": "mmroute.retraining",
    "RouteDecision": "mmroute.policy",
    "CostAwarePolicy": "mmroute.policy",
    # inputs: candidate models, queries, judgments, feedback
    "ModelPool": "mmroute.pool",
    "ModelSpec": "mmroute.pool",
    "Query": "mmroute.query",
    "Judgment": "mmroute.data.formats",
    "read_judgments": "mmroute.data.formats",
    "FeedbackStore": "mmroute.data.store",
    "example_dir": "mmroute.data.example",
    # LangGraph / LangChain
    "RoutedChatModel": "mmroute.graph",
    "create_router_node": "mmroute.graph",
    "create_cascade_graph": "mmroute.graph",
}

__all__ = ["CostAwarePolicy", "FeedbackStore", "Judgment", "ModelPool", "ModelSpec", "Query", "RouteDecision",
           "RoutedChatModel", "Router", "create_cascade_graph", "create_router_node", "example_dir", "read_judgments",
           "retrain", "train_router"]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, __all__)
