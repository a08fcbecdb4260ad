"""The ``scripted/<name>`` test double: what each scripted call does, and the script that says so.

Owns the steps (``reply``, ``fail``, ``tool_call``, ``sleep``, ``malformed``, ...; a failure
becomes LiteLLM's own exception type, built as its provider code builds it) and
:class:`ScriptedLLM`, which hands out one step per call and logs the calls. The LiteLLM plumbing
that turns a step into a response or a stream is shared with ``replay/`` and lives in
:mod:`mmroute.llm.providers`, which this module builds on. Public through :mod:`mmroute.testing`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import litellm

from ..tokens import estimate_prompt_tokens
from .providers import SCRIPTED, Reply, register_offline_providers

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

    def _reply(self, step: Step, model: str, messages: list) -> Reply:
        if step.kind == "fail":
            raise _error(step, model, SCRIPTED)
        prompt = estimate_prompt_tokens(messages, tokens_per_image=self.tokens_per_image)
        if step.kind == "malformed":
            return Reply(texts=[None], prompt_tokens=prompt, completion_tokens=0, no_choices=step.error == "no_choices")
        usage = step.usage
        return Reply(texts=[step.text], finish_reason=step.finish_reason, tool_calls=step.tool_calls,
                      prompt_tokens=usage[0] if usage else prompt, completion_tokens=usage[1] if usage else None)

    def run(self, model: str, messages: list, params: dict, timeout: float | None) -> Reply:
        step = self.next_step(model, messages, params)
        while step.kind == "sleep":
            if timeout is not None and step.seconds > timeout:
                time.sleep(timeout)
                raise litellm.Timeout(f"scripted/{model} did not answer within {timeout:g}s", model=model, llm_provider=SCRIPTED)
            time.sleep(step.seconds)
            step = step.then or reply("ok")
        return self._reply(step, model, messages)

    async def arun(self, model: str, messages: list, params: dict, timeout: float | None) -> Reply:
        step = self.next_step(model, messages, params)
        while step.kind == "sleep":
            if timeout is not None and step.seconds > timeout:
                await asyncio.sleep(timeout)
                raise litellm.Timeout(f"scripted/{model} did not answer within {timeout:g}s", model=model, llm_provider=SCRIPTED)
            await asyncio.sleep(step.seconds)
            step = step.then or reply("ok")
        return self._reply(step, model, messages)


__all__ = ["FAIL_KINDS", "ScriptedCall", "ScriptedLLM", "Step", "fail", "length", "malformed", "refuse", "reply",
           "sleep", "tool_call"]
