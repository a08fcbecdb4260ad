"""What both feedback-store backends share: the schema, the SQL of the writes, the backend
interface, the SQLite backend and the schema set-up/migration.

:mod:`.store` (the front, :class:`~mmroute.data.store.FeedbackStore`) and :mod:`.store_postgres`
both import from here, so neither imports the other at module level.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ..errors import MMRouteError

SCHEMA_VERSION = 2  # 2: one ``decisions`` table (served decisions and the decision log) replaces ``served_decisions``


def schema_sql(*, seq: str, real: str, blob: str) -> str:
    """The store's tables in one backend's column types (written once for both backends)."""
    return f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS judgments (
    seq      {seq},
    id       TEXT NOT NULL UNIQUE,
    added_at {real} NOT NULL,
    model_a  TEXT NOT NULL,
    model_b  TEXT NOT NULL,
    record   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS judgments_added_at ON judgments(added_at);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    mime   TEXT NOT NULL,
    data   {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    seq         {seq},
    id          TEXT NOT NULL UNIQUE,
    added_at    {real} NOT NULL,
    policy      TEXT NOT NULL,
    model       TEXT NOT NULL,
    propensity  {real} NOT NULL,
    query_hash  TEXT,
    record      TEXT NOT NULL,
    reward      {real},
    cost        {real},
    judgment_id TEXT,
    rewarded_at {real}
);
"""


_SCHEMA = schema_sql(seq="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB")


class StoreError(MMRouteError):
    """The feedback store cannot be opened or written (locked too long, newer schema, corrupt)."""


