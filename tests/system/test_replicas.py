"""Several real `mmroute serve` processes on one PostgreSQL feedback store and one router folder.

Three replicas (subprocesses on 127.0.0.1) answer chat requests through a local OpenAI-compatible
upstream (in this process); feedback on each decision goes to a *different* replica than the one
that made it (some twice, to two others). The store must then hold exactly one judgment per
decision. Then a new router version is published into the shared folder and every replica must
serve it. Bounded: 3 processes, 24 requests, deadlines on every wait; processes stopped by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mmroute.data.store import FeedbackStore
from mmroute.policy import CostAwarePolicy
from mmroute.pool import ModelPool
from mmroute.router import Router
from mmroute.server import BackgroundServer
from mmroute.testing import echo_upstream_app  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
N_REPLICAS, N_CHATS = 3, 24
CHEAP, MID, STRONG = "openai/cheap", "openai/mid", "openai/strong"




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_router(folder: Path, upstream: str) -> None:
    from mmroute.data import Judgment, QueryRecord
    from mmroute.training import train_router

    params = {"api_base": upstream + "/v1", "api_key": "unused"}
    pool = ModelPool(models=[
        {"name": CHEAP, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8, "litellm_params": params},
        {"name": MID, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6, "litellm_params": params},
        {"name": STRONG, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4, "litellm_params": params},
    ])
    pairs = [(STRONG, MID), (MID, CHEAP), (STRONG, CHEAP)]
    judgments = [Judgment(query=QueryRecord(text=f"training question {i}"), model_a=a, model_b=b, winner="model_a")
                 for i in range(6) for a, b in pairs]
    r = train_router(judgments, encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(lam=1e4),
                     model_params={"max_epochs": 40})
    r.save(folder)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=20)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_replicas_share_decisions_feedback_and_router_versions(postgres_url, tmp_path):
    store_url = postgres_url
    FeedbackStore(store_url).close()  # create the tables once, before the replicas race to
    with BackgroundServer(echo_upstream_app()) as upstream:
        folder = tmp_path / "router"
        _train_router(folder, upstream.url)
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        ports = [_free_port() for _ in range(N_REPLICAS)]
        logs = [open(tmp_path / f"replica{i}.log", "wb") for i in range(N_REPLICAS)]
        procs: list[subprocess.Popen] = []
        try:
            for port, log in zip(ports, logs):
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", "import sys; from mmroute.cli import main; sys.exit(main())", "serve",
                     "--router", str(folder), "--store", store_url, "--host", "127.0.0.1", "--port", str(port),
                     "--log-level", "warning"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            deadline = time.monotonic() + 120
            for i, url in enumerate(urls):
                while True:
                    try:
                        if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if procs[i].poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"replica {i} did not start: " + (tmp_path / f"replica{i}.log").read_text()[-2000:])
                    time.sleep(0.2)
            v1 = {httpx.get(u + "/healthz").json()["router_version"] for u in urls}
            assert len(v1) == 1 and None not in v1

            def chat(i: int) -> tuple[int, str, str]:
                r = httpx.post(urls[i % N_REPLICAS] + "/v1/chat/completions", timeout=60,
                               json={"model": "mmroute", "messages": [{"role": "user", "content": f"question {i}"}]})
                assert r.status_code == 200, r.text
                return i, r.headers["x-mmroute-decision-id"], r.headers["x-mmroute-model"]

            def feedback(job: tuple[int, str]) -> dict:
                replica, decision_id = job
                r = httpx.post(urls[replica] + "/v1/feedback", timeout=60,
                               json={"decision_id": decision_id, "rating": "bad"})
                assert r.status_code == 200, r.text
                return r.json()

            with ThreadPoolExecutor(8) as pool:
                made = list(pool.map(chat, range(N_CHATS)))
                assert all(model == CHEAP for _, _, model in made)  # answered through the upstream
                # each to another replica than the one that decided; every third one again to the third replica
                jobs = [((i + 1) % N_REPLICAS, d) for i, d, _ in made]
                jobs += [((i + 2) % N_REPLICAS, d) for i, d, _ in made if i % 3 == 0]
                got = list(pool.map(feedback, jobs))
            first, resent = got[:N_CHATS], got[N_CHATS:]
            assert all(g["stored"] for g in first)
            assert not any(g["stored"] for g in resent)
            with FeedbackStore.open_existing(store_url) as store:
                stored = [j.id for j in store.iter_judgments()]
                assert sorted(stored) == sorted(g["judgment_id"] for g in first)  # 0 lost, 0 duplicated
                assert len(store.decisions) == N_CHATS

            # publish a new version into the shared folder: every replica switches to it
            new = Router.load(folder)
            new.policy = CostAwarePolicy(0.0)  # routes for quality: text now goes to strong
            new.save(folder)
            deadline = time.monotonic() + 60
            for url in urls:
                while httpx.get(url + "/healthz").json()["router_version"] in v1:
                    assert time.monotonic() < deadline, f"{url} still serves {v1}"
                    time.sleep(0.1)
            v2 = {httpx.get(u + "/healthz").json()["router_version"] for u in urls}
            assert len(v2) == 1 and v2 != v1
            for url in urls:
                r = httpx.post(url + "/v1/chat/completions", timeout=60,
                               json={"model": "mmroute", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200 and r.headers["x-mmroute-model"] == STRONG, r.text
                assert r.json()["mmroute"]["router_version"] in v2
        finally:
            _stop(procs)
            for log in logs:
                log.close()
