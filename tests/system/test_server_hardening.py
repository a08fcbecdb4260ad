"""The server as a hostile or careless client meets it: no local file is ever touched, remote
images follow the stated policy, and every bad request is a 4xx in OpenAI's error shape.

In-process (ASGI, ``TestClient``) with scripted models; no request leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
from http.server import BaseHTTPRequestHandler

import pytest
from fastapi.testclient import TestClient

from mmroute.server import ServerConfig, create_app

from _local_http import LocalHTTPServer
from _tiny_router import CHEAP, MID, STRONG, png_bytes, png_url, tiny_router

FAST = {"max_retries": 0}


@pytest.fixture(scope="module")
def router():
    return tiny_router()


def client(router, **config) -> TestClient:
    return TestClient(create_app(router, config=ServerConfig(max_retries=0, **config)))


def chat(c: TestClient, content, **extra):
    body = {"model": "mmroute", "messages": [{"role": "user", "content": content}], **extra}
    return c.post("/v1/chat/completions", json=body)


def image_part(url: str) -> list[dict]:
    return [{"type": "text", "text": "what is in this picture?"}, {"type": "image_url", "image_url": {"url": url}}]


def assert_openai_error(r, status: int, *, contains: str = "", code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)
    assert contains in err["message"], err
    if code is not None:
        assert err["code"] == code, err
    return err


# -- local paths are never read over HTTP ----------------------------------------------------------------

@pytest.fixture
def fs_spy(monkeypatch):
    """Every path the server's process stats or opens while the test runs."""
    seen: list[str] = []
    real_stat, real_open = os.stat, pathlib.Path.open

    def stat(path, *a, **kw):
        seen.append(os.fspath(path) if not isinstance(path, int) else str(path))
        return real_stat(path, *a, **kw)

    def popen(self, *a, **kw):
        seen.append(str(self))
        return real_open(self, *a, **kw)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(pathlib.Path, "open", popen)
    return seen


def test_image_paths_are_refused_without_touching_the_disk(router, scripted, tmp_path, fs_spy):
    real_png = tmp_path / "secret.png"
    real_png.write_bytes(png_bytes((9, 9, 200), 16))
    paths = ["/etc/passwd", "/nonexistent.png", str(real_png), f"file://{real_png}", "secret.png"]
    from mmroute.data.store import FeedbackStore

    store = FeedbackStore(tmp_path / "fb.sqlite")
    with TestClient(create_app(router, store=store, config=ServerConfig(max_retries=0))) as c:
        fs_spy.clear()
        messages = set()
        for p in paths:
            r = chat(c, image_part(p))
            err = assert_openai_error(r, 400)
            messages.add(err["message"].split(": ", 1)[1] if p.startswith("/") or p == "secret.png" else "")
            r = c.post("/v1/route", json={"text": "look", "images": [p]})
            assert_openai_error(r, 400)
        # the same answer whether the file exists, is not an image, or is missing: no existence oracle
        assert messages - {""} == {"image_url must be a data: URL or http(s) URL; local paths are not read over HTTP"}
        assert not [s for s in fs_spy if "secret" in s or "passwd" in s or "nonexistent" in s], fs_spy
    for m in (CHEAP, MID, STRONG):
        assert scripted.calls_for(m.split('/')[1]) == []  # nothing was forwarded upstream
    assert len(store.decisions) == 0 and store.count() == 0  # nor stored
    store.close()


def test_library_still_reads_local_paths(tmp_path):
    from mmroute.query import Query

    p = tmp_path / "a.png"
    p.write_bytes(png_bytes((9, 9, 200), 16))
    assert Query.build("x", [str(p)]).images[0].width == 16


# -- remote images: refuse (default) / forward / fetch ---------------------------------------------------

def test_remote_images_refused_by_default(router, scripted):
    with client(router) as c:
        r = chat(c, image_part("http://169.254.169.254/latest/meta-data"))
        assert_openai_error(r, 400, contains="--remote-images refuse")
        r = c.post("/v1/route", json={"text": "look", "images": ["https://example.com/a.png"]})
        assert_openai_error(r, 400, contains="data: URL")
        assert chat(c, image_part(png_url())).status_code == 200  # inline images are fine
    assert len(scripted.calls_for("mid")) == 1


def test_remote_images_forwarded_when_asked(router, scripted):
    url = "https://images.example.com/cat.png"
    with client(router, remote_images="forward") as c:
        r = chat(c, image_part(url))
        assert r.status_code == 200, r.text
    sent = scripted.calls_for("mid")[0].messages[-1]["content"][1]["image_url"]["url"]
    assert sent == url  # not fetched, passed on as it was


