"""Calling models through LiteLLM (``call``), and offline backends on the same code path
(``providers``: ``replay/`` recorded answers, ``scripted/`` test doubles)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .breaker import CircuitBreaker  # noqa: E402
from .call import (Answer, AnswerStream, Attempt, Backoff, acomplete, astream_complete, classify_error, complete,  # noqa: E402
                   retry_after_s, stream_complete)
from .convert import query_to_messages, to_openai_messages  # noqa: E402
from .providers import (ReplayLLM, ScriptedCall, ScriptedLLM, Step, fail, length, malformed, refuse,  # noqa: E402
                        register_offline_providers, reply, sleep, tool_call)
from .recorded import ReplayAnswers, RecordedItem, RecordedSample, load_mllm_bench  # noqa: E402

__all__ = ["Answer", "AnswerStream", "Attempt", "Backoff", "CircuitBreaker", "ReplayAnswers", "RecordedItem",
           "RecordedSample", "ReplayLLM", "ScriptedCall", "ScriptedLLM", "Step", "acomplete", "astream_complete",
           "classify_error", "complete", "fail", "length", "load_mllm_bench", "malformed",
           "query_to_messages", "refuse", "register_offline_providers", "reply", "retry_after_s", "sleep",
           "stream_complete", "to_openai_messages", "tool_call"]
