"""The real LiteLLM proxy (``mmroute proxy``, a subprocess on 127.0.0.1) in front of local
OpenAI-compatible upstreams that record which deployment got each request.

Pool: ``up/text`` (text-only, cheap) < ``up/vision`` < ``up/big`` (vision); the router sends text
to ``up/text`` and images to ``up/vision``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed (the 'proxy' extra)")

from mmroute.pool import ModelPool  # noqa: E402
from mmroute.server import BackgroundServer  # noqa: E402
from _images import png_url
from _tiny_router import tiny_router

REPO = Path(__file__).resolve().parents[2]
TEXT, VISION, BIG = "up/text", "up/vision", "up/big"
MASTER_KEY = "sk-" + secrets.token_hex(16)  # the proxy refuses to start without one
START_TIMEOUT_S = 240  # the proxy imports a lot; the CI machine is small and shared


class Upstreams:
    """One OpenAI-compatible app serving every deployment under /<name>/v1; records each request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []  # (deployment, had an image)
        self.failing: set[str] = set()
        self._lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/{name}/v1/chat/completions")
        async def chat(name: str, request: Request) -> JSONResponse:
            body = await request.json()
            has_image = any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
                            for m in body.get("messages", []))
            with self._lock:
                self.calls.append((name, has_image))
            if name in self.failing:
                return JSONResponse({"error": {"message": f"{name} is down", "type": "server_error"}}, status_code=500)
            return JSONResponse({
                "id": "chatcmpl-up", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"answer from {name}"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})

    def take(self) -> list[tuple[str, bool]]:
        with self._lock:
            out, self.calls = self.calls, []
        return out


