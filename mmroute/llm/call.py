"""Calling the routed model through LiteLLM, with retries, fallbacks, a circuit breaker and
honest cost accounting.

``candidates`` is ordered as a ``RouteDecision`` orders them: the chosen model first, then
fallbacks. Transient faults (rate limits, timeouts, 5xx, connection errors, malformed responses)
are retried with exponential backoff and jitter, honouring ``retry-after``; faults that would
repeat (auth, bad request, content filter, context window) move straight to the next candidate.
Every attempt is recorded, and when every candidate fails ``ProviderError`` lists them all.
Which faults are which, and the backoff, are :mod:`mmroute.llm.faults`; this module is the
request loop (sync, async, streaming) that applies them and accounts for the cost.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import litellm
from pydantic import BaseModel, ConfigDict, Field, computed_field

from ..errors import ConfigError, InvalidInputError, NoEligibleModelError, ProviderConfigError, ProviderError
from ..payload import Payload
from ..policy import spec_filter_reasons
from ..pool import DEFAULT_TOKENS_PER_IMAGE, ModelPool, ModelSpec, litellm_facts
from .breaker import CircuitBreaker
from .faults import RETRY_POLICY, Backoff, MalformedResponse, classify_error, retry_after_s
from ..tokens import estimate_prompt_tokens, estimate_text_tokens
from .convert import to_openai_messages


class Attempt(BaseModel):
    """One call to one model (or one skip, for an open circuit)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    ok: bool
    error_type: str | None = None
    error: str | None = None
    latency_s: float = 0.0
    cost_usd: float = 0.0
    retry_after: float | None = None
    backoff_s: float = Field(0.0, description="seconds waited after this attempt before the next one")


class Answer(BaseModel):
    """The successful call's answer, with what it cost and every attempt it took to get it."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = Field(0.0, description="cost of the successful call")
    cost_known: bool = Field(True, description="False when neither LiteLLM nor the pool prices this model")
    latency_s: float = 0.0
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    raw: Any = Field(None, exclude=True, repr=False)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cost_usd(self) -> float:
        """Everything this request cost, failed attempts that were billed included."""
        return float(sum(a.cost_usd for a in self.attempts))

    @property
    def fell_back(self) -> bool:
        """Whether the answer came from a model other than the first one tried."""
        return bool(self.attempts) and self.attempts[0].model != self.model


# -- one request ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _litellm_spec(model: str) -> ModelSpec | None:
    """What LiteLLM's local model map knows of a model outside the pool (None: nothing)."""
    facts = litellm_facts(model)
    return ModelSpec(name=model, **facts) if facts else None


