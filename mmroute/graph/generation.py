"""The cascade's model call as a LangChain chat model, so ``stream_mode="messages"`` gets tokens.

LangGraph streams tokens only from chat-model runs (its callback handler listens to
``on_llm_new_token``). When such a listener is attached (:func:`wants_tokens`) the generate node
calls its candidates through :class:`CandidatesChatModel`, whose ``_stream`` LangChain picks;
otherwise it calls ``mmroute.llm.complete`` directly, exactly as before. The
``mmroute.llm.Answer`` (cost, attempts, finish reason) is handed back through ``sink``, not
through the message, so nothing unserialisable reaches the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, BaseCallbackManager, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field

from ..errors import ProviderError
from ..llm.providers import is_offline_fallback
from ..pool import ModelPool


def wants_tokens(config: RunnableConfig | None) -> bool:
    """Whether a token listener (LangGraph's ``stream_mode="messages"`` handler, or any LangChain
    streaming callback) is attached: only then is the call worth a chat-model run. Sending every
    call through one cost wall time: ``benchmarks/load_test.py --n 200 --seed 0`` took 17-18 s
    against 11-17 s without it (3 runs each, a loaded 2-core machine)."""
    try:
        from langchain_core.tracers._streaming import _StreamingCallbackHandler
    except ImportError:  # a langchain-core without the marker class: always stream-capable
        return True
    callbacks = (config or {}).get("callbacks")
    handlers = callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else (callbacks or [])
    return any(isinstance(h, _StreamingCallbackHandler) for h in handlers)


def _delta_text(raw: Any) -> str:
    """The text of one LiteLLM stream chunk ("" for usage-only / tool-call chunks)."""
    choices = getattr(raw, "choices", None)
    delta = choices[0].delta if choices else None
    return (getattr(delta, "content", None) or "") if delta is not None else ""


def _meta(answer: Any) -> tuple[dict[str, Any], UsageMetadata]:
    p, c = int(answer.prompt_tokens or 0), int(answer.completion_tokens or 0)
    meta = {"model_name": answer.model, "cost_usd": float(answer.cost_usd), "finish_reason": answer.finish_reason}
    if is_offline_fallback(answer.text):
        meta["offline_fallback"] = True
    return meta, UsageMetadata(input_tokens=p, output_tokens=c, total_tokens=p + c)


class CandidatesChatModel(BaseChatModel):
    """Call ``candidates`` in order through ``mmroute.llm`` (retries, fallback, breaker), and put
    the resulting ``Answer`` in ``sink``. A ``ProviderError`` propagates (the node records it).

    LangChain itself reports each yielded chunk to the callbacks (``on_llm_new_token``), which is
    what LangGraph's ``stream_mode="messages"`` listens to. Streaming falls back like ``complete``
    does: a model that fails before any text is out (a malformed or empty stream) is followed by
    the next candidate; once text is out it cannot be.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    candidates: list[str]
    pool: ModelPool | None = None
    llm_kwargs: dict[str, Any] = Field(default_factory=dict)
    sink: list[Any] = Field(default_factory=list)
    cache: BaseCache | bool | None = False  # a cached reply would skip the call and leave ``sink`` empty

    @property
    def _llm_type(self) -> str:
        return "mmroute-candidates"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"candidates": self.candidates}

    def _kw(self) -> dict[str, Any]:
        return {**({"pool": self.pool} if self.pool is not None else {}), **self.llm_kwargs}

    def _result(self, answer: Any) -> ChatResult:
        self.sink.append(answer)
        meta, usage = _meta(answer)
        msg = AIMessage(content=answer.text or "", response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        from ..llm import complete

        return self._result(complete(messages, self.candidates, **self._kw(), **kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        from ..llm import acomplete

        return self._result(await acomplete(messages, self.candidates, **self._kw(), **kwargs))

    @staticmethod
    def _rest(cands: Sequence[str], model: str) -> list[str]:
        return list(cands[cands.index(model) + 1:]) if model in cands else []

    def _done(self, answer: Any, earlier: list[Any]) -> ChatGenerationChunk:
        if earlier:  # attempts of models that failed mid-stream come first, as in complete()
            answer = answer.model_copy(update={"attempts": earlier + list(answer.attempts)})
        self.sink.append(answer)
        meta, usage = _meta(answer)
        return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta, usage_metadata=usage))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        from ..llm import stream_complete

        cands, earlier = list(self.candidates), list[Any]()
        while True:
            try:
                stream = stream_complete(messages, cands, **self._kw(), **kwargs)
            except ProviderError as exc:  # every remaining candidate failed before its first chunk
                if not earlier:
                    raise
                raise ProviderError(str(exc), attempts=earlier + list(exc.attempts)) from exc
            sent = False
            try:
                for raw in stream:
                    text = _delta_text(raw)
                    if not text:
                        continue
                    sent = True
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text))
            except ProviderError as exc:
                cands = self._rest(cands, stream.model)
                if sent or not cands:
                    raise ProviderError(str(exc), attempts=earlier + list(exc.attempts)) from exc
                earlier += list(exc.attempts)
                continue
            yield self._done(stream.answer, earlier)
            return

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        from ..llm import astream_complete

        cands, earlier = list(self.candidates), list[Any]()
        while True:
            try:
                stream = await astream_complete(messages, cands, **self._kw(), **kwargs)
            except ProviderError as exc:  # every remaining candidate failed before its first chunk
                if not earlier:
                    raise
                raise ProviderError(str(exc), attempts=earlier + list(exc.attempts)) from exc
            sent = False
            try:
                async for raw in stream:
                    text = _delta_text(raw)
                    if not text:
                        continue
                    sent = True
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text))
            except ProviderError as exc:
                cands = self._rest(cands, stream.model)
                if sent or not cands:
                    raise ProviderError(str(exc), attempts=earlier + list(exc.attempts)) from exc
                earlier += list(exc.attempts)
                continue
            yield self._done(stream.answer, earlier)
            return


__all__ = ["CandidatesChatModel", "wants_tokens"]
