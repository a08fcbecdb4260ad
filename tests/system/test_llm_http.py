"""The real HTTP path: LiteLLM's OpenAI client against a local OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import litellm
import pytest
from _local_http import LocalHTTPServer

from mmroute.llm import Backoff, complete
from mmroute.pool import ModelPool
from mmroute.query import Query
from _images import png_bytes as _png

litellm.suppress_debug_info = True


class _Server(LocalHTTPServer):
    """A tiny /v1/chat/completions server: answers 429 (retry-after) on the first request."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first = 1
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                srv.bodies.append(body)
                srv.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if srv.fail_first > 0:
                    srv.fail_first -= 1
                    return self._send(429, {"error": {"message": "slow down", "type": "rate_limit_error"}},
                                      {"retry-after": "0.01"})
                self._send(200, {
                    "id": "chatcmpl-local", "object": "chat.completion", "created": 1, "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "a red square"}}],
                    "usage": {"prompt_tokens": 900, "completion_tokens": 4, "total_tokens": 904}})

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)


@pytest.fixture()
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


def test_openai_compatible_server_through_litellm(server: _Server):
    name = "openai/local-vlm"
    pool = ModelPool(models=[{"name": name, "input_cost_per_token": 2e-7, "output_cost_per_token": 1e-6,
                              "litellm_params": {"api_base": server.url, "api_key": "sk-local-test"}}])
    query = Query(text="what is this?", images=[_png()])
    ans = complete(query, [name], pool=pool, timeout=10, backoff=Backoff(base_s=0.001, max_s=0.01), seed=0)

    assert ans.text == "a red square" and ans.model == name
    assert [a.error_type for a in ans.attempts] == ["rate_limit", None]
    assert ans.attempts[0].retry_after == pytest.approx(0.01)
    assert len(server.bodies) == 2  # our retry, not the OpenAI client's (max_retries=0)
    body = server.bodies[-1]
    assert body["model"] == "local-vlm"
    blocks = body["messages"][-1]["content"]
    assert blocks[0] == {"type": "text", "text": "what is this?"}
    assert blocks[1]["image_url"]["url"] == query.images[0].to_url()  # the image arrived as a data URL
    assert "input_cost_per_token" not in body and "api_base" not in body  # pool params configure, not leak
    assert server.headers[-1].get("authorization") == "Bearer sk-local-test"
    assert ans.prompt_tokens == 900 and ans.completion_tokens == 4
    assert ans.cost_usd == pytest.approx(900 * 2e-7 + 4 * 1e-6)
