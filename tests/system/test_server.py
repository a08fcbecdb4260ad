"""`mmroute serve` end to end over real HTTP: uvicorn on 127.0.0.1 in a thread, the openai SDK
(and httpx) as clients, scripted models behind LiteLLM.

Set-up as tests/integration/test_graph_chat_model.py: cheap (text-only) < mid < strong (vision), a tiny
``clip:tiny`` router with a steep cost-aware policy, so text goes to cheap and images to mid.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from mmroute.data.store import FeedbackStore
from mmroute.testing import fail, tool_call
from mmroute.policy import CostAwarePolicy
from mmroute.pool import ModelPool
from mmroute.router import LiveRouter, Router
from mmroute.server import BackgroundServer, ServerConfig, create_app
from _images import png_url
from _tiny_router import tiny_router

CHEAP, MID, STRONG = "scripted/cheap", "scripted/mid", "scripted/strong"
SORRY = "I'm sorry, but I can't help with that."
FAST = {"max_retries": 0}


def image_message(text: str = "what colour is this?") -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": png_url((9, 9, 200))}}]}


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):

    pool = ModelPool(models=[
        {"name": CHEAP, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8,
         "tags": ["cheap"]},
        {"name": MID, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": STRONG, "supports_vision": True, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4,
         "tags": ["math"]},
    ])
    r = tiny_router(pool=pool)
    folder = tmp_path_factory.mktemp("router")
    r.save(folder)
    return folder


@pytest.fixture(scope="module")
def live(router_dir):
    lr = LiveRouter(router_dir)
    assert lr.route("hi").model == CHEAP and lr.route("hi").escalation_order() == [MID, STRONG]
    return lr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = FeedbackStore(tmp_path_factory.mktemp("store") / "feedback.sqlite")
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(live, store):
    app = create_app(live.router, store=store, config=ServerConfig(pass_through=True, max_wait_ms=20),
                     llm_kwargs=FAST)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def post(server, path: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30, **kw)


# -- chat ---------------------------------------------------------------------------------------------------

def test_chat_names_the_routed_model_and_a_decision_id(client, scripted):
    scripted.set(CHEAP, "4")
    raw = client.chat.completions.with_raw_response.create(model="mmroute", messages=[{"role": "user", "content": "2+2?"}])
    comp = raw.parse()
    assert comp.choices[0].message.content == "4" and comp.object == "chat.completion"
    assert comp.model == CHEAP and raw.headers["x-mmroute-model"] == CHEAP
    meta = comp.model_extra["mmroute"]
    assert raw.headers["x-mmroute-decision-id"] == meta["decision_id"] and meta["decision_id"].startswith("dec-")
    assert meta["routed_model"] == CHEAP and meta["cost_usd"] > 0 and "predicted quality" in meta["reason"]
    assert comp.usage.prompt_tokens > 0 and comp.usage.total_tokens == comp.usage.prompt_tokens + comp.usage.completion_tokens
    assert scripted.models_called == [CHEAP]


def test_chat_stream_is_sse_with_the_model_on_every_chunk(client, scripted):
    scripted.set(CHEAP, "the streamed answer")
    chunks = list(client.chat.completions.create(model="mmroute", stream=True,
                                                 messages=[{"role": "user", "content": "tell me"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the streamed answer"
    assert {c.model for c in chunks} == {CHEAP}
    assert chunks[0].model_extra["mmroute"]["decision_id"].startswith("dec-")
    last = chunks[-1].model_extra["mmroute"]
    assert last["decision_id"] == chunks[0].model_extra["mmroute"]["decision_id"] and last["cost_usd"] > 0


def test_stream_headers_name_model_and_decision(server, scripted):
    scripted.set(CHEAP, "ok")
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=30,
                      json={"model": "mmroute", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-mmroute-model"] == CHEAP
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["mmroute"]["decision_id"] == r.headers["x-mmroute-decision-id"]


def test_image_content_goes_to_a_vision_model_with_the_image(client, scripted):
    scripted.set(MID, "blue")
    comp = client.chat.completions.create(model="mmroute", messages=[image_message()])
    assert comp.model == MID and comp.choices[0].message.content == "blue"
    sent = scripted.calls_for(MID)[0].messages[-1]["content"]
    assert any(part.get("type") == "image_url" for part in sent)
    assert CHEAP not in scripted.models_called  # text-only never sees an image


def test_tools_and_tool_calls_pass_through(client, scripted):
    scripted.set(CHEAP, tool_call("multiply", {"a": 6, "b": 7}, id="call_1"))
    tools = [{"type": "function", "function": {"name": "multiply", "description": "a*b", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}]
    comp = client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "6 times 7?"}],
                                          tools=tools, tool_choice="auto")
    call = comp.choices[0].message.tool_calls[0]
    assert call.id == "call_1" and call.function.name == "multiply" and json.loads(call.function.arguments) == {"a": 6, "b": 7}
    assert comp.choices[0].finish_reason == "tool_calls"
    params = scripted.calls_for(CHEAP)[0].params
    assert params["tools"][0]["function"]["name"] == "multiply" and params["tool_choice"] == "auto"

    def answer_tool(messages, params):  # the tool result comes back in the next request
        assert messages[-1]["role"] == "tool" and messages[-1]["tool_call_id"] == "call_1"
        return f"It is {messages[-1]['content']}."

    scripted.set(CHEAP, answer_tool)
    comp = client.chat.completions.create(model="mmroute", tools=tools, messages=[
        {"role": "user", "content": "6 times 7?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"}])
    assert comp.choices[0].message.content == "It is 42."


def test_provider_fault_falls_back_and_is_counted(client, server, scripted):
    scripted.set(CHEAP, fail("server_error"))
    scripted.set(MID, "from the fallback")
    comp = client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "fallback please"}])
    assert comp.model == MID and comp.choices[0].message.content == "from the fallback"
    attempts = comp.model_extra["mmroute"]["attempts"]
    assert [(a["model"], a["ok"]) for a in attempts] == [(CHEAP, False), (MID, True)]
    assert _metric(server, "mmroute_fallbacks_total") >= 1


def test_all_providers_failing_is_a_502_naming_the_attempts(client, scripted):
    for m in (CHEAP, MID, STRONG):
        scripted.set(m, fail("bad_request", message=f"{m} refuses"))
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "nobody answers"}])
    assert err.value.status_code == 502
    assert err.value.body["code"] == "provider_error" and "scripted/cheap refuses" in err.value.body["message"]


def test_pass_through_models_and_direct_calls(client, scripted):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["mmroute", CHEAP, MID, STRONG]
    scripted.set(STRONG, "strong answer")
    raw = client.chat.completions.with_raw_response.create(model=STRONG, messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().model == STRONG and raw.headers["x-mmroute-model"] == STRONG and scripted.models_called == [STRONG]
    with pytest.raises(openai.BadRequestError) as err:  # a text-only model cannot take an image, even when asked
        client.chat.completions.create(model=CHEAP, messages=[image_message()])
    assert "no vision" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-5" in err.value.body["message"] and err.value.body["code"] == "model_not_found"


def test_bad_requests_get_clear_errors(server, client):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = post(server, "/v1/chat/completions", {"model": "mmroute", "messages": [{"role": "user", "content": "x"}],
                                              "temprature": 0.2})
    assert r.status_code == 400 and "temprature" in r.json()["error"]["message"]
    r = post(server, "/v1/chat/completions", {"model": "mmroute", "messages": [{"role": "system", "content": "only a system turn"}]})
    assert r.status_code == 400 and "no user turn" in r.json()["error"]["message"]
    bad_image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    r = post(server, "/v1/chat/completions", {"model": "mmroute", "messages": [bad_image]})
    assert r.status_code == 400 and "image" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mmroute": {"lam": -1}})
    assert "mmroute.lam" in err.value.body["message"]


# -- route and knobs ------------------------------------------------------------------------------------------

def test_route_returns_the_decision_only(server, scripted):
    r = post(server, "/v1/route", {"text": "what is 2 + 2?"})
    body = r.json()
    assert r.status_code == 200 and body["model"] == CHEAP and r.headers["x-mmroute-model"] == CHEAP
    assert body["decision_id"] == r.headers["x-mmroute-decision-id"]
    assert body["fallbacks"] == [MID, STRONG] and body["escalation_order"] == [MID, STRONG]
    assert {c["model"] for c in body["candidates"]} == {CHEAP, MID, STRONG}
    assert scripted.calls == []  # no model was called
    r = post(server, "/v1/route", {"messages": [image_message()]})
    assert r.json()["model"] == MID and r.json()["filtered"] == {CHEAP: "no vision"}


def test_an_image_earlier_in_the_conversation_never_reaches_a_text_only_model(server, client, scripted):
    """The features see the last user turn; the filters see every turn that will be sent (issue #9)."""
    convo = [image_message("what colour is this?"), {"role": "assistant", "content": "Blue."},
             {"role": "user", "content": "Tell me a joke about it"}]
    r = post(server, "/v1/route", {"messages": convo})
    assert r.status_code == 200 and r.json()["model"] != CHEAP and r.json()["filtered"] == {CHEAP: "no vision"}
    out = client.chat.completions.create(model="mmroute", messages=convo)
    assert out.model != CHEAP and scripted.calls_for(CHEAP) == []


def test_per_request_knobs(server, client, scripted):
    def model(opts: dict, text: str = "hello there") -> str:
        r = post(server, "/v1/route", {"text": text, "mmroute": opts})
        assert r.status_code == 200, r.text
        return r.json()["model"]

    assert model({}) == CHEAP
    assert model({"lam": 0}) == STRONG  # quality at any price
    assert model({"require": ["vision"]}) == MID
    assert model({"require": ["math"]}) == STRONG
    assert model({"exclude": [CHEAP]}) == MID
    assert model({"lam": 0, "max_cost": 0.001}) == MID  # strong's ~$0.03 is over the cap
    assert model({"min_quality": 0.9}) == STRONG
    r = post(server, "/v1/route", {"text": "x", "mmroute": {"max_cost": 1e-12}})
    assert r.status_code == 422 and "max_cost" in r.json()["error"]["message"]
    r = post(server, "/v1/route", {"text": "x", "mmroute": {"exclude": ["nope/model"]}})
    assert r.status_code == 400 and "nope/model" in r.json()["error"]["message"]
    r = post(server, "/v1/route", {"text": "x", "mmroute": {"require": ["teleport"]}})
    assert r.status_code == 400 and "teleport" in r.json()["error"]["message"]
    r = post(server, "/v1/route", {"text": "x", "mmroute": {"cascade": True}})  # /v1/route never calls a model
    assert r.status_code == 200
    # the same knobs through the OpenAI SDK's extra_body
    scripted.set(MID, "mid answer")
    comp = client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "hi"}],
                                          extra_body={"mmroute": {"exclude": [CHEAP]}})
    assert comp.model == MID
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"mmroute": {"cascade": True}})
    assert "--cascade" in err.value.body["message"]


