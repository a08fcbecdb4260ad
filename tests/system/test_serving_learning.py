"""Learning where the router is served: exploration over HTTP (propensities in headers, the
route response and the store's one decision table), rewards by decision id from any replica,
the off-policy gate on served decisions, and continuous retraining inside the server (one
retrainer at a time, every replica reloads, the version metric follows).

Set-up as tests/system/test_server.py: cheap (text-only) < mid < strong (vision), a tiny ``clip:tiny``
router with a steep cost-aware policy (text to cheap, images to mid).
"""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest

from mmroute.data.store import FeedbackStore
from mmroute.errors import ConfigError
from mmroute.learning.routing import ExploreSettings, ExploringRouter
from mmroute.learning.explore import EpsilonGreedyPolicy, ExplorationBudget, ThompsonPolicy
from mmroute.policy import CostAwarePolicy
from mmroute.pool import ModelPool
from mmroute.router import LiveRouter, Router
from mmroute.server import BackgroundServer, ServerConfig, create_app
from mmroute.server.retrainer import FileRetrainLock, PostgresRetrainLock, Retrainer, RetrainSettings
from _images import png_url
from _tiny_router import tiny_router

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"
FAST = {"max_retries": 0}


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):

    pool = ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8},
        {"name": MID, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": STRONG, "supports_vision": True, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4},
    ])
    r = tiny_router(pool=pool)
    folder = tmp_path_factory.mktemp("router") / "r"
    r.save(folder)
    return folder


@pytest.fixture
def folder(router_dir, tmp_path):
    """A copy of the router folder a test may publish into."""
    out = tmp_path / "router"
    shutil.copytree(router_dir, out, symlinks=True)
    return out


def post(srv, path: str, body: dict) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, timeout=30)


def _metric_lines(srv, name: str) -> list[str]:
    return [ln for ln in httpx.get(srv.url + "/metrics").text.splitlines() if ln.startswith(name)]


def epsilon(share: float = 0.6, seed: int = 0) -> ExploreSettings:
    return ExploreSettings(strategy="epsilon", share=share, seed=seed)


# -- exploration over HTTP ------------------------------------------------------------------------------------

def test_exploring_server_logs_every_decision_with_its_probabilities(folder, tmp_path, scripted):
    """Headers and /v1/route carry the propensity; the store's decision table holds the whole
    distribution; some decisions leave the router's choice; an image never goes to the text-only model."""
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        app = create_app(epsilon().wrap(LiveRouter(folder)), store=store, llm_kwargs=FAST)
        with BackgroundServer(app) as srv:
            routed = [post(srv, "/v1/route", {"text": f"question number {i}"}) for i in range(40)]
            images = [post(srv, "/v1/route", {"text": "what is this?", "images": [png_url((i, 5, 9))]})
                      for i in range(30)]
            chat = post(srv, "/v1/chat/completions", {"model": "mmroute", "messages": [{"role": "user", "content": "hello"}]})
            explored = _metric_lines(srv, "mmroute_explored_total")
        assert all(r.status_code == 200 for r in routed + images + [chat]), [r.text for r in routed + images][:2]
        for r in routed + images + [chat]:
            body = r.json() if r is not chat else None
            p = float(r.headers["x-mmroute-propensity"])
            assert 0 < p <= 1
            if body is not None:
                assert body["propensity"] == pytest.approx(p, rel=1e-5)
                assert sum(body["probabilities"].values()) == pytest.approx(1.0)
                assert body["probabilities"][body["model"]] == pytest.approx(p)
        text_models = [r.json()["model"] for r in routed]
        assert CHEAP in text_models and set(text_models) - {CHEAP}, text_models  # the router's choice, and others
        assert all(r.json()["model"] != CHEAP and CHEAP not in r.json()["probabilities"] for r in images)
        assert float(explored[0].split()[-1]) == sum(m != CHEAP for m in text_models) + sum(
            r.json()["model"] != MID for r in images) + (chat.headers["x-mmroute-model"] != CHEAP)
        logged = {d.id: d for d in store.decisions.iter()}
        assert len(logged) == 71
        for r in routed + images:
            d = logged[r.json()["decision_id"]]
            assert d.policy == "epsilon" and d.model == r.json()["model"] and d.probabilities == r.json()["probabilities"]
            assert d.query is not None and d.query_hash and d.router_version == "v0001"
            assert {c.model for c in d.candidates} == {CHEAP, MID, STRONG}
        answered = logged[chat.headers["x-mmroute-decision-id"]]
        assert answered.answered_by == chat.headers["x-mmroute-model"] and answered.cost is not None