@pytest.fixture(scope="module")
def upstreams():
    up = Upstreams()
    with BackgroundServer(up.app) as srv:
        up.url = srv.url
        yield up


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory):

    pool = ModelPool(models=[
        {"name": TEXT, "supports_vision": False, "input_cost_per_token": 1e-8, "output_cost_per_token": 1e-8},
        {"name": VISION, "supports_vision": True, "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
        {"name": BIG, "supports_vision": True, "input_cost_per_token": 1e-4, "output_cost_per_token": 1e-4},
    ])
    r = tiny_router(pool=pool)
    folder = tmp_path_factory.mktemp("proxy-router")
    r.save(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, upstream_url: str, *, callbacks: list[str] | None = None) -> Path:
    def deployment(group: str, name: str) -> dict:
        short = name.split("/")[1]
        return {"model_name": group, "model_info": {"mmroute_model": name},
                "litellm_params": {"model": f"openai/{short}", "api_base": f"{upstream_url}/{short}/v1", "api_key": "x"}}

    config = {
        "model_list": [deployment("mmroute", m) for m in (TEXT, VISION, BIG)]
        + [deployment("plain", m) for m in (TEXT, VISION, BIG)],
        "router_settings": {"num_retries": 2, "retry_after": 0, "allowed_fails": 0, "cooldown_time": 60},
        "litellm_settings": {"request_timeout": 30, **({"callbacks": callbacks} if callbacks else {})},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_proxy(command: list[str], folder: Path, extra_env: dict[str, str] | None = None):
    """Start a LiteLLM proxy subprocess on a free 127.0.0.1 port; yields its URL, stops it by PID."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
           "LITELLM_MASTER_KEY": MASTER_KEY, **(extra_env or {})}
    env.pop("DATABASE_URL", None)  # no database: keys are the master key only
    log_path = folder / "proxy.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=folder, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxy did not start in {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def proxy(upstreams, router_dir, tmp_path_factory):
    """``mmroute proxy --config ... --router ...``."""
    folder = tmp_path_factory.mktemp("proxy")
    cfg = write_config(folder / "config.yaml", upstreams.url)
    yield from run_proxy([sys.executable, "-m", "mmroute.cli", "proxy", "--config", str(cfg), "--router",
                          str(router_dir), "--log-level", "warning"], folder)


@pytest.fixture
def client(proxy, upstreams):
    upstreams.take()
    upstreams.failing.clear()
    return openai.OpenAI(base_url=proxy + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=60)


def test_text_lands_on_the_deployment_mmroute_chose(client, upstreams):
    comp = client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "what is 2 + 2?"}])
    assert comp.choices[0].message.content == "answer from text"
    assert upstreams.take() == [("text", False)]


def test_images_never_reach_a_text_only_deployment(client, upstreams):
    for i in range(3):
        msg = {"role": "user", "content": [{"type": "text", "text": f"what colour {i}?"},
                                           {"type": "image_url", "image_url": {"url": png_url((9, 9, 30 * i))}}]}
        comp = client.chat.completions.create(model="mmroute", messages=[msg])
        assert comp.choices[0].message.content == "answer from vision"
    calls = upstreams.take()
    assert calls == [("vision", True)] * 3


def test_fallback_when_the_chosen_deployment_fails(client, upstreams):
    upstreams.failing.add("text")
    comp = client.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "fall back, please"}])
    assert comp.choices[0].message.content == "answer from vision"
    assert upstreams.take() == [("text", False), ("vision", False)]


def test_other_groups_keep_litellms_strategy(client, upstreams):
    names = set()
    for i in range(12):
        comp = client.chat.completions.create(model="plain", messages=[{"role": "user", "content": f"hi {i}"}])
        names.add(comp.choices[0].message.content)
    assert len(names) > 1  # simple-shuffle spreads the load; mmroute would send all of it to text


def test_plain_litellm_cli_with_the_mmroute_callback(upstreams, router_dir, tmp_path):
    """A team's own ``litellm --config``: one callback line in the config and MMROUTE_ROUTER."""
    cfg = write_config(tmp_path / "config.yaml", upstreams.url, callbacks=["mmroute.server.litellm_proxy.proxy_hook"])
    litellm_cli = Path(sys.executable).with_name("litellm")
    if not litellm_cli.exists():
        pytest.skip(f"the litellm command is not installed next to {sys.executable}")
    gen = run_proxy([str(litellm_cli), "--config", str(cfg)], tmp_path, {"MMROUTE_ROUTER": str(router_dir)})
    url = next(gen)
    try:
        upstreams.take()
        upstreams.failing.clear()
        c = openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120)
        assert c.chat.completions.create(model="mmroute", messages=[{"role": "user", "content": "hello"}]
                                         ).choices[0].message.content == "answer from text"
        msg = {"role": "user", "content": [{"type": "text", "text": "colour?"},
                                           {"type": "image_url", "image_url": {"url": png_url((1, 2, 3))}}]}
        assert c.chat.completions.create(model="mmroute", messages=[msg]).choices[0].message.content == "answer from vision"
        assert upstreams.take() == [("text", False), ("vision", True)]
    finally:
        gen.close()


def test_strategy_in_litellms_sdk_router_sync_and_async(upstreams, router_dir):
    """The same strategy without the proxy: ``litellm.Router`` in-process, sync and async paths."""
    import asyncio

    import litellm

    from mmroute.errors import InvalidInputError
    from mmroute.router import LiveRouter
    from mmroute.server.litellm_proxy import install

    config = yaml.safe_load(write_config(Path(str(router_dir)) / "sdk-config.yaml", upstreams.url).read_text())
    llm = litellm.Router(model_list=config["model_list"], num_retries=0)
    strategy = install(llm, LiveRouter(router_dir))
    assert install(llm, LiveRouter(router_dir)) is strategy  # idempotent
    upstreams.take()
    upstreams.failing.clear()
    sync = llm.completion(model="mmroute", messages=[{"role": "user", "content": "sync hello"}])
    msg = {"role": "user", "content": [{"type": "text", "text": "colour?"},
                                       {"type": "image_url", "image_url": {"url": png_url((5, 6, 7))}}]}
    asynchronous = asyncio.run(llm.acompletion(model="mmroute", messages=[msg]))
    again = asyncio.run(asyncio.wait_for(  # a second event loop gets its own batching queue
        llm.acompletion(model="mmroute", messages=[{"role": "user", "content": "async hello"}]), 60))
    assert sync.choices[0].message.content == "answer from text"
    assert asynchronous.choices[0].message.content == "answer from vision"
    assert again.choices[0].message.content == "answer from text"
    assert upstreams.take() == [("text", False), ("vision", True), ("text", False)] and strategy.decisions == 3
    from mmroute.errors import ImageError

    with pytest.raises(ImageError, match="local paths are not read over HTTP"):  # a proxy client's path is never read
        strategy._request(strategy.router, [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": str(Path(str(router_dir)) / "sdk-config.yaml")}}]}], None)
    with pytest.raises(InvalidInputError, match="no model group 'routed'"):
        install(litellm.Router(model_list=config["model_list"]), LiveRouter(router_dir), model_group="routed")


def test_strategy_explores_among_healthy_deployments_within_the_filters(upstreams, router_dir):
    """``install(..., explore=...)``: the strategy draws from the exploration policy (some text
    requests leave the router's choice), says with what probability, and never sends an image to
    the text-only deployment."""
    import litellm

    from mmroute.learning.routing import ExploreSettings
    from mmroute.router import LiveRouter
    from mmroute.server.litellm_proxy import install

    config = yaml.safe_load(write_config(Path(str(router_dir)) / "explore-config.yaml", upstreams.url).read_text())
    llm = litellm.Router(model_list=config["model_list"], num_retries=0)
    install(llm, LiveRouter(router_dir), explore=ExploreSettings(strategy="epsilon", share=1.0, seed=0))
    upstreams.take()
    upstreams.failing.clear()
    metas = []
    for i in range(12):
        meta: dict = {}
        llm.completion(model="mmroute", messages=[{"role": "user", "content": f"hello {i}"}], metadata=meta)
        metas.append(meta.get("mmroute"))
    image = {"role": "user", "content": [{"type": "text", "text": "colour?"},
                                         {"type": "image_url", "image_url": {"url": png_url((5, 6, 7))}}]}
    for _ in range(8):
        llm.completion(model="mmroute", messages=[image])
    calls = upstreams.take()
    text_calls, image_calls = [n for n, img in calls if not img], [n for n, img in calls if img]
    assert len(text_calls) == 12 and len(set(text_calls)) > 1, text_calls
    assert len(image_calls) == 8 and "text" not in image_calls
    assert all(m is not None and 0 < m["propensity"] <= 1 and m["decision_id"] for m in metas), metas[:2]
