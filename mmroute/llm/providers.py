"""Offline model backends that go through LiteLLM's real code path (``litellm.custom_provider_map``).

* ``replay/<name>``: serves recorded answers (``ReplayAnswers``) for the query it is sent, so the
  demo and evaluation run with real models' answers and no network.
* ``scripted/<name>``: a ``ScriptedLLM`` (:mod:`mmroute.llm.scripted`) whose steps say what each
  call does — answer, call a tool, fail with a rate limit / timeout / 5xx / content filter, return
  a malformed response, sleep — so retry, fallback and graph tests exercise the same code that
  real calls take.

This module owns what both share: the LiteLLM ``CustomLLM`` plumbing (a resolved :class:`Reply`
becomes a response or a stream), the replay provider and the one registration of both.

Errors are LiteLLM's own exception types, so ``mmroute.llm.faults`` classifies them exactly as it
would a real provider's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import litellm
from litellm import CustomLLM
from litellm.types.utils import ChatCompletionMessageToolCall, Choices, Function, Message, ModelResponse, Usage

from ..tokens import estimate_prompt_tokens, estimate_text_tokens
from .recorded import ReplayAnswers

if TYPE_CHECKING:
    from .scripted import ScriptedLLM

REPLAY = "replay"
SCRIPTED = "scripted"


# -- responses ------------------------------------------------------------------------------------

@dataclass
class Reply:
    """A resolved answer (or several choices) ready to become a ModelResponse or a stream."""

    texts: list[str | None]
    finish_reason: str = "stop"
    tool_calls: tuple[dict[str, Any], ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int | None = None
    no_choices: bool = False
    fingerprint: str | None = None


def _fill(model_response: ModelResponse, model: str, r: Reply) -> ModelResponse:
    model_response.model = model
    if r.fingerprint is not None:
        model_response.system_fingerprint = r.fingerprint
    if r.no_choices:
        model_response.choices = []
    else:
        choices = []
        for i, text in enumerate(r.texts):
            calls = [ChatCompletionMessageToolCall(id=c["id"], type="function",
                                                   function=Function(name=c["function"]["name"], arguments=c["function"]["arguments"]))
                     for c in r.tool_calls] if i == 0 and r.tool_calls else None
            msg = Message(role="assistant", content=text, tool_calls=calls)
            choices.append(Choices(index=i, finish_reason=r.finish_reason, message=msg))
        model_response.choices = choices
    completion = r.completion_tokens if r.completion_tokens is not None else sum(
        estimate_text_tokens(t) for t in r.texts) + sum(estimate_text_tokens(json.dumps(c)) for c in r.tool_calls)
    model_response.usage = Usage(prompt_tokens=r.prompt_tokens, completion_tokens=completion,  # type: ignore[attr-defined]
                                 total_tokens=r.prompt_tokens + completion)
    return model_response


def _chunks(r: Reply) -> Iterator[dict[str, Any]]:
    """GenericStreamingChunks: the text in word pieces, tool calls, then a final chunk with usage."""
    text = r.texts[0] if r.texts else None
    pieces = [p for p in (text or "").split(" ")]
    for i, piece in enumerate(pieces):
        if piece or i == 0:
            yield {"text": piece if i == 0 else " " + piece, "tool_use": None, "is_finished": False,
                   "finish_reason": "", "usage": None, "index": 0}
    for j, c in enumerate(r.tool_calls):
        yield {"text": "", "tool_use": {"id": c["id"], "type": "function", "function": dict(c["function"]), "index": j},
               "is_finished": False, "finish_reason": "", "usage": None, "index": 0}
    completion = r.completion_tokens if r.completion_tokens is not None else estimate_text_tokens(text) + sum(
        estimate_text_tokens(json.dumps(c)) for c in r.tool_calls)
    yield {"text": "", "tool_use": None, "is_finished": True, "finish_reason": r.finish_reason,
           "usage": {"prompt_tokens": r.prompt_tokens, "completion_tokens": completion,
                     "total_tokens": r.prompt_tokens + completion}, "index": 0}


async def _achunks(r: Reply) -> AsyncIterator[dict[str, Any]]:
    for c in _chunks(r):
        yield c


def _timeout_s(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, httpx.Timeout):
        return timeout.read
    try:
        return float(timeout)
    except (TypeError, ValueError):
        return None


class _OfflineLLM(CustomLLM):
    """Shared plumbing: subclasses implement ``_resolve`` (sync) and may override ``_aresolve``."""

    provider = ""

    def _resolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> Reply:
        raise NotImplementedError

    async def _aresolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> Reply:
        return self._resolve(model, messages, optional_params, timeout)

    def completion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                   model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                   logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> ModelResponse:
        r = self._resolve(model, messages, optional_params, _timeout_s(kwargs.get("timeout")))
        return _fill(model_response, model, r)

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                          logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> ModelResponse:
        r = await self._aresolve(model, messages, optional_params, _timeout_s(kwargs.get("timeout")))
        return _fill(model_response, model, r)

    # Resolving happens before the iterator is returned, so failures raise at call time (before
    # any chunk), the way an HTTP provider fails on the request rather than mid-stream.
    def streaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                  model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                  logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> Iterator[Any]:
        r = self._resolve(model, messages, optional_params, _timeout_s(kwargs.get("timeout")))
        return _chunks(r)

    def astreaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,  # type: ignore[override]
                   model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                   logging_obj: Any, optional_params: dict, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # LiteLLM iterates what this returns without awaiting it, so it must be an async iterator;
        # a failure surfaces on the first chunk, where LiteLLM wraps it in MidStreamFallbackError
        # (``mmroute.llm.faults.classify_error`` unwraps that, as it must for real providers too).
        timeout = _timeout_s(kwargs.get("timeout"))

        async def gen() -> AsyncIterator[Any]:
            r = await self._aresolve(model, messages, optional_params, timeout)
            async for chunk in _achunks(r):
                yield chunk

        return gen()


# -- replay ---------------------------------------------------------------------------------------

OFFLINE_FALLBACK_TEXT = ("[offline replay: no recorded answer for this question; set MMROUTE_ROUTER / a pool with "
                         "real models to get real answers]")
OFFLINE_FALLBACK_FINGERPRINT = "mmroute-offline-fallback"


def is_offline_fallback(text: str | None) -> bool:
    """Whether an answer is the replay provider's offline stand-in rather than a model's answer."""
    return text == OFFLINE_FALLBACK_TEXT


class ReplayLLM(_OfflineLLM):
    """``replay/<name>``: the recorded answer of model ``<name>`` to the query in the messages.

    Strict by default: a query (or model) with no recording fails with NotFoundError, so an
    evaluation never scores a stand-in. ``offline_fallback=True`` (the served example graph)
    answers it with ``OFFLINE_FALLBACK_TEXT`` instead, marked with ``system_fingerprint``
    ``OFFLINE_FALLBACK_FINGERPRINT``, so an offline server still answers any question.
    """

    provider = REPLAY

    def __init__(self, answers: ReplayAnswers | None = None, *, tokens_per_image: int = 765,
                 offline_fallback: bool = False) -> None:
        super().__init__()
        self.answers = answers
        self.tokens_per_image = tokens_per_image
        self.offline_fallback = offline_fallback

    @staticmethod
    def _fallback() -> Reply:
        # no model ran, so nothing is billed: usage 0/0
        return Reply(texts=[OFFLINE_FALLBACK_TEXT], prompt_tokens=0, completion_tokens=0,
                      fingerprint=OFFLINE_FALLBACK_FINGERPRINT)

    def _resolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> Reply:
        try:
            return self._lookup(model, messages, optional_params)
        except litellm.NotFoundError:
            if self.offline_fallback:
                return self._fallback()
            raise

    def _lookup(self, model: str, messages: list, optional_params: dict) -> Reply:
        from ..errors import InvalidInputError
        from ..query import Query

        if self.answers is None:
            raise litellm.NotFoundError("no recorded answers are loaded; call register_offline_providers(replay_answers=...)",
                                        model=model, llm_provider=REPLAY)
        try:
            h = Query.from_messages(messages).content_hash
        except InvalidInputError as exc:
            raise litellm.BadRequestError(f"replay cannot read the query: {exc}", model=model, llm_provider=REPLAY) from None
        n = int(optional_params.get("n") or 1)
        index = optional_params.get("sample_index")
        try:
            samples = [self.answers.next_sample(h, model, None if index is None else int(index) + i) for i in range(n)]
        except KeyError as exc:
            raise litellm.NotFoundError(f"replay/{model}: {exc.args[0]}", model=model, llm_provider=REPLAY) from None
        s0 = samples[0]
        prompt = (s0.prompt_tokens if s0.prompt_tokens is not None
                  else estimate_prompt_tokens(messages, tokens_per_image=self.tokens_per_image))
        completion = None
        if n == 1 and s0.completion_tokens is not None:
            completion = s0.completion_tokens
        return Reply(texts=[s.text for s in samples], prompt_tokens=prompt, completion_tokens=completion)


class _ScriptedProvider(_OfflineLLM):
    provider = SCRIPTED

    def __init__(self) -> None:
        super().__init__()
        self.scripted: ScriptedLLM | None = None

    def _get(self, model: str) -> ScriptedLLM:
        if self.scripted is None:
            raise litellm.NotFoundError("no ScriptedLLM is installed; call register_offline_providers(scripted=...)",
                                        model=model, llm_provider=SCRIPTED)
        return self.scripted

    def _resolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> Reply:
        return self._get(model).run(model, messages, optional_params, timeout)

    async def _aresolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> Reply:
        return await self._get(model).arun(model, messages, optional_params, timeout)


# -- registration ---------------------------------------------------------------------------------

_REPLAY_HANDLER = ReplayLLM()
_SCRIPTED_HANDLER = _ScriptedProvider()
_REG_LOCK = threading.Lock()


def register_offline_providers(replay_answers: ReplayAnswers | None = None,
                               scripted: ScriptedLLM | None = None, *, replay_fallback: bool | None = None) -> None:
    """Register ``replay/`` and ``scripted/`` with LiteLLM (idempotent: one entry each, ever).

    Passing ``replay_answers`` / ``scripted`` makes them the active table / script; ``None``
    leaves whatever is active unchanged. ``replay_fallback`` sets ``ReplayLLM.offline_fallback``;
    new ``replay_answers`` without it are strict, so one caller's fallback never leaks into the next.
    """
    with _REG_LOCK:
        if replay_answers is not None:
            _REPLAY_HANDLER.answers = replay_answers
            _REPLAY_HANDLER.offline_fallback = bool(replay_fallback)
        elif replay_fallback is not None:
            _REPLAY_HANDLER.offline_fallback = replay_fallback
        if scripted is not None:
            _SCRIPTED_HANDLER.scripted = scripted
        entries = [e for e in litellm.custom_provider_map if e.get("provider") not in (REPLAY, SCRIPTED)]
        entries += [{"provider": REPLAY, "custom_handler": _REPLAY_HANDLER},
                    {"provider": SCRIPTED, "custom_handler": _SCRIPTED_HANDLER}]
        litellm.custom_provider_map = entries
        from litellm.utils import custom_llm_setup

        custom_llm_setup()


def active_replay_answers() -> ReplayAnswers | None:
    return _REPLAY_HANDLER.answers


def active_scripted() -> ScriptedLLM | None:
    return _SCRIPTED_HANDLER.scripted


__all__ = ["OFFLINE_FALLBACK_FINGERPRINT", "OFFLINE_FALLBACK_TEXT", "Reply", "ReplayLLM", "active_replay_answers",
           "active_scripted", "is_offline_fallback", "register_offline_providers"]
