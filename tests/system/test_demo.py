"""`mmroute demo` end to end: it must route, verify, collect feedback and retrain, offline."""

from __future__ import annotations

import json

from mmroute.cli import main
from mmroute.pool import ModelPool
from mmroute.demo import _example_folder


def test_demo_runs_the_whole_loop(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "retrain:" in out
    report = json.loads((tmp_path / "demo.json").read_text())
    pool = ModelPool.load(_example_folder(tmp_path) / "pool.yaml")
    rows = report["rows"]
    assert len(rows) == 16 and all(r["final"] != "-" for r in rows)
    for r in rows:  # an image never reached a text-only model, not even as a fallback attempt
        if r["n_images"]:
            assert all(pool[m].supports_vision for m in r["models_called"]), r
    # every query produced user feedback; escalations add their own judgments
    assert report["store_count"] >= len(rows) + sum(r["escalated"] > 0 for r in rows)
    assert (tmp_path / "router" / "versions" / "v0001").is_dir()
    assert report["retrain"]["n_new"] == report["store_count"]


def test_demo_with_a_pool_of_real_models_uses_them(tmp_path, capsys):
    """`mmroute demo --pool` sends the queries to the pool's models over HTTP (a local
    OpenAI-compatible server here; a provider with API keys in real use)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": "42"}}],
                                  "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_port}/v1"
    params = {"api_base": base, "api_key": "sk-local"}
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps({"models": [
        {"name": "openai/local-text", "supports_vision": False, "input_cost_per_token": 1e-7,
         "output_cost_per_token": 4e-7, "context_window": 8000, "litellm_params": params},
        {"name": "openai/local-vision", "supports_vision": True, "input_cost_per_token": 2e-6,
         "output_cost_per_token": 8e-6, "context_window": 8000, "litellm_params": params}]}))
    try:
        assert main(["demo", "--workdir", str(tmp_path / "w"), "--pool", str(pool), "--quiet"]) == 0
    finally:
        srv.shutdown()
        srv.server_close()
    rows = json.loads((tmp_path / "w" / "demo.json").read_text())["rows"]
    assert seen and {b["model"] for b in seen} <= {"local-text", "local-vision"}
    for r in rows:
        assert r["final"] in ("openai/local-text", "openai/local-vision")
        if r["n_images"]:
            assert set(r["models_called"]) == {"openai/local-vision"}
    image_requests = [b for b in seen if any(isinstance(m["content"], list) for m in b["messages"])]
    assert image_requests and all(b["model"] == "local-vision" for b in image_requests)
