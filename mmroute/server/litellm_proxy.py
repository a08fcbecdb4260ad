"""mmroute as a routing strategy of LiteLLM's Router, for teams that run the LiteLLM proxy.

A model group (``mmroute`` by default) lists one deployment per pool model; LiteLLM keeps doing
what it does (auth, budgets, retries, cooldowns, fallbacks, logging) and asks this strategy which
deployment of the group gets each request. The strategy routes among the group's *healthy*
deployments only (LiteLLM's cooldowns exclude one that just failed), so a retry after a 5xx lands
on the next-best model, and images never reach a deployment the pool marks text-only. Other
model groups keep LiteLLM's own strategy.

A deployment names its pool model with ``model_info: {mmroute_model: <pool name>}``, else its
``litellm_params.model`` is taken as the pool name.

Two ways in, both through LiteLLM's extension points (``CustomRoutingStrategyBase`` +
``Router.set_custom_routing_strategy``):

* ``mmroute proxy --config config.yaml [--router DIR]`` starts the real proxy with the strategy
  installed when the proxy has built its router (``run_proxy``);
* plain ``litellm --config config.yaml`` with ``litellm_settings: {callbacks:
  ["mmroute.server.litellm_proxy.proxy_hook"]}`` and ``MMROUTE_ROUTER`` set: the hook installs the
  strategy on the proxy's router before the first request (and again if the proxy rebuilds it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.router import CustomRoutingStrategyBase
from pydantic import ValidationError

from ..errors import InvalidInputError, NoEligibleModelError
from ..learning.routing import ExploreSettings, ExploringRouter
from ..payload import Payload, to_request
from ..images import http_image_policy
from ..query import Query
from ..policy import with_lam
from ..router import LiveRouter, Router, current_router
from .batching import FeatureBatcher
from .schemas import RouteOptions

log = logging.getLogger("mmroute.proxy")

DEFAULT_GROUP = "mmroute"
Deployment = dict[str, Any]


def deployment_model(deployment: Deployment) -> str:
    """The pool model a LiteLLM deployment serves."""
    info = deployment.get("model_info") or {}
    name = info.get("mmroute_model") if isinstance(info, dict) else None
    return str(name or (deployment.get("litellm_params") or {}).get("model") or "")


def request_options(request_kwargs: dict[str, Any] | None) -> RouteOptions:
    """The per-request knobs a client sent as ``metadata: {"mmroute": {...}}`` (the server's
    ``"mmroute"`` options: lam, max_cost, min_quality, require, exclude); none: the router's own."""
    meta = (request_kwargs or {}).get("metadata")
    raw = meta.get("mmroute") if isinstance(meta, dict) else None
    if not isinstance(raw, dict) or "reason" in raw:  # absent, or our own note from a previous pick
        return RouteOptions()
    try:
        return RouteOptions.model_validate(raw)
    except ValidationError as exc:
        raise litellm.BadRequestError(f"mmroute: bad metadata.mmroute options: {exc.errors()[0]['msg']} "
                                      f"({'.'.join(str(x) for x in exc.errors()[0]['loc'])})",
                                      model=DEFAULT_GROUP, llm_provider="mmroute") from None