def _short(text: str, n: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


class _Run:
    """State of one request across its attempts; shared by the sync, async and streaming paths."""

    def __init__(self, messages: Any, candidates: Sequence[str], pool: ModelPool | None, timeout: float | None,
                 max_retries: int, backoff: Backoff | None, breaker: CircuitBreaker | None,
                 rng: random.Random | None, seed: int | None, kwargs: dict[str, Any]) -> None:
        # litellm prints a red "Provider List" banner (twice per streamed call) whenever a response
        # names a bare model, as OpenAI-compatible servers do; the error it precedes is handled here
        litellm.suppress_debug_info = True
        if isinstance(candidates, str):
            candidates = [candidates]
        self.models = list(dict.fromkeys(candidates))
        if not self.models:
            raise InvalidInputError("no candidate models to call")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        self.messages = to_openai_messages(messages)
        self.pool = pool
        self.attempts: list[Attempt] = []
        self.models = self._eligible(kwargs.get("tools"))
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.breaker = breaker
        self.rng = rng or random.Random(seed)
        self.kwargs = kwargs
        self.t_start = time.perf_counter()
        self.last_exc: BaseException | None = None

    def spec(self, model: str) -> ModelSpec | None:
        return self.pool[model] if self.pool is not None and model in self.pool else None

    def _eligible(self, tools: Sequence[Any] | None) -> list[str]:
        """Candidates that can take this request, as routing's hard filters judge it, on the pool's
        facts or else LiteLLM's: an image in any turn rules out a known text-only model, the whole
        conversation must fit the context window. Skipped ones are recorded as attempts (no call
        is made); when none is left, ``NoEligibleModelError`` says why for each."""
        payload = Payload.from_messages(self.messages, tools=tools)
        keep, why = [], {}
        for model in self.models:
            spec = self.spec(model) or _litellm_spec(model)
            reasons = [] if spec is None else spec_filter_reasons(
                spec, text_tokens=payload.text_tokens, n_images=payload.n_images, unknown_vision_ok=True)
            if reasons:
                why[model] = "; ".join(reasons)
                self.attempts.append(Attempt(model=model, ok=False, error_type="ineligible", error=why[model]))
            else:
                keep.append(model)
        if not keep:
            detail = "; ".join(f"{m}: {r}" for m, r in why.items())
            raise NoEligibleModelError(f"no candidate model can take this request of ~{payload.text_tokens} text "
                                       f"tokens and {payload.n_images} image(s) ({detail})")
        return keep

    def admit(self, model: str) -> bool:
        if self.breaker is None or self.breaker.allow(model):
            return True
        self.attempts.append(Attempt(model=model, ok=False, error_type="circuit_open",
                                     error=f"circuit open after repeated failures; next trial in {self.breaker.retry_in(model):.1f}s"))
        return False

    def call_kwargs(self, model: str, **extra: Any) -> dict[str, Any]:
        """Per-call kwargs, then the pool's per-model ``litellm_params`` (more specific, so they win).

        The pool's prices are *not* passed as ``input_cost_per_token``: LiteLLM registers such
        prices in its process-wide cost map, so one pool's prices would leak into every later call
        of that model name. :meth:`cost` applies the pool's prices itself."""
        spec = self.spec(model)
        kw: dict[str, Any] = {**self.kwargs, **(spec.call_params() if spec else {})}
        kw.setdefault("num_retries", 0)  # retries are ours: one policy, every attempt recorded
        kw.setdefault("max_retries", 0)
        if self.timeout is not None:
            kw.setdefault("timeout", self.timeout)
        kw.update(extra)
        return {"model": model, "messages": self.messages, **kw}

    def cost(self, model: str, response: Any, prompt_tokens: int, completion_tokens: int) -> tuple[float, bool]:
        hidden = getattr(response, "_hidden_params", None) or {}
        rc = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if isinstance(rc, (int, float)) and rc > 0:
            return float(rc), True
        spec = self.spec(model)
        if spec is not None and spec.prices_known:
            return (prompt_tokens * float(spec.input_cost_per_token or 0.0)
                    + completion_tokens * float(spec.output_cost_per_token or 0.0)), True
        try:
            c = litellm.completion_cost(completion_response=response, model=model)
            if c is not None and c > 0:
                return float(c), True
        except Exception:  # LiteLLM raises for models it cannot price
            pass
        return 0.0, isinstance(rc, (int, float))

    def usage(self, model: str, response: Any, text: str) -> tuple[int, int]:
        u = getattr(response, "usage", None)
        p = getattr(u, "prompt_tokens", None) if u is not None else None
        c = getattr(u, "completion_tokens", None) if u is not None else None
        spec = self.spec(model)
        if p is None:  # no usage reported: estimate rather than call it free
            p = estimate_prompt_tokens(self.messages, tokens_per_image=spec.tokens_per_image if spec else DEFAULT_TOKENS_PER_IMAGE)
        if c is None:
            c = estimate_text_tokens(text)
        return int(p), int(c)

    def succeed(self, model: str, response: Any, t0: float) -> Answer:
        """Validate a response and turn it into the Answer; raises MalformedResponse when unusable."""
        choices = getattr(response, "choices", None)
        if not choices:
            raise MalformedResponse("response has no choices", response)
        choice = choices[0]
        msg = getattr(choice, "message", None)
        if msg is None:
            raise MalformedResponse("first choice has no message", response)
        raw_calls = getattr(msg, "tool_calls", None) or []
        calls = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in raw_calls]
        content = getattr(msg, "content", None)
        finish = getattr(choice, "finish_reason", None)
        if (content is None or content == "") and not calls:
            if finish == "content_filter":
                raise litellm.ContentPolicyViolationError("the answer was withheld by the provider's content filter",
                                                          model=model, llm_provider="")
            raise MalformedResponse(f"response has no content and no tool calls (finish_reason={finish!r})", response)
        text = content if isinstance(content, str) else str(content or "")
        latency = time.perf_counter() - t0
        p, c = self.usage(model, response, text)
        cost, known = self.cost(model, response, p, c)
        self.attempts.append(Attempt(model=model, ok=True, latency_s=latency, cost_usd=cost))
        if self.breaker is not None:
            self.breaker.record_success(model)
        return Answer(text=text, model=model, prompt_tokens=p, completion_tokens=c, cost_usd=cost, cost_known=known,
                      latency_s=latency, finish_reason=finish, tool_calls=calls, attempts=list(self.attempts),
                      raw=response)

    def fail(self, model: str, exc: BaseException, t0: float, retry: int) -> float | None:
        """Record a failed attempt; return the delay before retrying this model, or None to move on."""
        kind = classify_error(exc)
        retryable, counts = RETRY_POLICY.get(kind, (False, True))
        cost = 0.0
        if isinstance(exc, MalformedResponse) and exc.response is not None:  # billed even though unusable
            p, c = self.usage(model, exc.response, "")
            cost = self.cost(model, exc.response, p, c)[0]
        ra = retry_after_s(exc) if kind == "rate_limit" else None
        att = Attempt(model=model, ok=False, error_type=kind, error=_short(f"{type(exc).__name__}: {exc}"),
                      latency_s=time.perf_counter() - t0, cost_usd=cost, retry_after=ra)
        self.attempts.append(att)
        self.last_exc = exc
        if self.breaker is not None:
            (self.breaker.record_failure if counts else self.breaker.release)(model)
        if not retryable or retry >= self.max_retries:
            return None
        delay = self.backoff.delay(retry, self.rng, ra)
        if delay is not None:
            att.backoff_s = delay
        return delay

    def error(self) -> ProviderError:
        n_models = len(self.models)
        lines = "; ".join(f"{a.model} [{a.error_type}] {a.error}" for a in self.attempts)
        called = [a for a in self.attempts if a.error_type != "ineligible"]
        if called and all(a.error_type == "config" for a in called):
            return ProviderConfigError(
                f"no candidate model could be called: provider credentials are missing ({lines}). Set the "
                "providers' API keys (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) in this process's environment or "
                "api_key in the pool's litellm_params", attempts=list(self.attempts))
        return ProviderError(f"all {n_models} candidate model(s) failed after {len(self.attempts)} attempt(s): {lines}",
                             attempts=list(self.attempts))


