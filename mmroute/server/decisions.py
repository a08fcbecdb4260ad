"""Recent routing decisions, remembered so feedback on a response can become a judgment.

Feedback names a decision id; turning it into a pairwise judgment needs the query, the model
that answered and the candidates the router scored. Bounded LRU in memory; with a feedback store
the server also writes each record to the store's decision log (``FeedbackStore.decisions``, with
its propensity, for the off-policy gate), so a decision this LRU no longer holds, one made before
a restart or by another replica is found there.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..policy import RouteDecision
from ..query import Query

if TYPE_CHECKING:
    from ..data.decisions import DecisionLog


@dataclass
class DecisionRecord:
    id: str
    query: Query
    decision: RouteDecision
    answered_by: str | None = None  # the model whose answer the client got (None for /v1/route)
    router_version: str | None = None
    cost_usd: float | None = None  # what the answer cost (None until answered)
    created: float = field(default_factory=time.time)


@runtime_checkable
class DecisionStore(Protocol):
    """A feedback store that also keeps the decision log (``FeedbackStore``): replicas sharing it
    accept feedback on each other's decisions and across restarts, and retraining gates on them."""

    @property
    def decisions(self) -> "DecisionLog": ...


class RecentDecisions:
    """Thread-safe LRU of ``DecisionRecord`` by id."""

    def __init__(self, max_entries: int = 10_000):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return "dec-" + uuid.uuid4().hex

    def add(self, record: DecisionRecord) -> None:
        with self._lock:
            self._items[record.id] = record
            self._items.move_to_end(record.id)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def set_answered_by(self, decision_id: str, model: str) -> None:
        with self._lock:
            rec = self._items.get(decision_id)
            if rec is not None:
                rec.answered_by = model

    def get(self, decision_id: str) -> DecisionRecord | None:
        with self._lock:
            rec = self._items.get(decision_id)
            if rec is not None:
                self._items.move_to_end(decision_id)
            return rec

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["DecisionRecord", "RecentDecisions"]