class MMRouteStrategy(CustomRoutingStrategyBase):
    """Pick the deployment of ``model_group`` that mmroute routes the request to."""

    def __init__(self, router: Router | LiveRouter, llm_router: litellm.Router, *, model_group: str = DEFAULT_GROUP,
                 max_batch: int = 32, max_wait_ms: float = 2.0, explore: "ExploreSettings | ExploringRouter | None" = None):
        self._source = router
        # exploring: draw among the healthy deployments' models, over whichever router version is current
        self.explorer = explore.wrap(router) if isinstance(explore, ExploreSettings) else explore
        self.llm_router = llm_router
        self.model_group = model_group
        # LiteLLM's own selection, for every other model group
        self._default_async = llm_router.async_get_available_deployment
        self._default_sync = llm_router.get_available_deployment
        self._max_batch, self._max_wait_s = max_batch, max_wait_ms / 1000.0
        self._batcher: FeatureBatcher | None = None
        self._batcher_loop: asyncio.AbstractEventLoop | None = None
        self.decisions = 0

    @property
    def router(self) -> Router:
        return current_router(self._source)

    def install(self) -> "MMRouteStrategy":
        self.llm_router.set_custom_routing_strategy(self)
        self.llm_router.__dict__["_mmroute_strategy"] = self
        return self

    # -- choosing ---------------------------------------------------------------------------------------
    def _candidates(self, router: Router, healthy: list[Deployment]) -> tuple[dict[str, Deployment], list[str]]:
        by_model: dict[str, Deployment] = {}
        for d in healthy:
            name = deployment_model(d)
            if name in router.pool:
                by_model.setdefault(name, d)
            else:
                log.warning("deployment %s of group %s is not in the router's pool; it is never chosen",
                            name, self.model_group)
        exclude = [n for n in router.pool.names if n not in by_model]
        return by_model, exclude

    def _request(self, router: Router, messages: list[dict[str, Any]] | None,
                 request_kwargs: dict[str, Any] | None) -> tuple[Query, Payload]:
        """Features from the last user turn, filters over every turn and bound tool
        (:func:`mmroute.payload.to_request`); a proxy client's image is never a path on this
        machine (and is not fetched here)."""
        if not messages:
            raise InvalidInputError(f"model group {self.model_group} routes chat messages; this request has none")
        tools = (request_kwargs or {}).get("tools")
        return to_request(list(messages), image_policy=http_image_policy(router.image_policy),
                          tools=tools if isinstance(tools, list) else None)

    def _pick(self, router: Router, q: Query, payload: Payload, x: Any, by_model: dict[str, Deployment],
              exclude: list[str], request_kwargs: dict[str, Any] | None) -> Deployment:
        opts = request_options(request_kwargs)
        try:
            if self.explorer is not None:
                decision = self.explorer.route_features(q, x, exclude=exclude, payload=payload, router=router,
                                                        lam=opts.lam, constraints=opts.constraints())
            else:
                decision = router.route_features(q, x, exclude=exclude, payload=payload,
                                                 policy=with_lam(router.policy, opts.lam), constraints=opts.constraints())
        except NoEligibleModelError as exc:
            raise litellm.BadRequestError(f"mmroute: no healthy deployment of {self.model_group} can take this "
                                          f"request: {exc}", model=self.model_group, llm_provider="mmroute") from None
        self.decisions += 1
        if request_kwargs is not None:
            meta = request_kwargs.get("metadata")
            if isinstance(meta, dict):
                meta["mmroute"] = {"model": decision.model, "reason": decision.reason,
                                   "decision_id": decision.decision_id, "propensity": decision.propensity}
        return by_model[decision.model]

    async def _features(self, router: Router, q: Query) -> Any:
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher_loop is not loop:  # one queue per event loop, started lazily
            self._batcher = FeatureBatcher(max_batch=self._max_batch, max_wait_s=self._max_wait_s)
            await self._batcher.start()
            self._batcher_loop = loop
        return await self._batcher.features(router.pipeline.transform, q)

    # litellm's CustomRoutingStrategyBase annotates these as returning None, yet its Router uses the
    # deployment dict they return: the override is the documented use, the stub is wrong
    async def async_get_available_deployment(self, model: str,  # type: ignore[override]
                                             messages: list[dict[str, str]] | None = None,
                                             input: str | list | None = None, specific_deployment: bool | None = False,
                                             request_kwargs: dict | None = None) -> Deployment:
        if model != self.model_group:
            return await self._default_async(model=model, messages=messages, input=input,
                                             specific_deployment=specific_deployment, request_kwargs=request_kwargs or {})
        healthy = await self.llm_router.async_get_healthy_deployments(
            model=model, request_kwargs=request_kwargs or {}, messages=messages, input=input,
            specific_deployment=specific_deployment)
        if isinstance(healthy, dict):  # a specific deployment was asked for
            return healthy
        router = self.router
        by_model, exclude = self._candidates(router, list(healthy or []))
        if not by_model:
            raise litellm.ServiceUnavailableError(f"mmroute: no healthy deployment in model group {model}",
                                                  model=model, llm_provider="mmroute")
        q, payload = await asyncio.to_thread(self._request, router, messages, request_kwargs)
        x = await self._features(router, q)
        return self._pick(router, q, payload, x, by_model, exclude, request_kwargs)

    def get_available_deployment(self, model: str,  # type: ignore[override]  # litellm's stub: see above
                                 messages: list[dict[str, str]] | None = None,
                                 input: str | list | None = None, specific_deployment: bool | None = False,
                                 request_kwargs: dict | None = None) -> Deployment:
        if model != self.model_group:
            return self._default_sync(model=model, messages=messages, input=input,
                                      specific_deployment=specific_deployment, request_kwargs=request_kwargs or {})
        _, healthy = self.llm_router._common_checks_available_deployment(  # the sync path has no public helper
            model=model, messages=messages, input=input, specific_deployment=specific_deployment,
            request_kwargs=request_kwargs or {})
        if isinstance(healthy, dict):
            return healthy
        router = self.router
        by_model, exclude = self._candidates(router, list(healthy or []))
        if not by_model:
            raise litellm.ServiceUnavailableError(f"mmroute: no deployment in model group {model}",
                                                  model=model, llm_provider="mmroute")
        q, payload = self._request(router, messages, request_kwargs)
        return self._pick(router, q, payload, router.pipeline.transform([q])[0], by_model, exclude, request_kwargs)


