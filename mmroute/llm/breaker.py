"""A per-model circuit breaker, so a provider that is down is not retried on every request.

Each request already retries with backoff; without a breaker, a dead provider still costs every
request ``max_retries`` timeouts before it falls back. After ``failure_threshold`` consecutive
failures the model is skipped until ``cooldown_s`` has passed; then exactly one trial call is let
through (half-open): success closes the circuit, failure opens it again for another cooldown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

State = Literal["closed", "open", "half_open"]


@dataclass
class _ModelState:
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False


class CircuitBreaker:
    """Thread-safe per-model breaker; ``clock`` is injectable so tests need not sleep."""

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ConfigError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_s < 0:
            raise ConfigError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.failure_threshold = int(failure_threshold)
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, _ModelState] = {}

    def _get(self, model: str) -> _ModelState:
        st = self._models.get(model)
        if st is None:
            st = self._models[model] = _ModelState()
        return st

    def state(self, model: str) -> State:
        """Closed (calls pass), open (skipped) or half-open (cooldown over, trial allowed)."""
        with self._lock:
            st = self._models.get(model)
            if st is None or st.opened_at is None:
                return "closed"
            if self._clock() - st.opened_at >= self.cooldown_s:
                return "half_open"
            return "open"

    def allow(self, model: str) -> bool:
        """Whether a call to ``model`` may go out now; in half-open state only one caller gets True."""
        with self._lock:
            st = self._get(model)
            if st.opened_at is None:
                return True
            if self._clock() - st.opened_at < self.cooldown_s or st.trial_in_flight:
                return False
            st.trial_in_flight = True
            return True

    def retry_in(self, model: str) -> float:
        """Seconds until an open circuit lets a trial through (0 when not open)."""
        with self._lock:
            st = self._models.get(model)
            if st is None or st.opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - st.opened_at))

    def record_success(self, model: str) -> None:
        with self._lock:
            st = self._get(model)
            st.failures = 0
            st.opened_at = None
            st.trial_in_flight = False

    def record_failure(self, model: str) -> None:
        with self._lock:
            st = self._get(model)
            st.failures += 1
            if st.trial_in_flight or st.failures >= self.failure_threshold:
                st.opened_at = self._clock()
            st.trial_in_flight = False

    def release(self, model: str) -> None:
        """End a trial that neither succeeded nor failed for the provider (e.g. a bad request)."""
        with self._lock:
            st = self._models.get(model)
            if st is not None:
                st.trial_in_flight = False

    def reset(self, model: str | None = None) -> None:
        with self._lock:
            if model is None:
                self._models.clear()
            else:
                self._models.pop(model, None)