def test_create_app_takes_an_exploring_router_and_thompson_explores(router_dir, scripted):
    """``create_app(ExploringRouter(...))`` serves (it answered 500 before); Thompson sampling (with
    a uniform floor: this tiny router's posterior is too sure of itself to spread) at a per-request
    lambda of 0 puts probability on more than one model."""
    policy = ThompsonPolicy(floor=0.3, budget=ExplorationBudget(max_share=1.0))
    er = ExploringRouter(Router.load(router_dir), policy, seed=1, follow_router_lam=True)
    app = create_app(er, llm_kwargs=FAST)
    with BackgroundServer(app) as srv:
        chat = post(srv, "/v1/chat/completions", {"model": "mmroute", "messages": [{"role": "user", "content": "hi"}]})
        spread = [post(srv, "/v1/route", {"text": f"q {i}", "mmroute": {"lam": 0}}).json() for i in range(10)]
        health = httpx.get(srv.url + "/healthz").json()
    assert chat.status_code == 200 and "x-mmroute-propensity" in chat.headers, chat.text
    assert all(s["policy"] == "thompson" for s in spread) and health["status"] == "ok"
    assert all(len(s["probabilities"]) == 3 and sum(s["probabilities"].values()) == pytest.approx(1) for s in spread)
    assert {s["model"] for s in spread} != {STRONG}


def test_exploration_keeps_per_request_limits(folder, scripted):
    app = create_app(epsilon(1.0).wrap(LiveRouter(folder)), llm_kwargs=FAST)
    with BackgroundServer(app) as srv:
        got = [post(srv, "/v1/route", {"text": f"q {i}", "mmroute": {"exclude": [STRONG]}}).json() for i in range(12)]
        vision = [post(srv, "/v1/route", {"text": f"q {i}", "mmroute": {"require": ["vision"]}}).json()
                  for i in range(6)]
    assert all(g["model"] != STRONG and STRONG not in g["probabilities"] for g in got)
    assert all(v["model"] != CHEAP for v in vision)


def test_explore_settings_are_checked():
    with pytest.raises(ValueError, match="share"):
        ExploreSettings(share=1.5)
    with pytest.raises(ValueError, match="strategy"):
        ExploreSettings(strategy="ucb")  # type: ignore[arg-type]


# -- rewards by decision id -----------------------------------------------------------------------------------

def test_a_reward_sent_to_another_replica_is_attached_to_the_decision(folder, tmp_path, scripted):
    path = tmp_path / "shared.sqlite"
    with FeedbackStore(path) as s1, FeedbackStore(path) as s2:
        a = create_app(epsilon().wrap(LiveRouter(folder)), store=s1, llm_kwargs=FAST)
        b = create_app(epsilon().wrap(LiveRouter(folder)), store=s2, llm_kwargs=FAST)
        with BackgroundServer(a) as ra, BackgroundServer(b) as rb:
            chat = post(ra, "/v1/chat/completions", {"model": "mmroute", "messages": [{"role": "user", "content": "hello"}]})
            did = chat.headers["x-mmroute-decision-id"]
            fb = post(rb, "/v1/feedback", {"decision_id": did, "reward": 0.7})
            bad = post(rb, "/v1/feedback", {"decision_id": did, "reward": 1.5})
            none = post(rb, "/v1/feedback", {"decision_id": did})
        assert fb.status_code == 200 and fb.json()["reward"] == 0.7, fb.text
        assert fb.json()["stored"] is True and fb.json()["model_a"] == chat.headers["x-mmroute-model"]
        assert bad.status_code == 400 and "reward" in bad.json()["error"]["message"]
        assert none.status_code == 400 and "reward" in none.json()["error"]["message"]
        d = s1.decisions.get(did)
        assert d.reward == 0.7 and d.judgment_id == fb.json()["judgment_id"] and d.judgment_id in s1


