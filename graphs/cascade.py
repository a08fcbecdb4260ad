"""The cascade graph, served by ``langgraph dev`` (see ``langgraph.json``): ``graph`` below.

``graph`` is built on first access (PEP 562 module ``__getattr__``), so importing this module is
cheap and a bad configuration fails when the graph is asked for, with a clear error. It is built
from environment variables:

* ``MMROUTE_ROUTER``: a saved router folder (``Router.save``). Unset: a tiny router is trained
  on the synthetic example set (``preference_data/example``, encoder ``clip:tiny``), with the
  ``replay/`` offline provider answering from its recorded answers - fully offline.
* ``MMROUTE_FEEDBACK_DB``: a feedback store (an SQLite file or a ``postgresql://`` URL). Set:
  escalations are recorded there and a feedback node asks the user with ``interrupt()`` (the
  server provides the checkpointer).
* ``MMROUTE_MAX_ESCALATIONS`` (default 2), ``MMROUTE_MAX_COST`` (USD per query, default none).

For your own setup call :func:`make_graph` (or ``mmroute.graph.create_cascade_graph``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from mmroute.graph import create_cascade_graph

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "preference_data" / "example"


def example_router(example_dir: str | Path = EXAMPLE_DIR, *, encoder: str = "clip:tiny") -> Any:
    """A router trained on the example set, with ``replay/`` serving its recorded answers."""
    from mmroute.data import read_judgments
    from mmroute.llm import RecordedAnswers, register_offline_providers
    from mmroute.policy import CostAwarePolicy
    from mmroute.pool import ModelPool
    from mmroute.training import train_router

    folder = Path(example_dir)
    register_offline_providers(replay_answers=RecordedAnswers.load(folder / "answers.jsonl"))
    pool = ModelPool.load(folder / "pool.yaml")
    judgments = read_judgments(folder / "judgments.jsonl").items
    # lambda ~ 200 quality points per USD: pays ~$0.002 more per query only for a large quality gain
    return train_router(judgments, encoder=encoder, pool=pool, base_dir=folder, policy=CostAwarePolicy(lam=200.0))


def make_graph(router: Any = None, *, verifier: Any = None, feedback_store: Any = None,
               max_escalations: int | None = None, max_cost_per_query: float | None = None,
               checkpointer: Any = None) -> CompiledStateGraph:
    """The cascade with this module's defaults (environment variables fill what is not given)."""
    from mmroute.verify import HeuristicVerifier

    if router is None:
        saved = os.environ.get("MMROUTE_ROUTER")
        if saved:
            from mmroute.router import Router

            router = Router.load(saved)
        else:
            router = example_router()
    if feedback_store is None and os.environ.get("MMROUTE_FEEDBACK_DB"):
        from mmroute.data.store import FeedbackStore

        feedback_store = FeedbackStore(os.environ["MMROUTE_FEEDBACK_DB"])
    if max_escalations is None:
        max_escalations = int(os.environ.get("MMROUTE_MAX_ESCALATIONS", "2"))
    if max_cost_per_query is None and os.environ.get("MMROUTE_MAX_COST"):
        max_cost_per_query = float(os.environ["MMROUTE_MAX_COST"])
    return create_cascade_graph(router, verifier=verifier or HeuristicVerifier(), max_escalations=max_escalations,
                                max_cost_per_query=max_cost_per_query, feedback=feedback_store is not None,
                                feedback_store=feedback_store, checkpointer=checkpointer)


def __getattr__(name: str) -> Any:
    if name == "graph":  # built once, on first access
        built = make_graph()
        globals()["graph"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EXAMPLE_DIR", "example_router", "graph", "make_graph"]
