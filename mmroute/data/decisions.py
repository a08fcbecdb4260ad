"""The decision log: every routing decision with its propensity, next to the feedback it gets.

Off-policy evaluation needs, per query, which model the policy chose, with what probability,
what it could have chosen instead, and (later) the reward and cost that came back; a server
needs the same record to turn feedback on a response into a judgment. Both live in ONE table,
``decisions``, of the feedback store (SQLite or PostgreSQL, :mod:`.store`): a decision served by
any replica, a decision an :class:`~mmroute.learning.routing.ExploringRouter` logged in a
notebook, and the judgment it produced (``judgment_id``) are backed up and moved together, and
``mmroute retrain`` gates a retrained router on them. The query is kept as the store keeps a
judgment's (text, images once each by content hash in the store's ``images`` table) plus its
:attr:`~mmroute.query.Query.content_hash`. Nothing is pickled: records are JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError, MMRouteError
from ..policy import RouteDecision
from ..query import Query
from .formats import QueryRecord
from ._backend import INSERT_DECISION

if TYPE_CHECKING:
    from .store import FeedbackStore
    pass


class LoggedCandidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    quality: float
    expected_cost: float
    eligible: bool


class LoggedDecision(BaseModel):
    """One row of the log, as off-policy evaluation and the server's feedback read it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    id: str
    added_at: float
    policy: str
    model: str
    propensity: float
    probabilities: dict[str, float]
    candidates: tuple[LoggedCandidate, ...]
    knob: float
    query: QueryRecord | None = None
    query_hash: str | None = None
    router_version: str | None = None
    answered_by: str | None = None  # the model whose answer the client got (a fallback may differ from ``model``)
    decision: RouteDecision | None = None  # the whole decision (None on rows logged before version 2)
    reward: float | None = None
    cost: float | None = None
    judgment_id: str | None = None


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _check(decision: RouteDecision) -> str:
    """The decision's id, after checking its probabilities: wrong propensities bias every estimate."""
    if not decision.decision_id:
        raise InvalidInputError("decision has no decision_id: route through an ExploringRouter, or set one")
    probs = decision.choice_probabilities()
    total = sum(probs.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6) or any(p < 0 for p in probs.values()):
        raise InvalidInputError(f"decision {decision.decision_id}: probabilities sum to {total:.6f}, not 1")
    if not math.isclose(probs.get(decision.model, 0.0), decision.propensity, abs_tol=1e-9):
        raise InvalidInputError(f"decision {decision.decision_id}: propensity {decision.propensity} != "
                                f"probability {probs.get(decision.model, 0.0)} of the chosen model {decision.model}")
    return decision.decision_id