# -- feedback -------------------------------------------------------------------------------------------------

def test_feedback_rating_becomes_a_judgment_once(client, server, store, scripted):
    scripted.set(CHEAP, "maybe 5?")
    text = "feedback question: what is 2 + 2?"
    comp = client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": text}])
    did = comp.model_extra["mmroute"]["decision_id"]
    before = store.count()
    r = post(server, "/v1/feedback", {"decision_id": did, "rating": "bad"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] is True and (body["model_a"], body["model_b"], body["winner"]) == (CHEAP, MID, "model_b")
    assert store.count() == before + 1
    j = next(j for j in store.iter_judgments() if j.id == body["judgment_id"])
    assert j.query.text == text and (j.model_a, j.model_b, j.winner) == (CHEAP, MID, "model_b")
    again = post(server, "/v1/feedback", {"decision_id": did, "rating": "bad"}).json()
    assert again["stored"] is False and again["judgment_id"] == body["judgment_id"] and store.count() == before + 1


def test_feedback_pairwise_with_image_query(server, store):
    did = post(server, "/v1/route", {"messages": [image_message("pairwise feedback on an image")]}).json()["decision_id"]
    r = post(server, "/v1/feedback", {"decision_id": did, "winner": "model_b", "model_b": STRONG})
    assert r.status_code == 200, r.text
    jid = r.json()["judgment_id"]
    j = next(j for j in store.iter_judgments() if j.id == jid)
    assert (j.model_a, j.model_b, j.winner) == (MID, STRONG, "model_b") and len(j.query.images) == 1


def test_feedback_errors_are_clear(server):
    r = post(server, "/v1/feedback", {"decision_id": "dec-unknown", "rating": "good"})
    assert r.status_code == 404 and "unknown or expired" in r.json()["error"]["message"]
    did = post(server, "/v1/route", {"text": "hi"}).json()["decision_id"]
    r = post(server, "/v1/feedback", {"decision_id": did, "winner": "model_a"})
    assert r.status_code == 400 and "model_b" in r.json()["error"]["message"]
    r = post(server, "/v1/feedback", {"decision_id": did, "winner": "model_a", "model_b": "other/model"})
    assert r.status_code == 400 and "other/model" in r.json()["error"]["message"]
    r = post(server, "/v1/feedback", {"decision_id": did, "rating": "great"})
    assert r.status_code == 400 and "rating" in r.json()["error"]["message"]


def test_feedback_without_a_store_is_refused(live):
    with BackgroundServer(create_app(live.router)) as srv:
        did = post(srv, "/v1/route", {"text": "hi"}).json()["decision_id"]
        r = post(srv, "/v1/feedback", {"decision_id": did, "rating": "good"})
    assert r.status_code == 503 and "--store" in r.json()["error"]["message"]


def test_decisions_are_bounded(live, tmp_path):
    class JudgmentsOnly:  # a sink that keeps no decisions: memory is all there is
        def __init__(self) -> None:
            self.got: list = []

        def add(self, judgment) -> bool:
            self.got.append(judgment)
            return True

    app = create_app(live.router, store=JudgmentsOnly(), config=ServerConfig(remember_decisions=2))
    with BackgroundServer(app) as srv:
        ids = [post(srv, "/v1/route", {"text": f"q{i}"}).json()["decision_id"] for i in range(3)]
        assert post(srv, "/v1/feedback", {"decision_id": ids[0], "rating": "good"}).status_code == 404
        assert post(srv, "/v1/feedback", {"decision_id": ids[2], "rating": "good"}).status_code == 200
    # with a FeedbackStore memory stays bounded, and a decision it dropped is read back from the store
    store = FeedbackStore(tmp_path / "f.sqlite")
    app = create_app(live.router, store=store, config=ServerConfig(remember_decisions=2))
    with BackgroundServer(app) as srv:
        ids = [post(srv, "/v1/route", {"text": f"q{i}"}).json()["decision_id"] for i in range(3)]
        assert len(app.state.service.decisions) == 2 and len(store.decisions) == 3
        assert post(srv, "/v1/feedback", {"decision_id": ids[0], "rating": "good"}).status_code == 200
    store.close()


# -- operations -----------------------------------------------------------------------------------------------

def _sum_samples(text: str, name: str, labels: dict[str, str]) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _metric(server, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` with these labels, read from /metrics over HTTP."""
    return _sum_samples(httpx.get(server.url + "/metrics", timeout=10).text, name, labels)


def test_healthz_and_metrics(server, client, scripted):
    h = httpx.get(server.url + "/healthz").json()
    assert h["status"] == "ok" and h["models"] == [CHEAP, MID, STRONG] and h["feedback_store"] is True
    scripted.set(CHEAP, "fine")
    before = _metric(server, "mmroute_routes_total", model=CHEAP)
    client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "count me"}])
    text = httpx.get(server.url + "/metrics").text
    assert _metric(server, "mmroute_routes_total", model=CHEAP) == before + 1
    assert _metric(server, "mmroute_answers_total", model=CHEAP) >= 1
    assert _metric(server, "mmroute_cost_usd_total", model=CHEAP) > 0
    assert _metric(server, "mmroute_requests_total", endpoint="/v1/chat/completions", status="200") >= 1
    assert 'mmroute_request_latency_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}' in text
    assert "mmroute_feature_batch_size_count" in text and "mmroute_escalations_total" in text
    post(server, "/v1/route", {"text": "x", "mmroute": {"exclude": ["nope/model"]}})
    assert _metric(server, "mmroute_errors_total", type="invalid_input") >= 1


def test_api_keys(live, monkeypatch):
    with BackgroundServer(create_app(live.router, config=ServerConfig(api_keys=("k-one", "k-two")))) as srv:
        assert httpx.get(srv.url + "/healthz").status_code == 200  # liveness probes need no key
        r = post(srv, "/v1/route", {"text": "hi"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert post(srv, "/v1/route", {"text": "hi"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(srv.url + "/metrics").status_code == 401
        assert post(srv, "/v1/route", {"text": "hi"}, headers={"Authorization": "Bearer k-two"}).status_code == 200
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="k-one", max_retries=0)
        assert [m.id for m in c.models.list().data] == ["mmroute"]  # pass-through off: the router only
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_body_and_image_limits(live):
    cfg = ServerConfig(max_body_bytes=4_000, max_images=1)
    with BackgroundServer(create_app(live.router, config=cfg)) as srv:
        big = {"text": "x" * 5_000}
        r = post(srv, "/v1/route", big)
        assert r.status_code == 413 and "4000-byte limit" in r.json()["error"]["message"]

        def chunked():  # no Content-Length: the limit still holds
            yield json.dumps(big).encode()

        r = httpx.post(srv.url + "/v1/route", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        two = {"text": "two", "images": [png_url((1, 2, 3), 4), png_url((3, 2, 1), 4)]}
        r = post(srv, "/v1/route", two)
        assert r.status_code == 400 and "limit of 1" in r.json()["error"]["message"]
        r = post(srv, "/v1/route", {"text": "remote", "images": ["http://169.254.169.254/latest/meta-data"]})
        assert r.status_code == 400 and "--remote-images refuse" in r.json()["error"]["message"]  # the default
    with BackgroundServer(create_app(live.router, config=cfg.model_copy(update={"remote_images": "forward"}))) as srv:
        r = post(srv, "/v1/route", {"text": "remote", "images": ["http://169.254.169.254/latest/meta-data"]})
        assert r.status_code == 200  # forwarded, not fetched: routed as "an image is present"
        assert r.json()["filtered"] == {CHEAP: "no vision"}


def test_prompts_are_not_logged_unless_asked(live, caplog):
    secret = "my-secret-prompt-4711"
    caplog.set_level(logging.DEBUG)
    with BackgroundServer(create_app(live.router)) as srv:
        assert post(srv, "/v1/route", {"text": secret}).status_code == 200
    assert "decision dec-" in caplog.text and secret not in caplog.text
    caplog.clear()
    with BackgroundServer(create_app(live.router, config=ServerConfig(log_prompts=True))) as srv:
        assert post(srv, "/v1/route", {"text": secret}).status_code == 200
    assert secret in caplog.text


def test_concurrent_requests_are_batched(live):
    app = create_app(live.router, config=ServerConfig(max_batch=64, max_wait_ms=50))
    with BackgroundServer(app) as srv:
        with ThreadPoolExecutor(24) as ex:
            results = list(ex.map(lambda i: post(srv, "/v1/route", {"text": f"batch me {i}"}), range(48)))
        assert all(r.status_code == 200 for r in results)
        sizes = list(app.state.service.batcher.batch_sizes)
        assert sum(sizes) == 48 and max(sizes) > 1, sizes
        assert _metric(srv, "mmroute_feature_batch_size_count") == len(sizes)


def test_hot_reload_under_concurrent_requests(router_dir, tmp_path, scripted):
    import shutil

    folder = tmp_path / "router"
    shutil.copytree(router_dir, folder, symlinks=True)
    served = LiveRouter(folder)
    app = create_app(served, config=ServerConfig(reload_interval_s=0.05), llm_kwargs=FAST)
    scripted.set(CHEAP, "cheap")
    scripted.set(STRONG, "strong")
    stop = threading.Event()
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def hammer(i: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                kind = "chat" if i % 2 else "route"
                if kind == "chat":
                    r = c.post("/v1/chat/completions", json={"model": "mmroute", "messages": [{"role": "user", "content": "hi"}]})
                else:
                    r = c.post("/v1/route", json={"text": "hi"})
                with lock:
                    seen.append((r.status_code, r.headers.get("x-mmroute-model", r.text)))

    with BackgroundServer(app) as srv:
        v1 = httpx.get(srv.url + "/healthz").json()["router_version"]
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        new = Router.load(folder)
        new.policy = CostAwarePolicy(0.0)  # the new version routes for quality: text now goes to strong
        new.save(folder)
        deadline = time.monotonic() + 20
        while httpx.get(srv.url + "/healthz").json()["router_version"] == v1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
        v2 = httpx.get(srv.url + "/healthz").json()["router_version"]
        after = post(srv, "/v1/route", {"text": "hi"}).json()["model"]
    assert v2 != v1 and after == STRONG
    assert len(seen) > 20 and all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:3]
    models = [m for _, m in seen]
    assert models[0] == CHEAP and models[-1] == STRONG and set(models) == {CHEAP, STRONG}
    assert _metric_app(app, "mmroute_router_reloads_total") == 1


def _metric_app(app, name: str) -> float:
    data, _ = app.state.service.metrics.render()
    return _sum_samples(data.decode(), name, {})


def test_cascade_escalates_and_reports(live, tmp_path, scripted):
    from mmroute.graph import create_cascade_graph
    from mmroute.verify import HeuristicVerifier

    store = FeedbackStore(tmp_path / "cascade.sqlite")
    graph = create_cascade_graph(live, verifier=HeuristicVerifier(), max_escalations=2, feedback_store=store,
                                 llm_kwargs=FAST)
    scripted.set(CHEAP, SORRY)
    scripted.set(MID, "Paris is the capital of France.")
    with BackgroundServer(create_app(live, cascade=graph, store=store)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=60)
        raw = c.chat.completions.with_raw_response.create(
            model="mmroute", messages=[{"role": "user", "content": "capital of France?"}])
        comp = raw.parse()
        assert comp.model == MID and raw.headers["x-mmroute-model"] == MID
        meta = comp.model_extra["mmroute"]
        assert meta["routed_model"] == CHEAP and meta["escalations"] == 1
        assert [a["model"] for a in meta["answers"]] == [CHEAP, MID]
        assert store.count() == 1  # the escalation became a judgment (mid beat cheap)
        chunks = list(c.chat.completions.create(model="mmroute", stream=True,
                                                messages=[{"role": "user", "content": "capital of France?"}]))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Paris is the capital of France."
        scripted.set(CHEAP, "single call")
        comp = c.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "hi"}],
                                         extra_body={"mmroute": {"cascade": False}})
        assert comp.model == CHEAP and comp.choices[0].message.content == "single call"
        assert _metric(srv, "mmroute_escalations_total") == 2
    store.close()


def test_cli_serve_defaults_to_loopback(router_dir, tmp_path, monkeypatch):
    from mmroute.cli import build_parser
    from mmroute.server.command import build_served

    monkeypatch.setenv("MMROUTE_API_KEYS", "env-key, other")
    args = build_parser().parse_args(["serve", "--router", str(router_dir), "--store", str(tmp_path / "s.db"),
                                      "--api-key", "cli-key", "--pass-through"])
    assert args.host == "127.0.0.1"
    app = build_served(args)
    svc = app.state.service
    assert svc.config.api_keys == ("cli-key", "env-key", "other") and svc.live is not None and svc.store is not None
    assert svc.config.pass_through and svc.cascade is None
    assert svc.config.remote_images == "refuse" and not svc.router.image_policy.allow_paths  # the safe defaults
    args = build_parser().parse_args(["serve", "--router", str(router_dir), "--remote-images", "fetch",
                                      "--trusted-image-host", "images.internal"])
    cfg = build_served(args).state.service.config
    assert cfg.remote_images == "fetch" and cfg.trusted_image_hosts == ("images.internal",)
    old = build_parser().parse_args(["serve", "--router", str(router_dir), "--allow-remote-images"])
    assert old.remote_images == "fetch"  # the old spelling still works


def test_cli_proxy_with_a_missing_config_is_a_one_line_error(tmp_path, capsys):
    from mmroute.cli import main

    assert main(["proxy", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "LiteLLM config not found" in capsys.readouterr().err


def test_serve_without_a_router_answers_the_readme_query_offline(tmp_path):
    """README's `mmroute serve` on a fresh machine: the example router, replay answers, feedback stored."""
    from mmroute.cli import build_parser
    from mmroute.server.command import build_served

    app = build_served(build_parser().parse_args(["serve", "--store", str(tmp_path / "feedback.db")]))
    with BackgroundServer(app) as srv:
        r = post(srv, "/v1/chat/completions", {"model": "mmroute",
                                               "messages": [{"role": "user", "content": "What is 94 * 10?"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "94 * 10 = 940"
        assert r.headers["x-mmroute-model"].startswith("replay/")
        fb = post(srv, "/v1/feedback", {"decision_id": r.headers["x-mmroute-decision-id"], "rating": "good"})
        assert fb.status_code == 200 and fb.json()["stored"] is True


def test_decisions_persist_in_the_store_across_a_restart(live, tmp_path, scripted):
    """Feedback on a decision made before the server restarted (memory gone) is found in the store."""
    path = tmp_path / "fb.sqlite"
    with FeedbackStore(path) as s1:
        app = create_app(live.router, store=s1, llm_kwargs=FAST)
        with BackgroundServer(app) as srv:
            chat = post(srv, "/v1/chat/completions", {"model": "mmroute", "messages": [image_message()]})
            routed = post(srv, "/v1/route", {"text": "hello"})
        assert chat.status_code == 200 and routed.status_code == 200
        assert len(s1.decisions) == 2
    with FeedbackStore(path) as s2:
        app = create_app(live.router, store=s2, llm_kwargs=FAST)  # a new server: empty memory
        with BackgroundServer(app) as srv:
            fb = post(srv, "/v1/feedback", {"decision_id": chat.headers["x-mmroute-decision-id"], "rating": "bad"})
            again = post(srv, "/v1/feedback", {"decision_id": chat.headers["x-mmroute-decision-id"], "rating": "bad"})
            fb2 = post(srv, "/v1/feedback", {"decision_id": routed.json()["decision_id"], "winner": "model_b",
                                             "model_b": STRONG})
            gone = post(srv, "/v1/feedback", {"decision_id": "dec-never-made", "rating": "good"})
        assert fb.status_code == 200 and fb.json()["stored"] is True, fb.text
        assert fb.json()["model_a"] == chat.headers["x-mmroute-model"]  # answered_by survived the restart
        assert again.json()["stored"] is False and again.json()["judgment_id"] == fb.json()["judgment_id"]
        assert fb2.status_code == 200 and fb2.json()["stored"] is True, fb2.text
        assert gone.status_code == 404 and "feedback store" in gone.json()["error"]["message"]
        stored = list(s2.iter_judgments())
        assert len(stored) == 2
        img = next(j for j in stored if j.query.images)
        assert img.query.images == [image_message()["content"][1]["image_url"]["url"]]  # the image, via the blobs
        assert s2.decisions.get(routed.json()["decision_id"]).decision.model == routed.json()["model"]
        # the "bad" rating of the chosen model's answer is that decision's reward; a pairwise comparison is not
        rewarded = s2.decisions.get(chat.headers["x-mmroute-decision-id"])
        assert rewarded.reward == 0.0 and rewarded.judgment_id == fb.json()["judgment_id"] and fb.json()["reward"] == 0.0
        assert s2.decisions.get(routed.json()["decision_id"]).reward is None and fb2.json()["reward"] is None
        assert s2.decisions.prune(0.0) == 1 and [d.id for d in s2.decisions.iter()] == [rewarded.id]


def test_decision_max_age_refuses_and_prunes_old_decisions(live, tmp_path):
    from mmroute.data import QueryRecord

    store = FeedbackStore(tmp_path / "fb.sqlite")
    old = live.route("hello")
    for did, age in (("dec-old", 7200), ("dec-recent", 60)):
        store.decisions.log(old.model_copy(update={"decision_id": did}), QueryRecord(text="hello"), answered_by=CHEAP,
                            added_at=time.time() - age)
    app = create_app(live.router, store=store, config=ServerConfig(decision_max_age_s=3600))
    with BackgroundServer(app) as srv:
        assert post(srv, "/v1/feedback", {"decision_id": "dec-old", "rating": "good"}).status_code == 404
        assert post(srv, "/v1/feedback", {"decision_id": "dec-recent", "rating": "good"}).status_code == 200
        deadline = time.monotonic() + 10
        while store.decisions.find("dec-old") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.decisions.find("dec-old") is None and store.decisions.find("dec-recent") is not None
    store.close()
