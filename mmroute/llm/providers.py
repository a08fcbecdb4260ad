"""Offline model backends that go through LiteLLM's real code path (``litellm.custom_provider_map``).

* ``replay/<name>``: serves recorded answers (``ReplayAnswers``) for the query it is sent, so the
  demo and evaluation run with real models' answers and no network.
* ``scripted/<name>``: a ``ScriptedLLM`` whose steps say what each call does — answer, call a
  tool, fail with a rate limit / timeout / 5xx / content filter, return a malformed response,
  sleep — so retry, fallback and graph tests exercise the same code that real calls take.

Errors are LiteLLM's own exception types, so ``mmroute.llm.call`` classifies them exactly as it
would a real provider's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import litellm
from litellm import CustomLLM
from litellm.types.utils import ChatCompletionMessageToolCall, Choices, Function, Message, ModelResponse, Usage

from ..tokens import estimate_prompt_tokens, estimate_text_tokens
from .recorded import ReplayAnswers

REPLAY = "replay"
SCRIPTED = "scripted"
FAIL_KINDS = ("rate_limit", "timeout", "server_error", "internal", "bad_gateway", "connection",
              "auth", "bad_request", "not_found", "content_filter", "context_window")


# -- steps ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """What one scripted call does. Build with ``reply``, ``fail``, ``tool_call``, ``sleep``,
    ``malformed``; a plain string in a script means ``reply(text)``."""

    kind: str  # "reply" | "fail" | "tool_call" | "sleep" | "malformed"
    text: str | None = None
    finish_reason: str = "stop"
    error: str | None = None
    retry_after: float | None = None
    message: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    seconds: float = 0.0
    then: "Step | None" = None
    usage: tuple[int, int] | None = None


def reply(text: str, *, finish_reason: str = "stop", usage: tuple[int, int] | None = None) -> Step:
    """An answer; ``usage=(prompt_tokens, completion_tokens)`` overrides the estimate."""
    return Step("reply", text=text, finish_reason=finish_reason, usage=usage)


def length(text: str) -> Step:
    """An answer cut off at the token limit (``finish_reason="length"``)."""
    return reply(text, finish_reason="length")


def fail(kind: str, *, retry_after: float | None = None, message: str | None = None) -> Step:
    """Raise LiteLLM's exception for ``kind`` (one of ``FAIL_KINDS``); a rate limit may carry retry-after."""
    if kind not in FAIL_KINDS:
        raise ValueError(f"unknown failure kind {kind!r}; expected one of {', '.join(FAIL_KINDS)}")
    return Step("fail", error=kind, retry_after=retry_after, message=message)


def refuse(message: str = "the request was rejected by the provider's content filter") -> Step:
    """A content-filter refusal (LiteLLM ``ContentPolicyViolationError``)."""
    return fail("content_filter", message=message)