class DecisionLog:
    """Decisions plus their later outcome, in a feedback store's ``decisions`` table.

    A view of an open :class:`FeedbackStore`: ``store.decisions`` is the way to get one
    (``FeedbackStore("feedback.db").decisions``); the store owns the connection."""

    def __init__(self, store: "FeedbackStore") -> None:
        self.store = store

    @property
    def path(self) -> Path | str:
        return self.store.path

    def __len__(self) -> int:
        return int(self.store._scalar("SELECT COUNT(*) FROM decisions"))

    def n_rewarded(self) -> int:
        return int(self.store._scalar("SELECT COUNT(*) FROM decisions WHERE reward IS NOT NULL"))

    # ------------------------------------------------------------------ writing
    def log(self, decision: RouteDecision, query: Query | QueryRecord | None = None, *,
            router_version: str | None = None, answered_by: str | None = None, cost: float | None = None,
            added_at: float | None = None) -> str:
        """Store one decision (idempotent by ``decision_id``: the first write wins); returns its id.

        ``cost``: the real cost of the answer when already known (else set by :meth:`record_outcome`).
        Raises InvalidInputError when the decision has no id, or its probabilities do not sum to 1
        or disagree with its propensity."""
        did = _check(decision)
        rec_query: QueryRecord | None = None
        qhash: str | None = None
        if isinstance(query, Query):
            rec_query, qhash = QueryRecord.from_query(query), query.content_hash
        elif isinstance(query, QueryRecord):
            rec_query = query
            try:
                qhash = query.to_query(image_policy=self.store.image_policy).content_hash
            except MMRouteError:  # a remote or missing image: the row keeps the query, without a hash
                qhash = None
        refs: list[str] = []
        blobs: list[tuple[str, str, bytes]] = []
        if rec_query is not None:
            refs, blobs = self.store.query_blobs(rec_query, f"decision {did!r}", None)
        record = {"query": None if rec_query is None else {"text": rec_query.text, "images": refs},
                  "router_version": router_version, "answered_by": answered_by,
                  "decision": decision.model_dump(mode="json")}
        row = (did, time.time() if added_at is None else float(added_at), decision.policy, decision.model,
               float(decision.propensity), qhash, _dumps(record), None if cost is None else float(cost))
        self.store._db.write(sorted({b[0]: b for b in blobs}.values()), INSERT_DECISION, [row])
        return did

    def record_outcome(self, decision_id: str, reward: float, *, cost: float | None = None,
                       judgment_id: str | None = None) -> None:
        """Attach the reward (quality in [0, 1]) the chosen model's answer earned, and its real cost
        (kept when ``None``); a later outcome replaces an earlier one."""
        if not (0.0 <= float(reward) <= 1.0):
            raise InvalidInputError(f"decision {decision_id}: reward must be in [0, 1], got {reward}")
        if cost is not None and not (float(cost) >= 0 and math.isfinite(float(cost))):
            raise InvalidInputError(f"decision {decision_id}: cost must be a finite number >= 0, got {cost}")
        n = self.store._db.write([], "UPDATE decisions SET reward = ?, cost = COALESCE(?, cost), "
                                 "judgment_id = COALESCE(?, judgment_id), rewarded_at = ? WHERE id = ?",
                                 [(float(reward), cost, judgment_id, time.time(), decision_id)])
        if n == 0:
            raise InvalidInputError(f"no logged decision with id {decision_id!r} in {self.path}")

    def prune(self, max_age_s: float) -> int:
        """Drop decisions older than ``max_age_s`` seconds that got no reward (feedback on them is
        then refused); rewarded ones stay for the off-policy gate, images stay (judgments may share
        them). Returns how many were dropped."""
        if max_age_s < 0:
            raise ValueError(f"max_age_s must be >= 0, got {max_age_s}")
        return self.store._db.write([], "DELETE FROM decisions WHERE added_at < ? AND reward IS NULL",
                                    [(time.time() - max_age_s,)])

    # ------------------------------------------------------------------ reading
    _COLS = "seq, id, added_at, policy, model, propensity, query_hash, record, reward, cost, judgment_id"

    def _row(self, r: tuple, cache: dict[str, str]) -> LoggedDecision:
        seq, id_, added, policy, model, prop, qhash, record, reward, cost, jid = r
        rec = json.loads(record)
        q = rec.get("query")
        query = None if q is None else QueryRecord(
            text=q.get("text", ""), images=[self.store.materialise(s, "data_url", None, cache) for s in q.get("images", [])])
        common = {"seq": int(seq), "id": id_, "added_at": float(added), "policy": policy, "model": model,
                  "propensity": float(prop), "query": query, "query_hash": qhash,
                  "router_version": rec.get("router_version"), "answered_by": rec.get("answered_by"),
                  "reward": reward, "cost": cost, "judgment_id": jid}
        if rec.get("decision"):  # version 2: the whole decision
            d = RouteDecision.model_validate(rec["decision"])
            return LoggedDecision(**common, decision=d, probabilities=d.choice_probabilities(), knob=d.knob,
                                  candidates=tuple(LoggedCandidate(model=c.model, quality=c.quality,
                                                                   expected_cost=c.expected_cost, eligible=c.eligible)
                                                   for c in d.candidates))
        return LoggedDecision(**common, probabilities=rec["probabilities"], knob=rec.get("knob", 0.0),  # version 1's log
                              candidates=tuple(LoggedCandidate(**c) for c in rec["candidates"]))

    def find(self, decision_id: str) -> LoggedDecision | None:
        rows = self.store._db.rows(f"SELECT {self._COLS} FROM decisions WHERE id = ?", (decision_id,))
        return self._row(rows[0], {}) if rows else None

    def get(self, decision_id: str) -> LoggedDecision:
        found = self.find(decision_id)
        if found is None:
            raise InvalidInputError(f"no logged decision with id {decision_id!r} in {self.path}")
        return found

    def ids(self) -> list[str]:
        """Every stored decision's id, oldest first (``mmroute label --from-store`` samples them)."""
        return [str(r[0]) for r in self.store._db.rows("SELECT id FROM decisions ORDER BY seq")]

    def iter(self, since: int = 0, *, rewarded_only: bool = False) -> Iterator[LoggedDecision]:
        """Decisions with ``seq > since`` in log order (only those with a reward, if asked), in pages."""
        where = "seq > ?" + (" AND reward IS NOT NULL" if rewarded_only else "")
        last = int(since)
        cache: dict[str, str] = {}
        while True:
            rows = self.store._db.rows(f"SELECT {self._COLS} FROM decisions WHERE {where} ORDER BY seq LIMIT 1000",
                                       (last,))
            if not rows:
                return
            for r in rows:
                yield self._row(r, cache)
                last = int(r[0])


def has_decisions(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a SQLite file that holds a non-empty decision log (without creating one)."""
    import sqlite3

    p = Path(path)
    if not p.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return bool(row and row[0])


def stored_cost(decision: LoggedDecision) -> float:
    """The real cost when it came back, else the policy's expected cost of the chosen model."""
    if decision.cost is not None:
        return float(decision.cost)
    return next(c.expected_cost for c in decision.candidates if c.model == decision.model)


__all__ = ["DecisionLog", "LoggedCandidate", "LoggedDecision", "has_decisions", "stored_cost"]