def sqlite_retry(fn: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    """Run ``fn`` again while SQLite reports the database locked/busy, for up to ``timeout_s``
    (jittered exponential back-off); then a :class:`StoreError` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                if "locked" in msg or "busy" in msg:
                    raise StoreError(f"{what} stayed locked for over {timeout_s:.0f} s") from None
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)


@contextmanager
def sqlite_transaction(conn: sqlite3.Connection, retry: Callable[[Callable[[], Any]], Any]) -> Iterator[sqlite3.Connection]:
    """One write transaction holding the write lock from its start (no lock-upgrade deadlocks)."""
    retry(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    retry(lambda: conn.execute("COMMIT"))




Blob = tuple[str, str, bytes]                      # (sha256 hex digest, mime, bytes)
Row = tuple[str, float, str, str, str]             # (id, added_at, model_a, model_b, record JSON)
SQLParam = str | int | float | bytes | None
# the two writes, in the SQL both backends speak (SQLite >= 3.24 and PostgreSQL: upsert syntax)
INSERT_IMAGE = "INSERT INTO images(sha256, mime, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
INSERT_JUDGMENT = ("INSERT INTO judgments(id, added_at, model_a, model_b, record) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT DO NOTHING")
# one routing decision (served over HTTP or logged by a notebook): see mmroute.data.decisions
INSERT_DECISION = ("INSERT INTO decisions(id, added_at, policy, model, propensity, query_hash, record, cost) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
# created after the migration, which may first have to add ``query_hash`` to an old decision log's table
_DECISION_INDEXES = ("CREATE INDEX IF NOT EXISTS decisions_added_at ON decisions(added_at)",
                     "CREATE INDEX IF NOT EXISTS decisions_judgment ON decisions(judgment_id)",
                     "CREATE INDEX IF NOT EXISTS decisions_query_hash ON decisions(query_hash)")


def is_postgres_url(location: str | Path) -> bool:
    """True for ``postgresql://`` / ``postgres://`` URLs (the PostgreSQL backend); anything else is a file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


class StoreBackend(ABC):
    """The SQL one store needs, over one connection per process; everything else is the front's.

    Queries are written once, in the front, with ``?`` placeholders; a backend whose driver uses
    another style converts them in :meth:`rows`.
    """

    location: str  # what error messages name: the file, or the URL without its password

    @abstractmethod
    def rows(self, sql: str, params: Sequence[SQLParam] = ()) -> list[tuple]:
        """Run one read query (its own snapshot) and return all its rows."""

    @abstractmethod
    def insert(self, blobs: list[Blob], rows: list[Row]) -> int:
        """Add images (once each) and judgment rows (once per id) in one transaction, giving new
        rows increasing sequence numbers; returns how many judgment rows were new."""

    @abstractmethod
    def write(self, blobs: list[Blob], sql: str, rows: Sequence[Sequence[SQLParam]]) -> int:
        """Add images (once each), then run ``sql`` once per row, in one transaction; returns how
        many rows it changed. For tables outside the judgments' sequence (no watermark lock)."""

    @abstractmethod
    def watermark(self) -> int:
        """The largest ``seq`` at or below which every row is committed for good (0 when empty):
        where cursor reads stop, so no row can commit later below a cursor."""

    @abstractmethod
    def integrity_ok(self) -> bool:
        """The backend's consistency check."""

    def reachable(self, timeout_s: float) -> bool:
        """Whether the store answers now, within about ``timeout_s`` (no retries): readiness
        checks. A local file is always there once opened."""
        return True

    @abstractmethod
    def close(self) -> None: ...


class SQLiteBackend(StoreBackend):
    """One SQLite file in WAL mode. ``BEGIN IMMEDIATE`` serialises writers, so ``AUTOINCREMENT``
    numbers are handed out in commit order and the largest visible one is the watermark."""

    def __init__(self, path: Path, *, timeout_s: float, synchronous: Literal["NORMAL", "FULL"], create: bool):
        if not create:
            if path.is_dir():
                raise StoreError(f"feedback store {path} is a directory, not an SQLite file")
            if not path.is_file():
                raise StoreError(f"feedback store not found: {path} (check the path; "
                                 "a store is created by the first writer)")
        self.path, self.location = path, str(path)
        self.timeout_s = timeout_s
        self.synchronous = synchronous
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        """The connection for this process; a fresh one after fork (SQLite handles must not cross forks)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open feedback store {self.path}: {exc}") from None
        self._conn, self._pid = conn, os.getpid()
        with self._write() as c:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                c.execute(stmt)
            row = c.execute("SELECT version FROM schema_version").fetchone()
            columns = {str(r[1]) for r in c.execute("PRAGMA table_info(decisions)")}
            legacy = c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'served_decisions'").fetchone()
            setup_meta(row[0] if row else None, self.location, c.execute, lambda sql, a: c.execute(sql, a).fetchall(),
                       decision_columns=columns, legacy_served=legacy is not None)
        return conn

    def _retry(self, fn: Callable[[], Any]) -> Any:
        return sqlite_retry(fn, timeout_s=self.timeout_s, what=f"feedback store {self.path}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the write lock from its start (no lock upgrade deadlocks)."""
        with self._lock:
            conn = self._conn if self._conn is not None and self._pid == os.getpid() else self._connect()
            with sqlite_transaction(conn, self._retry) as c:
                yield c

    def rows(self, sql: str, params: Sequence[SQLParam] = ()) -> list[tuple]:
        return self._connect().execute(sql, params).fetchall()

    def insert(self, blobs: list[Blob], rows: list[Row]) -> int:
        with self._write() as c:
            c.executemany(INSERT_IMAGE, blobs)
            before = c.total_changes
            c.executemany(INSERT_JUDGMENT, rows)
            return c.total_changes - before

    def write(self, blobs: list[Blob], sql: str, rows: Sequence[Sequence[SQLParam]]) -> int:
        with self._write() as c:
            c.executemany(INSERT_IMAGE, blobs)
            before = c.total_changes
            c.executemany(sql, rows)
            return c.total_changes - before

    def watermark(self) -> int:
        return int(self._connect().execute("SELECT COALESCE(MAX(seq), 0) FROM judgments").fetchone()[0])

    def integrity_ok(self) -> bool:
        return self._connect().execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def setup_meta(version: int | None, location: str, execute: Callable[[str, tuple], object],
               fetch: Callable[[str, tuple], list[tuple]], *, decision_columns: set[str], legacy_served: bool) -> None:
    """Inside the schema transaction: record or check the schema version, migrate an older store
    (``decision_columns``: the ``decisions`` table's columns now; ``legacy_served``: a version-1
    ``served_decisions`` table exists), give the store its id."""
    if version is None:
        execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
    elif version > SCHEMA_VERSION:
        raise StoreError(f"feedback store {location} has schema version {version}; this mmroute "
                         f"reads up to {SCHEMA_VERSION} (upgrade mmroute)")
    _migrate_decisions(execute, fetch, decision_columns, legacy_served)
    if version is not None and version < SCHEMA_VERSION:
        execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    # the store's identity, created with it (stores from before it get one on first open):
    # a retrain bookmark names the store it counts rows in
    execute("INSERT INTO meta(key, value) VALUES ('store_id', ?) ON CONFLICT DO NOTHING", (uuid.uuid4().hex,))


def legacy_served_row(decision_id: str, created: float, record: str) -> tuple[SQLParam, ...]:
    """A version-1 ``served_decisions`` row as an ``INSERT_DECISION`` row (the migration)."""
    old = json.loads(record)
    body = old.get("decision") or {}
    d = body.get("route_decision") or {}
    new = {"query": old.get("query"), "router_version": body.get("router_version"),
           "answered_by": body.get("answered_by"), "decision": d}
    return (decision_id, created, str(d.get("policy", "unknown")), str(d.get("model", "")),
            float(d.get("propensity", 1.0)), None, json.dumps(new, ensure_ascii=False, separators=(",", ":")), None)


def _migrate_decisions(execute: Callable[[str, tuple], object], fetch: Callable[[str, tuple], list[tuple]],
                       columns: set[str], legacy_served: bool) -> None:
    """Version 1 kept served decisions in ``served_decisions`` and a separate decision log (a
    ``decisions`` table without ``query_hash``) in the same SQLite file: give the log's table the
    new column and copy every served decision over (same id, time, query and images), then drop
    the old table - in the schema transaction, so a failed migration leaves the store as it was."""
    if "query_hash" not in columns:
        execute("ALTER TABLE decisions ADD COLUMN query_hash TEXT", ())
    if legacy_served:
        for id_, created, record in fetch("SELECT id, created, record FROM served_decisions ORDER BY created", ()):
            execute(INSERT_DECISION, legacy_served_row(str(id_), float(created), str(record)))
        execute("DROP TABLE served_decisions", ())
    for stmt in _DECISION_INDEXES:
        execute(stmt, ())