def tool_call(name: str, arguments: Mapping[str, Any] | str | None = None, *, id: str | None = None,
              text: str | None = None) -> Step:
    """The model calls one tool (OpenAI ``tool_calls`` format, ``finish_reason="tool_calls"``)."""
    args = arguments if isinstance(arguments, str) else json.dumps(dict(arguments or {}))
    call = {"id": id or f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": name, "arguments": args}}
    return Step("tool_call", text=text, finish_reason="tool_calls", tool_calls=(call,))


def sleep(seconds: float, then: Step | str = "ok") -> Step:
    """Wait ``seconds`` then do ``then``; a call with a shorter ``timeout`` raises Timeout when it runs out."""
    return Step("sleep", seconds=float(seconds), then=_as_step(then))


def malformed(kind: str = "none_content") -> Step:
    """A broken response: ``"none_content"`` (no text, no tool calls) or ``"no_choices"``."""
    if kind not in ("none_content", "no_choices"):
        raise ValueError(f"unknown malformed kind {kind!r}; expected 'none_content' or 'no_choices'")
    return Step("malformed", error=kind)


def _as_step(value: Any) -> Step:
    if isinstance(value, Step):
        return value
    if isinstance(value, str):
        return reply(value)
    if isinstance(value, Mapping):  # {"text": ..., "finish_reason": ...} or {"tool_call": name, "arguments": {...}}
        if "tool_call" in value:
            return tool_call(value["tool_call"], value.get("arguments"), text=value.get("text"))
        return reply(str(value.get("text", "")), finish_reason=value.get("finish_reason", "stop"))
    raise TypeError(f"a scripted step must be a str, dict, Step or callable, got {type(value).__name__}")


def _error(step: Step, model: str, provider: str) -> Exception:
    """LiteLLM's exception for a failure step, built as LiteLLM's own provider code builds it."""
    msg = step.message or f"scripted {step.error} from {provider}/{model}"
    kind = step.error
    req = httpx.Request("POST", f"http://{provider}.invalid/v1/chat/completions")
    if kind == "rate_limit":
        headers = {"retry-after": f"{step.retry_after:g}"} if step.retry_after is not None else {}
        return litellm.RateLimitError(msg, llm_provider=provider, model=model,
                                      response=httpx.Response(429, headers=headers, request=req), headers=headers or None)
    if kind == "timeout":
        return litellm.Timeout(msg, model=model, llm_provider=provider)
    if kind == "server_error":
        return litellm.ServiceUnavailableError(msg, llm_provider=provider, model=model)
    if kind == "internal":
        return litellm.InternalServerError(msg, llm_provider=provider, model=model)
    if kind == "bad_gateway":
        return litellm.BadGatewayError(msg, llm_provider=provider, model=model)
    if kind == "connection":
        return litellm.APIConnectionError(msg, llm_provider=provider, model=model, request=req)
    if kind == "auth":
        return litellm.AuthenticationError(msg, llm_provider=provider, model=model)
    if kind == "not_found":
        return litellm.NotFoundError(msg, model=model, llm_provider=provider)
    if kind == "content_filter":
        return litellm.ContentPolicyViolationError(msg, model=model, llm_provider=provider)
    if kind == "context_window":
        return litellm.ContextWindowExceededError(msg, model=model, llm_provider=provider)
    return litellm.BadRequestError(msg, model=model, llm_provider=provider)


# -- responses ------------------------------------------------------------------------------------

@dataclass
class _Reply:
    """A resolved answer (or several choices) ready to become a ModelResponse or a stream."""

    texts: list[str | None]
    finish_reason: str = "stop"
    tool_calls: tuple[dict[str, Any], ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int | None = None
    no_choices: bool = False
    fingerprint: str | None = None


def _fill(model_response: ModelResponse, model: str, r: _Reply) -> ModelResponse:
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


def _chunks(r: _Reply) -> Iterator[dict[str, Any]]:
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


async def _achunks(r: _Reply) -> AsyncIterator[dict[str, Any]]:
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

    def _resolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> _Reply:
        raise NotImplementedError

    async def _aresolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> _Reply:
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
        # (``mmroute.llm.call.classify_error`` unwraps that, as it must for real providers too).
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
    def _fallback() -> _Reply:
        # no model ran, so nothing is billed: usage 0/0
        return _Reply(texts=[OFFLINE_FALLBACK_TEXT], prompt_tokens=0, completion_tokens=0,
                      fingerprint=OFFLINE_FALLBACK_FINGERPRINT)

    def _resolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> _Reply:
        try:
            return self._lookup(model, messages, optional_params)
        except litellm.NotFoundError:
            if self.offline_fallback:
                return self._fallback()
            raise

    def _lookup(self, model: str, messages: list, optional_params: dict) -> _Reply:
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
        return _Reply(texts=[s.text for s in samples], prompt_tokens=prompt, completion_tokens=completion)


# -- scripted -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScriptedCall:
    """One call a ScriptedLLM received (for assertions)."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    step: Step
    at: float = field(default_factory=time.monotonic)


StepSpec = Step | str | Mapping[str, Any] | Callable[[list, dict], Any]


class ScriptedLLM:
    """Scripted model behaviour per model id, for tests and demos.

    ``script`` maps a model (``"scripted/cheap"`` or ``"cheap"``) to a list of steps, consumed one
    per call (the last step repeats once the list is used up), or to a callable
    ``(messages, params) -> step`` called on every call. A step may itself be such a callable.
    ``default`` answers models the script does not name (otherwise they raise NotFoundError).
    Thread- and async-safe; ``calls`` logs every call.
    """

    def __init__(self, script: Mapping[str, Sequence[StepSpec] | StepSpec] | None = None, *,
                 default: StepSpec | None = None, tokens_per_image: int = 765) -> None:
        self._lock = threading.Lock()
        self._script: dict[str, Any] = {}
        self._pos: dict[str, int] = {}
        self.default = default
        self.tokens_per_image = tokens_per_image
        self.calls: list[ScriptedCall] = []
        for model, steps in (script or {}).items():
            self.set(model, steps)

    @staticmethod
    def _key(model: str) -> str:
        return model.split("/", 1)[1] if model.startswith(SCRIPTED + "/") else model

    def set(self, model: str, steps: Sequence[StepSpec] | StepSpec) -> "ScriptedLLM":
        """(Re)script one model; its step position restarts."""
        if isinstance(steps, (str, Step, Mapping)) or callable(steps):
            steps = [steps] if not callable(steps) or isinstance(steps, Step) else steps
        elif not steps:
            raise ValueError(f"script for {model!r} is empty")
        with self._lock:
            self._script[self._key(model)] = list(steps) if not callable(steps) else steps
            self._pos[self._key(model)] = 0
        return self

    def install(self) -> "ScriptedLLM":
        """Make this the script the ``scripted/`` provider follows (registering the providers)."""
        register_offline_providers(scripted=self)
        return self

    def reset(self) -> None:
        """Forget the call log and restart every model's steps."""
        with self._lock:
            self.calls.clear()
            self._pos = dict.fromkeys(self._pos, 0)

    def calls_for(self, model: str) -> list[ScriptedCall]:
        key = self._key(model)
        return [c for c in list(self.calls) if c.model == key]

    @property
    def models_called(self) -> list[str]:
        return [SCRIPTED + "/" + c.model for c in list(self.calls)]

    def next_step(self, model: str, messages: list, params: dict) -> Step:
        """Pick (and log) the step for this call."""
        key = self._key(model)
        with self._lock:
            if key in self._script:
                steps = self._script[key]
                if callable(steps):
                    spec: Any = steps
                else:
                    i = self._pos[key]
                    self._pos[key] = i + 1
                    spec = steps[min(i, len(steps) - 1)]
            elif self.default is not None:
                spec = self.default
            else:
                known = ", ".join(sorted(self._script)) or "none"
                raise litellm.NotFoundError(f"scripted model {model!r} has no script (scripted: {known})",
                                            model=model, llm_provider=SCRIPTED)
        if callable(spec) and not isinstance(spec, Step):
            spec = spec(messages, params)  # outside the lock: user code may be slow
        step = _as_step(spec)
        with self._lock:
            self.calls.append(ScriptedCall(key, list(messages), dict(params), step))
        return step

    def _reply(self, step: Step, model: str, messages: list) -> _Reply:
        if step.kind == "fail":
            raise _error(step, model, SCRIPTED)
        prompt = estimate_prompt_tokens(messages, tokens_per_image=self.tokens_per_image)
        if step.kind == "malformed":
            return _Reply(texts=[None], prompt_tokens=prompt, completion_tokens=0, no_choices=step.error == "no_choices")
        usage = step.usage
        return _Reply(texts=[step.text], finish_reason=step.finish_reason, tool_calls=step.tool_calls,
                      prompt_tokens=usage[0] if usage else prompt, completion_tokens=usage[1] if usage else None)

    def run(self, model: str, messages: list, params: dict, timeout: float | None) -> _Reply:
        step = self.next_step(model, messages, params)
        while step.kind == "sleep":
            if timeout is not None and step.seconds > timeout:
                time.sleep(timeout)
                raise litellm.Timeout(f"scripted/{model} did not answer within {timeout:g}s", model=model, llm_provider=SCRIPTED)
            time.sleep(step.seconds)
            step = step.then or reply("ok")
        return self._reply(step, model, messages)

    async def arun(self, model: str, messages: list, params: dict, timeout: float | None) -> _Reply:
        step = self.next_step(model, messages, params)
        while step.kind == "sleep":
            if timeout is not None and step.seconds > timeout:
                await asyncio.sleep(timeout)
                raise litellm.Timeout(f"scripted/{model} did not answer within {timeout:g}s", model=model, llm_provider=SCRIPTED)
            await asyncio.sleep(step.seconds)
            step = step.then or reply("ok")
        return self._reply(step, model, messages)


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

    def _resolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> _Reply:
        return self._get(model).run(model, messages, optional_params, timeout)

    async def _aresolve(self, model: str, messages: list, optional_params: dict, timeout: float | None) -> _Reply:
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


__all__ = ["FAIL_KINDS", "OFFLINE_FALLBACK_FINGERPRINT", "OFFLINE_FALLBACK_TEXT", "ReplayLLM", "ScriptedCall",
           "ScriptedLLM", "Step", "active_replay_answers", "active_scripted", "fail", "is_offline_fallback", "length",
           "malformed", "refuse", "register_offline_providers", "reply", "sleep", "tool_call"]
