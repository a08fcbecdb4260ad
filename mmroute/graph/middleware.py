"""Agent middleware (LangChain >= 1.0 ``create_agent``) that routes every model call.

``RoutingMiddleware.wrap_model_call`` routes the request's latest user turn (filtering on the
whole request: system prompt, every turn and image, the tools) and hands the call
to a :class:`RoutedChatModel` holding that decision (so fallback and escalation follow it);
the agent binds its tools to that model as it would to any other. It needs the ``langchain``
package (``pip install langchain``); without it, importing this module still works,
``MIDDLEWARE_AVAILABLE`` is False and constructing the middleware raises ``ConfigError``.
With ``langgraph.prebuilt.create_react_agent`` use ``RoutedChatModel`` directly instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..cascade import route_call
from ..errors import ConfigError
from ..policy import RouteDecision
from ..pool import ModelPool
from ..verify.base import Verifier
from .chat_model import RoutedChatModel
from .nodes import RouterLike

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
except ImportError:  # langchain is optional: only create_agent users need it
    MIDDLEWARE_AVAILABLE = False
    AgentMiddleware = object  # type: ignore[assignment,misc]
    ModelRequest = ModelResponse = Any  # type: ignore[assignment,misc]
else:
    MIDDLEWARE_AVAILABLE = True


class RoutingMiddleware(AgentMiddleware):
    """Pick the model per call with an mmroute router.

    Args:
        router: a ``Router`` or ``LiveRouter``.
        pool: models with prices / LiteLLM params (default: the router's pool).
        verifier: optional verifier; rejected answers escalate (see ``RoutedChatModel``).
        model_factory: ``decision -> BaseChatModel`` to call another client than mmroute.llm
            (e.g. ``lambda d: init_chat_model(d.model)``); default a ``RoutedChatModel``.
        include_context: route on the whole conversation rather than the last user turn.
    """

    def __init__(self, router: RouterLike, *, pool: ModelPool | None = None, verifier: Verifier | None = None,
                 max_escalations: int = 1, model_factory: Callable[[RouteDecision], Any] | None = None,
                 include_context: bool = False,
                 llm_kwargs: dict[str, Any] | None = None) -> None:
        if not MIDDLEWARE_AVAILABLE:
            raise ConfigError("RoutingMiddleware needs the 'langchain' package (pip install langchain); "
                              "with langgraph's create_react_agent, pass RoutedChatModel as the model instead")
        super().__init__()
        self.router = router
        self.pool = pool
        self.verifier = verifier
        self.max_escalations = max_escalations
        self.model_factory = model_factory
        self.include_context = include_context
        self.llm_kwargs = dict(llm_kwargs or {})

    @property
    def name(self) -> str:
        return "mmroute_routing"

    def decide(self, messages: list[Any], *, system: Any = None, tools: Sequence[Any] | None = None) -> RouteDecision:
        """Route on the latest user turn; filter on everything sent (system prompt, all turns, tools)."""
        return route_call(self.router, messages, tools=tools, system=system, include_context=self.include_context)

    def _decide_request(self, request: ModelRequest) -> RouteDecision:
        return self.decide(request.messages, system=getattr(request, "system_message", None),
                           tools=getattr(request, "tools", None))

    def model_for(self, decision: RouteDecision) -> Any:
        if self.model_factory is not None:
            return self.model_factory(decision)
        return RoutedChatModel(router=self.router, pool=self.pool, verifier=self.verifier, decision=decision,
                               max_escalations=self.max_escalations, llm_kwargs=self.llm_kwargs)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        return handler(request.override(model=self.model_for(self._decide_request(request))))

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> ModelResponse:
        return await handler(request.override(model=self.model_for(self._decide_request(request))))


__all__ = ["MIDDLEWARE_AVAILABLE", "RoutingMiddleware"]