# -- public API -----------------------------------------------------------------------------------

def complete(messages: Any, candidates: Sequence[str], *, pool: ModelPool | None = None, timeout: float | None = 60.0,
             max_retries: int = 2, backoff: Backoff | None = None, breaker: CircuitBreaker | None = None,
             rng: random.Random | None = None, seed: int | None = None, stream: bool = False,
             sleep: Callable[[float], None] = time.sleep, **litellm_kwargs: Any) -> Any:
    """Answer ``messages`` (a Query, string or chat messages) with the first candidate that works.

    Returns an ``Answer``; with ``stream=True`` an ``AnswerStream`` (iterate for chunks, then read
    ``.answer``). Extra kwargs (``tools``, ``tool_choice``, ``temperature``, ...) go to LiteLLM.
    Raises ``ProviderError`` (with ``.attempts``) when every candidate fails.
    """
    if stream:
        return stream_complete(messages, candidates, pool=pool, timeout=timeout, max_retries=max_retries,
                               backoff=backoff, breaker=breaker, rng=rng, seed=seed, sleep=sleep, **litellm_kwargs)
    run = _Run(messages, candidates, pool, timeout, max_retries, backoff, breaker, rng, seed, litellm_kwargs)
    for model in run.models:
        for retry in range(max_retries + 1):
            if not run.admit(model):
                break
            t0 = time.perf_counter()
            try:
                return run.succeed(model, litellm.completion(**run.call_kwargs(model)), t0)
            except Exception as exc:  # every provider fault is recorded; the loop decides what next
                delay = run.fail(model, exc, t0, retry)
            if delay is None:
                break
            if delay > 0:
                sleep(delay)
    raise run.error() from run.last_exc


async def acomplete(messages: Any, candidates: Sequence[str], *, pool: ModelPool | None = None,
                    timeout: float | None = 60.0, max_retries: int = 2, backoff: Backoff | None = None,
                    breaker: CircuitBreaker | None = None, rng: random.Random | None = None, seed: int | None = None,
                    stream: bool = False, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    **litellm_kwargs: Any) -> Any:
    """Async ``complete`` (``litellm.acompletion``); same retries, fallbacks and accounting."""
    if stream:
        return await astream_complete(messages, candidates, pool=pool, timeout=timeout, max_retries=max_retries,
                                      backoff=backoff, breaker=breaker, rng=rng, seed=seed, sleep=sleep, **litellm_kwargs)
    run = _Run(messages, candidates, pool, timeout, max_retries, backoff, breaker, rng, seed, litellm_kwargs)
    for model in run.models:
        for retry in range(max_retries + 1):
            if not run.admit(model):
                break
            t0 = time.perf_counter()
            try:
                return run.succeed(model, await litellm.acompletion(**run.call_kwargs(model)), t0)
            except Exception as exc:
                delay = run.fail(model, exc, t0, retry)
            if delay is None:
                break
            if delay > 0:
                await sleep(delay)
    raise run.error() from run.last_exc


