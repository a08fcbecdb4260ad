"""The OpenAI-compatible HTTP server: ``create_app(router, ...)`` returns a FastAPI app.

Routing logic stays in ``Router``; this module only turns HTTP into queries and decisions and
back: features are batched across concurrent requests (``batching``), decisions are remembered
for feedback (``decisions``), and a ``LiveRouter`` is polled off the request path so a newly
published version is picked up between requests, never during one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInputError, MMRouteError, ProviderError
from ..images import http_image_policy
from ..llm.breaker import CircuitBreaker
from ..llm.call import Answer, AnswerStream
from ..payload import Payload
from ..policy import RouteDecision, with_lam
from ..query import Query
from ..router import LiveRouter, Router
from .batching import FeatureBatcher
from .decisions import DecisionStore, DecisionRecord, RecentDecisions
from .errors import HTTPError, install_error_handlers
from .errors import error_body as _error_body
from .inputs import RemoteImages, admit_images, admit_messages, fetch_policy, read_json
from .metrics import ServerMetrics
from .schemas import (ROUTER_MODEL, Candidate, ChatRequest, FeedbackRequest, FeedbackResponse, ModelCard, ModelList,
                      RouteOptions, RouteRequest, RouteResponse, document_bodies)

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ..data.formats import Judgment
    from ..learning.routing import ExploringRouter
    from .retrainer import Retrainer

log = logging.getLogger("mmroute.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FeedbackSink(Protocol):
    """What the server needs of a feedback store (``FeedbackStore`` or any other backend)."""

    def add(self, judgment: "Judgment") -> bool: ...


class ServerConfig(BaseModel):
    """Limits and switches of one server (the ``mmroute serve`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = Field((), description="bearer keys; empty = no authentication")
    max_body_bytes: int = Field(20_000_000, gt=0, description="request bodies over this are refused (413)")
    max_images: int = Field(16, ge=0, description="images per request")
    max_batch: int = Field(32, ge=1, description="queries per feature batch")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the first query of a batch waits for company")
    remember_decisions: int = Field(10_000, ge=1, description="decisions kept in memory for /v1/feedback")
    decision_max_age_s: float | None = Field(None, gt=0, description="feedback on an older decision is refused and "
                                             "the store's older decisions are pruned (None: kept until pruned)")
    pass_through: bool = Field(False, description="list the pool's models and let clients call one directly")
    log_prompts: bool = Field(False, description="log prompt text (off: prompts are never logged)")
    reload_interval_s: float = Field(1.0, gt=0, description="how often a LiveRouter is checked for a new version")
    llm_timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    remote_images: RemoteImages = Field("refuse", description="http(s) image URLs: refuse (400), forward to the "
                                        "provider untouched, or fetch under the SSRF checks (docs/security.md)")
    trusted_image_hosts: tuple[str, ...] = Field((), description="with fetch: hosts exempt from the "
                                                 "private-address check (an internal image server you trust)")


def _version_name(router: Router) -> str | None:
    folder = router.metadata.get("version_dir")
    return Path(str(folder)).name if folder else None


# -- ASGI middleware: authentication, body size limit, request metrics ---------------------------------------

class GuardMiddleware:
    """Bearer keys, a body size cap (buffered, so the limit holds with or without Content-Length)
    and per-endpoint request counts / latency to the last byte (streams included)."""

    OPEN_PATHS = ("/healthz",)

    def __init__(self, app: ASGIApp, *, config: ServerConfig, metrics: ServerMetrics):
        self.app = app
        self.config = config
        self.metrics = metrics
        self._keys = [k.encode() for k in config.api_keys]

    def _authorised(self, scope: Scope) -> bool:
        if not self._keys or scope["path"] in self.OPEN_PATHS:
            return True
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
                    return any(hmac.compare_digest(given, k) for k in self._keys)
        return False

    async def _reply(self, send: Send, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
        t0 = time.perf_counter()
        status_box = {"status": 500}
        self.metrics.in_flight.inc()

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

        try:
            if not self._authorised(scope):
                status_box["status"] = 401
                await self._reply(send_wrapped, 401, _error_body(
                    "missing or invalid API key (send 'Authorization: Bearer <key>')", "authentication_error",
                    "invalid_api_key"))
                return
            limit = self.config.max_body_bytes
            declared = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                status_box["status"] = 413
                await self._reply(send_wrapped, 413, _error_body(
                    f"request body is {int(declared)} bytes, over the {limit}-byte limit", "invalid_request_error",
                    "request_too_large"))
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    status_box["status"] = 413
                    await self._reply(send_wrapped, 413, _error_body(
                        f"request body is over the {limit}-byte limit", "invalid_request_error", "request_too_large"))
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False

            async def receive_buffered() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, receive_buffered, send_wrapped)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status_box["status"])).inc()


_ENDPOINTS = ("/v1/chat/completions", "/v1/models", "/v1/route", "/v1/feedback", "/healthz", "/metrics")


# -- the service -------------------------------------------------------------------------------------------

class RouterService:
    """Everything one app holds: the router (hot-reloaded), batcher, decisions, metrics, store."""

    def __init__(self, router: "Router | LiveRouter | ExploringRouter", *, store: FeedbackSink | None = None,
                 cascade: "CompiledStateGraph | None" = None, config: ServerConfig | None = None,
                 llm_kwargs: dict[str, Any] | None = None, metrics: ServerMetrics | None = None,
                 retrainer: "Retrainer | None" = None):
        from ..learning.routing import ExploringRouter

        self.config = config or ServerConfig()
        # exploring: route through the wrapper, over whichever version of its router is current
        self.explorer = router if isinstance(router, ExploringRouter) else None
        source = router.source if isinstance(router, ExploringRouter) else router
        self.live = source if isinstance(source, LiveRouter) else None
        self._router: Router = source.router if isinstance(source, LiveRouter) else source
        self.retrainer = retrainer
        self.store = store
        self.cascade = cascade
        self.metrics = metrics or ServerMetrics()
        self.decisions = RecentDecisions(self.config.remember_decisions)
        self.batcher = FeatureBatcher(max_batch=self.config.max_batch, max_wait_s=self.config.max_wait_ms / 1000.0,
                                      on_batch=self.metrics.observe_batch)
        self.breaker = CircuitBreaker()
        self.llm_kwargs = dict(llm_kwargs or {})
        self._reload_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[None] | None = None
        self._retrain_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def router(self) -> Router:
        """The router new requests use; a request keeps the one it started with."""
        return self._router

    async def start(self) -> None:
        await self.batcher.start()
        self.metrics.serving(_version_name(self._router))
        log.info("serving router version %s%s", _version_name(self._router),
                 f" exploring ({self.explorer.policy.name})" if self.explorer is not None else "")
        if self.retrainer is not None:
            self._retrain_task = asyncio.create_task(self.retrainer.watch(self), name="mmroute-retrain")
        if self.live is not None:
            self._reload_task = asyncio.create_task(self._watch(), name="mmroute-router-reload")
        if self.config.decision_max_age_s is not None and isinstance(self.store, DecisionStore):
            self._prune_task = asyncio.create_task(self._prune(), name="mmroute-decision-prune")

    async def stop(self) -> None:
        for task in (self._reload_task, self._prune_task, self._retrain_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        await self.batcher.stop()

    async def _prune(self) -> None:
        """Drop the store's decisions past ``decision_max_age_s`` now and then (every replica may; deleting twice is harmless)."""
        age = float(self.config.decision_max_age_s or 0.0)
        while True:
            try:
                n = await asyncio.to_thread(self.store.decisions.prune, age)  # type: ignore[union-attr]
                if n:
                    log.info("pruned %d served decisions older than %.0f s", n, age)
            except MMRouteError as exc:
                self.metrics.errors.labels("decision_store").inc()
                log.error("could not prune served decisions: %s", exc)
            await asyncio.sleep(min(max(age / 10, 1.0), 3600.0))

    async def reload_now(self) -> bool:
        """Check for a newly published router version and switch to it (loading off the event loop)."""
        assert self.live is not None
        try:
            changed = await asyncio.to_thread(self.live.refresh)
        except MMRouteError as exc:  # a broken new version: keep serving the old one
            self.metrics.errors.labels("reload").inc()
            log.error("router reload failed, still serving %s: %s", _version_name(self._router), exc)
            return False
        if changed:
            self._router = self.live.router
            self.metrics.reloads.inc()
            self.metrics.serving(_version_name(self._router))
            log.info("now serving router version %s", _version_name(self._router))
        return changed

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            await self.reload_now()

    # -- decisions kept for feedback ------------------------------------------------------------------
    async def persist(self, rec: DecisionRecord) -> None:
        """Write a decision (once its answering model is known) to the store, if it keeps decisions,
        so another replica or a restarted one can take feedback on it. A failed write is logged and
        counted, not the request's error: the decision is still in this replica's memory."""
        if not isinstance(self.store, DecisionStore):
            return
        try:
            await asyncio.to_thread(self.store.decisions.log, rec.decision, rec.query, router_version=rec.router_version,
                                    answered_by=rec.answered_by, cost=rec.cost_usd, added_at=rec.created)
        except MMRouteError as exc:
            self.metrics.errors.labels("decision_store").inc()
            log.error("could not store decision %s (feedback on it works on this replica only): %s", rec.id, exc)

    async def lookup(self, decision_id: str) -> DecisionRecord | None:
        """A decision by id: this replica's memory first, then the store (decisions of other replicas
        and from before a restart)."""
        max_age = self.config.decision_max_age_s
        rec = self.decisions.get(decision_id)
        if rec is not None or not isinstance(self.store, DecisionStore):
            return None if rec is not None and max_age is not None and time.time() - rec.created > max_age else rec
        found = await asyncio.to_thread(self.store.decisions.find, decision_id)
        if found is None or found.decision is None or found.query is None or (
                max_age is not None and time.time() - found.added_at > max_age):
            return None  # decision=None: logged by an old notebook log, which kept no whole decision to rate
        q = Query.build(found.query.text, found.query.images, image_policy=http_image_policy(self._router.image_policy))
        return DecisionRecord(id=decision_id, query=q, decision=found.decision, answered_by=found.answered_by,
                              router_version=found.router_version, created=found.added_at, cost_usd=found.cost)

    # -- routing -----------------------------------------------------------------------------------------
    async def admit(self, messages: Sequence[dict[str, Any]] | None,
                    images: Sequence[str] = ()) -> tuple[list[dict[str, Any]] | None, list[str]]:
        """A client's messages / images as the server may use them (``inputs``): no local paths,
        remote URLs refused, forwarded or fetched by ``remote_images``; off the event loop (fetches block)."""
        mode = self.config.remote_images
        policy = fetch_policy(self._router.image_policy, self.config.trusted_image_hosts) if mode == "fetch" else None

        def check() -> tuple[list[dict[str, Any]] | None, list[str]]:
            msgs = None if messages is None else admit_messages(messages, mode, policy)
            return msgs, admit_images(images, mode, policy)

        if mode != "fetch":
            return check()
        return await asyncio.to_thread(check)

    def _query(self, router: Router, messages: Sequence[dict[str, Any]] | None, text: str | None,
               images: Sequence[str]) -> Query:
        policy = http_image_policy(router.image_policy)  # never a local path, never a fetch here
        if messages is not None:
            q = Query.from_messages(messages, image_policy=policy)
        else:
            q = Query.build(text or "", images, image_policy=policy)
        if q.n_images > self.config.max_images:
            raise InvalidInputError(f"the query has {q.n_images} images, over the server's limit of {self.config.max_images}")
        return q

    async def decide(self, messages: Sequence[dict[str, Any]] | None, opts: RouteOptions, *,
                     text: str | None = None, images: Sequence[str] = (),
                     tools: Sequence[dict[str, Any]] | None = None) -> tuple[Router, DecisionRecord]:
        router = self._router
        self.batcher.coming()
        try:
            q = await asyncio.to_thread(self._query, router, messages, text, images)  # images are decoded and checked here
        finally:
            self.batcher.not_coming()
        x = await self.batcher.features(router.pipeline.transform, q)
        policy = with_lam(router.policy, opts.lam)
        # the features see the last user turn; the filters see everything that will be sent
        payload = Payload.from_messages(messages, tools=tools) if messages is not None else Payload.of_query(q)
        if payload.n_images > self.config.max_images:
            raise InvalidInputError(f"the conversation has {payload.n_images} images, over the server's limit of "
                                    f"{self.config.max_images}")
        decision = router.route_features(q, x, policy=policy, constraints=opts.constraints(), payload=payload)
        rec_id = RecentDecisions.new_id()
        if self.explorer is not None:  # the same filters and per-request limits, then a draw from the policy
            greedy = decision.model
            decision = self.explorer.route_features(q, x, payload=payload, router=router, lam=opts.lam,
                                                    decision_id=rec_id, constraints=opts.constraints())
            if decision.model != greedy:
                self.metrics.explored.inc()
        else:
            decision = decision.model_copy(update={"decision_id": rec_id})
        rec = DecisionRecord(id=rec_id, query=q, decision=decision, router_version=_version_name(router))
        self.decisions.add(rec)
        self.metrics.decisions_kept.set(len(self.decisions))
        self.metrics.routes.labels(decision.model).inc()
        if self.config.log_prompts:
            log.info("decision %s -> %s prompt=%r", rec.id, decision.model, q.text[:500])
        else:
            log.info("decision %s -> %s (%d images)", rec.id, decision.model, q.n_images)
        return router, rec


def route_response(rec: DecisionRecord) -> RouteResponse:
    d = rec.decision
    return RouteResponse(decision_id=rec.id, model=d.model, reason=d.reason, policy=d.policy, knob=d.knob,
                         fallbacks=d.fallbacks, escalation_order=d.escalation_order(),
                         candidates=[Candidate(**c.model_dump()) for c in d.candidates], filtered=d.filtered,
                         router_version=rec.router_version, propensity=d.propensity,
                         probabilities=d.choice_probabilities())


def _mmroute_meta(rec: DecisionRecord, answer: Answer | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"decision_id": rec.id, "routed_model": rec.decision.model, "reason": rec.decision.reason,
                            "router_version": rec.router_version}
    if answer is not None:
        meta.update({"model": answer.model, "cost_usd": answer.total_cost_usd,
                     "attempts": [a.model_dump(mode="json") for a in answer.attempts]})
    meta.update(extra)
    return meta


def _headers(rec: DecisionRecord, model: str) -> dict[str, str]:
    return {"x-mmroute-model": model, "x-mmroute-decision-id": rec.id,
            "x-mmroute-propensity": f"{rec.decision.propensity:.6g}"}


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
    async def healthz() -> dict[str, Any]:
        r = service.router
        return {"status": "ok", "router_version": _version_name(r), "models": r.pool.names,
                "cascade": service.cascade is not None, "feedback_store": service.store is not None}

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
        return JSONResponse(route_response(rec).model_dump(mode="json"), headers=_headers(rec, rec.decision.model))

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> FeedbackResponse:
        req = await read_json(request, FeedbackRequest, "feedback")
        return await _feedback(service, req)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        req = await read_json(request, ChatRequest, "chat request")
        messages, _ = await service.admit(req.messages)
        return await _chat(service, req.model_copy(update={"messages": messages}))

    document_bodies(app, {"/v1/chat/completions": ChatRequest, "/v1/route": RouteRequest, "/v1/feedback": FeedbackRequest})
    return app


# -- chat -------------------------------------------------------------------------------------------------

async def _chat(service: RouterService, req: ChatRequest) -> Response:
    pool_names = service.router.pool.names
    direct: str | None = None
    if req.model != ROUTER_MODEL:
        if service.config.pass_through and req.model in pool_names:
            direct = req.model
        else:
            offered = [ROUTER_MODEL] + (pool_names if service.config.pass_through else [])
            raise HTTPError(404, f"model {req.model!r} is not served here; available: {', '.join(offered)}",
                            code="model_not_found", param="model")
    opts = req.mmroute
    use_cascade = service.cascade is not None if opts.cascade is None else opts.cascade
    if use_cascade and service.cascade is None:
        raise HTTPError(400, "cascade=true needs a server started with --cascade", code="invalid_option", param="mmroute")
    if use_cascade and (direct or req.tools):
        raise HTTPError(400, "the cascade verifies answers, not tool calls or a fixed model: send "
                        "mmroute.cascade=false with tools or a pool model", code="invalid_option", param="mmroute")
    if use_cascade:
        return await _chat_cascade(service, req)
    router, rec = await service.decide(req.messages, opts, tools=req.tools)
    if direct is not None:
        if direct in rec.decision.filtered:
            raise HTTPError(400, f"model {direct} cannot take this query: {rec.decision.filtered[direct]}",
                            code="model_cannot_take_query", param="model")
        candidates = [direct]
    else:
        candidates = rec.decision.ordered
    kwargs: dict[str, Any] = {"pool": router.pool, "breaker": service.breaker, "timeout": service.config.llm_timeout_s,
                              "max_retries": service.config.max_retries, **service.llm_kwargs, **req.llm_params()}
    from ..llm import acomplete, astream_complete

    if req.stream:
        if req.stream_options:
            kwargs["stream_options"] = req.stream_options
        stream = await astream_complete(req.messages, candidates, **kwargs)
        return StreamingResponse(_sse(service, rec, stream), media_type="text/event-stream",
                                 headers={**_headers(rec, stream.model), "cache-control": "no-cache"})
    answer = await acomplete(req.messages, candidates, **kwargs)
    _account(service, rec, answer)
    await service.persist(rec)
    body = _completion_body(answer)
    body["mmroute"] = _mmroute_meta(rec, answer)
    return JSONResponse(body, headers=_headers(rec, answer.model))


def _completion_body(answer: Answer) -> dict[str, Any]:
    raw = answer.raw
    body: dict[str, Any] = raw.model_dump(mode="json", exclude_none=False) if hasattr(raw, "model_dump") else {}
    body.setdefault("id", f"chatcmpl-{uuid.uuid4().hex}")
    body.setdefault("created", int(time.time()))
    body["object"] = "chat.completion"
    body["model"] = answer.model
    body["usage"] = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                     "total_tokens": answer.prompt_tokens + answer.completion_tokens}
    for key in [k for k in body if k.startswith("_")]:
        body.pop(key)
    return body


def _account(service: RouterService, rec: DecisionRecord, answer: Answer) -> None:
    m = service.metrics
    rec.answered_by = answer.model  # the record persist() writes, even if the LRU dropped it meanwhile
    rec.cost_usd = answer.total_cost_usd
    service.decisions.set_answered_by(rec.id, answer.model)
    m.answers.labels(answer.model).inc()
    for a in answer.attempts:
        if a.cost_usd:
            m.cost.labels(a.model).inc(a.cost_usd)
    if answer.fell_back:
        m.fallbacks.inc()
    log.info("decision %s answered by %s in %.3fs, $%.6f", rec.id, answer.model, answer.latency_s, answer.total_cost_usd)


def _sse_data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _sse(service: RouterService, rec: DecisionRecord, stream: AnswerStream) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream, every chunk naming the answering model; a last chunk carries the
    decision id and cost (``choices: []``), then ``[DONE]``."""
    first = True
    created = int(time.time())
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        async for chunk in stream:
            d = chunk.model_dump(mode="json", exclude_none=True) if hasattr(chunk, "model_dump") else dict(chunk)
            d.setdefault("id", cid)
            d.setdefault("created", created)
            d["object"] = "chat.completion.chunk"
            d["model"] = stream.model
            if first:
                d["mmroute"] = {"decision_id": rec.id, "routed_model": rec.decision.model}
                first = False
            yield _sse_data(d)
    except ProviderError as exc:  # part of the answer is out: report in-band, as OpenAI does
        service.metrics.errors.labels("provider_error").inc()
        yield _sse_data(_error_body(str(exc), "api_error", "provider_error"))
        yield b"data: [DONE]\n\n"
        return
    answer = stream.answer
    if answer is not None:
        _account(service, rec, answer)
        await service.persist(rec)
        yield _sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": answer.model,
                         "choices": [], "mmroute": _mmroute_meta(rec, answer)})
    yield b"data: [DONE]\n\n"


async def _chat_cascade(service: RouterService, req: ChatRequest) -> Response:
    """The verify/escalate graph for one request; a stream carries the accepted answer as one chunk
    (an answer cannot be streamed before it is verified)."""
    from langchain_core.messages import convert_to_messages

    from ..cascade import verified
    from ..graph.nodes import latest_query
    from ..graph.state import decision_from_state

    assert service.cascade is not None
    if req.mmroute.model_dump(exclude_defaults=True, exclude={"cascade"}):
        raise HTTPError(400, "per-request routing options (lam, max_cost, min_quality, require, exclude) are not "
                        "supported by the cascade; send mmroute.cascade=false to use them", code="invalid_option",
                        param="mmroute")
    router = service.router
    decision_id = RecentDecisions.new_id()
    try:  # the graph's message channel is LangChain's: what it cannot read is the client's error, not ours
        messages = convert_to_messages(req.messages)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInputError(f"messages cannot be read: {str(exc).splitlines()[0]}") from None
    state = await service.cascade.ainvoke({"messages": messages},
                                          config={"configurable": {"thread_id": decision_id}})
    final = state.get("final")
    if final is None:
        raise ProviderError(f"the cascade found no answer ({state.get('status')}): {state.get('error')}")
    decision: RouteDecision = decision_from_state(state).model_copy(update={"decision_id": decision_id})
    rec = DecisionRecord(id=decision_id, query=latest_query(state, router), decision=decision,
                         answered_by=final["model"], router_version=_version_name(router),
                         cost_usd=float(state.get("total_cost_usd") or 0.0))
    service.decisions.add(rec)
    await service.persist(rec)
    m = service.metrics
    m.routes.labels(decision.model).inc()
    m.answers.labels(final["model"]).inc()
    m.cost.labels(final["model"]).inc(float(state.get("total_cost_usd") or 0.0))
    m.escalations.inc(int(state.get("escalations") or 0))
    ok = verified(final)  # False: no answer passed verification; the most confident one is returned, flagged
    meta = _mmroute_meta(rec, None, model=final["model"], cost_usd=float(state.get("total_cost_usd") or 0.0),
                         escalations=int(state.get("escalations") or 0), status=state.get("status"), verified=ok,
                         answers=[{"model": a["model"], "accepted": (a.get("verdict") or {}).get("accept")}
                                  for a in state.get("answers") or []])
    headers = {**_headers(rec, final["model"]), "x-mmroute-verified": str(ok).lower()}
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    message = {"role": "assistant", "content": final["text"]}
    if req.stream:
        async def one() -> AsyncIterator[bytes]:
            yield _sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": final["model"],
                             "choices": [{"index": 0, "delta": message, "finish_reason": None}], "mmroute": meta})
            yield _sse_data({"id": cid, "object": "chat.completion.chunk", "created": created, "model": final["model"],
                             "choices": [{"index": 0, "delta": {}, "finish_reason": final.get("finish_reason") or "stop"}]})
            yield b"data: [DONE]\n\n"
        return StreamingResponse(one(), media_type="text/event-stream", headers=headers)
    body = {"id": cid, "object": "chat.completion", "created": created, "model": final["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": final.get("finish_reason") or "stop"}],
            "mmroute": meta}
    return JSONResponse(body, headers=headers)


# -- feedback ---------------------------------------------------------------------------------------------

async def _feedback(service: RouterService, req: FeedbackRequest) -> FeedbackResponse:
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


__all__ = ["DecisionStore", "FeedbackSink", "GuardMiddleware", "HTTPError", "RouterService", "ServerConfig", "create_app", "route_response"]
