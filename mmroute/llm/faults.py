"""What a failed LiteLLM call means and how long to wait before the next try.

Owns the fault vocabulary every call path shares: :func:`classify_error` names the kind of a
provider exception, ``RETRY_POLICY`` says per kind whether to retry it and whether it counts
against the model's circuit, :func:`retry_after_s` reads the provider's own wait, and
:class:`Backoff` spreads retries out. Kept apart from :mod:`mmroute.llm.call` (the request loop)
so the rules can be read, and tested, without the machinery that applies them.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from typing import Any

import litellm
import litellm.exceptions
import openai
from pydantic import BaseModel, ConfigDict, Field

_MIDSTREAM: type[BaseException] | None = getattr(litellm.exceptions, "MidStreamFallbackError", None)  # litellm >= 1.7x


class Backoff(BaseModel):
    """Exponential backoff with "equal jitter": the n-th retry waits between half and all of
    ``min(max_s, base_s * multiplier**n)``, so concurrent clients spread out but still back off.
    A ``retry-after`` longer than ``max_retry_after_s`` is not waited for: the next candidate is
    tried instead, since another model now beats a long stall."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_s: float = Field(0.5, ge=0)
    max_s: float = Field(8.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.5, ge=0, le=1, description="fraction of the delay that is random")
    max_retry_after_s: float = Field(30.0, ge=0)

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based); None means fall back instead."""
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return None
        d = min(self.max_s, self.base_s * self.multiplier ** retry)
        d = d * (1.0 - self.jitter) + d * self.jitter * rng.random()
        return max(d, retry_after or 0.0)


class MalformedResponse(Exception):
    """A response with nothing usable in it; carries the response so its cost is still counted."""

    def __init__(self, message: str, response: Any = None) -> None:
        super().__init__(message)
        self.response = response


# -- classification -------------------------------------------------------------------------------

# error_type -> (retry it, count it against the model's circuit)
RETRY_POLICY: dict[str, tuple[bool, bool]] = {
    "rate_limit": (True, True), "timeout": (True, True), "server_error": (True, True),
    "connection": (True, True), "malformed": (True, True),
    "auth": (False, True), "unexpected": (False, True), "config": (False, False),
    "content_filter": (False, False), "context_window": (False, False),
    "bad_request": (False, False), "not_found": (False, False),
}


def _unwrap(exc: BaseException) -> BaseException:
    """LiteLLM wraps a stream's early failure in MidStreamFallbackError; judge the original."""
    inner = getattr(exc, "original_exception", None)
    if _MIDSTREAM is not None and isinstance(exc, _MIDSTREAM) and isinstance(inner, BaseException):
        return inner
    return exc


# How providers' SDKs (through LiteLLM) say a key is missing: raised before any request is sent, as
# an auth error (Anthropic), a 500 (OpenAI) or a connection error (Gemini) - the message is what they share.
_MISSING_KEY = re.compile(r"missing (?:\w+ )?(?:credentials|api[ _-]?key)|api_key client option must be set"
                          r"|no (?:\w+ )?api[ _-]?key (?:was |is )?(?:provided|set|found)", re.I)


def classify_error(exc: BaseException) -> str:
    """The error_type of an exception raised by a LiteLLM call (subclasses checked first).
    ``config``: the provider's credentials are missing, which no retry or wait can fix."""
    exc = _unwrap(exc)
    if isinstance(exc, MalformedResponse):
        return "malformed"
    if _MISSING_KEY.search(str(exc)):
        return "config"
    if isinstance(exc, litellm.ContentPolicyViolationError):
        return "content_filter"
    if isinstance(exc, litellm.ContextWindowExceededError):
        return "context_window"
    if isinstance(exc, litellm.RateLimitError):
        return "rate_limit"
    if isinstance(exc, (litellm.Timeout, openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        return "auth"
    if isinstance(exc, litellm.NotFoundError):
        return "not_found"
    if isinstance(exc, (litellm.ServiceUnavailableError, litellm.InternalServerError, litellm.BadGatewayError)):
        return "server_error"
    if isinstance(exc, (litellm.APIConnectionError, openai.APIConnectionError, ConnectionError)):
        return "connection"
    if isinstance(exc, (litellm.BadRequestError, litellm.UnprocessableEntityError)):
        return "bad_request"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        if status == 429:
            return "rate_limit"
        if status in (408, 504):
            return "timeout"
        if status >= 500:
            return "server_error"
        if status in (401, 403):
            return "auth"
        if 400 <= status < 500:
            return "bad_request"
    return "unexpected"


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a provider asked us to wait (``retry-after-ms`` / ``retry-after``, seconds or HTTP date)."""
    exc = _unwrap(exc)
    sources = [getattr(exc, "headers", None), getattr(exc, "litellm_response_headers", None)]
    resp = getattr(exc, "response", None)
    if resp is not None:
        sources.append(getattr(resp, "headers", None))
    for headers in sources:
        if not headers:
            continue
        try:
            lower = {str(k).lower(): str(v) for k, v in dict(headers).items()}
        except (TypeError, ValueError):
            continue
        if "retry-after-ms" in lower:
            try:
                return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
            except ValueError:
                pass
        if "retry-after" in lower:
            v = lower["retry-after"].strip()
            try:
                return max(0.0, float(v))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(v)
                    return max(0.0, when.timestamp() - time.time())
                except (TypeError, ValueError):
                    pass
    return None
