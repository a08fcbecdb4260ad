"""One choice everywhere: every way into mmroute gives the same model for the same query.

A router is trained on queries where a pricier model wins math and the cheap one wins chit-chat;
its lambda is then set 0.3 % below the break-even of one query, so a path that counted that query's
tokens differently (message framing, a second token estimate) would flip it. The same queries then
go through ``Router.route`` (dict, string and one-turn messages), ``mmroute route``, ``/v1/route``,
``/v1/chat/completions``, ``RoutedChatModel``, the router node, the LiteLLM proxy strategy,
exploration's greedy step, the off-policy gate's choice and the evaluation's choice: all must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmroute.constraints import Constraints
from mmroute.errors import NoEligibleModelError
from mmroute.payload import Payload
from mmroute.policy import CostAwarePolicy
from mmroute.pool import ModelPool
from mmroute.query import Query

CHEAP, MATH, VISION = "scripted/cheap-text", "scripted/math-text", "scripted/vision"
QUERIES = [f"What is {a} * {b}?" for a, b in [(31, 47), (12, 9), (7, 88)]] + [
    "hello there, how are you today?", "tell me something nice", "Compute 17 + 25 and explain",
    "what's the weather like on mars", "Solve x^2 = 49",
]


def _pool() -> ModelPool:
    return ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7,
         "tags": ["cheap"]},
        {"name": MATH, "supports_vision": False, "input_cost_per_token": 3e-6, "output_cost_per_token": 6e-6,
         "tags": ["math"]},
        {"name": VISION, "supports_vision": True, "input_cost_per_token": 1e-5, "output_cost_per_token": 3e-5},
    ])


@pytest.fixture(scope="module")
def router():
    from mmroute.data import Judgment, QueryRecord
    from mmroute.training import train_router

    js = []
    for i in range(12):
        math_q = QueryRecord(text=f"What is {i + 3} * {i + 11}?")
        chat_q = QueryRecord(text=f"hello friend number {i}, how is your day?")
        js += [Judgment(query=math_q, model_a=MATH, model_b=CHEAP, winner="model_a"),
               Judgment(query=math_q, model_a=VISION, model_b=MATH, winner="tie"),
               Judgment(query=chat_q, model_a=CHEAP, model_b=MATH, winner="tie"),
               Judgment(query=chat_q, model_a=VISION, model_b=CHEAP, winner="tie")]
    r = train_router(js, encoder="clip:tiny", pool=_pool(), policy=CostAwarePolicy(0.0),
                     model_params={"max_epochs": 60})
    # lambda 0.3 % below the break-even of the first query's top two models: the pricier one wins,
    # and any path adding tokens to its cost estimate would flip it to the cheaper one
    q = Query.coerce(QUERIES[0])
    quality = r.predict_quality([q])[0]
    cost = r.expected_costs(Payload.of_query(q))
    m, c = r.pool.names.index(MATH), r.pool.names.index(CHEAP)
    assert quality[m] > quality[c], "the fixture needs math-text rated above cheap-text on math"
    lam = float((quality[m] - quality[c]) / (cost[m] - cost[c])) * 0.997
    r.policy = CostAwarePolicy(lam)
    assert r.route(QUERIES[0]).model == MATH
    return r


def _reference(router) -> list[str]:
    return [router.route({"text": t}).model for t in QUERIES]


def test_route_takes_dicts_strings_and_one_turn_messages_alike(router):
    ref = _reference(router)
    assert len(set(ref)) >= 2, f"the fixture should route to more than one model: {ref}"
    assert [router.route(t).model for t in QUERIES] == ref
    assert [router.route([{"role": "user", "content": t}]).model for t in QUERIES] == ref
    assert [router.route([{"role": "user", "content": [{"type": "text", "text": t}]}]).model for t in QUERIES] == ref


def test_a_single_query_costs_what_the_same_chat_turn_costs():
    for t in QUERIES:
        assert Payload.of_query(Query.coerce(t)) == Payload.from_messages([{"role": "user", "content": t}])


def test_batch_choice_evaluation_and_calibration_agree_with_route(router):
    from mmroute import curves as metrics
    from mmroute.policy import choose_batch

    ref = _reference(router)
    qs = [Query.coerce(t) for t in QUERIES]
    P = router.predict_quality(qs)
    C, ok, _ = router.cost_and_eligibility([Payload.of_query(q) for q in qs])
    names = router.pool.names
    assert [names[i] for i in router.policy.choose(P, C, ok, names)] == ref
    assert [names[i] for i in metrics.choose(P, C, router.policy.lam)] == ref
    assert [names[i] for i in choose_batch(P, C, ok, router.policy.lam)] == ref


def test_the_margin_is_honoured_by_every_choice(router):
    from mmroute.learning import ExploringRouter, GreedyPolicy

    qs = [Query.coerce(t) for t in QUERIES]
    P = router.predict_quality(qs)
    C, ok, _ = router.cost_and_eligibility([Payload.of_query(q) for q in qs])
    names = router.pool.names
    big = CostAwarePolicy(router.policy.lam, margin=10.0, default=VISION)
    assert [router.route(t, policy=big).model for t in QUERIES] == [VISION] * len(QUERIES)
    assert [names[i] for i in big.choose(P, C, ok, names)] == [VISION] * len(QUERIES)
    old = router.policy
    router.policy = big
    try:
        explorer = ExploringRouter(router, GreedyPolicy(), seed=0)
        assert [explorer.route(t).model for t in QUERIES] == [VISION] * len(QUERIES)
    finally:
        router.policy = old


def test_exploration_greedy_step_is_the_served_choice(router):
    from mmroute.learning import ExploringRouter, GreedyPolicy

    explorer = ExploringRouter(router, GreedyPolicy(lam=123.0), seed=0)  # its own lambda yields to the router's
    assert [explorer.route(t).model for t in QUERIES] == _reference(router)


def test_ties_go_to_the_cheaper_model_on_every_path():
    from mmroute import curves as metrics
    from mmroute.policy import Scored, argmax_utility, decide

    quality = np.array([0.5, 0.5, 0.5])
    cost = np.array([3e-4, 1e-4, 2e-4])
    assert int(argmax_utility(quality, cost)) == 1
    s = Scored(models=["a", "b", "c"], quality=quality, cost=cost, eligible=np.ones(3, bool))
    assert decide(s, CostAwarePolicy(0.0), {}, prompt_tokens=1, n_images=0).model == "b"
    assert metrics.choose(quality[None, :], cost[None, :], 0.0).tolist() == [1]
    assert CostAwarePolicy(0.0).choose(quality, cost, np.array([True, False, True])) == 2


def test_cli_route_agrees(router, tmp_path, capsys):
    from mmroute.cli import main

    router.save(tmp_path / "r")
    got = []
    for t in QUERIES:
        main(["route", "--router", str(tmp_path / "r"), "--text", t, "--json"])
        got.append(json.loads(capsys.readouterr().out)["model"])
    assert got == _reference(router)


def test_http_route_and_chat_agree(router, scripted):
    from fastapi.testclient import TestClient

    from mmroute.server import create_app

    ref = _reference(router)
    with TestClient(create_app(router)) as client:
        routed = [client.post("/v1/route", json={"text": t}).json()["model"] for t in QUERIES]
        routed_msgs = [client.post("/v1/route", json={"messages": [{"role": "user", "content": t}]}).json()["model"]
                       for t in QUERIES]
        chat = []
        for t in QUERIES:
            r = client.post("/v1/chat/completions", json={"model": "mmroute", "messages": [{"role": "user", "content": t}]})
            assert r.status_code == 200, r.text
            chat.append(r.headers["x-mmroute-model"])
    assert routed == ref and routed_msgs == ref and chat == ref


def test_chat_model_and_router_node_agree(router, scripted):
    from mmroute.graph import RoutedChatModel, create_router_node

    ref = _reference(router)
    llm = RoutedChatModel(router=router, llm_kwargs={"max_retries": 0})
    assert [llm.invoke(t).response_metadata["model"] for t in QUERIES] == ref
    node = create_router_node(router)
    assert [node({"messages": [{"role": "user", "content": t}]})["route"]["model"] for t in QUERIES] == ref


def test_litellm_proxy_strategy_agrees(router):
    import litellm

    from mmroute.server.litellm_proxy import deployment_model, install

    llm_router = litellm.Router(model_list=[{"model_name": "mmroute", "litellm_params": {"model": m}}
                                            for m in router.pool.names])
    strategy = install(llm_router, router)
    got = [deployment_model(strategy.get_available_deployment("mmroute", messages=[{"role": "user", "content": t}]))
           for t in QUERIES]
    assert got == _reference(router)


def test_constraints_are_core_and_honoured_by_every_adapter(router, scripted):
    from fastapi.testclient import TestClient

    from mmroute.graph import RoutedChatModel
    from mmroute.server import create_app

    t = QUERIES[0]
    plain = router.route(t).model
    c = Constraints(exclude=(plain,))
    other = router.route(t, constraints=c)
    assert other.model != plain and "excluded by caller" in other.filtered[plain]
    cheap_only = router.route(t, constraints=Constraints(require=("cheap",)))
    assert cheap_only.model == CHEAP and "lacks required 'cheap'" in cheap_only.filtered[MATH]
    capped = router.route(t, constraints=Constraints(max_cost=1e-9 + min(
        router.expected_costs(Payload.of_query(Query.coerce(t))))))
    assert capped.model == CHEAP and "max_cost" in capped.filtered[VISION]
    with pytest.raises(NoEligibleModelError, match="min_quality"):
        router.route(t, constraints=Constraints(min_quality=0.999))
    llm = RoutedChatModel(router=router, constraints=c, llm_kwargs={"max_retries": 0})
    assert llm.invoke(t).response_metadata["model"] == other.model
    with TestClient(create_app(router)) as client:
        r = client.post("/v1/route", json={"text": t, "mmroute": {"exclude": [plain]}})
        assert r.json()["model"] == other.model
        r = client.post("/v1/route", json={"text": t, "mmroute": {"min_quality": 0.999}})
        assert r.status_code in (400, 422) and "min_quality" in r.json()["error"]["message"]
