"""The decision log: every routing decision with its propensity, next to the feedback it gets.

Off-policy evaluation needs, per served query, which model the policy chose, with what
probability, what it could have chosen instead, and (later) the reward and cost that came back.
Rows live in a ``decisions`` table of the *same* SQLite file as the feedback store (WAL, write
lock taken up front, retried while busy), so a decision and the judgment it produced are backed
up and moved together; ``judgment_id`` links the two. Images are stored once by content hash in
the store's ``images`` table (same layout, ``sha256:<hex>`` references), so a logged query can
be re-encoded for evaluation after its files are gone. Nothing is pickled: records are JSON.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import InvalidInputError
from ..policy import RouteDecision
from ..query import Query
from .formats import QueryRecord
from .store import StoreError, sqlite_retry, sqlite_transaction

_BLOB_PREFIX = "sha256:"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    added_at    REAL NOT NULL,
    policy      TEXT NOT NULL,
    model       TEXT NOT NULL,
    propensity  REAL NOT NULL,
    record      TEXT NOT NULL,
    reward      REAL,
    cost        REAL,
    judgment_id TEXT,
    rewarded_at REAL
);
CREATE INDEX IF NOT EXISTS decisions_judgment ON decisions(judgment_id);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    mime   TEXT NOT NULL,
    data   BLOB NOT NULL
)
"""


class LoggedCandidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    quality: float
    expected_cost: float
    eligible: bool


class LoggedDecision(BaseModel):
    """One row of the log, as off-policy evaluation reads it."""

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
    router_version: str | None = None
    reward: float | None = None
    cost: float | None = None
    judgment_id: str | None = None


class DecisionLog:
    """Append-only decisions plus their later outcome, in the feedback store's SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open decision log {self.path}: {exc}") from None
        self._conn, self._pid = conn, os.getpid()
        with self._write() as c:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                c.execute(stmt)
        return conn

    def _retry(self, fn: Callable[[], Any]) -> Any:
        return sqlite_retry(fn, timeout_s=self.timeout_s, what=f"decision log {self.path}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn if self._conn is not None and self._pid == os.getpid() else self._connect()
            with sqlite_transaction(conn, self._retry) as c:
                yield c

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> "DecisionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    # ------------------------------------------------------------------ writing
    def log(self, decision: RouteDecision, query: Query | QueryRecord | None = None, *,
            router_version: str | None = None) -> str:
        """Store one decision (idempotent by ``decision_id``); returns its id.

        Raises InvalidInputError when the decision has no id, or its probabilities do not sum to 1
        or disagree with its propensity: a log with wrong propensities would bias every estimate."""
        if not decision.decision_id:
            raise InvalidInputError("decision has no decision_id: route through an ExploringRouter, or set one")
        probs = decision.choice_probabilities()
        total = sum(probs.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6) or any(p < 0 for p in probs.values()):
            raise InvalidInputError(f"decision {decision.decision_id}: probabilities sum to {total:.6f}, not 1")
        if not math.isclose(probs.get(decision.model, 0.0), decision.propensity, abs_tol=1e-9):
            raise InvalidInputError(f"decision {decision.decision_id}: propensity {decision.propensity} != "
                                    f"probability {probs.get(decision.model, 0.0)} of the chosen model {decision.model}")
        blobs: list[tuple[str, str, bytes]] = []
        rec_query = None
        if isinstance(query, Query):
            refs = []
            for im in query.images:
                if im.data is None:
                    refs.append(im.url or "")
                else:
                    refs.append(_BLOB_PREFIX + im.sha256)
                    blobs.append((im.sha256, im.mime, im.data))
            rec_query = {"text": query.text, "images": refs}
        elif isinstance(query, QueryRecord):
            rec_query = query.model_dump(mode="json")
        record = {"probabilities": probs, "knob": decision.knob, "query": rec_query, "router_version": router_version,
                  "candidates": [{"model": c.model, "quality": c.quality, "expected_cost": c.expected_cost,
                                  "eligible": c.eligible} for c in decision.candidates]}
        with self._write() as c:
            c.executemany("INSERT OR IGNORE INTO images(sha256, mime, data) VALUES (?, ?, ?)", blobs)
            c.execute("INSERT OR IGNORE INTO decisions(id, added_at, policy, model, propensity, record) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      (decision.decision_id, time.time(), decision.policy, decision.model, float(decision.propensity),
                       json.dumps(record, ensure_ascii=False, separators=(",", ":"))))
        return decision.decision_id

    def record_outcome(self, decision_id: str, reward: float, *, cost: float | None = None,
                       judgment_id: str | None = None) -> None:
        """Attach the reward (quality in [0, 1]) and real cost the chosen model's answer earned."""
        if not (0.0 <= float(reward) <= 1.0):
            raise InvalidInputError(f"decision {decision_id}: reward must be in [0, 1], got {reward}")
        if cost is not None and not (float(cost) >= 0 and math.isfinite(float(cost))):
            raise InvalidInputError(f"decision {decision_id}: cost must be a finite number >= 0, got {cost}")
        with self._write() as c:
            n = c.execute("UPDATE decisions SET reward = ?, cost = ?, judgment_id = COALESCE(?, judgment_id), "
                          "rewarded_at = ? WHERE id = ?",
                          (float(reward), cost, judgment_id, time.time(), decision_id)).rowcount
        if n == 0:
            raise InvalidInputError(f"no logged decision with id {decision_id!r} in {self.path}")

    # ------------------------------------------------------------------ reading
    def _image_url(self, ref: str) -> str:
        if not ref.startswith(_BLOB_PREFIX):
            return ref
        row = self._connect().execute("SELECT mime, data FROM images WHERE sha256 = ?", (ref[len(_BLOB_PREFIX):],)).fetchone()
        if row is None:
            raise StoreError(f"decision log {self.path}: image {ref} is referenced but not stored")
        return f"data:{row[0]};base64," + base64.b64encode(row[1]).decode("ascii")

    def _row(self, r: tuple[int, str, float, str, str, float, str, float | None, float | None, str | None]) -> LoggedDecision:
        seq, id_, added, policy, model, prop, record, reward, cost, jid = r
        rec = json.loads(record)
        q = rec.get("query")
        query = None if q is None else QueryRecord(text=q.get("text", ""), images=[self._image_url(s) for s in q.get("images", [])])
        return LoggedDecision(seq=seq, id=id_, added_at=added, policy=policy, model=model, propensity=prop,
                              probabilities=rec["probabilities"], knob=rec.get("knob", 0.0),
                              candidates=tuple(LoggedCandidate(**c) for c in rec["candidates"]), query=query,
                              router_version=rec.get("router_version"), reward=reward, cost=cost, judgment_id=jid)

    _COLS = "seq, id, added_at, policy, model, propensity, record, reward, cost, judgment_id"

    def get(self, decision_id: str) -> LoggedDecision:
        r = self._connect().execute(f"SELECT {self._COLS} FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        if r is None:
            raise InvalidInputError(f"no logged decision with id {decision_id!r} in {self.path}")
        return self._row(r)

    def iter(self, since: int = 0, *, rewarded_only: bool = False) -> Iterator[LoggedDecision]:
        """Decisions with ``seq > since`` in log order (only those with a reward, if asked)."""
        where = "seq > ?" + (" AND reward IS NOT NULL" if rewarded_only else "")
        rows = self._connect().execute(f"SELECT {self._COLS} FROM decisions WHERE {where} ORDER BY seq", (int(since),)).fetchall()
        for r in rows:
            yield self._row(r)


def has_decisions(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a SQLite file that holds a non-empty decision log (without creating one)."""
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