# -- the off-policy gate on served decisions ------------------------------------------------------------------

def test_retrain_runs_the_off_policy_gate_on_served_decisions(folder, tmp_path, scripted, capsys):
    """Served decisions with rewards are what ``mmroute retrain``'s off-policy gate reads."""
    from mmroute.cli import main

    path = tmp_path / "fb.sqlite"
    with FeedbackStore(path) as store:
        app = create_app(epsilon(0.8).wrap(LiveRouter(folder)), store=store, llm_kwargs=FAST)
        with BackgroundServer(app) as srv:
            for i in range(40):
                r = post(srv, "/v1/route", {"text": f"served question {i}"}).json()
                reward = 1.0 if r["model"] == STRONG else 0.2
                assert post(srv, "/v1/feedback", {"decision_id": r["decision_id"], "reward": reward}).status_code == 200
        assert store.decisions.n_rewarded() == 40 and store.count() >= 30
    code = main(["retrain", "--router", str(folder), "--store", str(path), "--min-holdout", "2", "--tolerance", "10",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "off-policy" in out and "on 40 logged decisions" in out, out


# -- continuous retraining ------------------------------------------------------------------------------------

UNGATED = {"holdout_fraction": 0.0, "min_holdout": 0, "ope_confidence": None}


def _judge(srv, n: int) -> None:
    for i in range(n):
        r = post(srv, "/v1/route", {"text": f"new traffic {i} {time.time()}"}).json()
        assert post(srv, "/v1/feedback", {"decision_id": r["decision_id"], "winner": "model_b",
                                          "model_b": STRONG if r["model"] != STRONG else MID}).status_code == 200


def test_retrain_every_publishes_and_the_server_reloads_and_reports_the_version(folder, tmp_path, scripted, caplog):
    caplog.set_level("INFO", logger="mmroute.server")
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        retrainer = Retrainer(folder, store, RetrainSettings(every=6, poll_s=0.1, **UNGATED))
        app = create_app(ExploreSettings().wrap(LiveRouter(folder)), store=store, retrainer=retrainer,
                         config=ServerConfig(reload_interval_s=0.2), llm_kwargs=FAST)
        with BackgroundServer(app) as srv:
            assert _metric_lines(srv, 'mmroute_router_version{version="v0001"}')[0].endswith(" 1.0")
            _judge(srv, 3)
            time.sleep(0.5)
            assert httpx.get(srv.url + "/healthz").json()["router_version"] == "v0001"  # 3 < 6: not yet
            _judge(srv, 4)
            deadline = time.monotonic() + 60
            while httpx.get(srv.url + "/healthz").json()["router_version"] == "v0001" and time.monotonic() < deadline:
                time.sleep(0.1)
            version = httpx.get(srv.url + "/healthz").json()["router_version"]
            lines = _metric_lines(srv, "mmroute_router_version")
            published = _metric_lines(srv, 'mmroute_retrains_total{outcome="published"}')
            routed = post(srv, "/v1/route", {"text": "after"}).json()
    assert version == "v0002", version
    assert [ln for ln in lines if not ln.startswith("#")] == ['mmroute_router_version{version="v0002"} 1.0']
    assert published and published[0].endswith(" 1.0") and routed["router_version"] == "v0002"
    assert Router.load(folder).metadata["n_retrain_judgments"] >= 6
    assert any("published router version v0002" in r.getMessage() for r in caplog.records)
    assert any("now serving router version v0002" in r.getMessage() for r in caplog.records)


def test_cli_serve_wires_exploration_and_retraining(folder, tmp_path):
    from mmroute.cli import build_parser
    from mmroute.server.command import build_served

    args = build_parser().parse_args(["serve", "--router", str(folder), "--store", str(tmp_path / "s.db"),
                                      "--explore", "epsilon", "--explore-share", "0.2", "--explore-usd", "0.5",
                                      "--new-model-share", "0.3", "--retrain-every", "50", "--retrain-interval", "600",
                                      "--retrain-holdout", "0.3", "--retrain-min-holdout", "5"])
    svc = build_served(args).state.service
    budget = svc.explorer.policy.budget
    assert isinstance(svc.explorer.policy, EpsilonGreedyPolicy) and svc.explorer.policy.epsilon == 0.2
    assert (budget.max_share, budget.max_usd, budget.new_model_share) == (0.2, 0.5, 0.3)
    assert svc.live is not None and svc.explorer.source is svc.live  # the wrapper follows hot reloads
    settings = svc.retrainer.settings
    assert (settings.every, settings.interval_s, settings.holdout_fraction, settings.min_holdout) == (50, 600, 0.3, 5)
    no_store = build_parser().parse_args(["serve", "--router", str(folder), "--retrain-every", "5"])
    with pytest.raises(ConfigError, match="--store"):
        build_served(no_store)
    bad = build_parser().parse_args(["serve", "--router", str(folder), "--explore", "thompson", "--explore-share", "2"])
    with pytest.raises(ConfigError, match="bad exploration option: share: Input should be less than or equal to 1"):
        build_served(bad)
    bad = build_parser().parse_args(["serve", "--router", str(folder), "--store", str(tmp_path / "s.db"),
                                     "--retrain-every", "0"])
    with pytest.raises(ConfigError, match="bad retraining option: every: Input should be greater than or equal to 1"):
        build_served(bad)


# -- one retrainer at a time -----------------------------------------------------------------------------------

def _store_with_judgments(path, n: int = 8) -> FeedbackStore:
    store = FeedbackStore(path)
    for i in range(n):
        store.record(f"a judged question {i}", STRONG, CHEAP, "model_a")
    return store


def test_two_retrainers_on_one_sqlite_store_one_retrains(folder, tmp_path):
    with _store_with_judgments(tmp_path / "fb.sqlite") as store:
        a = Retrainer(folder, store, RetrainSettings(every=1, **UNGATED))
        b = Retrainer(folder, store, RetrainSettings(every=1, **UNGATED))
        assert a.lock.acquire()  # a is retraining
        try:
            skipped = b.run_once()
        finally:
            a.lock.release()
        assert skipped.outcome == "skipped" and "another replica" in skipped.message
        assert b.due(Router.load(folder)) is False  # it waits for new judgments rather than retrying at once
        # both at once: exactly one publishes; the other is skipped, or finds nothing new once it may run
        barrier = threading.Barrier(2)
        got: list[str] = []

        def run(r: Retrainer) -> None:
            r._mark = 0  # both see the same new judgments
            barrier.wait()
            got.append(r.run_once().outcome)

        threads = [threading.Thread(target=run, args=(r,)) for r in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert sorted(got) in (["published", "skipped"], ["kept", "published"]), got
    assert sorted(p.name for p in (folder / "versions").iterdir()) == ["v0001", "v0002"]


def test_file_lock_is_exclusive_between_holders(tmp_path):
    first, second = FileRetrainLock(tmp_path / "router"), FileRetrainLock(tmp_path / "router")
    assert first.path == tmp_path / "router.retrain.lock"
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_postgres_advisory_lock_is_exclusive_between_replicas(postgres_url):
    first, second = PostgresRetrainLock(postgres_url), PostgresRetrainLock(postgres_url)
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_budget_is_shared_across_router_versions(folder):
    """The wrapper keeps one budget while the router under it is replaced (a hot reload)."""
    live = LiveRouter(folder)
    er = ExploringRouter(live, EpsilonGreedyPolicy(epsilon=1.0, budget=ExplorationBudget(max_share=0.25)), seed=3,
                         follow_router_lam=True)
    for i in range(20):
        er.route(f"q {i}")
    new = Router.load(folder)
    new.policy = CostAwarePolicy(0.0)
    new.save(folder)
    for i in range(20):
        assert er.route(f"r {i}").knob == 0.0  # the new version's lambda
    budget = er.policy.budget
    assert budget.decisions == 40 and budget.explored <= 0.25 * 40 + 1


def test_routed_chat_model_explores_and_logs_with_the_same_setting(folder, tmp_path, scripted):
    from mmroute.graph import RoutedChatModel

    image = {"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                         {"type": "image_url", "image_url": {"url": png_url((1, 2, 3))}}]}
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        chat = RoutedChatModel(router=LiveRouter(folder), explore=epsilon(1.0), feedback_store=store, llm_kwargs=FAST)
        text = [chat.invoke(f"question {i}").response_metadata for i in range(12)]
        images = [chat.invoke([image]).response_metadata for _ in range(6)]
        logged = {d.id: d for d in store.decisions.iter()}
    assert {m["routed_model"] for m in text} - {CHEAP} and all(0 < m["propensity"] <= 1 for m in text)
    assert all(m["routed_model"] != CHEAP for m in images)
    assert set(logged) == {m["decision_id"] for m in text + images}
    assert all(logged[m["decision_id"]].propensity == m["propensity"] for m in text)


def test_two_replicas_on_one_postgres_store_retrain_once_and_both_reload(folder, postgres_url, scripted, monkeypatch):
    """Two servers on one PostgreSQL store and one router folder, both with ``--retrain-every 4``:
    the advisory lock lets exactly one retrain and publish; both serve the new version after.
    Each retrain is slowed by a second, so without the lock both would retrain v0001 and publish."""
    import mmroute.retraining

    real = mmroute.retraining.retrain_router

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(mmroute.retraining, "retrain_router", slow)
    stores = [FeedbackStore(postgres_url) for _ in range(2)]
    apps = [create_app(LiveRouter(folder), store=s, config=ServerConfig(reload_interval_s=0.2), llm_kwargs=FAST,
                       retrainer=Retrainer(folder, s, RetrainSettings(every=4, poll_s=0.1, **UNGATED)))
            for s in stores]
    try:
        with BackgroundServer(apps[0]) as a, BackgroundServer(apps[1]) as b:
            for srv in (a, b, a, b):  # judgments arrive through both replicas
                _judge(srv, 1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                    httpx.get(s.url + "/healthz").json()["router_version"] != "v0002" for s in (a, b)):
                time.sleep(0.1)
            time.sleep(1.0)  # let a late second attempt show itself
            versions = [httpx.get(s.url + "/healthz").json()["router_version"] for s in (a, b)]
            published = [_metric_lines(s, 'mmroute_retrains_total{outcome="published"}') for s in (a, b)]
            metric = [_metric_lines(s, 'mmroute_router_version{version="v0002"}') for s in (a, b)]
    finally:
        for s in stores:
            s.close()
    assert versions == ["v0002", "v0002"]
    assert sum(float(p[0].split()[-1]) for p in published if p) == 1.0, published
    assert all(m and m[0].endswith(" 1.0") for m in metric)
    assert sorted(p.name for p in (folder / "versions").iterdir()) == ["v0001", "v0002"]


def test_retrain_interval_and_a_kept_router_wait_for_new_judgments(folder, tmp_path):
    serving = Router.load(folder)
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        r = Retrainer(folder, store, RetrainSettings(interval_s=0.2))
        time.sleep(0.3)
        assert not r.due(serving)  # the interval passed, but nothing is new
        store.record("a judged question", STRONG, CHEAP, "model_a")
        assert r.new_judgments(serving) == 1 and r.due(serving)
        kept = r.run_once(serving)  # one judgment is too few for the held-out gate: the router is kept
        assert kept.outcome == "kept" and "held-out" in kept.message and kept.report is not None
        assert r.new_judgments(serving) == 0 and not r.due(serving)  # not retried on the same judgments
        store.record("another judged question", STRONG, MID, "model_a")
        assert not r.due(serving)  # new, but the interval has not passed since the last attempt
        time.sleep(0.3)
        assert r.due(serving)
    assert sorted(p.name for p in (folder / "versions").iterdir()) == ["v0001"]
