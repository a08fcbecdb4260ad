"""The OpenAI-compatible HTTP server: ``create_app(router, ...)`` returns a FastAPI app.

Routing logic stays in ``Router``; this module only turns HTTP into queries and decisions and
back: features are batched across concurrent requests (``batching``), decisions are remembered
for feedback (``decisions``), and a ``LiveRouter`` is polled off the request path so a newly
published version is picked up between requests, never during one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..router import LiveRouter, Router
from .errors import STORE_RETRY_AFTER_S, HTTPError, install_error_handlers
from .inputs import read_json
from .schemas import (ROUTER_MODEL, ChatRequest, FeedbackRequest, FeedbackResponse, ModelCard, ModelList,
                      RouteRequest, document_bodies)

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ..learning.routing import ExploringRouter
    from .retrainer import Retrainer

from .chat import chat_completion
from .feedback import handle_feedback
from .middleware import GuardMiddleware
from .service import FeedbackSink, RouterService, ServerConfig, decision_headers, route_response

log = logging.getLogger("mmroute.server")

# -- the app ----------------------------------------------------------------------------------------------

def create_app(router: "Router | LiveRouter | ExploringRouter", *, store: FeedbackSink | None = None,
               cascade: "CompiledStateGraph | None" = None, config: ServerConfig | None = None,
               llm_kwargs: dict[str, Any] | None = None, retrainer: "Retrainer | None" = None) -> FastAPI:
    """The server for ``router`` (a ``LiveRouter`` is hot-reloaded; an ``ExploringRouter`` explores
    over its router's current version); ``cascade``: a compiled ``create_cascade_graph`` used for
    chat requests unless a request turns it off; ``store``: where ``/v1/feedback`` writes judgments
    and (a ``FeedbackStore``) every decision; ``retrainer``: retrain in the background (a
    :class:`~mmroute.server.retrainer.Retrainer`); ``llm_kwargs``: extra ``mmroute.llm`` kwargs."""
    service = RouterService(router, store=store, cascade=cascade, config=config, llm_kwargs=llm_kwargs,
                            retrainer=retrainer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="mmroute", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    install_error_handlers(app, service.metrics)
    app.add_middleware(GuardMiddleware, config=service.config, metrics=service.metrics)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Readiness: 503 (``status: unavailable``, Retry-After) while the feedback store cannot be
        reached, so a load balancer sends feedback to replicas that can keep it."""
        r = service.router
        body = {"status": "ok", "router_version": r.version, "models": r.pool.names,
                "cascade": service.cascade is not None, "feedback_store": service.store is not None}
        if await service.store_reachable():
            return JSONResponse(body)
        body.update(status="unavailable", reason="the feedback store cannot be reached")
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})

    @app.get("/metrics")
    async def metrics() -> Response:
        data, ctype = service.metrics.render()
        return Response(content=data, media_type=ctype)

    @app.get("/v1/models")
    async def models() -> ModelList:
        cards = [ModelCard(id=ROUTER_MODEL)]
        if service.config.pass_through:
            cards += [ModelCard(id=m, owned_by="mmroute-pool") for m in service.router.pool.names]
        return ModelList(data=cards)

    @app.post("/v1/route")
    async def route(request: Request) -> JSONResponse:
        req = await read_json(request, RouteRequest, "route request")
        messages, images = await service.admit(req.messages, req.images)
        _, rec = await service.decide(messages, req.mmroute, text=req.text, images=images)
        await service.persist(rec)
        return JSONResponse(route_response(rec).model_dump(mode="json"), headers=decision_headers(rec, rec.decision.model))

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> FeedbackResponse:
        req = await read_json(request, FeedbackRequest, "feedback")
        return await handle_feedback(service, req)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        req = await read_json(request, ChatRequest, "chat request")
        messages, _ = await service.admit(req.messages)
        return await chat_completion(service, req.model_copy(update={"messages": messages}))

    document_bodies(app, {"/v1/chat/completions": ChatRequest, "/v1/route": RouteRequest, "/v1/feedback": FeedbackRequest})
    return app


__all__ = ["FeedbackSink", "GuardMiddleware", "HTTPError", "RouterService", "ServerConfig", "create_app", "route_response"]
