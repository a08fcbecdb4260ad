"""Calling models through LiteLLM: ``complete`` / ``acomplete`` / ``stream_complete`` /
``astream_complete`` with retries, fallbacks, a circuit breaker and cost accounting (``call``;
fault kinds and backoff in ``faults``).

Importing this package imports litellm but changes no environment variable and registers no
provider: offline set-up is explicit (:mod:`mmroute.offline`: the local price map, the
``replay/`` provider); test doubles are in :mod:`mmroute.testing`. Helpers (message conversion,
error classification, the recorded-answer tables) stay importable from their modules.
"""

from __future__ import annotations

from .breaker import CircuitBreaker
from .call import Answer, AnswerStream, Attempt, acomplete, astream_complete, complete, stream_complete
from .faults import Backoff

__all__ = ["Answer", "AnswerStream", "Attempt", "Backoff", "CircuitBreaker", "acomplete", "astream_complete",
           "complete", "stream_complete"]