class _Images(LocalHTTPServer):
    def __init__(self) -> None:
        data = png_bytes((1, 2, 3))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)

    @property
    def image(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/cat.png"


def test_fetch_refuses_loopback_unless_trusted(router, scripted):
    with _Images() as srv:
        with client(router, remote_images="fetch") as c:
            r = chat(c, image_part(srv.image))
            assert_openai_error(r, 400, contains="non-public address 127.0.0.1")
        assert scripted.calls_for("mid") == []
        with client(router, remote_images="fetch", trusted_image_hosts=("127.0.0.1",)) as c:
            r = chat(c, image_part(srv.image))
            assert r.status_code == 200, r.text
    sent = scripted.calls_for("mid")[0].messages[-1]["content"][1]["image_url"]["url"]
    assert sent.startswith("data:image/png;base64,")  # the provider gets the bytes, never the URL


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.0.0.7", "::1"])
def test_fetch_resolves_then_checks_the_address(router, scripted, monkeypatch, address):
    """A public-looking name that resolves to a private address is refused (stub resolver: no DNS, no network)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def resolve(host, port, *a, **kw):
        assert host == "images.example.com"
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with client(router, remote_images="fetch") as c:
        r = chat(c, image_part("http://images.example.com/cat.png"))
        assert_openai_error(r, 400, contains=f"non-public address {address}")
        r = c.post("/v1/route", json={"text": "look", "images": ["http://images.example.com/cat.png"]})
        assert_openai_error(r, 400, contains="non-public address")


# -- every bad request is a 4xx in OpenAI's shape ----------------------------------------------------------

def test_deeply_nested_json_is_a_400(router):
    with client(router) as c:
        deep = "[" * 100_000 + "]" * 100_000
        r = c.post("/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
        assert_openai_error(r, 400, contains="nested too deeply")
        inner = {"role": "user", "content": "hi", "x": json.loads("[" * 500 + "]" * 500)}
        r = c.post("/v1/chat/completions", json={"model": "mmroute", "messages": [inner]})
        assert_openai_error(r, 400, contains="nested too deeply")


def test_nan_is_not_json(router):
    with client(router) as c:
        body = b'{"model": "mmroute", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
        r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert_openai_error(r, 400, contains="NaN is not a JSON value")


@pytest.mark.parametrize("part", [{"type": "audio", "audio": {"data": "AAAA"}},
                                  {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                                  {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}])
def test_unsupported_content_part_is_named(router, scripted, part):
    with client(router) as c:
        r = chat(c, [part])
        err = assert_openai_error(r, 400, contains=repr(part["type"]))
        assert "neither text nor images" not in err["message"]


def test_wrong_method_and_unknown_path_in_openai_shape(router):
    with client(router) as c:
        r = c.get("/v1/chat/completions")
        err = assert_openai_error(r, 405, contains="GET", code="method_not_allowed")
        assert "POST" in err["message"] and r.headers.get("allow") == "POST"
        assert "detail" not in r.json()
        assert_openai_error(c.get("/v1/nothing-here"), 404, code="not_found")
        assert_openai_error(c.delete("/v1/route"), 405)


def test_model_is_required(router):
    with client(router) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        err = assert_openai_error(r, 400, contains="model")
        assert err["param"] == "model"


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_endpoints_want_json(router, ctype):
    body = json.dumps({"model": "mmroute", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": ctype} if ctype else {}
    with client(router) as c:
        for path in ("/v1/chat/completions", "/v1/route", "/v1/feedback"):
            r = c.post(path, content=body, headers=headers)
            assert_openai_error(r, 415, code="unsupported_media_type")
        ok = c.post("/v1/route", content=json.dumps({"text": "hi"}),
                    headers={"content-type": "application/json; charset=utf-8"})
        assert ok.status_code == 200


# -- the cascade never passes a rejected answer off as an answer -------------------------------------------

SORRY = "I'm sorry, but I can't help with that."


@pytest.fixture(scope="module")
def best_first_router():
    r = tiny_router(lam=0.0)  # quality only: the predicted best model answers first
    d = r.route("what is 2 + 2?")
    assert d.model == STRONG and d.escalation_order() == [], d  # the premise: nothing is stronger
    return r


def _judge(messages, params):
    """A scripted judge: NO to a refusal, YES to anything else."""
    from mmroute.testing import reply

    prompt = messages[-1]["content"]
    prompt = prompt if isinstance(prompt, str) else " ".join(b.get("text", "") for b in prompt)
    return reply("NO" if "sorry" in prompt.lower() else "YES")


def _verifiers():
    from mmroute.verify import HeuristicVerifier, LLMJudgeVerifier
    from mmroute.verify.base import llm_generate

    return {"heuristic": HeuristicVerifier(),
            "judge": LLMJudgeVerifier(llm_generate(max_retries=0), "scripted/judge", k=1, temperature=0.0)}


@pytest.mark.parametrize("verifier", ["heuristic", "judge"])
def test_cascade_moves_past_a_rejected_best_model(best_first_router, scripted, verifier):
    from mmroute.graph import create_cascade_graph

    scripted.set("judge", _judge)
    scripted.set("strong", SORRY)
    graph = create_cascade_graph(best_first_router, verifier=_verifiers()[verifier], llm_kwargs=FAST)
    with TestClient(create_app(best_first_router, cascade=graph, config=ServerConfig(max_retries=0))) as c:
        r = chat(c, "what is 2 + 2?")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == MID and body["choices"][0]["message"]["content"] == "a fine answer"
        assert body["mmroute"]["status"] == "accepted" and body["mmroute"]["verified"] is True
        assert [a["model"] for a in body["mmroute"]["answers"]] == [STRONG, MID]
        assert r.headers["x-mmroute-verified"] == "true"


@pytest.mark.parametrize("verifier", ["heuristic", "judge"])
def test_cascade_says_when_every_answer_was_rejected(best_first_router, scripted, verifier):
    from mmroute.graph import create_cascade_graph

    scripted.set("judge", _judge)
    for m in ("cheap", "mid", "strong"):
        scripted.set(m, SORRY)
    graph = create_cascade_graph(best_first_router, verifier=_verifiers()[verifier], max_escalations=5,
                                 llm_kwargs=FAST)
    with TestClient(create_app(best_first_router, cascade=graph, config=ServerConfig(max_retries=0))) as c:
        r = chat(c, "what is 2 + 2?")
        assert r.status_code == 200, r.text
        meta = r.json()["mmroute"]
        assert meta["status"] == "all_rejected" and meta["verified"] is False
        assert [a["model"] for a in meta["answers"]] == [STRONG, MID, CHEAP]
        assert all(a["accepted"] is False for a in meta["answers"])
        assert r.headers["x-mmroute-verified"] == "false"


# -- a missing provider key is the server's configuration, said once -----------------------------------------

NO_KEY_CALLS: list[str] = []


def _no_key(messages, params):
    NO_KEY_CALLS.append(params.get("model", "?"))
    raise RuntimeError("Missing credentials. Please pass an `api_key`, or set the `OPENAI_API_KEY` environment variable.")


def test_missing_provider_key_is_a_503_naming_it(router, scripted):
    NO_KEY_CALLS.clear()
    for m in ("cheap", "mid", "strong"):
        scripted.set(m, _no_key)
    with TestClient(create_app(router, config=ServerConfig(max_retries=2))) as c:
        r = chat(c, "hi")
        err = assert_openai_error(r, 503, contains="credentials are missing", code="provider_not_configured")
        assert "unexpected" not in err["message"] and "OPENAI_API_KEY" in err["message"]
    assert len(NO_KEY_CALLS) == 3  # one call per candidate, no retries (max_retries=2)


# -- what the schema fuzzer (benchmarks/fuzz_api.py) found ------------------------------------------------------

@pytest.mark.parametrize("message", [
    {"role": "user", "content": "0", "tool_calls": 2},          # was a 500 (TypeError)
    {"role": "user", "content": "0", "name": {"a": 1}},
    {"role": None, "content": "hi"},                             # was a 500 through the cascade (LangChain's ValueError)
    {"role": "tool", "content": "result", "tool_call_id": 5},
    {"role": "assistant", "content": None, "tool_calls": ["not a call"]},
])
def test_malformed_message_fields_are_400s(best_first_router, scripted, message):
    from mmroute.graph import create_cascade_graph
    from mmroute.verify import HeuristicVerifier

    graph = create_cascade_graph(best_first_router, verifier=HeuristicVerifier(), llm_kwargs=FAST)
    with TestClient(create_app(best_first_router, cascade=graph, config=ServerConfig(max_retries=0))) as c:
        for path, extra in (("/v1/chat/completions", {"model": "mmroute"}), ("/v1/route", {})):
            r = c.post(path, json={**extra, "messages": [message, {"role": "user", "content": "hi"}]})
            assert_openai_error(r, 400)
        r = c.post("/v1/chat/completions", json={"model": "mmroute", "messages": [message],
                                                  "mmroute": {"cascade": False}})
        assert_openai_error(r, 400)


def test_the_langgraph_served_graph_reads_no_client_paths(tmp_path, monkeypatch):
    """``langgraph dev`` serves ``graphs/cascade.py`` over HTTP too: its router refuses paths."""
    from mmroute.errors import ImageError
    from mmroute.graph import served

    monkeypatch.delenv("MMROUTE_ROUTER", raising=False)
    monkeypatch.delenv("MMROUTE_FEEDBACK_DB", raising=False)
    monkeypatch.setattr(served, "_SERVED", None)
    png = tmp_path / "secret.png"
    png.write_bytes(png_bytes((9, 9, 200), 16))
    graph = served.served_graph()
    with pytest.raises(ImageError, match="local paths are not read over HTTP"):
        graph.invoke({"messages": [{"role": "user", "content": image_part(str(png))}]})


def test_a_model_that_failed_is_not_asked_again(best_first_router, scripted):
    """strong fails (provider error), mid answers and is rejected: strong was tried already, so the
    cascade moves on to cheap rather than calling the failing model again."""
    from mmroute.graph import create_cascade_graph
    from mmroute.testing import fail
    from mmroute.verify import HeuristicVerifier

    scripted.set("strong", fail("auth"))
    scripted.set("mid", SORRY)
    scripted.set("cheap", "4")
    graph = create_cascade_graph(best_first_router, verifier=HeuristicVerifier(), max_escalations=3,
                                 llm_kwargs=FAST)
    out = graph.invoke({"messages": [{"role": "user", "content": "what is 2 + 2?"}]})
    assert out["status"] == "accepted" and out["final"]["model"] == CHEAP
    assert scripted.models_called == [STRONG, MID, CHEAP]
