"""The cascade graph, served by ``langgraph dev`` (``langgraph.json`` -> ``graphs/cascade.py``,
a thin file re-exporting ``graph`` from here, so an installed wheel serves the same graph).

``graph`` is a graph factory in the form langgraph-api loads (a zero-argument async function
returning the compiled graph): importing this module stays cheap, the graph is built on the
first run (in a worker thread, so the server keeps answering meanwhile) and reused after, and a
bad configuration fails then with a clear error. Python callers use :func:`served_graph` (the
same graph, sync) or :func:`make_graph`. It is built from environment variables:

* ``MMROUTE_ROUTER``: a saved router folder (``Router.save``). Unset: a tiny router is trained
  on the synthetic example set (package data, :func:`mmroute.data.example.example_dir`, encoder
  ``clip:tiny``), with the ``replay/`` offline provider (registered then, not at import)
  answering from its recorded answers - fully offline. A question it has no recording for gets the clearly labelled stand-in
  ``mmroute.offline.OFFLINE_FALLBACK_TEXT`` (``response_metadata["offline_fallback"]``).
* ``MMROUTE_FEEDBACK_DB``: a feedback store (an SQLite file or a ``postgresql://`` URL). Set: escalations are recorded there and a
  feedback node asks the user with ``interrupt()`` (the server provides the checkpointer).
* ``MMROUTE_MAX_ESCALATIONS`` (default 2), ``MMROUTE_MAX_COST`` (USD per query, default none).

Real models: train a router (``mmroute train ... --pool pool.yaml --out routers/mine``) whose
pool names LiteLLM models (``openai/gpt-4o-mini``, ``anthropic/claude-...``, an OpenAI-compatible
server via ``litellm_params: {api_base: ...}``), set ``MMROUTE_ROUTER=routers/mine`` and the
providers' API-key variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...) in the server's
environment (or an ``"env": ".env"`` file named in ``langgraph.json``), then run ``langgraph dev``.

Whoever imports this first should call :func:`mmroute.offline.use_local_cost_map` before (as
``graphs/cascade.py`` does): this module imports litellm.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from ..data.example import example_dir as _example_dir
from ..data.store import FeedbackStore
from ..images import http_image_policy
from ..router import Router
from ..verify.base import Verifier
from .cascade import create_cascade_graph
from .nodes import RouterLike


def example_router(example_dir: str | Path | None = None, *, encoder: str = "clip:tiny") -> Router:
    """A router trained on the example set (default: the packaged one), with ``replay/``
    serving its recorded answers."""
    from ..data.formats import read_judgments
    from ..llm.providers import register_offline_providers
    from ..llm.recorded import ReplayAnswers
    from ..policy import CostAwarePolicy
    from ..pool import ModelPool
    from ..training import train_router

    folder = Path(example_dir) if example_dir is not None else _example_dir()
    # unknown questions get the labelled offline stand-in instead of a provider error
    register_offline_providers(replay_answers=ReplayAnswers.load(folder / "answers.jsonl"), replay_fallback=True)
    pool = ModelPool.load(folder / "pool.yaml")
    judgments = read_judgments(folder / "judgments.jsonl").items
    # lambda ~ 200 quality points per USD: pays ~$0.002 more per query only for a large quality gain
    return train_router(judgments, encoder=encoder, pool=pool, base_dir=folder, policy=CostAwarePolicy(lam=200.0))


def make_graph(router: RouterLike | None = None, *, verifier: Verifier | None = None,
               feedback_store: FeedbackStore | None = None, max_escalations: int | None = None,
               max_cost_per_query: float | None = None, checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """The cascade with this module's defaults (environment variables fill what is not given)."""
    from ..verify.heuristic import HeuristicVerifier

    if router is None:
        router = _env_router()
    if feedback_store is None and os.environ.get("MMROUTE_FEEDBACK_DB"):
        feedback_store = FeedbackStore(os.environ["MMROUTE_FEEDBACK_DB"])
    if max_escalations is None:
        max_escalations = int(os.environ.get("MMROUTE_MAX_ESCALATIONS", "2"))
    if max_cost_per_query is None and os.environ.get("MMROUTE_MAX_COST"):
        max_cost_per_query = float(os.environ["MMROUTE_MAX_COST"])
    return create_cascade_graph(router, verifier=verifier or HeuristicVerifier(), max_escalations=max_escalations,
                                max_cost_per_query=max_cost_per_query, feedback=feedback_store is not None,
                                feedback_store=feedback_store, checkpointer=checkpointer)


def _env_router() -> Router:
    saved = os.environ.get("MMROUTE_ROUTER")
    return Router.load(saved) if saved else example_router()


_SERVED: CompiledStateGraph | None = None
_SERVED_LOCK = threading.Lock()


def served_graph() -> CompiledStateGraph:
    """The served graph: ``make_graph()`` from the environment, built once per process."""
    global _SERVED
    with _SERVED_LOCK:
        if _SERVED is None:
            router = _env_router()
            # served over HTTP (``langgraph dev``): a client's image is never a path on this machine
            router.image_policy = http_image_policy(router.image_policy)
            _SERVED = make_graph(router)
        return _SERVED


async def graph() -> CompiledStateGraph:
    """Graph factory for ``langgraph.json``. langgraph-api reads the module namespace and calls a
    zero-argument factory per request; the build (training the example router takes seconds)
    runs in a thread so the server's event loop is not blocked."""
    if _SERVED is not None:
        return _SERVED
    return await asyncio.to_thread(served_graph)


__all__ = ["example_router", "graph", "make_graph", "served_graph"]
