"""Faults across replicas (issue 20): nothing acknowledged is lost or duplicated when a replica is
killed or the PostgreSQL store restarts, and a replica says so (503 + Retry-After, not-ready
``/healthz``) while its store cannot be reached instead of claiming it kept feedback.

The PostgreSQL part runs ``benchmarks/replica_faults.py`` (three `mmroute serve` processes, a
throw-away server of its own, short phases); the in-process part checks the HTTP answers with a
store that fails on purpose.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mmroute.data._backend import StoreError
from mmroute.data.formats import Judgment
from mmroute.server import create_app
from _tiny_router import tiny_router

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "replica_faults.py"
_spec = importlib.util.spec_from_file_location("mmroute_replica_faults", _PATH)
rf = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rf  # dataclasses resolve their module by name
_spec.loader.exec_module(rf)


class DownStore:
    """A feedback store whose server has gone away: every write fails, the readiness check says no."""

    def __init__(self) -> None:
        self.up = False
        self.added: list[Judgment] = []

    def add(self, judgment: Judgment) -> bool:
        if not self.up:
            raise StoreError("feedback store postgresql://db: gave up after 60 s: connection refused")
        self.added.append(judgment)
        return True

    def reachable(self, timeout_s: float = 1.0) -> bool:
        return self.up


@pytest.fixture(scope="module")
def router():
    return tiny_router()


def test_feedback_with_the_store_down_is_503_with_retry_after_never_claimed_stored(router):
    store = DownStore()
    with TestClient(create_app(router, store=store)) as client:
        decision = client.post("/v1/route", json={"text": "what is 2 + 2?"}).json()["decision_id"]
        r = client.post("/v1/feedback", json={"decision_id": decision, "rating": "bad"})
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) > 0
        err = r.json()["error"]
        assert err["code"] == "store_unavailable" and err["type"] == "server_error" and "60 s" in err["message"]
        assert "stored" not in r.json() and not store.added
        store.up = True  # the client sends it again after Retry-After: kept once
        r = client.post("/v1/feedback", json={"decision_id": decision, "rating": "bad"})
        assert r.status_code == 200 and r.json()["stored"] and len(store.added) == 1


def test_healthz_is_not_ready_while_the_store_is_unreachable(router):
    store = DownStore()
    app = create_app(router, store=store)
    with TestClient(app) as client:
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable" and "retry-after" in r.headers
        store.up = True
        app.state.service._reachable = (-1e9, False)  # past the 1 s the answer is cached for
        r = client.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"


def test_healthz_without_a_store_is_ready(router):
    with TestClient(create_app(router)) as client:
        assert client.get("/healthz").json()["status"] == "ok"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_replica_killed_and_store_restarted_lose_and_duplicate_nothing(tmp_path):
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[postgres]')")
    if rf.postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; apt-get install postgresql)")
    import os

    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
    rows = rf.run(["restart_store", "kill_replica"], phase_s=4.0, threads=3, outage_s=2.0, workdir=tmp_path)
    for row in rows:
        assert row["chats_ok"] and row["feedback_ok"], row
        assert rf.goal_missed(row) == [], row
    store_row = rows[0]
    assert store_row["healthz_503"] > 0  # readiness said no while PostgreSQL was down