class AnswerStream:
    """Chunks of a streamed answer; after the last one, ``.answer`` holds the Answer with its cost.

    Faults before the first chunk were retried / fell back already; a fault mid-stream cannot be
    (part of the answer is out) and raises ``ProviderError`` with every attempt.
    """

    def __init__(self, run: _Run, model: str, first: Any, rest: Any, t0: float) -> None:
        self._run, self.model, self._t0 = run, model, t0
        self._pending: list[Any] = [first]
        self._rest = rest
        self.chunks: list[Any] = []
        self.answer: Answer | None = None

    def _finish(self) -> Answer:
        built = litellm.stream_chunk_builder(self.chunks, messages=self._run.messages)
        self.answer = self._run.succeed(self.model, built, self._t0)
        return self.answer

    def _mid_stream_error(self, exc: BaseException) -> ProviderError:
        self._run.fail(self.model, exc, self._t0, self._run.max_retries)
        return self._run.error()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._pending:
            chunk = self._pending.pop()
        else:
            try:
                chunk = next(self._rest)
            except StopIteration:
                if self.answer is None:
                    try:
                        self._finish()
                    except Exception as exc:
                        raise self._mid_stream_error(exc) from exc
                raise
            except Exception as exc:
                raise self._mid_stream_error(exc) from exc
        self.chunks.append(chunk)
        return chunk

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._pending:
            chunk = self._pending.pop()
        else:
            try:
                chunk = await self._rest.__anext__()
            except StopAsyncIteration:
                if self.answer is None:
                    try:
                        self._finish()
                    except Exception as exc:
                        raise self._mid_stream_error(exc) from exc
                raise
            except Exception as exc:
                raise self._mid_stream_error(exc) from exc
        self.chunks.append(chunk)
        return chunk

    def collect(self) -> Answer:
        """Drain the stream (sync) and return the Answer."""
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer


def _stream_kwargs(run: _Run, model: str) -> dict[str, Any]:
    kw = run.call_kwargs(model, stream=True)
    kw.setdefault("stream_options", {"include_usage": True})
    return kw


def stream_complete(messages: Any, candidates: Sequence[str], *, pool: ModelPool | None = None,
                    timeout: float | None = 60.0, max_retries: int = 2, backoff: Backoff | None = None,
                    breaker: CircuitBreaker | None = None, rng: random.Random | None = None, seed: int | None = None,
                    sleep: Callable[[float], None] = time.sleep, **litellm_kwargs: Any) -> AnswerStream:
    """Streaming ``complete``: returns once the first chunk arrived (faults before it are retried)."""
    run = _Run(messages, candidates, pool, timeout, max_retries, backoff, breaker, rng, seed, litellm_kwargs)
    for model in run.models:
        for retry in range(max_retries + 1):
            if not run.admit(model):
                break
            t0 = time.perf_counter()
            try:
                it = iter(litellm.completion(**_stream_kwargs(run, model)))
                try:
                    first = next(it)
                except StopIteration:
                    raise MalformedResponse("stream ended before the first chunk") from None
                return AnswerStream(run, model, first, it, t0)
            except Exception as exc:
                delay = run.fail(model, exc, t0, retry)
            if delay is None:
                break
            if delay > 0:
                sleep(delay)
    raise run.error() from run.last_exc


async def astream_complete(messages: Any, candidates: Sequence[str], *, pool: ModelPool | None = None,
                           timeout: float | None = 60.0, max_retries: int = 2, backoff: Backoff | None = None,
                           breaker: CircuitBreaker | None = None, rng: random.Random | None = None,
                           seed: int | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                           **litellm_kwargs: Any) -> AnswerStream:
    """Async streaming ``complete``: ``async for chunk in stream``, then ``stream.answer``."""
    run = _Run(messages, candidates, pool, timeout, max_retries, backoff, breaker, rng, seed, litellm_kwargs)
    for model in run.models:
        for retry in range(max_retries + 1):
            if not run.admit(model):
                break
            t0 = time.perf_counter()
            try:
                it = (await litellm.acompletion(**_stream_kwargs(run, model))).__aiter__()
                try:
                    first = await it.__anext__()
                except StopAsyncIteration:
                    raise MalformedResponse("stream ended before the first chunk") from None
                return AnswerStream(run, model, first, it, t0)
            except Exception as exc:
                delay = run.fail(model, exc, t0, retry)
            if delay is None:
                break
            if delay > 0:
                await sleep(delay)
    raise run.error() from run.last_exc
