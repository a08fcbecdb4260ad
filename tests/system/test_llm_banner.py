"""LiteLLM's red "Provider List" banner must not reach the terminal on a streamed call to an
OpenAI-compatible server that names the model without a provider prefix (as vLLM, llama.cpp and
Ollama do)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import litellm
import pytest
from _local_http import LocalHTTPServer

from mmroute.llm import stream_complete
from mmroute.pool import ModelPool


class _StreamingServer(LocalHTTPServer):
    """/v1/chat/completions as server-sent events, each chunk naming the bare model 'local-llm'."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 1, "model": "local-llm"}
                for i, word in enumerate(["a ", "red ", "square"]):
                    delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()

        super().__init__(Handler)


@pytest.fixture()
def server() -> Iterator[_StreamingServer]:
    with _StreamingServer() as s:
        yield s


def test_streamed_call_prints_no_provider_banner(server, monkeypatch, capfd):
    monkeypatch.setattr(litellm, "suppress_debug_info", False)  # litellm's default, as in a fresh process
    name = "openai/local-llm"
    pool = ModelPool(models=[{"name": name, "input_cost_per_token": 1e-7, "output_cost_per_token": 1e-6,
                              "litellm_params": {"api_base": server.url, "api_key": "sk-local-test"}}])
    capfd.readouterr()
    stream = stream_complete("describe it", [name], pool=pool, timeout=10, max_retries=0)
    answer = stream.collect()
    assert answer.text == "a red square" and answer.model == name
    out, err = capfd.readouterr()
    assert "Provider List" not in out + err
