"""The serving state behind the HTTP endpoints: the server's settings (``ServerConfig``), the
router (hot-reloaded from a ``LiveRouter`` off the request path, optionally exploring), feature
batching, decisions kept and persisted for feedback, and the per-request decision itself
(``RouterService.decide``: inputs admitted, constraints and lambda applied by the router)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidInputError, MMRouteError
from ..images import http_image_policy
from ..llm.breaker import CircuitBreaker
from ..llm.call import Answer
from ..payload import Payload, to_request
from ..policy import with_lam
from ..query import MessagesLike, Query, QueryLike
from ..router import LiveRouter, Router
from .batching import FeatureBatcher
from .decisions import DecisionStore, DecisionRecord, RecentDecisions
from .inputs import RemoteImages, admit_images, admit_messages, fetch_policy
from .metrics import ServerMetrics
from .schemas import (Candidate, RouteOptions, RouteResponse)

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ..data.formats import Judgment
    from ..learning.routing import ExploringRouter
    from .retrainer import Retrainer


log = logging.getLogger("mmroute.server")

class FeedbackSink(Protocol):
    """What the server needs of a feedback store (``FeedbackStore`` or any other backend)."""

    def add(self, judgment: "Judgment") -> bool: ...


@runtime_checkable
class CheckedStore(Protocol):
    """A store that can say, cheaply and within a bound, whether it answers now (``FeedbackStore``)."""

    def reachable(self, timeout_s: float = 1.0) -> bool: ...


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
        self._reachable: tuple[float, bool] = (-1e9, True)  # (when checked, answer): /healthz asks at most ~1/s
        self._reachable_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def router(self) -> Router:
        """The router new requests use; a request keeps the one it started with."""
        return self._router

    async def start(self) -> None:
        await self.batcher.start()
        self.metrics.serving(self._router.version)
        log.info("serving router version %s%s", self._router.version,
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
            log.error("router reload failed, still serving %s: %s", self._router.version, exc)
            return False
        if changed:
            self._router = self.live.router
            self.metrics.reloads.inc()
            self.metrics.serving(self._router.version)
            log.info("now serving router version %s", self._router.version)
        return changed

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            await self.reload_now()

    async def store_reachable(self, ttl_s: float = 1.0, timeout_s: float = 1.0) -> bool:
        """Whether the feedback store answers (True without one, or for a store that cannot say);
        checked off the event loop at most once per ``ttl_s``, each check bounded by ``timeout_s``."""
        if not isinstance(self.store, CheckedStore):
            return True
        async with self._reachable_lock:
            checked, ok = self._reachable
            if time.monotonic() - checked >= ttl_s:
                ok = await asyncio.to_thread(self.store.reachable, timeout_s)
                self._reachable = (time.monotonic(), ok)
                if not ok:
                    self.metrics.errors.labels("store_unreachable").inc()
            return ok

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

    def _request(self, router: Router, messages: Sequence[dict[str, Any]] | None, text: str | None,
                 images: Sequence[str], tools: Sequence[dict[str, Any]] | None) -> tuple[Query, Payload]:
        """What the features see and what the filters see (:func:`mmroute.payload.to_request`), images
        decoded and checked here (off the event loop), never a local path and never a fetch."""
        policy = http_image_policy(router.image_policy)
        value: MessagesLike | QueryLike = list(messages) if messages is not None else {"text": text or "", "images": list(images)}
        q, payload = to_request(value, image_policy=policy, tools=tools)
        if max(q.n_images, payload.n_images) > self.config.max_images:
            raise InvalidInputError(f"the {'conversation' if messages is not None else 'query'} has "
                                    f"{payload.n_images} images, over the server's limit of {self.config.max_images}")
        return q, payload

    async def decide(self, messages: Sequence[dict[str, Any]] | None, opts: RouteOptions, *,
                     text: str | None = None, images: Sequence[str] = (),
                     tools: Sequence[dict[str, Any]] | None = None) -> tuple[Router, DecisionRecord]:
        router = self._router
        self.batcher.coming()
        try:
            q, payload = await asyncio.to_thread(self._request, router, messages, text, images, tools)
        finally:
            self.batcher.not_coming()
        x = await self.batcher.features(router.pipeline.transform, q)
        policy = with_lam(router.policy, opts.lam)
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
        rec = DecisionRecord(id=rec_id, query=q, decision=decision, router_version=router.version)
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


def mmroute_meta(rec: DecisionRecord, answer: Answer | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"decision_id": rec.id, "routed_model": rec.decision.model, "reason": rec.decision.reason,
                            "router_version": rec.router_version}
    if answer is not None:
        meta.update({"model": answer.model, "cost_usd": answer.total_cost_usd,
                     "attempts": [a.model_dump(mode="json") for a in answer.attempts]})
    meta.update(extra)
    return meta


def decision_headers(rec: DecisionRecord, model: str) -> dict[str, str]:
    return {"x-mmroute-model": model, "x-mmroute-decision-id": rec.id,
            "x-mmroute-propensity": f"{rec.decision.propensity:.6g}"}
