"""A LangChain chat model that routes every call: drop it in wherever a chat model goes.

``RoutedChatModel`` reads the latest user turn (text + images) of the messages it is given,
asks the router for a model, and calls it through ``mmroute.llm`` (LiteLLM, with retries and
fallback along the decision's order). Vision, context-window and cost checks cover every message
sent (an image in an earlier turn still rules out text-only models), with or without a router.
Tools bound with ``bind_tools`` travel to the model in
OpenAI format and its tool calls come back as ``AIMessage.tool_calls``, so it runs inside
``langgraph.prebuilt.create_react_agent`` unchanged. Within one agent turn the user turn is the
same, so every step of a tool loop goes to the same model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation

from ..cascade import (escalation_judgments, judgment_id, next_step, route_call, user_turn, verdict_state,
                       verified)
from ..constraints import Constraints
from ..errors import ConfigError, ProviderError
from ..images import DEFAULT_POLICY
from ..learning.routing import ExploreSettings, ExploringRouter
from ..policy import RouteDecision
from ..pool import ModelPool
from ..query import Query
from ..router import current_router
from ..data.store import FeedbackStore
from ..verify.base import Verifier
from .nodes import RouterLike, thread_id


def to_tool_calls(raw_calls: Sequence[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """OpenAI-format tool calls -> (LangChain ``tool_calls``, ``invalid_tool_calls``)."""
    calls, invalid = [], []
    for raw in raw_calls:
        if "function" not in raw and "name" in raw:  # already LangChain-shaped
            calls.append({"name": raw["name"], "args": raw.get("args", {}), "id": raw.get("id"), "type": "tool_call"})
            continue
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except Exception as exc:  # malformed JSON arguments: keep it, as LangChain's own models do
            invalid.append(make_invalid_tool_call(raw, str(exc)))
            continue
        if parsed is not None:
            calls.append(parsed)
    return calls, invalid


def _tool_choice(choice: Any) -> Any:
    """LangChain's tool_choice spellings -> OpenAI's (which LiteLLM maps to each provider)."""
    if choice is None or isinstance(choice, dict):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, str):
        return {"type": "function", "function": {"name": choice}}
    raise ConfigError(f"unsupported tool_choice {choice!r}")


class RoutedChatModel(BaseChatModel):
    """Route each call to the best model for the money, then call it through LiteLLM.

    Args:
        router: a ``Router`` or ``LiveRouter``.
        pool: the models with prices and LiteLLM params (default: the router's pool).
        verifier: optional ``mmroute.verify`` verifier; a rejected text answer is retried on the
            next stronger model for this query, up to ``max_escalations`` times. Answers with
            tool calls are not verified (they are not answers yet).
        candidates: fixed model order, skipping the router.
        decision: a decision already made for this call (what the routing middleware passes):
            its order is used and escalation follows it, without routing again.
        include_context: route on the whole conversation rather than the last user turn.
        constraints: per-call limits (cost cap, quality floor, required tags, excluded models),
            the same :class:`~mmroute.constraints.Constraints` the server takes per request.
        feedback_store: where escalations the verifier accepted are stored as judgments
            (``record_escalations``); none is stored without one (the router owns no feedback).
            With ``explore``, every exploring decision is logged in its decision table too.
        explore: route through an exploration policy (``ExploreSettings``, as ``mmroute serve
            --explore``, or a ready ``ExploringRouter``): each decision carries its propensity
            (``response_metadata["propensity"]``, ``["decision_id"]``); hard filters still hold.
        llm_kwargs: extra kwargs for ``mmroute.llm.complete`` (``max_retries``, ``timeout``, ...).
        max_escalations: verifier escalations per call at most.
        record_escalations: store an accepted escalation as a judgment (needs ``feedback_store``).

    Raises:
        ConfigError: neither a router, a decision nor candidates; or no pool to call without a router.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # typed for callers and checkers, not validated (duck-typed routers / verifiers keep working)
    router: SkipValidation[RouterLike | None] = None
    pool: ModelPool | None = None
    verifier: SkipValidation[Verifier | None] = None
    max_escalations: int = Field(1, ge=0)
    candidates: list[str] | None = None
    decision: RouteDecision | None = None
    include_context: bool = False
    constraints: Constraints | None = None
    record_escalations: bool = True
    feedback_store: SkipValidation[FeedbackStore | None] = None
    llm_kwargs: dict[str, Any] = Field(default_factory=dict)
    explore: SkipValidation[ExploreSettings | ExploringRouter | None] = None
    _explorer: ExploringRouter | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        # checked before pydantic runs, so the caller gets mmroute's ConfigError, not a ValidationError
        if kwargs.get("router") is None and not kwargs.get("candidates") and kwargs.get("decision") is None:
            raise ConfigError("RoutedChatModel needs a router (or a decision, or a fixed candidates list)")
        if kwargs.get("pool") is None and kwargs.get("router") is None:
            raise ConfigError("RoutedChatModel without a router needs a pool")
        super().__init__(**kwargs)

    # -- LangChain plumbing -------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "mmroute-routed"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"pool": self._pool().names, "candidates": self.candidates, "verifier": repr(self.verifier)}

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., object] | BaseTool], *,
                   tool_choice: str | dict[str, Any] | bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (any form LangChain accepts) in OpenAI format, for whichever model is routed to.

        Args:
            tools: OpenAI tool dicts, pydantic classes, functions or LangChain tools.
            tool_choice: ``"auto"``, ``"none"``, ``"required"``/``True``, a tool name or an OpenAI dict.
            **kwargs: further bound call kwargs.

        Returns:
            This model with the tools bound.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _tool_choice(tool_choice)
        return super().bind(tools=formatted, **kwargs)

    # -- routing ------------------------------------------------------------------------------
    def _query(self, messages: list[BaseMessage]) -> Query:
        r = current_router(self.router) if self.router is not None else None
        policy = getattr(r, "image_policy", None) or DEFAULT_POLICY
        return Query.from_messages(messages, include_context=self.include_context, image_policy=policy)

    def _pool(self) -> ModelPool:
        if self.pool is not None:
            return self.pool
        assert self.router is not None  # __init__ refuses neither pool nor router
        return current_router(self.router).pool

    def _plan(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[RouteDecision | None, list[str]]:
        """The decision and the models to try. Routing filters on the whole call (every turn, every
        image, the bound tools); fixed candidates are checked the same way by ``mmroute.llm``."""
        if self.decision is not None:
            return self.decision, self.decision.ordered
        if self.candidates or self.router is None:
            return None, list(self.candidates or [])
        decision = route_call(self._chooser(), messages, tools=kwargs.get("tools"), include_context=self.include_context,
                              constraints=self.constraints)
        return decision, decision.ordered

    def _chooser(self) -> Any:
        """The router to route with: the exploring wrapper (built once, so its budget is shared) or the router."""
        if self.explore is None:
            return self.router
        if self._explorer is None:
            if isinstance(self.explore, ExploringRouter):
                self._explorer = self.explore
            else:
                if self.router is None:
                    raise ConfigError("RoutedChatModel(explore=...) needs a router to explore with")
                log = self.feedback_store.decisions if self.feedback_store is not None else None
                self._explorer = self.explore.wrap(self.router, log=log)
        return self._explorer

    def _kwargs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {**self.llm_kwargs, **kwargs, "pool": self._pool()}
        if stop:
            out["stop"] = stop
        return out

    def _next(self, decision: RouteDecision | None, messages: list[BaseMessage], answer: Any,
              history: list[dict[str, Any]]) -> list[str] | None:
        """Verify ``answer``; the models to escalate to, or None to keep it."""
        if self.verifier is None or decision is None or answer.tool_calls:
            return None
        v = self.verifier.verify(self._query(messages), answer, context={"model": answer.model})
        history[-1]["verdict"] = verdict_state(v)
        # tried: every model that answered or was called (a failed or skipped one is not asked again)
        tried = [h["model"] for h in history] + [a.model for h in history for a in h["attempts"]]
        step = next_step(decision, answered=answer.model, accepted=bool(v.accept), tried=tried,
                         escalations=len(history) - 1, max_escalations=self.max_escalations)
        return list(step.models) if step.escalates else None

    def _result(self, decision: RouteDecision | None, answer: Any, history: list[dict[str, Any]],
                messages: list[BaseMessage]) -> ChatResult:
        self._record(decision, messages, history)
        calls, invalid = to_tool_calls(answer.tool_calls or [])
        meta = {
            "model_name": answer.model,
            "model": answer.model,
            "cost_usd": float(answer.cost_usd),
            "total_cost_usd": float(sum(h["cost_usd"] + (h.get("verdict") or {}).get("cost_usd", 0.0) for h in history)),
            "latency_s": float(answer.latency_s),
            "finish_reason": answer.finish_reason,
            "routed_model": decision.model if decision else None,
            "route_reason": decision.reason if decision else "fixed candidates",
            "decision_id": decision.decision_id if decision else None,
            "propensity": decision.propensity if decision else None,
            "attempts": [a.model_dump(mode="json") if hasattr(a, "model_dump") else dict(a) for h in history for a in h["attempts"]],
            "answers": [{k: h[k] for k in ("model", "cost_usd", "verdict")} for h in history],
            # whether the verifier accepted this answer (False: every model tried was rejected; None: not verified)
            "verified": verified(history[-1]) if history[-1].get("verdict") is not None else None,
        }
        n_in = int(getattr(answer, "prompt_tokens", 0) or 0)
        n_out = int(getattr(answer, "completion_tokens", 0) or 0)
        usage = UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
        msg = AIMessage(content=answer.text or "", tool_calls=calls, invalid_tool_calls=invalid,
                        response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg, generation_info={"finish_reason": answer.finish_reason})],
                          llm_output={"model_name": answer.model, "route_reason": meta["route_reason"]})

    def _record(self, decision: RouteDecision | None, messages: list[BaseMessage], history: list[dict[str, Any]]) -> None:
        """An escalation the verifier accepted: accepted beats rejected, into ``feedback_store``."""
        if not self.record_escalations or decision is None or len(history) < 2:
            return
        r = current_router(self.router) if self.router is not None else None
        store = self.feedback_store
        pairs = escalation_judgments(history[-1], history[:-1])
        if r is None or store is None or not pairs:
            return
        q = self._query(messages)
        thread = thread_id(ensure_config())  # the agent run's thread, when inside LangGraph
        for winner, loser in pairs:
            jid = judgment_id("escalation", thread, q.content_hash, winner, loser, user_turn(messages))
            store.record(q, winner, loser, "model_a", source="escalation", id=jid, image_policy=r.image_policy)

    @staticmethod
    def _entry(answer: Any) -> dict[str, Any]:
        return {"model": answer.model, "cost_usd": float(getattr(answer, "total_cost_usd", 0.0) or answer.cost_usd),
                "attempts": list(answer.attempts), "verdict": None}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        from ..llm import complete

        decision, cands = self._plan(messages, kwargs)
        call_kw = self._kwargs(stop, kwargs)
        answer = complete(messages, cands, **call_kw)
        history = [self._entry(answer)]
        while (nxt := self._next(decision, messages, answer, history)) is not None:
            try:
                answer = complete(messages, nxt, **call_kw)
            except ProviderError as exc:  # the stronger models failed: keep the answer we have
                history[-1]["attempts"].extend(exc.attempts)
                break
            history.append(self._entry(answer))
        return self._result(decision, answer, history, messages)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        from ..llm import acomplete

        decision, cands = self._plan(messages, kwargs)
        call_kw = self._kwargs(stop, kwargs)
        answer = await acomplete(messages, cands, **call_kw)
        history = [self._entry(answer)]
        while (nxt := self._next(decision, messages, answer, history)) is not None:
            try:
                answer = await acomplete(messages, nxt, **call_kw)
            except ProviderError as exc:  # the stronger models failed: keep the answer we have
                history[-1]["attempts"].extend(exc.attempts)
                break
            history.append(self._entry(answer))
        return self._result(decision, answer, history, messages)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Token streaming from the routed model (fallback happens before the first token).

        With a verifier the answer must be whole before it can be accepted or escalated, so it
        arrives as one chunk."""
        from ..llm import stream_complete

        if self.verifier is not None:
            msg = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
            assert isinstance(msg, AIMessage)  # _generate builds one; narrows BaseMessage for the type checker
            yield ChatGenerationChunk(message=AIMessageChunk(
                content=msg.content, tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                    for i, c in enumerate(msg.tool_calls)],
                response_metadata=msg.response_metadata, usage_metadata=msg.usage_metadata))
            return
        decision, cands = self._plan(messages, kwargs)
        stream = stream_complete(messages, cands, **self._kwargs(stop, kwargs))
        for raw in stream:
            delta = raw.choices[0].delta if getattr(raw, "choices", None) else None
            text = (getattr(delta, "content", None) or "") if delta is not None else ""
            tool_chunks = [{"name": getattr(tc.function, "name", None), "args": getattr(tc.function, "arguments", None),
                            "id": getattr(tc, "id", None), "index": getattr(tc, "index", i)}
                           for i, tc in enumerate(getattr(delta, "tool_calls", None) or [])]
            if not text and not tool_chunks:
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text, tool_call_chunks=tool_chunks))
            if run_manager is not None and text:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        answer = stream.answer
        if answer is None:
            return
        usage = UsageMetadata(input_tokens=int(answer.prompt_tokens or 0), output_tokens=int(answer.completion_tokens or 0),
                              total_tokens=int(answer.prompt_tokens or 0) + int(answer.completion_tokens or 0))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage, response_metadata={
            "model_name": answer.model, "cost_usd": float(answer.cost_usd), "finish_reason": answer.finish_reason,
            "routed_model": decision.model if decision else None,
            "route_reason": decision.reason if decision else "fixed candidates"}))


__all__ = ["RoutedChatModel", "to_tool_calls"]