def install(llm_router: litellm.Router, router: Router | LiveRouter, *, model_group: str = DEFAULT_GROUP,
            **kwargs: Any) -> MMRouteStrategy:
    """Make ``model_group`` of ``llm_router`` routed by mmroute (idempotent per Router object)."""
    existing = llm_router.__dict__.get("_mmroute_strategy")
    if isinstance(existing, MMRouteStrategy) and existing.model_group == model_group:
        return existing
    if not llm_router.get_model_list(model_name=model_group):
        raise InvalidInputError(f"the LiteLLM config has no model group {model_group!r} (list one deployment per "
                                f"pool model under model_name: {model_group})")
    return MMRouteStrategy(router, llm_router, model_group=model_group, **kwargs).install()


# -- the proxy -------------------------------------------------------------------------------------------

def load_router(router_dir: str | None) -> Router | LiveRouter:
    """A trained router (hot-reloaded) from ``router_dir``, else the offline example router."""
    if router_dir:
        return LiveRouter(router_dir)
    from ..graph.served import example_router

    return example_router()


class ProxyHook(CustomLogger):
    """A LiteLLM proxy callback that keeps the strategy installed on the proxy's current router."""

    def __init__(self, router: Router | LiveRouter | None = None, *, model_group: str | None = None,
                 router_dir: str | None = None, explore: ExploreSettings | None = None):
        super().__init__()
        self._router = router
        self.explore = explore
        self._router_dir = router_dir
        self.model_group = model_group or os.environ.get("MMROUTE_MODEL_GROUP", DEFAULT_GROUP)
        self._lock = threading.Lock()

    def _get_router(self) -> Router | LiveRouter:
        with self._lock:
            if self._router is None:
                self._router = load_router(self._router_dir or os.environ.get("MMROUTE_ROUTER"))
            return self._router

    def ensure_installed(self) -> MMRouteStrategy | None:
        from litellm.proxy import proxy_server

        llm_router = getattr(proxy_server, "llm_router", None)
        if llm_router is None:
            return None
        return install(llm_router, self._get_router(), model_group=self.model_group, explore=self.explore)

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str) -> dict:
        if data.get("model") == self.model_group:
            existing = None
            from litellm.proxy import proxy_server

            llm_router = getattr(proxy_server, "llm_router", None)
            if llm_router is not None:
                existing = llm_router.__dict__.get("_mmroute_strategy")
            if existing is None:
                await asyncio.to_thread(self.ensure_installed)
        return data


proxy_hook = ProxyHook()  # for ``litellm_settings: callbacks: ["mmroute.server.litellm_proxy.proxy_hook"]``


def proxy_app(config_path: str, router: Router | LiveRouter, *, model_group: str = DEFAULT_GROUP,
              on_install: Callable[[MMRouteStrategy], None] | None = None, explore: ExploreSettings | None = None) -> Any:
    """LiteLLM's proxy app for ``config_path`` with the mmroute strategy installed at start-up
    (exploring with ``explore``: each request's decision id and propensity go to its ``metadata["mmroute"]``)."""
    # explicit environment write: LiteLLM's proxy reads its config path only from here, at start-up
    os.environ["CONFIG_FILE_PATH"] = str(config_path)  # explicit environment write (mmroute proxy only)
    from litellm.proxy import proxy_server

    app = proxy_server.app
    original = app.router.lifespan_context
    hook = ProxyHook(router, model_group=model_group, explore=explore)

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with original(a) as state:
            strategy = hook.ensure_installed()
            if strategy is None:
                raise RuntimeError("the LiteLLM proxy started without a router (is the config's model_list empty?)")
            if hook not in litellm.callbacks:
                litellm.callbacks.append(hook)  # re-installs if the proxy rebuilds its router
            log.info("mmroute routes model group %s", model_group)
            if on_install is not None:
                on_install(strategy)
            yield state

    app.router.lifespan_context = lifespan
    return app


__all__ = ["DEFAULT_GROUP", "MMRouteStrategy", "ProxyHook", "deployment_model", "install", "load_router", "proxy_app",
           "proxy_hook"]
