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

from .llm.providers import active_scripted
from .llm.scripted import (FAIL_KINDS, ScriptedCall, ScriptedLLM, Step, fail, length, malformed, refuse, reply, sleep,
                           tool_call)

__all__ = ["FAIL_KINDS", "ScriptedCall", "ScriptedLLM", "Step", "active_scripted", "fail", "length", "malformed",
           "refuse", "reply", "sleep", "tool_call"]
