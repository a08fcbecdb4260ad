"""Continuous retraining inside ``mmroute serve`` (``--retrain-every N``, ``--retrain-interval S``).

A background task counts the judgments the serving router has not been retrained on (the store's
rows after the router's bookmark, or after this replica's last attempt) and, when enough came or
enough time passed, runs in a worker thread what ``mmroute retrain`` runs: load the router
folder's current version, :func:`~mmroute.retraining.retrain_router` it on the store (held-out
gate, and the off-policy gate on the served decisions), publish when accepted. Every replica
then picks the version up with its hot-reload watch.

Replicas sharing a store would all find a retrain due at the same moment; exactly one runs it. On
PostgreSQL the one holding a session advisory lock (taken with ``pg_try_advisory_lock`` on a
connection of its own, so a replica that dies frees it); on SQLite an ``fcntl`` lock on a file
beside the router folder. The others skip this round; the winner's bookmark then covers the
judgments, so nobody retrains on them twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, MMRouteError

if TYPE_CHECKING:
    import psycopg

    from ..data.store import FeedbackStore
    from ..router import Router
    from ..retraining import RetrainReport
    from .service import RouterService

log = logging.getLogger("mmroute.server")

#: pg advisory lock key (per database): "mmroute" + 3, next to the store's own keys
RETRAIN_LOCK_KEY = 0x6D6D726F75746503


class RetrainSettings(BaseModel):
    """When a server retrains its router (either trigger, or both)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int | None = Field(None, ge=1, description="retrain after this many new judgments")
    interval_s: float | None = Field(None, gt=0, allow_inf_nan=False, description="retrain this often (if any are new)")
    poll_s: float = Field(5.0, gt=0, description="how often the new judgments are counted")
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    min_holdout: int | None = Field(None, ge=0, description="None: mmroute retrain's default")
    ope_confidence: float | None = Field(0.95, gt=0, lt=1, description="the off-policy gate's; None: no such gate")

    def model_post_init(self, __context: object) -> None:
        if self.every is None and self.interval_s is None:
            raise ConfigError("continuous retraining needs --retrain-every N and/or --retrain-interval SECONDS")


class RetrainLock(Protocol):
    """At most one holder among the replicas; ``acquire`` never waits."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class FileRetrainLock:
    """``fcntl.flock`` on ``<router folder>.retrain.lock`` (replicas on one machine / one SQLite file)."""

    def __init__(self, router_dir: str | os.PathLike[str]):
        root = Path(router_dir).resolve()
        self.path = root.parent / f"{root.name}.retrain.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PostgresRetrainLock:
    """A session advisory lock on the store's database, on a connection held while retraining."""

    def __init__(self, url: str, *, key: int = RETRAIN_LOCK_KEY, timeout_s: float = 30.0):
        self.url, self.key, self.timeout_s = url, key, timeout_s
        self._conn: psycopg.Connection | None = None

    def acquire(self) -> bool:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.timeout_s)),
                               application_name="mmroute-retrain-lock")
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        if not (row and row[0]):
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            finally:
                self._conn.close()  # closing frees it anyway
                self._conn = None


def retrain_lock(store: "FeedbackStore", router_dir: str | os.PathLike[str]) -> RetrainLock:
    """The lock replicas on ``store`` share: advisory on PostgreSQL, a file beside ``router_dir`` on SQLite."""
    if store.backend == "postgresql":
        from ..data.store_postgres import PostgresBackend

        db = store._db
        assert isinstance(db, PostgresBackend)
        return PostgresRetrainLock(db.url, timeout_s=store.timeout_s)
    return FileRetrainLock(router_dir)


Outcome = Literal["published", "kept", "skipped", "failed"]


@dataclass(frozen=True)
class RetrainAttempt:
    outcome: Outcome
    message: str
    version: str | None = None  # the published version's folder name
    report: "RetrainReport | None" = None


class Retrainer:
    """Decides when to retrain and runs one retrain under the replicas' lock (see the module docstring)."""

    def __init__(self, router_dir: str | os.PathLike[str], store: "FeedbackStore", settings: RetrainSettings, *,
                 lock: RetrainLock | None = None):
        self.router_dir = Path(router_dir)
        self.store = store
        self.settings = settings
        self.lock = lock if lock is not None else retrain_lock(store, router_dir)
        self._mark = 0               # store seq up to which this replica has tried
        self._last_try = time.monotonic()

    def new_judgments(self, serving: "Router") -> int:
        """Store rows after the serving router's bookmark (same store) and after this replica's last try."""
        from ..retraining import BOOKMARK_KEY

        mark = serving.metadata.get(BOOKMARK_KEY) or {}
        seen = int(mark.get("seq", 0)) if mark.get("store_id") == self.store.store_id else 0
        return max(0, self.store.last_seq() - max(seen, self._mark))

    def due(self, serving: "Router") -> bool:
        s = self.settings
        n = self.new_judgments(serving)
        if s.every is not None and n >= s.every:
            return True
        return s.interval_s is not None and n > 0 and time.monotonic() - self._last_try >= s.interval_s

    def run_once(self, serving: "Router | None" = None) -> RetrainAttempt:
        """One retrain of the folder's current version, if no other replica is retraining (blocking)."""
        from ..router import Router
        from ..retraining import DEFAULT_MIN_HOLDOUT, retrain_router

        upto = self.store.last_seq()
        self._last_try = time.monotonic()
        if not self.lock.acquire():
            self._mark = upto  # the holder retrains on these; look again after more come
            return RetrainAttempt("skipped", "another replica is retraining")
        try:
            # the folder's current version: another replica may have published one this replica has not loaded yet
            router = (Router.load(self.router_dir, encoder=serving.pipeline, image_policy=serving.image_policy)
                      if serving is not None else Router.load(self.router_dir))
            s = self.settings
            result = retrain_router(router, self.store, holdout_fraction=s.holdout_fraction,
                                    min_holdout=DEFAULT_MIN_HOLDOUT if s.min_holdout is None else s.min_holdout,
                                    ope_confidence=s.ope_confidence, progress=False)
            self._mark = upto
            if not result.accepted:
                return RetrainAttempt("kept", result.report.summary(), report=result.report)
            folder = result.router.save(self.router_dir)
            result.report.version_dir = str(folder)
            return RetrainAttempt("published", result.report.summary(), version=Path(folder).name,
                                  report=result.report)
        except MMRouteError as exc:
            self._mark = upto  # not again on the same rows: wait for new ones
            return RetrainAttempt("failed", str(exc))
        finally:
            self.lock.release()

    async def watch(self, service: "RouterService") -> None:
        """The server's background task: count, retrain in a thread when due, reload at once when published."""
        while True:
            await asyncio.sleep(self.settings.poll_s)
            try:
                if not await asyncio.to_thread(self.due, service.router):
                    continue
                attempt = await asyncio.to_thread(self.run_once, service.router)
            except Exception as exc:  # a store hiccup must not end the task: report, try again next poll
                service.metrics.retrains.labels("failed").inc()
                log.error("retrain check failed: %s", exc)
                continue
            service.metrics.retrains.labels(attempt.outcome).inc()
            if attempt.outcome == "published":
                log.info("retrained and published router version %s: %s", attempt.version, attempt.message)
                if service.live is not None:
                    await service.reload_now()
            elif attempt.outcome == "failed":
                log.error("retrain failed: %s", attempt.message)
            else:
                log.info("retrain %s: %s", attempt.outcome, attempt.message)


__all__ = ["FileRetrainLock", "PostgresRetrainLock", "RetrainAttempt", "RetrainLock", "RetrainSettings", "Retrainer",
           "retrain_lock"]
