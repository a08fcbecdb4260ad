"""Test doubles for code that calls models through mmroute: the ``scripted/<name>`` provider.

A :class:`ScriptedLLM` says what each call to ``scripted/<model>`` does - answer, call a tool,
fail like a provider (rate limit, timeout, 5xx, content filter, ...), return a malformed
response, sleep - and records every call, so tests exercise the same LiteLLM code path real
calls take::

    from mmroute.testing import ScriptedLLM, fail, reply

    llm = ScriptedLLM({"weak": [fail("rate_limit", retry_after=0.01), reply("4")]}).install()
    complete("What is 2 + 2?", ["scripted/weak"])   # mmroute.llm.complete: retried, then "4"

``install()`` registers the offline providers (:func:`mmroute.offline.register_offline_providers`);
nothing is registered by importing this module. The implementation lives in
``mmroute.llm.scripted``, on the ``replay/`` provider's machinery in ``mmroute.llm.providers``.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request  # module level: FastAPI resolves the endpoint's annotations here

from .llm.providers import active_scripted
from .llm.scripted import (FAIL_KINDS, ScriptedCall, ScriptedLLM, Step, fail, length, malformed, refuse, reply, sleep,
                           tool_call)




def echo_upstream_app() -> FastAPI:
    """A local OpenAI-compatible chat endpoint answering "answer from <model>" for the model it was
    asked for: the upstream behind real ``mmroute serve`` processes in replica tests and benchmarks."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, object]:
        body = await request.json()
        return {"id": "chatcmpl-up", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"answer from {body['model']}"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}

    return app


__all__ = ["echo_upstream_app", "FAIL_KINDS", "ScriptedCall", "ScriptedLLM", "Step", "active_scripted", "fail", "length", "malformed",
           "refuse", "reply", "sleep", "tool_call"]
